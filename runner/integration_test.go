package runner

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server/servertest"
)

// These tests run a real server in process (servertest) and a Runner
// against it, and drive them through the admin's API client as the CLI
// would.

type fixture struct {
	srv   *servertest.Server
	admin *client.Client
	cfg   Config
	r     *Runner
}

// setup starts a server and a runner registered with it.
func setup(t testing.TB, change ...func(*Config)) *fixture {
	t.Helper()
	return setupOn(t, nil, change...)
}

// setupOn is setup with a server started with opts.
func setupOn(t testing.TB, opts []servertest.Option, change ...func(*Config)) *fixture {
	t.Helper()
	srv := servertest.Start(t, opts...)
	f := &fixture{srv: srv, admin: srv.Client()}
	f.cfg = Config{
		Server:    srv.URL,
		Token:     srv.AdminToken,
		Name:      "test-runner",
		DataDir:   t.TempDir(),
		Resources: &api.HostResources{CPUs: 4, MemoryMiB: 8192, DiskMiB: 100 << 10},
		StopGrace: time.Second,
	}
	for _, c := range change {
		c(&f.cfg)
	}
	f.r = f.startRunner(t)
	return f
}

func (f *fixture) startRunner(t testing.TB) *Runner {
	t.Helper()
	r, err := New(f.cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// Start's context bounds the runner's whole life, not only its start.
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// codeArchive builds a gzip'd tar of files (name -> content; a content
// starting with "->" makes a symbolic link to the rest).
func codeArchive(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if target, ok := strings.CutPrefix(files[n], "->"); ok {
			if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o777, Typeflag: tar.TypeSymlink, Linkname: target}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[n])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (f *fixture) uploadCode(t testing.TB, files map[string]string) string {
	t.Helper()
	if files == nil {
		files = map[string]string{"README": "test code\n"}
	}
	resp, err := f.admin.CodeUpload(context.Background(), bytes.NewReader(codeArchive(t, files)))
	if err != nil {
		t.Fatal(err)
	}
	return resp.CodeID
}

// submit submits a run of jobs (the last one is the run's workflow).
func (f *fixture) submit(t testing.TB, codeID string, jobs ...api.JobSpec) *api.Run {
	t.Helper()
	for i := range jobs {
		if jobs[i].Provider == "" {
			jobs[i].Provider = "bash"
		}
	}
	run, err := f.admin.RunSubmit(context.Background(), api.RunSubmitRequest{Workflow: jobs[len(jobs)-1].Workflow, CodeID: codeID, Jobs: jobs})
	if err != nil {
		t.Fatal(err)
	}
	return run
}

// job returns the job of a workflow of a run as the server has it now.
func (f *fixture) job(t testing.TB, run, workflow string) api.Job {
	t.Helper()
	r, err := f.admin.RunGet(context.Background(), run)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range r.Jobs {
		if j.Workflow == workflow {
			return j
		}
	}
	t.Fatalf("run %s has no job %s", run, workflow)
	return api.Job{}
}

// waitStatus polls until the job reaches a state that satisfies ok.
func (f *fixture) waitStatus(t testing.TB, run, workflow string, ok func(api.JobStatus) bool) api.Job {
	t.Helper()
	var j api.Job
	testutil.Eventually(t, "job "+workflow+" of "+run, func() bool {
		j = f.job(t, run, workflow)
		return ok(j.Status)
	})
	return j
}

func finished(s api.JobStatus) bool { return s.Finished() }

// logs returns a job's whole log.
func (f *fixture) logs(t testing.TB, jobID string) string {
	t.Helper()
	rc, err := f.admin.JobLogs(context.Background(), jobID, client.LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitLog polls a job's log until it contains s.
func (f *fixture) waitLog(t testing.TB, jobID, s string) {
	t.Helper()
	testutil.Eventually(t, "log line "+strconv.Quote(s), func() bool { return strings.Contains(f.logs(t, jobID), s) })
}

// artifacts returns a run's artifact files (path -> content) of a job.
func (f *fixture) artifacts(t testing.TB, run, jobID string) map[string]string {
	t.Helper()
	files, err := f.admin.ArtifactList(context.Background(), run)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, a := range files {
		if a.JobID != jobID {
			continue
		}
		rc, _, err := f.admin.ArtifactDownload(context.Background(), a.JobID, a.Path, 0)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[a.Path] = string(b)
	}
	return out
}

func TestJobRunsToTheEnd(t *testing.T) {
	t.Parallel()
	f := setup(t)
	code := f.uploadCode(t, map[string]string{"data.txt": "from the code\n", "src/train.sh": "echo training $EPOCHS\n"})
	var wantLog strings.Builder
	wantLog.WriteString("from the code\ntrain run\ntraining 20\n")
	for i := 1; i <= 2000; i++ {
		wantLog.WriteString("line " + strconv.Itoa(i) + "\n")
	}
	wantLog.WriteString("to stderr\n")
	run := f.submit(t, code, api.JobSpec{
		Workflow: "train",
		Env:      map[string]string{"EPOCHS": "20"},
		Commands: []string{
			"cat data.txt",
			`echo "$DSTACK_WORKFLOW ${DSTACK_RUN_NAME%%-*}" | sed 's/^train [a-z]*$/train run/'`,
			"sh src/train.sh",
			"for i in $(seq 1 2000); do echo line $i; done",
			"echo to stderr >&2",
			"mkdir -p model/sub && echo weights > model/w.bin && echo cfg > model/sub/c.json && echo r > report.txt",
		},
		Artifacts: []string{"model", "report.txt"},
	})
	j := f.waitStatus(t, run.Name, "train", finished)
	if j.Status != api.StatusDone || j.ExitCode == nil || *j.ExitCode != 0 {
		t.Fatalf("job %s (%s), exit code %v; log:\n%s", j.Status, j.StatusReason, j.ExitCode, f.logs(t, j.ID))
	}
	if got := f.logs(t, j.ID); got != wantLog.String() {
		t.Errorf("log:\n%.500s\nwant:\n%.500s", got, wantLog.String())
	}
	want := map[string]string{"model/w.bin": "weights\n", "model/sub/c.json": "cfg\n", "report.txt": "r\n"}
	if got := f.artifacts(t, run.Name, j.ID); !equalMaps(got, want) {
		t.Errorf("artifacts %v, want %v", got, want)
	}
	if j.RunnerID != f.r.ID() {
		t.Errorf("job ran on %q, want %q", j.RunnerID, f.r.ID())
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestJobFails(t *testing.T) {
	t.Parallel()
	f := setup(t)
	code := f.uploadCode(t, nil)
	tests := []struct {
		name       string
		spec       api.JobSpec
		wantCode   *int
		wantReason string
		wantLog    string
	}{
		{"exit code", api.JobSpec{Commands: []string{"echo before", "exit 3", "echo after"}}, ptr(3), "exit status 3", "before\n"},
		{"set -e", api.JobSpec{Commands: []string{"false", "echo unreachable"}}, ptr(1), "exit status 1", ""},
		{"missing artifact", api.JobSpec{Commands: []string{"mkdir -p out && echo x > out/f"}, Artifacts: []string{"out", "nope"}}, ptr(0), `artifact path "nope" does not exist`, `artifact path "nope" does not exist`},
	}
	// One runner runs them one after the other.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Workflow = "w"
			run := f.submit(t, code, tt.spec)
			j := f.waitStatus(t, run.Name, "w", finished)
			if j.Status != api.StatusFailed {
				t.Fatalf("status %s, want failed", j.Status)
			}
			if (j.ExitCode == nil) != (tt.wantCode == nil) || (j.ExitCode != nil && *j.ExitCode != *tt.wantCode) {
				t.Errorf("exit code %v, want %v", j.ExitCode, tt.wantCode)
			}
			if !strings.Contains(j.StatusReason, tt.wantReason) {
				t.Errorf("reason %q, want %q", j.StatusReason, tt.wantReason)
			}
			if got := f.logs(t, j.ID); !strings.Contains(got, tt.wantLog) {
				t.Errorf("log %q, want it to contain %q", got, tt.wantLog)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestDependencies(t *testing.T) {
	t.Parallel()
	f := setup(t)
	code := f.uploadCode(t, nil)
	run := f.submit(t, code,
		api.JobSpec{Workflow: "prepare", Commands: []string{"mkdir -p data/nested && echo rows > data/nested/train.csv && echo solo > single.txt"}, Artifacts: []string{"data", "single.txt"}},
		api.JobSpec{Workflow: "train", DependsOn: []string{"prepare"}, Commands: []string{"cat data/nested/train.csv single.txt"}},
	)
	j := f.waitStatus(t, run.Name, "train", finished)
	if j.Status != api.StatusDone {
		t.Fatalf("train %s: %s; log:\n%s", j.Status, j.StatusReason, f.logs(t, j.ID))
	}
	if got := f.logs(t, j.ID); got != "rows\nsolo\n" {
		t.Errorf("train's log %q", got)
	}
}

// TestDependencyOfDamagedContentIsRefused: a dependency's artifact whose
// content no longer matches the SHA-256 the server recorded at upload (the
// stored file was damaged) fails the job that needs it, saying so, rather
// than running it on the damaged data.
func TestDependencyOfDamagedContentIsRefused(t *testing.T) {
	t.Parallel()
	f := setup(t)
	code := f.uploadCode(t, nil)
	first := f.submit(t, code, api.JobSpec{Workflow: "prepare", Commands: []string{"echo rows > data.txt"}, Artifacts: []string{"data.txt"}})
	prep := f.waitStatus(t, first.Name, "prepare", finished)
	if prep.Status != api.StatusDone {
		t.Fatalf("prepare %s: %s", prep.Status, prep.StatusReason)
	}
	// The same size, other bytes: only the hash tells them apart.
	stored := filepath.Join(f.srv.DataDir, "blobs", "artifacts", prep.ID, "data.txt")
	if err := os.WriteFile(stored, []byte("ROWS\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.TagPut(t.Context(), "v1", first.Name, false); err != nil {
		t.Fatal(err)
	}
	second := f.submit(t, code, api.JobSpec{Workflow: "train", DependsOnTags: []api.TaggedDependency{{Workflow: "prepare", Tag: "v1"}}, Commands: []string{"cat data.txt"}})
	j := f.waitStatus(t, second.Name, "train", finished)
	if j.Status != api.StatusFailed || !strings.Contains(j.StatusReason, "does not match the SHA-256") {
		t.Fatalf("train %s (%s), want failed for the damaged artifact; log:\n%s", j.Status, j.StatusReason, f.logs(t, j.ID))
	}
	if got := f.logs(t, j.ID); strings.Contains(got, "ROWS") {
		t.Errorf("train ran on the damaged artifact: %q", got)
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		abort         bool
		wantStatus    api.JobStatus
		wantArtifacts map[string]string
		wantLog       string
	}{
		{"stop", false, api.StatusStopped, map[string]string{"out/partial.txt": "saved on TERM\n"}, "got TERM\n"},
		{"abort", true, api.StatusAborted, map[string]string{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			code := f.uploadCode(t, nil)
			run := f.submit(t, code, api.JobSpec{
				Workflow: "w",
				Commands: []string{
					"trap 'echo got TERM; mkdir -p out; echo saved on TERM > out/partial.txt; exit 5' TERM",
					"echo started",
					"while true; do sleep 0.05; done",
				},
				Artifacts: []string{"out"},
			})
			j := f.waitStatus(t, run.Name, "w", func(s api.JobStatus) bool { return s == api.StatusRunning })
			f.waitLog(t, j.ID, "started")
			start := time.Now()
			if _, err := f.admin.RunStop(context.Background(), run.Name, tt.abort); err != nil {
				t.Fatal(err)
			}
			j = f.waitStatus(t, run.Name, "w", finished)
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("the stop took %v", d)
			}
			if j.Status != tt.wantStatus {
				t.Fatalf("status %s (%s), want %s", j.Status, j.StatusReason, tt.wantStatus)
			}
			if got := f.artifacts(t, run.Name, j.ID); !equalMaps(got, tt.wantArtifacts) {
				t.Errorf("artifacts %v, want %v", got, tt.wantArtifacts)
			}
			if got := f.logs(t, j.ID); !strings.HasPrefix(got, "started\n") || !strings.Contains(got, tt.wantLog) {
				t.Errorf("log %q", got)
			}
		})
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	t.Parallel()
	f := setup(t, func(c *Config) { c.StopGrace = 300 * time.Millisecond })
	code := f.uploadCode(t, nil)
	run := f.submit(t, code, api.JobSpec{Workflow: "w", Commands: []string{"trap 'echo ignoring TERM' TERM", "echo started", "while true; do sleep 0.05 || true; done"}})
	j := f.waitStatus(t, run.Name, "w", func(s api.JobStatus) bool { return s == api.StatusRunning })
	f.waitLog(t, j.ID, "started")
	if _, err := f.admin.RunStop(context.Background(), run.Name, false); err != nil {
		t.Fatal(err)
	}
	j = f.waitStatus(t, run.Name, "w", finished)
	if j.Status != api.StatusStopped || j.ExitCode == nil || *j.ExitCode != 137 {
		t.Errorf("status %s, exit code %s; want stopped, 137", j.Status, fmtExit(j.ExitCode))
	}
}

func TestServerRestartDuringJob(t *testing.T) {
	t.Parallel()
	f := setup(t)
	code := f.uploadCode(t, nil)
	const lines = 200000
	run := f.submit(t, code, api.JobSpec{
		Workflow: "w",
		Commands: []string{"echo first", "while [ ! -e go ]; do sleep 0.01; done", "seq 1 " + strconv.Itoa(lines)},
	})
	j := f.waitStatus(t, run.Name, "w", func(s api.JobStatus) bool { return s == api.StatusRunning })
	f.waitLog(t, j.ID, "first")
	f.srv.Restart(t)
	// Let the job write while the runner's calls go to a new server.
	f.admin = f.srv.Client()
	if err := os.WriteFile(filepath.Join(f.r.cfg.WorkDir, j.ID, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	j = f.waitStatus(t, run.Name, "w", finished)
	if j.Status != api.StatusDone {
		t.Fatalf("status %s (%s)", j.Status, j.StatusReason)
	}
	var want strings.Builder
	want.WriteString("first\n")
	for i := 1; i <= lines; i++ {
		want.WriteString(strconv.Itoa(i) + "\n")
	}
	if got := f.logs(t, j.ID); got != want.String() {
		t.Errorf("log has %d bytes, want %d", len(got), want.Len())
	}
}

func TestRestartReusesIdentity(t *testing.T) {
	t.Parallel()
	f := setup(t)
	first := f.r.ID()
	f.r.Stop()
	f.r.Stop() // twice is fine
	second := f.startRunner(t)
	if second.ID() != first {
		t.Errorf("restarted runner registered anew: %s, want %s", second.ID(), first)
	}
	// The reused identity works: it runs a job.
	run := f.submit(t, f.uploadCode(t, nil), api.JobSpec{Workflow: "w", Commands: []string{"echo ok"}})
	if j := f.waitStatus(t, run.Name, "w", finished); j.Status != api.StatusDone || j.RunnerID != first {
		t.Errorf("job %s on %s", j.Status, j.RunnerID)
	}
}

func TestShutdownStopsTheJob(t *testing.T) {
	t.Parallel()
	f := setup(t)
	code := f.uploadCode(t, nil)
	run := f.submit(t, code, api.JobSpec{
		Workflow:  "w",
		Commands:  []string{"mkdir out && echo x > out/x", "echo started", "sleep 1000"},
		Artifacts: []string{"out"},
	})
	j := f.waitStatus(t, run.Name, "w", func(s api.JobStatus) bool { return s == api.StatusRunning })
	f.waitLog(t, j.ID, "started")
	f.r.Stop()
	j = f.job(t, run.Name, "w")
	if j.Status != api.StatusStopped || !strings.Contains(j.StatusReason, "shut down") {
		t.Errorf("after Stop the job is %s (%s), want stopped", j.Status, j.StatusReason)
	}
	if got := f.artifacts(t, run.Name, j.ID); got["out/x"] != "x\n" {
		t.Errorf("artifacts %v", got)
	}
}

func fmtExit(code *int) string {
	if code == nil {
		return "none"
	}
	return strconv.Itoa(*code)
}

// TestRequeuedJobKeepsEarlierLog: a job whose first runner vanished after
// writing output runs again elsewhere, and its log holds both attempts'
// output whole, in order.
func TestRequeuedJobKeepsEarlierLog(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.WithHeartbeatTimeout(time.Second))
	f := &fixture{srv: srv, admin: srv.Client()}
	ctx := t.Context()
	code := f.uploadCode(t, nil)
	run := f.submit(t, code, api.JobSpec{Workflow: "w", Commands: []string{"echo second attempt"}})

	// A runner that takes the job, writes a line and is never heard from again.
	reg, err := f.admin.RunnerRegister(ctx, api.RunnerRegisterRequest{Name: "lost", Resources: api.HostResources{CPUs: 1, MemoryMiB: 1024}})
	if err != nil {
		t.Fatal(err)
	}
	lost := f.admin.WithToken(reg.Token)
	a, err := lost.RunnerClaim(ctx, api.ClaimRequest{Free: api.HostResources{CPUs: 1, MemoryMiB: 1024}, Wait: api.Duration(5 * time.Second)})
	if err != nil || a == nil {
		t.Fatalf("claim: %v, %v", a, err)
	}
	const first = "first attempt wrote this\n"
	if _, err := lost.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, []byte(first)); err != nil {
		t.Fatal(err)
	}
	f.waitStatus(t, run.Name, "w", func(s api.JobStatus) bool { return s == api.StatusPending })

	f.cfg = Config{Server: srv.URL, Token: srv.AdminToken, Name: "second", DataDir: t.TempDir(),
		Resources: &api.HostResources{CPUs: 4, MemoryMiB: 8192, DiskMiB: 100 << 10}, StopGrace: time.Second}
	f.r = f.startRunner(t)
	j := f.waitStatus(t, run.Name, "w", finished)
	if j.Status != api.StatusDone || j.Attempt != 1 {
		t.Fatalf("job %s on attempt %d (%s), want done on attempt 1", j.Status, j.Attempt, j.StatusReason)
	}
	// The server heads the second attempt's output with a line of its own.
	marker := "--- attempt 2 of 3 on runner second (attempt 1: runner lost stopped responding) ---\n"
	if got, want := f.logs(t, j.ID), first+marker+"second attempt\n"; got != want {
		t.Errorf("log %q, want %q", got, want)
	}
}

// TestStopGoesOffline: a runner that stops cleanly is offline at once, not
// after the server's heartbeat timeout, and comes back when restarted.
func TestStopGoesOffline(t *testing.T) {
	t.Parallel()
	f := setup(t)
	status := func() api.RunnerStatus {
		rs, err := f.admin.RunnerList(context.Background())
		if err != nil || len(rs) != 1 {
			t.Fatalf("RunnerList = %v, %v; want one runner", rs, err)
		}
		return rs[0].Status
	}
	if st := status(); st != api.RunnerOnline {
		t.Fatalf("started runner is %s", st)
	}
	f.r.Stop()
	if st := status(); st != api.RunnerOffline {
		t.Fatalf("stopped runner is %s, want offline at once", st)
	}
	f.r = f.startRunner(t)
	if st := status(); st != api.RunnerOnline {
		t.Fatalf("restarted runner is %s, want online", st)
	}
}

// TestIdleRunnerWaitsInClaimsWithoutHeartbeats: a runner waiting for a job
// is heard through its open claim, as its server says at registration, so
// it sends no heartbeat while it waits, and stays online.
func TestIdleRunnerWaitsInClaimsWithoutHeartbeats(t *testing.T) {
	t.Parallel()
	// Heartbeats every second; claims that end with no job every second.
	srv := servertest.Start(t, servertest.WithHeartbeatTimeout(3*time.Second))
	f := &fixture{srv: srv, admin: srv.Client()}
	var claims, beats atomic.Int64
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/runner/claim"):
			defer claims.Add(1) // once it is answered
		case strings.HasSuffix(r.URL.Path, "/runner/heartbeat"):
			beats.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	f.cfg = Config{
		Server: front.URL, Token: srv.AdminToken, Name: "test-runner", DataDir: t.TempDir(), ClaimWait: time.Second,
		Resources: &api.HostResources{CPUs: 4, MemoryMiB: 8192, DiskMiB: 100 << 10}, StopGrace: time.Second,
	}
	f.r = f.startRunner(t)
	// Four claims answered empty: three seconds at least, three heartbeat
	// intervals.
	testutil.Eventually(t, "four claims to end with no job", func() bool { return claims.Load() >= 4 })
	// A beat may fall in the instant between two claims.
	if n := beats.Load(); n > 1 {
		t.Errorf("the runner heartbeat %d times while it waited in claims; want none", n)
	}
	rs, err := f.admin.RunnerList(t.Context())
	if err != nil || len(rs) != 1 || rs[0].Status != api.RunnerOnline {
		t.Fatalf("runners %+v, %v: want the waiting runner online", rs, err)
	}
}

// TestRunnerAsksForItsNextJobWithTheEnd: a runner reports each job's end
// and gets its next job in the same request, so that a queue of jobs costs
// one claim, not one a job.
func TestRunnerAsksForItsNextJobWithTheEnd(t *testing.T) {
	srv := servertest.Start(t)
	f := &fixture{srv: srv, admin: srv.Client()}
	code := f.uploadCode(t, nil)
	const n = 3
	var jobs []api.JobSpec
	for i := range n {
		jobs = append(jobs, api.JobSpec{Workflow: "w" + strconv.Itoa(i), Commands: []string{"echo " + strconv.Itoa(i)}})
	}
	run := f.submit(t, code, jobs...)

	// The runner talks to the server through a proxy that counts its claims.
	var claims atomic.Int64
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/runner/claim") {
			claims.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	f.cfg = Config{
		Server: front.URL, Token: srv.AdminToken, Name: "test-runner", DataDir: t.TempDir(),
		Resources: &api.HostResources{CPUs: 4, MemoryMiB: 8192, DiskMiB: 100 << 10}, StopGrace: time.Second,
	}
	f.r = f.startRunner(t)

	for i := range n {
		if j := f.waitStatus(t, run.Name, "w"+strconv.Itoa(i), finished); j.Status != api.StatusDone {
			t.Fatalf("job w%d ended %s (%s), want done", i, j.Status, j.StatusReason)
		}
	}
	// The first claim took the first job; each end brought the next; the
	// runner may have claimed once more since, to wait.
	if got := claims.Load(); got > 2 {
		t.Errorf("the runner sent %d claims for %d queued jobs, want at most 2: each end should bring the next job", got, n)
	}
}
