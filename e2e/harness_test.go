package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/store/storetest"
)

// How long the harness waits: generous, since a loaded CI machine is slow,
// and never spent unless something is wrong.
const (
	startTimeout = 30 * time.Second // a server or runner to come up
	stopTimeout  = 30 * time.Second // a process to exit after SIGTERM
	cliTimeout   = 60 * time.Second // one CLI command
	waitTimeout  = 30 * time.Second // a run to reach a state
)

// bins are the binaries TestMain built.
var bins struct{ dstack, runner string }

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test skips itself
	}
	dir, err := os.MkdirTemp("", "dstack-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := 1
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
	} else {
		code = m.Run()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: leaked goroutines:", err)
			code = 1
		}
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// stampedVersion is the version the binaries are stamped with, as `make
// build` stamps them from git.
const stampedVersion = "v9.9.9-e2e"

// build builds dstack and dstack-runner into dir with the go on PATH,
// statically (CGO_ENABLED=0, as `make build` does): the server's local
// backend puts the dstack-runner next to it into its containers' image,
// which has no C library. Both are stamped with stampedVersion.
func build(dir string) error {
	const module = "github.com/dstackai/dstack"
	cmd := exec.Command("go", "build", "-ldflags", "-X "+module+"/version.Version="+stampedVersion,
		"-o", dir+string(os.PathSeparator), module+"/cmd/dstack", module+"/cmd/dstack-runner")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	bins.dstack = filepath.Join(dir, "dstack")
	bins.runner = filepath.Join(dir, "dstack-runner")
	return nil
}

// eachDB runs scenario twice, as parallel subtests: on SQLite (dsn "") and
// on a fresh PostgreSQL database.
func eachDB(t *testing.T, scenario func(t *testing.T, dsn string)) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		scenario(t, "")
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		scenario(t, storetest.PostgresDSN(t))
	})
}

// cluster is a dstack server and its runners, started as subprocesses, and
// a user's environment to run the CLI in. Its methods belong to the test's
// goroutine, except cli, which parallel subtests may call.
type cluster struct {
	t     *testing.T
	dir   string // scratch: the server's and runners' data, process output
	home  string // HOME of every process
	dsn   string // "" for SQLite in the server's data dir
	flags []string

	URL   string
	Token string // the admin token printed on the first start

	server *proc   // the server started last
	procs  []*proc // every process started, in order
}

var (
	urlRe   = regexp.MustCompile(`(?m)^The dstack server is running at (\S+)$`)
	tokenRe = regexp.MustCompile(`(?m)^The admin token is (\S+)$`)
	runRe   = regexp.MustCompile(`RUN (\S+) submitted`)
)

// newCluster starts `dstack server` with a fresh data directory (and the
// database dsn names, unless empty) and the extra flags given. Everything
// the cluster starts is stopped when the test ends: CLI processes and
// runners first, the server last.
func newCluster(t *testing.T, dsn string, serverFlags ...string) *cluster {
	t.Helper()
	dir := t.TempDir()
	if !slices.Contains(serverFlags, "--local-backend") {
		// Self-hosted runners only, unless the test asks for instances.
		serverFlags = append([]string{"--local-backend", "off"}, serverFlags...)
	}
	c := &cluster{t: t, dir: dir, home: filepath.Join(dir, "home"), dsn: dsn, flags: serverFlags}
	for _, d := range []string{c.home, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.stopAll)
	c.startServer(0)
	return c
}

// env is the environment of every process: this one's, without dstack's
// variables, and with HOME and TMPDIR in the test's directory, so that
// nothing is left behind.
func (c *cluster) env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DSTACK_") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "TMPDIR=") {
			continue
		}
		env = append(env, kv)
	}
	return append(append(env, "HOME="+c.home, "TMPDIR="+filepath.Join(c.dir, "tmp")), extra...)
}

// userEnv is the environment of the CLI: the server and the admin token.
func (c *cluster) userEnv(extra ...string) []string {
	return c.env(append([]string{"DSTACK_SERVER=" + c.URL, "DSTACK_TOKEN=" + c.Token}, extra...)...)
}

