package cli_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/cli"
)

// harness runs dstack commands in-process, each in a fresh Env over the
// same project directory, config file and environment.
type harness struct {
	t          *testing.T
	dir        string            // the project's directory, the commands' working directory
	configPath string            // DSTACK_CONFIG
	vars       map[string]string // the environment
	now        time.Time
	tty        bool
	// interrupt, when set, replaces Ctrl-C: the context it returns ends
	// when the test says so.
	interrupt func(ctx context.Context) (context.Context, context.CancelFunc)
	// stderr is the error output of the command running now.
	stderr *lockedBuffer
}

type result struct {
	code   int
	stdout string
	stderr string
}

func setup(t *testing.T) *harness {
	t.Helper()
	h := &harness{
		t:          t,
		dir:        t.TempDir(),
		configPath: filepath.Join(t.TempDir(), ".dstack", "config.yaml"),
		vars:       map[string]string{},
		now:        time.Now(),
	}
	h.vars["DSTACK_CONFIG"] = h.configPath
	return h
}

// lockedBuffer is a buffer safe to read while a command writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (h *harness) env(stdout, stderr io.Writer) *cli.Env {
	return &cli.Env{
		Stdin:      bytes.NewReader(nil),
		Stdout:     stdout,
		Stderr:     stderr,
		Getenv:     func(k string) string { return h.vars[k] },
		Dir:        h.dir,
		Now:        func() time.Time { return h.now },
		IsTerminal: func(io.Writer) bool { return h.tty },
		Interrupt: func(ctx context.Context) (context.Context, context.CancelFunc) {
			if h.interrupt != nil {
				return h.interrupt(ctx)
			}
			return context.WithCancel(ctx)
		},
	}
}

// run runs one command line and returns its exit code and output.
func (h *harness) run(args ...string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr lockedBuffer
	h.stderr = &stderr
	code := h.env(&stdout, &stderr).Run(ctx, args)
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	h.t.Logf("dstack %q -> %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, r.stderr)
	return r
}

// interruptWhen makes the next commands see Ctrl-C once their error output
// contains s.
func (h *harness) interruptWhen(s string) {
	h.interrupt = func(ctx context.Context) (context.Context, context.CancelFunc) {
		ictx, cancel := context.WithCancel(ctx)
		out := h.stderr
		go func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for !strings.Contains(out.String(), s) {
				select {
				case <-ictx.Done():
					return
				case <-tick.C:
				}
			}
			cancel()
		}()
		return ictx, cancel
	}
}

// writeFile writes a file under the project's directory.
func (h *harness) writeFile(rel, content string) {
	h.t.Helper()
	p := filepath.Join(h.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

const testWorkflows = `workflows:
  - name: prepare
    provider: bash
    commands:
      - echo preparing
    artifacts: [data]
  - name: train
    provider: bash
    depends-on: [prepare]
    variables:
      epochs: 10
      lr: 0.1
    commands:
      - echo training for ${{ epochs }} epochs at ${{ lr }}
    artifacts: [model]
  - name: hello
    provider: bash
    commands: [echo hello]
`
