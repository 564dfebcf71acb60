package runnercli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/privfs"
	"github.com/dstackai/dstack/runner"
)

func newStartCmd(g *globals) *cobra.Command {
	var (
		executorName, bashImage, name, server, logLevel, joinToken, imdsEndpoint string
		watchSpot                                                                bool
	)
	cmd := &cobra.Command{
		Use:   "start [--executor auto|shell|docker] [--name NAME]",
		Short: "Register with the server and run jobs until stopped",
		Long: "Register this machine with the dstack server and run the jobs it assigns, one at a time, until SIGINT or SIGTERM.\nOn shutdown the job in progress is stopped: its artifacts are uploaded and it is reported as stopped.\n\n" +
			"Each job runs in a directory of its own under --work-dir (default: --data-dir's sibling, ~/.dstack-runner-work), apart from the runner's own files in --data-dir " +
			"(kept 0700, its config and state 0600). The runner follows no symbolic link out of a job's directory: such a link in the code, or on an artifact's path, fails the job, naming it; " +
			"one inside a listed artifact directory is left out and noted in the job's log.\n\n" +
			"On an EC2 spot instance, --watch-spot-interruption reads the instance metadata (IMDSv2) every 2 seconds for an interruption notice. " +
			"On one, the runner tells the server, stops the job in progress, uploads its artifacts if there is time, gives the job back to be requeued, " +
			"goes offline and waits, taking no job, for the instance to go.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := loadStartConfig(c, g, startFlags{executor: executorName, bashImage: bashImage, name: name, server: server, joinToken: joinToken,
				watchSpot: watchSpot, imdsEndpoint: imdsEndpoint})
			if err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)}
			}
			logger := slog.New(slog.NewTextHandler(g.env.Stderr, &slog.HandlerOptions{Level: level}))
			// The config file holds the user's token.
			if was, err := privfs.File(g.configPath()); err != nil {
				logger.Warn("could not make the runner config private", "file", g.configPath(), "err", err)
			} else if was != 0 {
				logger.Warn("the runner config was readable by other users: made it private (0600)", "file", g.configPath(), "was", was)
			}
			r, err := runner.New(cfg, logger)
			if err != nil {
				return err
			}

			ctx := g.env.Signals
			if ctx == nil {
				var stop context.CancelFunc
				ctx, stop = signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				// A second signal during the shutdown ends the process at once.
				go func() {
					<-ctx.Done()
					stop()
				}()
			}
			if err := r.Start(ctx); err != nil {
				r.Stop()
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			fmt.Fprintf(g.env.Stdout, "Runner %s registered with %s (%s; %s executor); waiting for jobs. Stop it with Ctrl-C.\n", cfg.Name, cfg.Server, describe(r.Resources()), r.Executor())
			select {
			case <-ctx.Done():
			case <-r.Done():
			}
			fmt.Fprintln(g.env.Stdout, "Shutting down...")
			r.Stop()
			return nil
		},
	}
	cmd.Flags().StringVar(&executorName, "executor", "", "how jobs run: auto (docker when the Docker Engine answers, shell otherwise), shell or docker (default: the config file's, else auto)")
	cmd.Flags().StringVar(&bashImage, "bash-image", "", "image for bash jobs with the docker executor (default: the config file's, else none: bash jobs run on the host)")
	cmd.Flags().StringVar(&name, "name", "", "runner name (default: the config file's, else the host name)")
	cmd.Flags().StringVar(&server, "server", "", "URL of the dstack server; several, comma-separated, for replicas without a load balancer: the runner moves to the next when one cannot be reached (default: the config file's)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().BoolVar(&watchSpot, "watch-spot-interruption", false, "watch the EC2 spot instance's metadata for an interruption notice and give the job back on one (or $"+runner.EnvWatchSpot+"=1)")
	cmd.Flags().StringVar(&imdsEndpoint, "imds-endpoint", "", "URL of the instance metadata service (default $"+runner.EnvIMDSEndpoint+", else "+runner.DefaultIMDSEndpoint+")")
	cmd.Flags().StringVar(&joinToken, "join-token", "", "an on-demand instance's single-use join token, set by the server's backend (or $"+runner.EnvJoinToken+"); replaces the user's token")
	return cmd
}

// startFlags are the values of start's own flags.
type startFlags struct {
	executor, bashImage, name, server, joinToken, imdsEndpoint string
	watchSpot                                                  bool
}

// loadStartConfig applies defaults, the config file, the environment and the
// flags, in that order, and validates the result.
func loadStartConfig(c *cobra.Command, g *globals, f startFlags) (runner.Config, error) {
	cfg := runner.DefaultConfig()
	path := g.configPath()
	if err := cfg.LoadFile(path); err != nil {
		// With a token in the environment or a join token, the file is
		// optional (an on-demand instance has none).
		haveToken := g.env.Getenv(runner.EnvToken) != "" || g.env.Getenv(runner.EnvJoinToken) != "" || f.joinToken != ""
		if _, statErr := os.Stat(path); statErr == nil || !haveToken {
			return cfg, err
		}
	}
	cfg.ApplyEnv(g.env.Getenv)
	if g.dataDir != "" {
		cfg.DataDir = g.dataDir
	}
	if g.workDir != "" {
		cfg.WorkDir = g.workDir
	}
	if c.Flags().Changed("executor") {
		cfg.Executor = f.executor
	}
	if c.Flags().Changed("bash-image") {
		cfg.BashImage = f.bashImage
	}
	if c.Flags().Changed("name") {
		cfg.Name = f.name
	}
	if c.Flags().Changed("server") {
		cfg.Server = f.server
	}
	if c.Flags().Changed("join-token") {
		cfg.JoinToken = f.joinToken
	}
	if c.Flags().Changed("watch-spot-interruption") {
		cfg.WatchSpotInterruption = f.watchSpot
	}
	if c.Flags().Changed("imds-endpoint") {
		cfg.IMDSEndpoint = f.imdsEndpoint
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("runner config (%s): %w", path, err)
	}
	return cfg, nil
}

func describe(r api.HostResources) string {
	parts := []string{fmt.Sprintf("%d CPUs", r.CPUs), fmt.Sprintf("%d MiB memory", r.MemoryMiB), fmt.Sprintf("%d GiB disk", r.DiskMiB>>10)}
	if len(r.GPUs) > 0 {
		parts = append(parts, fmt.Sprintf("%d× %s", len(r.GPUs), r.GPUs[0].Name))
	}
	return strings.Join(parts, ", ")
}
