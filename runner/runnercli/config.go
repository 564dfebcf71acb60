package runnercli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/executor"
	"github.com/dstackai/dstack/internal/privfs"
	"github.com/dstackai/dstack/runner"
)

func newConfigCmd(g *globals) *cobra.Command {
	var server, token, name, executorName, bashImage string
	var shared bool
	cmd := &cobra.Command{
		Use:   "config --token TOKEN [--server URL] [--name NAME] [--shared] [--executor auto|shell|docker] [--bash-image IMAGE]",
		Short: "Write the runner's config file",
		Long:  "Write the server URL, the user's token and the runner's name to the runner's config file (mode 0600).\nThe token is in the web UI's Settings.",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path := g.configPath()
			cfg := runner.DefaultConfig()
			// Keep what an earlier `config` wrote and this one does not change.
			if _, err := os.Stat(path); err == nil {
				if err := cfg.LoadFile(path); err != nil {
					return err
				}
			}
			if token == "" {
				return usageError{errors.New("--token is required: copy it from the web UI's Settings")}
			}
			cfg.Token = token
			if c.Flags().Changed("server") {
				cfg.Server = server
			}
			if c.Flags().Changed("name") {
				cfg.Name = name
			}
			if c.Flags().Changed("executor") {
				if err := executor.CheckName(executorName); err != nil {
					return usageError{fmt.Errorf("--executor: %w", err)}
				}
				cfg.Executor = executorName
			}
			if c.Flags().Changed("shared") {
				cfg.Shared = shared
			}
			if c.Flags().Changed("bash-image") {
				cfg.BashImage = bashImage
			}
			if err := runner.ValidateServerURL(cfg.Server); err != nil {
				return err
			}
			if g.dataDir != "" {
				cfg.DataDir = g.dataDir
			}
			if g.workDir != "" {
				cfg.WorkDir = g.workDir
			}
			if err := runner.ValidateWorkDir(cfg.DataDir, cfg.WorkDir); err != nil {
				return err
			}
			dataDir := cfg.DataDir
			if cfg.DataDir == runner.DefaultDataDir() {
				cfg.DataDir = "" // the default stays implicit
			}
			if cfg.Executor == runner.DefaultConfig().Executor {
				cfg.Executor = ""
			}
			if err := cfg.WriteFile(path); err != nil {
				return err
			}
			// The file holds the token: in the data directory, that
			// directory is made private as well (the file itself is 0600).
			if abs, err := filepath.Abs(filepath.Dir(path)); err == nil {
				if data, err := filepath.Abs(dataDir); err == nil && abs == data {
					if _, err := privfs.Dir(data); err != nil {
						return fmt.Errorf("runner data directory: %w", err)
					}
				}
			}
			fmt.Fprintf(g.env.Stdout, "Runner config written to %s (server %s, name %s).\nStart the runner with `dstack-runner start`.\n", path, cfg.Server, cfg.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "your dstack token (from the web UI's Settings)")
	cmd.Flags().StringVar(&server, "server", runner.DefaultServer, "URL of the dstack server; several, comma-separated, for replicas without a load balancer: the runner moves to the next when one cannot be reached")
	cmd.Flags().StringVar(&name, "name", "", "runner name (default: the host name)")
	cmd.Flags().StringVar(&executorName, "executor", "auto", "how jobs run: auto (docker when the Docker Engine answers at start, shell otherwise), shell or docker")
	cmd.Flags().BoolVar(&shared, "shared", false, "take every user's jobs, not only the token's user's (an admin's token only; the server refuses a member's at start)")
	cmd.Flags().StringVar(&bashImage, "bash-image", "", "image for bash jobs with the docker executor (default none: bash jobs run on the host)")
	return cmd
}
