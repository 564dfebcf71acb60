package executor

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dstackai/dstack/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fixture struct {
	dir string
	out *syncBuffer
}

func setup(t testing.TB) fixture {
	t.Helper()
	return fixture{dir: t.TempDir(), out: &syncBuffer{}}
}

func (f fixture) spec(commands ...string) Spec {
	return Spec{JobID: "job-1", RunName: "run-1", Workflow: "train", Commands: commands, WorkDir: f.dir, Output: f.out}
}

func (f fixture) start(t *testing.T, spec Spec) Process {
	t.Helper()
	p, err := Shell{OutputDrain: 300 * time.Millisecond}.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill(); p.Wait() })
	return p
}

func TestShellExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		commands []string
		wantCode int
		wantOut  string
	}{
		{"success", []string{"echo hello"}, 0, "hello\n"},
		{"exit code", []string{"exit 3"}, 3, ""},
		{"set -e stops at the first failure", []string{"echo one", "false", "echo two"}, 1, "one\n"},
		{"last command decides", []string{"true", "exit 42"}, 42, ""},
		{"command not found", []string{"no-such-command-dstack"}, 127, ""},
		{"multi-line command", []string{"for i in 1 2 3; do\n  echo $i\ndone"}, 0, "1\n2\n3\n"},
		{"working directory", []string{"pwd -P > where", "test -s where"}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			res := f.start(t, f.spec(tt.commands...)).Wait()
			if res.Err != nil || res.ExitCode != tt.wantCode {
				t.Fatalf("result %+v, want exit code %d (output %q)", res, tt.wantCode, f.out.String())
			}
			if res.Success() != (tt.wantCode == 0) {
				t.Errorf("Success() = %v for exit code %d", res.Success(), tt.wantCode)
			}
			if tt.wantOut != "" && f.out.String() != tt.wantOut {
				t.Errorf("output %q, want %q", f.out.String(), tt.wantOut)
			}
		})
	}
}

func TestShellEnv(t *testing.T) {
	t.Parallel()
	f := setup(t)
	spec := f.spec(`echo "$DSTACK_RUN_NAME $DSTACK_JOB_ID $DSTACK_WORKFLOW $EPOCHS $DSTACK_WORKFLOW_OVERRIDE"`, `test -n "$PATH"`)
	spec.Env = map[string]string{"EPOCHS": "20", "DSTACK_WORKFLOW_OVERRIDE": "x y", "DSTACK_JOB_ID": "ignored"}
	res := f.start(t, spec).Wait()
	if !res.Success() {
		t.Fatalf("result %+v, output %q", res, f.out.String())
	}
	if got, want := f.out.String(), "run-1 job-1 train 20 x y\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

func TestShellProvider(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Skip("no bash on this machine")
	}
	tests := []struct {
		provider string
		wantBash bool
	}{
		{"bash", true},
		{"docker", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.provider, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			spec := f.spec(`if [ -n "$BASH_VERSION" ]; then echo bash; else echo sh; fi`)
			spec.Provider = tt.provider
			if res := f.start(t, spec).Wait(); !res.Success() {
				t.Fatalf("result %+v", res)
			}
			got := strings.TrimSpace(f.out.String())
			// /bin/sh may itself be bash; only the bash case is certain.
			if tt.wantBash && got != "bash" {
				t.Errorf("provider %q ran %s, want bash", tt.provider, got)
			}
		})
	}
}

