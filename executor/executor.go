// Package executor runs a job's commands: the one piece of a runner that
// knows how a process is started, signalled and waited for.
//
// An Executor starts a Process from a Spec. The shell executor (Shell) runs
// the commands as one script in the job's working directory, in a process
// group of its own so that a stop reaches every process the script started.
// The Docker executor (Docker) runs them in a container of the workflow's
// image, with the working directory bind-mounted at /workflow; see docker.go
// for what it does with each provider.
package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Executor starts jobs' processes.
type Executor interface {
	// Name is how runners report the executor ("shell", "docker").
	Name() string
	// Start starts the commands of spec and returns at once. The process
	// outlives ctx's cancellation only in the sense that cancelling ctx
	// does not stop it: use the Process's Terminate and Kill.
	Start(ctx context.Context, spec Spec) (Process, error)
}

// Spec is what to run.
type Spec struct {
	JobID    string
	RunName  string
	Workflow string
	// Provider is the workflow's provider (bash | docker | python): the shell
	// executor runs the script with bash when it is "bash".
	Provider string
	// Image is the container image; the shell executor ignores it.
	Image    string
	Commands []string
	// Env is added to the runner's environment, then DSTACK_RUN_NAME,
	// DSTACK_JOB_ID and DSTACK_WORKFLOW.
	Env map[string]string
	// WorkDir is the job's working directory; it must exist.
	WorkDir string
	// Output receives stdout and stderr merged, in the order they were
	// written. At most one Write runs at a time. An *os.File is handed to
	// the process as is.
	Output io.Writer
	// Resources are the job's limits; the shell executor ignores them.
	Resources Resources
}

// Resources are what a job may use of the machine. Zero means no limit.
type Resources struct {
	CPUs       int
	MemoryMiB  int64
	ShmSizeMiB int64
	// GPUs is how many GPUs the job gets; -1 means all of them.
	GPUs int
}

// Validate says what is missing from spec.
func (s Spec) Validate() error {
	switch {
	case len(s.Commands) == 0:
		return errors.New("the job has no commands")
	case s.WorkDir == "":
		return errors.New("no working directory")
	case s.Output == nil:
		return errors.New("no output writer")
	}
	return nil
}

// Process is a started job.
type Process interface {
	// Wait blocks until the process has ended and its output is written,
	// then returns how it ended. It may be called any number of times, from
	// any goroutine; every call returns the same Result.
	Wait() Result
	// Terminate asks every process of the job to end (SIGTERM).
	Terminate() error
	// Kill ends every process of the job at once (SIGKILL).
	Kill() error
}

// Result is how a process ended.
type Result struct {
	// ExitCode is the exit status, or 128+N when killed by signal N (as a
	// shell reports it).
	ExitCode int
	// Signal is the signal that ended the process, if one did.
	Signal string
	// Err is set when the process could not be waited for; ExitCode is then
	// -1.
	Err error
	// OutputErr is set when some output could not be written to the
	// Output writer; the rest of the result stands.
	OutputErr error
}

// Success reports whether the process exited with status 0.
func (r Result) Success() bool { return r.Err == nil && r.ExitCode == 0 }

// Reason describes a failed result for a job's status ("exit status 3").
func (r Result) Reason() string {
	switch {
	case r.Err != nil:
		return r.Err.Error()
	case r.Signal != "":
		return fmt.Sprintf("exit status %d (killed by %s)", r.ExitCode, r.Signal)
	}
	return fmt.Sprintf("exit status %d", r.ExitCode)
}

// Cleaner is an executor that can remove what jobs of an earlier life of
// the runner left behind (a crash leaves containers). A runner calls Cleanup
// at start, before it takes a job.
type Cleaner interface {
	Cleanup(ctx context.Context) error
}

// Names are the executors New knows.
var Names = []string{"auto", "shell", "docker"}

// CheckName says whether New knows name, without connecting to anything.
func CheckName(name string) error {
	switch name {
	case "", "auto", "shell", "docker":
		return nil
	}
	return fmt.Errorf("unknown executor %q: use auto, shell or docker", name)
}

// Options configure the executors New makes.
type Options struct {
	// BashImage is the image bash jobs run in on the Docker executor. Empty
	// means they run with the shell executor, on the host.
	BashImage string
	// Owner tells the containers of this runner from those of other
	// runners on the same Docker Engine: Cleanup removes only its own.
	// Runners use their data directory.
	Owner string
	// User is the uid:gid containers run as; empty means the runner's own,
	// so that what a job writes in its working directory is the runner's.
	User string
	// DockerHost overrides DOCKER_HOST (tests).
	DockerHost string
	// PingTimeout bounds how long New waits for the Docker Engine to
	// answer; zero means 5s.
	PingTimeout time.Duration
	Logger      *slog.Logger
}

// New returns the executor of a name: "shell"; "docker", which fails when
// the Docker Engine (DOCKER_HOST, else the local socket) does not answer a
// ping; or "auto" (and ""), which is docker when the engine answers and
// shell otherwise.
func New(ctx context.Context, name string, opts Options) (Executor, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if name == "shell" {
		return Shell{}, nil
	}
	d, err := NewDocker(ctx, opts)
	if err == nil {
		return d, nil
	}
	if name == "docker" {
		return nil, err
	}
	if opts.Logger != nil {
		opts.Logger.Info("no Docker Engine: jobs run with the shell executor", "err", err)
	}
	return Shell{}, nil
}
