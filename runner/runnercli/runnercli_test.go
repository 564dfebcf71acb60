package runnercli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	dir    string
	config string
	env    map[string]string
}

func setup(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	return &fixture{dir: dir, config: filepath.Join(dir, "config.yaml"), env: map[string]string{}}
}

// run runs a command line and returns its exit code, stdout and stderr.
func (f *fixture) run(ctx context.Context, args ...string) (int, string, string) {
	var stdout, stderr syncBuffer
	code := f.runTo(ctx, &stdout, &stderr, args...)
	return code, stdout.String(), stderr.String()
}

func (f *fixture) runTo(ctx context.Context, stdout, stderr *syncBuffer, args ...string) int {
	env := Env{Stdout: stdout, Stderr: stderr, Getenv: func(k string) string { return f.env[k] }, Signals: ctx}
	return Run(context.Background(), env, append([]string{"--config", f.config}, args...))
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestConfigCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     map[string]string // keys of the written file
		wantErr  string
	}{
		{"token and server", []string{"config", "--token", "T1", "--server", "https://dstack.example.org"}, ExitOK,
			map[string]string{"server": "https://dstack.example.org", "token": "T1"}, ""},
		{"default server", []string{"config", "--token", "T1", "--name", "box"}, ExitOK,
			map[string]string{"server": "http://127.0.0.1:3000", "token": "T1", "name": "box"}, ""},
		{"shared", []string{"config", "--token", "T1", "--shared"}, ExitOK,
			map[string]string{"token": "T1", "shared": "true"}, ""},
		{"no token", []string{"config", "--server", "http://h:3000"}, ExitUsage, nil, "--token is required"},
		{"bad URL", []string{"config", "--token", "T", "--server", "localhost:3000"}, ExitError, nil, "not an http(s) URL"},
		{"unknown flag", []string{"config", "--tokn", "T"}, ExitUsage, nil, "unknown flag"},
		{"executor", []string{"config", "--token", "T1", "--executor", "docker", "--bash-image", "ubuntu:24.04"}, ExitOK,
			map[string]string{"token": "T1", "executor": "docker", "bash_image": "ubuntu:24.04"}, ""},
		{"default executor stays implicit", []string{"config", "--token", "T1", "--executor", "auto"}, ExitOK,
			map[string]string{"token": "T1", "executor": ""}, ""},
		{"bad executor", []string{"config", "--token", "T1", "--executor", "podman"}, ExitUsage, nil, "unknown executor"},
		{"work directory", []string{"config", "--token", "T1", "--work-dir", "/srv/dstack-work"}, ExitOK,
			map[string]string{"token": "T1", "work_dir": "/srv/dstack-work"}, ""},
		{"work directory in the data directory", []string{"config", "--token", "T1", "--data-dir", "/srv/runner", "--work-dir", "/srv/runner/jobs"}, ExitError, nil, "overlap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			code, stdout, stderr := f.run(context.Background(), tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d; stderr %q", code, tt.wantCode, stderr)
			}
			if tt.wantErr != "" && !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr %q, want it to mention %q", stderr, tt.wantErr)
			}
			if tt.want == nil {
				if _, err := os.Stat(f.config); err == nil {
					t.Errorf("config written on failure")
				}
				return
			}
			if !strings.Contains(stdout, "dstack-runner start") {
				t.Errorf("stdout %q does not say what to do next", stdout)
			}
			b, err := os.ReadFile(f.config)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]string
			if err := yaml.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q (file %s)", k, got[k], v, b)
				}
			}
		})
	}
}

