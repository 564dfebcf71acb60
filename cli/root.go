// Package cli is the `dstack` command line: one file per command group
// (config, init, run, ps, logs, stop, artifacts, tag, runners, on-demand,
// autoscale, aws), all built on an Env that carries the process's streams,
// environment and clock so that the tests run every command in-process.
//
// The CLI reaches the server only through package client; a test keeps it
// from importing the server or the store.
//
// Where the server and token come from, later sources winning: nothing, the
// config file (~/.dstack/config.yaml, or the file DSTACK_CONFIG names), then
// the environment variables DSTACK_SERVER and DSTACK_TOKEN. There are no
// global flags: `dstack run` passes the words after the workflow's name to
// the workflow as variables, and global flags would collide with them.
//
// Exit codes: 0 success, 1 an error, 2 a usage error (an unknown command or
// flag, a missing argument), 130 when Ctrl-C stops `dstack run` from
// following a run (the run goes on), and for `dstack run` the run's own
// outcome: the failing job's exit code when it has one, else 1.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/userconfig"
	"github.com/dstackai/dstack/version"
)

// Exit codes other than a run's own.
const (
	ExitOK          = 0
	ExitError       = 1
	ExitUsage       = 2
	ExitInterrupted = 130
)

// Env is what a command may touch of the outside world. Main fills it from
// the process; tests fill it with buffers, a map of variables and a fixed
// clock.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads an environment variable.
	Getenv func(string) string
	// Dir is the working directory; empty means the process's.
	Dir string
	// Now is the clock, for relative times.
	Now func() time.Time
	// IsTerminal reports whether w is a terminal (progress bars are drawn
	// only on one).
	IsTerminal func(w io.Writer) bool
	// Interrupt returns a context that ends when the user presses Ctrl-C,
	// and a function that stops listening. `dstack run` uses it to stop
	// following a run without stopping the run.
	Interrupt func(ctx context.Context) (context.Context, context.CancelFunc)
	// ClientOptions are given to every API client (TLS settings, tests).
	ClientOptions []client.Option
}

// NewEnv is the Env of this process.
func NewEnv() *Env {
	return &Env{
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Getenv: os.Getenv,
		Now:    time.Now,
		IsTerminal: func(w io.Writer) bool {
			f, ok := w.(*os.File)
			return ok && term.IsTerminal(int(f.Fd()))
		},
		Interrupt: func(ctx context.Context) (context.Context, context.CancelFunc) {
			return signal.NotifyContext(ctx, os.Interrupt)
		},
	}
}

// Main runs the dstack command line with args (without the program name)
// and returns the process's exit code. extra commands (such as `dstack
// server`) are added to the root, made with the Env the others use.
func Main(args []string, extra ...func(*Env) *cobra.Command) int {
	return NewEnv().Run(context.Background(), args, extra...)
}

// Run runs one command line in e and returns its exit code.
func (e *Env) Run(ctx context.Context, args []string, extra ...func(*Env) *cobra.Command) int {
	e.fill()
	root := e.newRoot(extra...)
	root.SetArgs(args)
	// started is set when a command's own code begins: an error before that
	// is cobra's (an unknown command or flag, wrong arguments), a usage error.
	started := false
	wrapRun(root, &started)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	var ex *exitError
	if errors.As(err, &ex) {
		if ex.msg != "" {
			fmt.Fprintf(e.Stderr, "Error: %s\n", ex.msg)
		}
		return ex.code
	}
	var ue *usageError
	if !started || errors.As(err, &ue) {
		fmt.Fprintf(e.Stderr, "Error: %s\n", err)
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(e.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return ExitUsage
	}
	fmt.Fprintf(e.Stderr, "Error: %s\n", err)
	return ExitError
}

// fill gives defaults to what a test left unset.
func (e *Env) fill() {
	d := NewEnv()
	if e.Stdin == nil {
		e.Stdin = strings.NewReader("")
	}
	if e.Stdout == nil {
		e.Stdout = io.Discard
	}
	if e.Stderr == nil {
		e.Stderr = io.Discard
	}
	if e.Getenv == nil {
		e.Getenv = d.Getenv
	}
	if e.Now == nil {
		e.Now = d.Now
	}
	if e.IsTerminal == nil {
		e.IsTerminal = d.IsTerminal
	}
	if e.Interrupt == nil {
		e.Interrupt = d.Interrupt
	}
}

func (e *Env) newRoot(extra ...func(*Env) *cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:   "dstack",
		Short: "Run ML workflows on your own runners",
		Long: `dstack runs the workflows of .dstack/workflows.yaml on runners that a dstack
server manages.

The server and token come from ~/.dstack/config.yaml (written by
` + "`dstack config`" + ` or by ` + "`dstack server`" + ` on its first start), or from the
environment variables DSTACK_SERVER and DSTACK_TOKEN, which win over the file.
DSTACK_CONFIG names another config file.`,
		Version:       version.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetIn(e.Stdin)
	root.SetOut(e.Stdout)
	root.SetErr(e.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err: err} })
	root.AddCommand(
		e.configCmd(),
		e.initCmd(),
		e.runCmd(),
		e.psCmd(),
		e.usageCmd(),
		e.logsCmd(),
		e.stopCmd(),
		e.rmCmd(),
		e.artifactsCmd(),
		e.tagCmd(),
		e.tagsCmd(),
		e.runnersCmd(),
		e.onDemandCmd(),
		e.autoscaleCmd(),
		e.awsCmd(),
		e.kubernetesCmd(),
		e.usersCmd(),
		e.tokensCmd(),
		e.auditCmd(),
		e.versionCmd(),
	)
	// Every Use line here spells out its flags; cobra's " [flags]" would
	// repeat them.
	var noFlagsInUse func(*cobra.Command)
	noFlagsInUse = func(c *cobra.Command) {
		c.DisableFlagsInUseLine = true
		for _, sub := range c.Commands() {
			noFlagsInUse(sub)
		}
	}
	noFlagsInUse(root)
	for _, mk := range extra {
		root.AddCommand(mk(e))
	}
	return root
}

