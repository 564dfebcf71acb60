package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Shell runs the commands as one script with /bin/sh -c ("set -e" first, so
// the first failing command ends it), or with bash when the provider is
// "bash" and bash is installed. The script runs in WorkDir, in a process
// group of its own.
type Shell struct {
	// OutputDrain bounds how long Wait waits for the output after the
	// script's process group was killed, when a process that left the group
	// still holds the output open (only when Output is not an *os.File).
	// Zero means 2s.
	OutputDrain time.Duration
}

// Name implements Executor.
func (Shell) Name() string { return "shell" }

// Start implements Executor.
func (s Shell) Start(ctx context.Context, spec Spec) (Process, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("shell executor: %w", err)
	}
	shell := "/bin/sh"
	if spec.Provider == "bash" {
		if p, err := exec.LookPath("bash"); err == nil {
			shell = p
		}
	}
	script := "set -e\n" + strings.Join(spec.Commands, "\n") + "\n"
	// The process must not end with the caller's context: stopping is the
	// job's decision, through Terminate and Kill.
	cmd := exec.CommandContext(context.WithoutCancel(ctx), shell, "-c", script)
	cmd.Dir = spec.WorkDir
	cmd.Env = Environ(os.Environ(), spec)
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &shellProcess{cmd: cmd, done: make(chan struct{}), drain: s.OutputDrain}
	if p.drain == 0 {
		p.drain = 2 * time.Second
	}
	// One file for both streams keeps their order. A writer that is not a
	// file gets a pipe of ours, copied by one goroutine.
	if f, ok := spec.Output.(*os.File); ok {
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("output pipe: %w", err)
		}
		cmd.Stdout, cmd.Stderr = w, w
		p.pipe = r
		p.copied = make(chan error, 1)
		defer w.Close() // the child has its copy
	}
	if err := cmd.Start(); err != nil {
		if p.pipe != nil {
			p.pipe.Close()
		}
		return nil, fmt.Errorf("start %s: %w", shell, err)
	}
	p.pgid = cmd.Process.Pid
	if p.pipe != nil {
		go p.copyOutput(spec.Output)
	}
	go p.wait()
	return p, nil
}

// Environ is base with spec.Env and the DSTACK_* variables of the job
// applied, later values winning; the result is sorted.
func Environ(base []string, spec Spec) []string {
	m := make(map[string]string, len(base)+len(spec.Env)+3)
	for _, kv := range base {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	for k, v := range spec.Env {
		m[k] = v
	}
	m["DSTACK_RUN_NAME"] = spec.RunName
	m["DSTACK_JOB_ID"] = spec.JobID
	m["DSTACK_WORKFLOW"] = spec.Workflow
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

type shellProcess struct {
	cmd   *exec.Cmd
	pgid  int
	drain time.Duration

	pipe   *os.File   // read end of the output pipe, nil when Output is a file
	copied chan error // the copy's end, when pipe is set

	done   chan struct{}
	result Result

	mu     sync.Mutex
	exited bool // the group leader was reaped: its pid may be reused
}

// copyBuf is large enough that a fast writer is copied in few system calls.
const copyBuf = 256 << 10

func (p *shellProcess) copyOutput(w io.Writer) {
	buf := make([]byte, copyBuf)
	var err error
	for {
		n, rerr := p.pipe.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				err = fmt.Errorf("write output: %w", werr)
				// Keep draining so the process does not block on a full pipe.
				_, _ = io.Copy(io.Discard, p.pipe)
				break
			}
		}
		if rerr != nil {
			break
		}
	}
	p.copied <- err
}

func (p *shellProcess) wait() {
	defer close(p.done)
	err := p.cmd.Wait()
	// Whatever the script left running in its group goes with it. The
	// group's id stays reserved while any member lives, so this cannot hit
	// an unrelated process.
	p.mu.Lock()
	_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
	p.exited = true
	p.mu.Unlock()

	var outErr error
	if p.pipe != nil {
		// A process that left the group (setsid) may still hold the pipe:
		// wait a little for it, then cut it off.
		t := time.NewTimer(p.drain)
		select {
		case outErr = <-p.copied:
			t.Stop()
		case <-t.C:
			p.pipe.Close()
			outErr = <-p.copied
		}
		p.pipe.Close()
	}

	st := p.cmd.ProcessState
	if st == nil {
		p.result = Result{ExitCode: -1, Err: fmt.Errorf("wait: %w", err)}
		return
	}
	p.result = resultOf(st)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		p.result.Err = fmt.Errorf("wait: %w", err)
	}
	p.result.OutputErr = outErr
}

func resultOf(st *os.ProcessState) Result {
	ws, ok := st.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return Result{ExitCode: 128 + int(ws.Signal()), Signal: ws.Signal().String()}
	}
	return Result{ExitCode: st.ExitCode()}
}

func (p *shellProcess) Wait() Result {
	<-p.done
	return p.result
}

func (p *shellProcess) Terminate() error { return p.signal(syscall.SIGTERM) }

func (p *shellProcess) Kill() error { return p.signal(syscall.SIGKILL) }

func (p *shellProcess) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return nil
	}
	if err := syscall.Kill(-p.pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s to process group %d: %w", sig, p.pgid, err)
	}
	return nil
}