func (c *cluster) startServer(port int) {
	t := c.t
	t.Helper()
	args := []string{"server", "--host", "127.0.0.1", "--port", strconv.Itoa(port),
		"--data-dir", filepath.Join(c.dir, "server"), "--no-cli-config"}
	if c.dsn != "" {
		args = append(args, "--db", c.dsn)
	}
	args = append(args, c.flags...)
	first := c.Token == ""
	p := c.start("server", "", c.env(), bins.dstack, args...)
	var out string
	testutil.EventuallyWithin(t, startTimeout, "dstack server to print its URL", func() bool {
		out = p.stdout()
		if p.exited() || !urlRe.MatchString(out) {
			return p.exited()
		}
		// On the first start the token follows the URL.
		return !first || tokenRe.MatchString(out)
	})
	if p.exited() {
		t.Fatalf("dstack server exited with code %d before it started:\n%s", p.code(), p.output())
	}
	c.URL = urlRe.FindStringSubmatch(out)[1]
	if first {
		c.Token = tokenRe.FindStringSubmatch(out)[1]
	}
	c.server = p
}

// stopServer stops the server with SIGTERM and checks that it exits 0.
func (c *cluster) stopServer() {
	c.t.Helper()
	if code := c.server.stop(c.t, syscall.SIGTERM); code != 0 {
		c.t.Errorf("dstack server exited with code %d after SIGTERM:\n%s", code, c.server.output())
	}
}

// restartServer stops the server and starts it again on the same port,
// data directory and database.
func (c *cluster) restartServer() {
	c.t.Helper()
	c.stopServer()
	u, err := url.Parse(c.URL)
	if err != nil {
		c.t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		c.t.Fatalf("server URL %s: %v", c.URL, err)
	}
	c.startServer(port)
}

// stopAll stops what the cluster started: CLI processes and runners first,
// in reverse order, then the server. It shows their output when the test
// failed (or always with DSTACK_TEST_VERBOSE set).
func (c *cluster) stopAll() {
	procs := c.procs
	for i := len(procs) - 1; i >= 0; i-- {
		if procs[i].name != "server" {
			procs[i].stop(c.t, syscall.SIGTERM)
		}
	}
	for _, p := range procs {
		if p.name == "server" {
			p.stop(c.t, syscall.SIGTERM)
		}
	}
	if c.t.Failed() || os.Getenv("DSTACK_TEST_VERBOSE") != "" {
		for _, p := range procs {
			c.t.Logf("---- %s (exit code %d): %s\n%s", p.name, p.code(), strings.Join(p.cmd.Args, " "), p.output())
		}
	}
}

// configRunner runs `dstack-runner config` for a runner called name and
// returns the environment `dstack-runner start` needs to find its config.
func (c *cluster) configRunner(name, token string) []string {
	c.t.Helper()
	env := c.env("DSTACK_RUNNER_CONFIG=" + filepath.Join(c.dir, "runner-"+name+".yaml"))
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.runner, "config", "--server", c.URL, "--token", token,
		"--data-dir", filepath.Join(c.dir, "runner-"+name), "--name", name)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("dstack-runner config: %v\n%s", err, out)
	}
	return env
}

// startRunner configures and starts a runner with the admin token, and
// waits until it has registered.
func (c *cluster) startRunner(name string) *proc {
	c.t.Helper()
	p := c.start("runner "+name, "", c.configRunner(name, c.Token), bins.runner, "start")
	testutil.EventuallyWithin(c.t, startTimeout, "runner "+name+" to register", func() bool {
		return p.exited() || strings.Contains(p.stdout(), "waiting for jobs")
	})
	if p.exited() {
		c.t.Fatalf("runner %s exited with code %d:\n%s", name, p.code(), p.output())
	}
	return p
}