func TestConfigKeepsServer(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if code, _, stderr := f.run(context.Background(), "config", "--token", "T1", "--server", "http://10.1.1.1:3000"); code != 0 {
		t.Fatal(stderr)
	}
	if code, _, stderr := f.run(context.Background(), "config", "--token", "T2"); code != 0 {
		t.Fatal(stderr)
	}
	b, _ := os.ReadFile(f.config)
	if !strings.Contains(string(b), "http://10.1.1.1:3000") || !strings.Contains(string(b), "T2") {
		t.Errorf("config %s", b)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	code, stdout, _ := setup(t).run(context.Background(), "version")
	if code != 0 || !strings.HasPrefix(stdout, "dstack-runner ") {
		t.Errorf("version: %d %q", code, stdout)
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		prepare func(f *fixture)
		args    []string
		wantErr string
	}{
		{"no config", func(*fixture) {}, nil, "dstack-runner config --token"},
		{"bad executor", func(f *fixture) { f.run(context.Background(), "config", "--token", "T") }, []string{"--executor", "podman"}, "unknown executor"},
		{"bad server in env", func(f *fixture) {
			f.run(context.Background(), "config", "--token", "T")
			f.env["DSTACK_SERVER"] = "nope"
		}, nil, "--server"},
		{"bad log level", func(f *fixture) { f.run(context.Background(), "config", "--token", "T") }, []string{"--log-level", "loud"}, "--log-level"},
		{"work directory inside the data directory", func(f *fixture) { f.run(context.Background(), "config", "--token", "T") },
			[]string{"--work-dir", "jobs-in-data"}, "overlap"},
		{"work directory is the data directory", func(f *fixture) { f.run(context.Background(), "config", "--token", "T") },
			[]string{"--work-dir", "."}, "overlap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			tt.prepare(f)
			args := tt.args
			if len(args) == 2 && args[0] == "--work-dir" {
				args = []string{"--work-dir", filepath.Join(f.dir, args[1])}
			}
			code, _, stderr := f.run(context.Background(), append([]string{"start", "--data-dir", f.dir}, args...)...)
			if code == 0 || !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("exit code %d, stderr %q; want an error mentioning %q", code, stderr, tt.wantErr)
			}
		})
	}
}

// fakeServer answers a runner's registration, heartbeats and claims (never
// with a job).
func fakeServer(t *testing.T, token string) (*httptest.Server, *sync.Map) {
	t.Helper()
	var seen sync.Map
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/runners/register", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: api.CodeUnauthenticated, Message: "bad token"}})
			return
		}
		var req api.RunnerRegisterRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		seen.Store("name", req.Name)
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(api.RunnerRegisterResponse{RunnerID: "r1", Token: "rt", ExpiresAt: time.Now().Add(time.Hour), HeartbeatInterval: api.Duration(time.Second)})
	})
	mux.HandleFunc("POST /api/v1/runner/heartbeat", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /api/v1/runner/claim", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(time.Second):
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &seen
}

func TestStartRegistersAndStops(t *testing.T) {
	t.Parallel()
	srv, seen := fakeServer(t, "user-token")
	f := setup(t)
	if code, _, stderr := f.run(context.Background(), "config", "--token", "user-token", "--server", srv.URL, "--name", "from-file"); code != 0 {
		t.Fatal(stderr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- f.runTo(ctx, &stdout, &stderr, "start", "--data-dir", f.dir, "--name", "from-flag") }()
	testutil.EventuallyErr(t, "the runner to say it is registered", func() error {
		if !strings.Contains(stdout.String(), "waiting for jobs") {
			return fmt.Errorf("stderr:\n%s", stderr.String())
		}
		return nil
	})
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "Runner from-flag registered with "+srv.URL) {
		t.Errorf("stdout %q", stdout.String())
	}
	if name, _ := seen.Load("name"); name != "from-flag" {
		t.Errorf("registered as %v, want from-flag", name)
	}
	st, err := os.Stat(filepath.Join(f.dir, "state.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v %v", st, err)
	}
}