// wrapRun marks *started when the code of any command in the tree begins.
func wrapRun(c *cobra.Command, started *bool) {
	if f := c.RunE; f != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			*started = true
			return f(cmd, args)
		}
	} else if f := c.Run; f != nil {
		c.Run = func(cmd *cobra.Command, args []string) {
			*started = true
			f(cmd, args)
		}
	}
	for _, sub := range c.Commands() {
		wrapRun(sub, started)
	}
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ err error }

func (u *usageError) Error() string { return u.err.Error() }
func (u *usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// exitError ends a command with a given code, and a message unless empty.
type exitError struct {
	code int
	msg  string
}

func (x *exitError) Error() string { return fmt.Sprintf("exit %d: %s", x.code, x.msg) }

// Argument validators that report usage errors with a hint.

func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return usagef("missing %s: %s", strings.Join(names[len(args):], " and "), cmd.UseLine())
		case len(args) > len(names):
			return usagef("unexpected argument %q: %s", args[len(names)], cmd.UseLine())
		}
		return nil
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q: %s", args[0], cmd.UseLine())
	}
	return nil
}

// settings is where the CLI talks to, and where each value came from.
type settings struct {
	ConfigPath   string
	Server       string
	ServerSource string
	Token        string
	TokenSource  string
}

// configPath is DSTACK_CONFIG, else ~/.dstack/config.yaml.
func (e *Env) configPath() (string, error) {
	return userconfig.PathFromEnv(e.Getenv)
}

// settings resolves the server and token: the config file, then the
// environment.
func (e *Env) settings() (*settings, error) {
	path, err := e.configPath()
	if err != nil {
		return nil, err
	}
	cfg, err := userconfig.Load(path)
	if err != nil {
		return nil, err
	}
	s := &settings{ConfigPath: path}
	if cfg.Server != "" {
		s.Server, s.ServerSource = cfg.Server, path
	}
	if cfg.Token != "" {
		s.Token, s.TokenSource = cfg.Token, path
	}
	if v := e.Getenv("DSTACK_SERVER"); v != "" {
		s.Server, s.ServerSource = v, "DSTACK_SERVER"
	}
	if v := e.Getenv("DSTACK_TOKEN"); v != "" {
		s.Token, s.TokenSource = v, "DSTACK_TOKEN"
	}
	return s, nil
}

// apiClient is a client of the configured server, with where its
// settings came from for error messages.
type apiClient struct {
	*client.Client
	s *settings
}

// client returns a client of the configured server, or an error that says
// how to configure one.
func (e *Env) client() (*apiClient, error) {
	s, err := e.settings()
	if err != nil {
		return nil, err
	}
	if s.Server == "" {
		return nil, errors.New("no dstack server is configured: run `dstack config --server URL --token TOKEN`, or start one with `dstack server` (it configures this CLI on its first start)")
	}
	if s.Token == "" {
		return nil, fmt.Errorf("no token is configured for the server %s: run `dstack config --token TOKEN` with the token `dstack server` printed on its first start", s.Server)
	}
	c, err := client.New(s.Server, s.Token, e.ClientOptions...)
	if err != nil {
		return nil, fmt.Errorf("%w (from %s): fix it with `dstack config --server URL`", err, s.ServerSource)
	}
	return &apiClient{Client: c, s: s}, nil
}

// explain turns an API error into one that says what to do next.
func (c *apiClient) explain(err error) error {
	if err == nil {
		return nil
	}
	if client.IsCode(err, api.CodeUnauthenticated) {
		fix := "set a valid one with `dstack config --token TOKEN`"
		if c.s.TokenSource == "DSTACK_TOKEN" {
			fix = "set a valid one in DSTACK_TOKEN, or unset it and run `dstack config --token TOKEN`"
		}
		return fmt.Errorf("the server %s refused the token from %s (%v): %s", c.s.Server, c.s.TokenSource, err, fix) //nolint:errorlint // explained here, not passed on
	}
	if client.IsCode(err, api.CodeForbidden) {
		return fmt.Errorf("the server %s does not allow this to the token from %s: %w", c.s.Server, c.s.TokenSource, err)
	}
	return err
}

// runErr explains an error about the run name, such as a missing run.
func (c *apiClient) runErr(name string, err error) error {
	if client.IsCode(err, api.CodeNotFound) {
		return fmt.Errorf("there is no run %q: `dstack ps -a` lists your runs", name)
	}
	return c.explain(err)
}
