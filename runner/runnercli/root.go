// Package runnercli is the `dstack-runner` command line: `config` writes the
// runner's config file, `start` runs the agent until SIGINT or SIGTERM,
// `version` prints the version, `copy` writes the binary elsewhere (a
// Kubernetes runner Pod's init container injects it into the job's image
// so). One file per command.
//
// Where settings come from, later sources winning: defaults (server
// http://127.0.0.1:3000, the host name as the runner's name, data in
// ~/.dstack-runner, the jobs' working directories in its sibling
// ~/.dstack-runner-work), the config file (~/.dstack-runner/config.yaml, or the
// file --config or DSTACK_RUNNER_CONFIG names), the environment
// (DSTACK_SERVER, DSTACK_TOKEN, DSTACK_JOIN_TOKEN, and for start
// DSTACK_WATCH_SPOT_INTERRUPTION and DSTACK_IMDS_ENDPOINT), then the flags.
//
// An on-demand instance's runner runs with no config file:
// `dstack-runner start --server URL --name NAME --data-dir DIR` with its
// single-use join token in DSTACK_JOIN_TOKEN (or --join-token); it joins
// with the token instead of registering with a user's token.
//
// Exit codes: 0 success, 1 an error, 2 a usage error.
package runnercli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/runner"
)

// EnvConfig names the config file when --config is not given.
const EnvConfig = "DSTACK_RUNNER_CONFIG"

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// Env is what a command may touch of the outside world; tests fill it with
// buffers and a map of variables.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// Signals, when set, replaces SIGINT/SIGTERM handling: start stops when
	// this context ends.
	Signals context.Context
}

// Main runs the command line of the process and returns its exit code.
func Main(args []string) int {
	return Run(context.Background(), Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}, args)
}

// Run runs one command line and returns its exit code.
func Run(ctx context.Context, env Env, args []string) int {
	cmd := newRoot(env)
	cmd.SetArgs(args)
	cmd.SetOut(env.Stdout)
	cmd.SetErr(env.Stderr)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(env.Stderr, "Error:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitError
}

// usageError is a wrong command line.
type usageError struct{ error }

// globals are the flags of every command.
type globals struct {
	env     Env
	config  string
	dataDir string
	workDir string
}

// configPath is where the config file is: --config, DSTACK_RUNNER_CONFIG,
// or the default.
func (g *globals) configPath() string {
	if g.config != "" {
		return g.config
	}
	if v := g.env.Getenv(EnvConfig); v != "" {
		return v
	}
	return runner.DefaultConfigPath()
}

func newRoot(env Env) *cobra.Command {
	g := &globals{env: env}
	root := &cobra.Command{
		Use:           "dstack-runner",
		Short:         "Run dstack jobs on this machine",
		Long:          "dstack-runner registers this machine with a dstack server and runs the jobs the server assigns to it.\n\nSet it up with `dstack-runner config --token TOKEN` (the token is in the web UI's Settings), then `dstack-runner start`.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see `%s --help`)", err, c.CommandPath())}
	})
	root.PersistentFlags().StringVar(&g.config, "config", "", "config file (default ~/.dstack-runner/config.yaml, or $"+EnvConfig+")")
	root.PersistentFlags().StringVar(&g.dataDir, "data-dir", "", "directory for the runner's own files: its state and credential, the jobs' log spools; kept private, 0700 (default ~/.dstack-runner)")
	root.PersistentFlags().StringVar(&g.workDir, "work-dir", "", "directory for the jobs' working directories, apart from --data-dir so that no job can reach the runner's files; new or empty, as the runner empties it at start (default: --data-dir's sibling, ~/.dstack-runner-work)")
	root.AddCommand(newConfigCmd(g), newStartCmd(g), newVersionCmd(g), newCopyCmd(g))
	// An unknown command is a usage error too.
	root.Args = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q (see `dstack-runner --help`)", args[0])}
		}
		return nil
	}
	root.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	return root
}