// TestStartMakesItsFilesPrivate: a data directory the user made (0755 by
// the usual umask), with a config and a state readable by all, is made
// private at start; the jobs' directories are apart from it.
func TestStartMakesItsFilesPrivate(t *testing.T) {
	t.Parallel()
	srv, _ := fakeServer(t, "user-token")
	f := setup(t)
	if code, _, stderr := f.run(context.Background(), "config", "--token", "user-token", "--server", srv.URL); code != 0 {
		t.Fatal(stderr)
	}
	state := filepath.Join(f.dir, "state.json")
	if err := os.WriteFile(state, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	for p, m := range map[string]os.FileMode{f.dir: 0o755, f.config: 0o644, state: 0o644} {
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- f.runTo(ctx, &stdout, &stderr, "start", "--data-dir", f.dir) }()
	stop := sync.OnceValue(func() int { cancel(); return <-done })
	defer stop()
	testutil.EventuallyErr(t, "the runner to say it is registered", func() error {
		if !strings.Contains(stdout.String(), "waiting for jobs") {
			return fmt.Errorf("stderr:\n%s", stderr.String())
		}
		return nil
	})
	if code := stop(); code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	work := f.dir + "-work"
	for p, want := range map[string]os.FileMode{f.dir: 0o700, f.config: 0o600, state: 0o600, work: 0o700} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, %v; want %v", p, fi, err, want)
		}
	}
	for _, what := range []string{"data directory was open", "runner config was readable", "runner state was readable"} {
		if !strings.Contains(stderr.String(), what) {
			t.Errorf("stderr does not say %q:\n%s", what, stderr.String())
		}
	}
}

func TestStartRefusedToken(t *testing.T) {
	t.Parallel()
	srv, _ := fakeServer(t, "user-token")
	f := setup(t)
	f.run(context.Background(), "config", "--token", "wrong", "--server", srv.URL)
	code, _, stderr := f.run(context.Background(), "start", "--data-dir", f.dir)
	if code != ExitError || !strings.Contains(stderr, "dstack-runner config --token") {
		t.Errorf("exit code %d, stderr %q", code, stderr)
	}
}

func TestStartExecutor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		config []string // extra flags of `config`
		start  []string // extra flags of `start`
		want   string
	}{
		{"flag", nil, []string{"--executor", "shell"}, "; shell executor)"},
		{"config file", []string{"--executor", "shell"}, nil, "; shell executor)"},
		{"flag over the config file", []string{"--executor", "docker"}, []string{"--executor", "shell"}, "; shell executor)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := fakeServer(t, "user-token")
			f := setup(t)
			if code, _, stderr := f.run(context.Background(), append([]string{"config", "--token", "user-token", "--server", srv.URL}, tt.config...)...); code != 0 {
				t.Fatal(stderr)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var stdout, stderr syncBuffer
			done := make(chan int, 1)
			go func() {
				done <- f.runTo(ctx, &stdout, &stderr, append([]string{"start", "--data-dir", f.dir}, tt.start...)...)
			}()
			stop := sync.OnceValue(func() int { cancel(); return <-done })
			defer stop()
			testutil.EventuallyErr(t, "the runner to say it waits for jobs", func() error {
				if !strings.Contains(stdout.String(), "waiting for jobs") {
					return fmt.Errorf("stderr:\n%s", stderr.String())
				}
				return nil
			})
			if code := stop(); code != 0 || !strings.Contains(stdout.String(), tt.want) {
				t.Errorf("exit code %d, stdout %q, want it to say %q; stderr:\n%s", code, stdout.String(), tt.want, stderr.String())
			}
		})
	}
}

// TestCopy: `copy PATH` writes this very binary at PATH, executable, making
// its directory; without exactly one argument it is a usage error.
func TestCopy(t *testing.T) {
	t.Parallel()
	f := setup(t)
	dst := filepath.Join(t.TempDir(), "bin", "dstack-runner")
	code, stdout, stderr := f.run(context.Background(), "copy", dst)
	if code != ExitOK {
		t.Fatalf("copy exit %d, stderr %s", code, stderr)
	}
	if !strings.Contains(stdout, dst) {
		t.Errorf("stdout %q does not name %s", stdout, dst)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the copy (%d bytes) is not this binary (%d bytes)", len(got), len(want))
	}
	if st, err := os.Stat(dst); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("the copy's mode = %v, %v; want 0755", st.Mode(), err)
	}
	if code, _, stderr := f.run(context.Background(), "copy"); code != ExitUsage || !strings.Contains(stderr, "one argument") {
		t.Errorf("copy with no argument: exit %d, stderr %q; want a usage error", code, stderr)
	}
}