func TestShellOutputOrder(t *testing.T) {
	t.Parallel()
	commands := []string{"for i in $(seq 1 200); do echo out$i; echo err$i >&2; done"}
	var want strings.Builder
	for i := 1; i <= 200; i++ {
		want.WriteString("out" + strconv.Itoa(i) + "\nerr" + strconv.Itoa(i) + "\n")
	}
	tests := []struct {
		name string
		file bool
	}{
		{"writer", false},
		{"file", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			spec := f.spec(commands...)
			var file *os.File
			if tt.file {
				var err error
				file, err = os.Create(filepath.Join(t.TempDir(), "out.log"))
				if err != nil {
					t.Fatal(err)
				}
				defer file.Close()
				spec.Output = file
			}
			if res := f.start(t, spec).Wait(); !res.Success() {
				t.Fatalf("result %+v", res)
			}
			got := f.out.String()
			if tt.file {
				b, err := os.ReadFile(file.Name())
				if err != nil {
					t.Fatal(err)
				}
				got = string(b)
			}
			if got != want.String() {
				t.Errorf("output out of order:\n%.200s...", got)
			}
		})
	}
}

// alive reports whether pid runs (a zombie counts as dead).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestShellStop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		commands []string
		stop     func(Process) error
		wantCode int
	}{
		{"terminate", []string{"sleep 1000 &", "echo $! > child.pid", "echo ready", "wait"}, Process.Terminate, 128 + int(syscall.SIGTERM)},
		{"kill", []string{"sleep 1000 &", "echo $! > child.pid", "echo ready", "wait"}, Process.Kill, 128 + int(syscall.SIGKILL)},
		{"terminate with a trap", []string{"trap 'echo cleaning up; exit 7' TERM", "sleep 1000 &", "echo $! > child.pid", "echo ready", "wait"}, Process.Terminate, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			p := f.start(t, f.spec(tt.commands...))
			testutil.Eventually(t, "the script to start", func() bool { return strings.Contains(f.out.String(), "ready") })
			b, err := os.ReadFile(filepath.Join(f.dir, "child.pid"))
			if err != nil {
				t.Fatal(err)
			}
			child, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.stop(p); err != nil {
				t.Fatal(err)
			}
			res := p.Wait()
			if res.ExitCode != tt.wantCode {
				t.Errorf("result %+v, want exit code %d", res, tt.wantCode)
			}
			testutil.Eventually(t, "the background child to die", func() bool { return !alive(child) })
			// Signalling an ended process is harmless.
			if err := p.Terminate(); err != nil {
				t.Errorf("Terminate after the end: %v", err)
			}
			if p.Wait() != res {
				t.Errorf("Wait is not stable")
			}
		})
	}
}

func TestShellLeftoverProcesses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		command string
	}{
		// Killed with the group when the script ends.
		{"background child", "sleep 1000 &"},
		// Escapes the group and holds the output: cut off after the drain.
		{"own session", "setsid sleep 1000 &"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := os.Stat("/usr/bin/setsid"); err != nil && strings.Contains(tt.command, "setsid") {
				t.Skip("no setsid")
			}
			f := setup(t)
			start := time.Now()
			res := f.start(t, f.spec(tt.command, "echo done")).Wait()
			if !res.Success() {
				t.Fatalf("result %+v", res)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Wait took %v", d)
			}
			if f.out.String() != "done\n" {
				t.Errorf("output %q", f.out.String())
			}
		})
	}
}

func TestSpecValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec Spec
	}{
		{"no commands", Spec{WorkDir: "/tmp", Output: &bytes.Buffer{}}},
		{"no dir", Spec{Commands: []string{"true"}, Output: &bytes.Buffer{}}},
		{"no output", Spec{Commands: []string{"true"}, WorkDir: "/tmp"}},
	}
	for _, tt := range tests {
		if _, err := (Shell{}).Start(context.Background(), tt.spec); err == nil {
			t.Errorf("%s: Start succeeded", tt.name)
		}
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestShellOutputError(t *testing.T) {
	t.Parallel()
	f := setup(t)
	spec := f.spec("head -c 1000000 /dev/zero", "exit 0")
	spec.Output = failingWriter{}
	res := f.start(t, spec).Wait()
	if !res.Success() || res.OutputErr == nil {
		t.Errorf("result %+v: want success with an output error", res)
	}
}