// result is how a CLI command ended.
type result struct {
	args           []string
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("dstack %s: exit code %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// dstack runs the CLI in dir (HOME when empty) as the admin, to the end.
func (c *cluster) dstack(dir string, args ...string) result {
	c.t.Helper()
	return c.dstackEnv(dir, nil, args...)
}

// dstackEnv is dstack with extra environment variables (NAME=VALUE), which
// win over the cluster's.
func (c *cluster) dstackEnv(dir string, env []string, args ...string) result {
	c.t.Helper()
	return c.cli(c.t, dir, env, args...)
}

// cli is dstackEnv reporting to t, for subtests.
func (c *cluster) cli(t testing.TB, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.dstack, args...)
	cmd.Dir = dir
	if dir == "" {
		cmd.Dir = c.home
	}
	cmd.Env = c.userEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("dstack %s did not end within %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), cliTimeout, r.stdout, r.stderr)
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("dstack %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// startDstack starts a CLI command in dir and returns without waiting.
func (c *cluster) startDstack(dir string, args ...string) *proc {
	c.t.Helper()
	return c.start("dstack "+args[0], dir, c.userEnv(), bins.dstack, args...)
}

// runs is `dstack ps -a --json`.
func (c *cluster) runs() []api.Run {
	c.t.Helper()
	r := c.dstack("", "ps", "-a", "--json")
	if r.code != 0 {
		c.t.Fatalf("%s", r)
	}
	var runs []api.Run
	if err := json.Unmarshal([]byte(r.stdout), &runs); err != nil {
		c.t.Fatalf("ps -a --json: %v\n%s", err, r.stdout)
	}
	return runs
}

// run is the run called name as `dstack ps -a --json` shows it.
func (c *cluster) run(name string) api.Run {
	c.t.Helper()
	for _, r := range c.runs() {
		if r.Name == name {
			return r
		}
	}
	c.t.Fatalf("dstack ps -a --json does not list the run %s", name)
	return api.Run{}
}

// waitRun polls `dstack ps -a --json` until the run satisfies ok.
func (c *cluster) waitRun(name, what string, ok func(api.Run) bool) api.Run {
	c.t.Helper()
	var run api.Run
	testutil.EventuallyWithin(c.t, waitTimeout, "run "+name+" "+what, func() bool {
		run = c.run(name)
		return ok(run)
	})
	return run
}

// waitStatus waits for a run to reach status.
func (c *cluster) waitStatus(name string, status api.JobStatus) api.Run {
	c.t.Helper()
	return c.waitRun(name, "to be "+string(status), func(r api.Run) bool { return r.Status == status })
}

// runners is `dstack runners --json`.
func (c *cluster) runners() []api.Runner {
	c.t.Helper()
	r := c.dstack("", "runners", "--json")
	if r.code != 0 {
		c.t.Fatalf("%s", r)
	}
	var rs []api.Runner
	if err := json.Unmarshal([]byte(r.stdout), &rs); err != nil {
		c.t.Fatalf("runners --json: %v\n%s", err, r.stdout)
	}
	return rs
}

// runName is the name of the run a `dstack run` submitted.
func runName(t *testing.T, out string) string {
	t.Helper()
	m := runRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no run name in the output of dstack run:\n%s", out)
	}
	return m[1]
}

// project writes a project directory (path -> content) and returns it.
func project(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "project")
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// readFile returns a file's content, failing the test when it cannot.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// proc is a process started in the background, in its own process group,
// its stdout and stderr going to files.
type proc struct {
	name    string
	cmd     *exec.Cmd
	outPath string
	errPath string
	done    chan struct{} // closed when the process has exited
	state   *os.ProcessState
}

// start starts bin in dir (HOME when empty) with env; it is stopped by
// stopAll at the latest.
func (c *cluster) start(name, dir string, env []string, bin string, args ...string) *proc {
	c.t.Helper()
	return c.startAs(nil, name, dir, env, bin, args...)
}

// startAs is start as the user and group of cred (this process's when nil).
func (c *cluster) startAs(cred *syscall.Credential, name, dir string, env []string, bin string, args ...string) *proc {
	c.t.Helper()
	files := make([]*os.File, 2)
	for i, suffix := range []string{"out", "err"} {
		f, err := os.CreateTemp(c.dir, strings.ReplaceAll(name, " ", "-")+"-*."+suffix)
		if err != nil {
			c.t.Fatal(err)
		}
		defer f.Close() // the child has its own copy
		files[i] = f
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if dir == "" {
		cmd.Dir = c.home
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = files[0], files[1]
	// Its own group, to kill it with whatever it started; and killed with
	// this test binary should that die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.SysProcAttr.Credential = cred
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, outPath: files[0].Name(), errPath: files[1].Name(), done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	return p
}

func (p *proc) stdout() string { b, _ := os.ReadFile(p.outPath); return string(b) }
func (p *proc) stderr() string { b, _ := os.ReadFile(p.errPath); return string(b) }

// output is both streams, for failure messages.
func (p *proc) output() string {
	return "stdout:\n" + p.stdout() + "stderr:\n" + p.stderr()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// code is the exit code: -1 while running or when a signal ended it.
func (p *proc) code() int {
	if !p.exited() {
		return -1
	}
	return p.state.ExitCode()
}

// wait waits for the process to exit and returns its exit code; it fails
// the test after timeout.
func (p *proc) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code()
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s:\n%s", p.name, timeout, p.output())
		return -1
	}
}

// stop sends sig (unless the process has exited) and waits for the exit.
// A process that outlives stopTimeout is killed with its group, and the
// test fails. It returns the exit code.
func (p *proc) stop(t testing.TB, sig syscall.Signal) int {
	t.Helper()
	if p.exited() {
		return p.code()
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		t.Errorf("%s did not exit within %s of %s: killed", p.name, stopTimeout, sig)
	}
	return p.code()
}
