// Package initproc lets a program serve as a container's init process.
//
// The first process of a container (PID 1) inherits every process whose
// parent dies, and must reap each when it exits, or it stays a zombie until
// the container ends. dstack-runner is PID 1 of a Kubernetes runner Pod,
// which lives for many jobs, and a job that leaves a background process
// behind would leave a zombie each time, until the Pod's process limit is
// reached. (The local backend's containers get Docker's own init instead.)
//
// Run starts the program again as its only child and, while it runs,
// forwards it the signals the container gets and reaps every process handed
// to PID 1, as tini does. The child, a process like any other, runs and
// waits for its own children as usual; a process that reaped orphans itself
// could take the exit status of a child it was waiting for.
package initproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// envChild marks the child that Run started, so that it does not start
// another: in a new PID namespace the child is not PID 1, but a program may
// also be PID 1 of a namespace it made.
const envChild = "DSTACK_INIT_CHILD"

// Needed reports whether the process is PID 1 and not already Run's child.
func Needed() bool { return os.Getpid() == 1 && os.Getenv(envChild) == "" }

// Run runs the program again, with args (os.Args without the program's
// name), as its child and returns the child's exit code: 128 + the signal
// when a signal ended it. It returns 1 when the child cannot start, saying
// why on stderr.
func Run(args []string) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "init: find this program to run it as PID 1's child: %v\n", err)
		return 1
	}
	// The child lives as long as this process: no context ends it.
	cmd := exec.CommandContext(context.Background(), exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envChild+"=1")
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "init: start %s: %v\n", exe, err)
		return 1
	}
	child := cmd.Process.Pid
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			// No child left, which cannot be while the child runs.
			fmt.Fprintf(os.Stderr, "init: wait: %v\n", err)
			return 1
		}
		if pid != child {
			continue // an orphan, reaped
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// forwarded are the signals passed on to the child: those a container's
// runtime or a user sends to stop, reload or query it.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}
