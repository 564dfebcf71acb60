package runner

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server/servertest"
)

// fakeIMDS is EC2's instance metadata service as far as a spot runner uses
// it: IMDSv2 (PUT /latest/api/token, then GETs with the token) and
// meta-data/spot/instance-action, 404 until a notice is set.
type fakeIMDS struct {
	*httptest.Server
	mu     sync.Mutex
	notice []byte // nil: 404
	fail   bool   // answer 500
	reads  atomic.Int64
}

const imdsToken = "imds-session-token"

func newFakeIMDS(t testing.TB) *fakeIMDS {
	t.Helper()
	f := &fakeIMDS{}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") == "" {
			http.Error(w, "missing TTL", http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
		_, _ = w.Write([]byte(imdsToken))
	})
	mux.HandleFunc("GET /latest/meta-data/spot/instance-action", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Aws-Ec2-Metadata-Token") != imdsToken {
			http.Error(w, "IMDSv2 token required", http.StatusUnauthorized)
			return
		}
		f.reads.Add(1)
		f.mu.Lock()
		notice, fail := f.notice, f.fail
		f.mu.Unlock()
		switch {
		case fail:
			http.Error(w, "metadata unavailable", http.StatusInternalServerError)
		case notice == nil:
			http.NotFound(w, r)
		default:
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write(notice)
		}
	})
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// announce sets the notice: the cloud will act at at.
func (f *fakeIMDS) announce(action string, at time.Time) {
	b, _ := json.Marshal(map[string]string{"action": action, "time": at.UTC().Format(time.RFC3339)})
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notice = b
}

func (f *fakeIMDS) setFail(fail bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fail
}

// waitReads waits until the runner has read the notice n more times than
// now: it has seen what was set before.
func (f *fakeIMDS) waitReads(t testing.TB, n int64) {
	t.Helper()
	target := f.reads.Load() + n
	testutil.Eventually(t, "the runner to read the instance metadata", func() bool { return f.reads.Load() >= target })
}

// watchSpot has a runner watch imds, polling fast.
func watchSpot(imds *fakeIMDS) func(*Config) {
	return func(c *Config) {
		c.WatchSpotInterruption = true
		c.IMDSEndpoint = imds.URL
		c.SpotPollInterval = 20 * time.Millisecond
	}
}

// runner returns the server's view of a runner.
func (f *fixture) runner(t testing.TB, id string) api.Runner {
	t.Helper()
	rs, err := f.admin.RunnerList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("no runner %s", id)
	return api.Runner{}
}

// TestSpotInterruption: a notice while a job runs stops the job, uploads its
// artifacts, gives the job back (requeued for its next attempt with the
// interruption as the reason) and takes the runner out; another runner then
// runs the job to the end.
func TestSpotInterruption(t *testing.T) {
	t.Parallel()
	imds := newFakeIMDS(t)
	f := setup(t, watchSpot(imds))
	mark := filepath.Join(t.TempDir(), "first-attempt")
	code := f.uploadCode(t, nil)
	run := f.submit(t, code, api.JobSpec{
		Workflow: "train",
		Env:      map[string]string{"MARK": mark},
		Commands: []string{
			`if [ -e "$MARK" ]; then echo second attempt; mkdir -p out; echo final > out/model.txt; exit 0; fi`,
			`touch "$MARK"`,
			"trap 'echo got TERM; mkdir -p out; echo checkpoint > out/model.txt; exit 5' TERM",
			"echo started",
			"while true; do sleep 0.05; done",
		},
		Artifacts: []string{"out"},
	})
	j := f.waitStatus(t, run.Name, "train", func(s api.JobStatus) bool { return s == api.StatusRunning })
	f.waitLog(t, j.ID, "started")
	first := f.r.ID()

	at := time.Now().Add(2 * time.Minute).Truncate(time.Second)
	imds.announce("terminate", at)
	j = f.waitStatus(t, run.Name, "train", func(s api.JobStatus) bool { return s == api.StatusPending })
	wantPrefix := "interrupted: spot instance reclaimed by the cloud (notice at "
	wantSuffix := "; terminate at " + at.UTC().Format(time.TimeOnly) + " UTC); requeued for attempt 2 of 3"
	if j.Attempt != 1 || !strings.HasPrefix(j.StatusReason, wantPrefix) || !strings.HasSuffix(j.StatusReason, wantSuffix) || j.RunnerID != "" {
		t.Fatalf("job given back = attempt %d on %q, reason %q; want attempt 1 on no runner, reason %q...%q",
			j.Attempt, j.RunnerID, j.StatusReason, wantPrefix, wantSuffix)
	}
	// Stopped as a user's stop would: SIGTERM, and what the job saved on
	// it uploaded.
	if got := f.logs(t, j.ID); !strings.HasPrefix(got, "started\n") || !strings.Contains(got, "got TERM\n") {
		t.Errorf("log %q, want the job stopped with SIGTERM", got)
	}
	if got := f.artifacts(t, run.Name, j.ID); got["out/model.txt"] != "checkpoint\n" {
		t.Errorf("artifacts %v, want the checkpoint written on SIGTERM", got)
	}

	// The runner told the server, took no job since, went offline and
	// forgot its identity; it idles until the instance goes.
	testutil.Eventually(t, "the interrupted runner to go offline", func() bool { return f.runner(t, first).Status == api.RunnerOffline })
	rn := f.runner(t, first)
	if rn.InterruptedAt == nil || !strings.HasPrefix(rn.InterruptionReason, "spot instance reclaimed by the cloud") {
		t.Errorf("interrupted runner = %+v; want its interruption recorded", rn)
	}
	if _, err := os.Stat(statePath(f.cfg.DataDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the interrupted runner's saved identity: %v; want it removed", err)
	}
	select {
	case <-f.r.Done():
		t.Error("the interrupted runner ended; it should idle until the instance goes")
	default:
	}
	imds.waitReads(t, 2) // still watching, still idle
	if got := f.job(t, run.Name, "train"); got.Status != api.StatusPending || got.RunnerID != "" {
		t.Fatalf("job = %s on %q; the interrupted runner must not take it back", got.Status, got.RunnerID)
	}

	// Another runner picks the job up and runs it to the end.
	f.cfg.Name, f.cfg.DataDir, f.cfg.WatchSpotInterruption = "second", t.TempDir(), false
	second := f.startRunner(t)
	j = f.waitStatus(t, run.Name, "train", finished)
	if j.Status != api.StatusDone || j.Attempt != 1 || j.RunnerID != second.ID() {
		t.Fatalf("job = %s on attempt %d on %s (%q); want done on attempt 1 on %s", j.Status, j.Attempt, j.RunnerID, j.StatusReason, second.ID())
	}
	// The server marks where the second attempt starts, and why.
	if got := f.logs(t, j.ID); !strings.Contains(got, "got TERM\n--- attempt 2 of 3 on runner second (attempt 1: spot instance reclaimed by the cloud") ||
		!strings.HasSuffix(got, ") ---\nsecond attempt\n") {
		t.Errorf("log %q, want both attempts' output, the second after its marker", got)
	}
	if got := f.artifacts(t, run.Name, j.ID); got["out/model.txt"] != "final\n" {
		t.Errorf("artifacts %v, want the second attempt's", got)
	}

	// Stopping the idle runner ends it.
	f.r.Stop()
}

// TestSpotNoticeTooLateSkipsUpload: with less time left than the margin,
// the job is given back at once without its artifacts.
func TestSpotNoticeTooLateSkipsUpload(t *testing.T) {
	t.Parallel()
	imds := newFakeIMDS(t)
	f := setup(t, watchSpot(imds), func(c *Config) { c.SpotUploadMargin = time.Minute })
	run := f.submit(t, f.uploadCode(t, nil), api.JobSpec{
		Workflow:  "w",
		Commands:  []string{"mkdir out && echo x > out/x", "echo started", "while true; do sleep 0.05; done"},
		Artifacts: []string{"out"},
	})
	j := f.waitStatus(t, run.Name, "w", func(s api.JobStatus) bool { return s == api.StatusRunning })
	f.waitLog(t, j.ID, "started")
	imds.announce("terminate", time.Now().Add(30*time.Second))
	j = f.waitStatus(t, run.Name, "w", func(s api.JobStatus) bool { return s == api.StatusPending })
	if !strings.Contains(j.StatusReason, "artifacts not uploaded: too little time left") || j.Attempt != 1 {
		t.Errorf("job given back = attempt %d, %q; want attempt 1 saying the artifacts were not uploaded", j.Attempt, j.StatusReason)
	}
	if got := f.artifacts(t, run.Name, j.ID); len(got) != 0 {
		t.Errorf("artifacts %v uploaded; want none", got)
	}
}

// TestSpotNoticeAtStart: a runner started on an instance already being
// reclaimed takes no job.
func TestSpotNoticeAtStart(t *testing.T) {
	t.Parallel()
	imds := newFakeIMDS(t)
	imds.announce("stop", time.Now().Add(time.Minute))
	srv := servertest.Start(t)
	f := &fixture{srv: srv, admin: srv.Client()}
	run := f.submit(t, f.uploadCode(t, nil), api.JobSpec{Workflow: "w", Commands: []string{"echo should not run"}})
	f.cfg = Config{Server: srv.URL, Token: srv.AdminToken, Name: "late", DataDir: t.TempDir(),
		Resources: &api.HostResources{CPUs: 4, MemoryMiB: 8192, DiskMiB: 100 << 10}, StopGrace: time.Second}
	watchSpot(imds)(&f.cfg)
	f.r = f.startRunner(t)
	testutil.Eventually(t, "the runner to go offline", func() bool { return f.runner(t, f.r.ID()).Status == api.RunnerOffline })
	if rn := f.runner(t, f.r.ID()); rn.InterruptedAt == nil || !strings.Contains(rn.InterruptionReason, "stop at") {
		t.Errorf("runner = %+v; want it interrupted", rn)
	}
	if j := f.job(t, run.Name, "w"); j.Status != api.StatusPending || j.Attempt != 0 || j.RunnerID != "" {
		t.Errorf("job = %s attempt %d on %q; want untouched, pending", j.Status, j.Attempt, j.RunnerID)
	}
}

// TestSpotWatchSurvivesMetadataErrors: errors reading the metadata are
// logged, not fatal: jobs run, and a later notice is still acted on.
func TestSpotWatchSurvivesMetadataErrors(t *testing.T) {
	t.Parallel()
	imds := newFakeIMDS(t)
	imds.setFail(true)
	f := setup(t, watchSpot(imds))
	run := f.submit(t, f.uploadCode(t, nil), api.JobSpec{Workflow: "w", Commands: []string{"echo ok"}})
	if j := f.waitStatus(t, run.Name, "w", finished); j.Status != api.StatusDone {
		t.Fatalf("job %s (%s) while the metadata fails; want done", j.Status, j.StatusReason)
	}
	imds.setFail(false)
	imds.announce("terminate", time.Now().Add(2*time.Minute))
	testutil.Eventually(t, "the runner to go offline", func() bool { return f.runner(t, f.r.ID()).Status == api.RunnerOffline })
}

// scriptedWatcher is a SpotWatcher that answers from a list, the last
// answer repeating.
type scriptedWatcher struct {
	mu      sync.Mutex
	answers []*SpotNotice
}

func (w *scriptedWatcher) SpotNotice(context.Context) (*SpotNotice, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.answers[0]
	if len(w.answers) > 1 {
		w.answers = w.answers[1:]
	}
	return n, nil
}

// TestSpotNoticeWithdrawnEndsRunner: when the notice disappears (a stopped
// instance started again), the idle runner ends, to be started afresh.
func TestSpotNoticeWithdrawnEndsRunner(t *testing.T) {
	t.Parallel()
	n := &SpotNotice{Action: "stop", Time: time.Now().Add(time.Minute)}
	w := &scriptedWatcher{answers: []*SpotNotice{n, n, n, nil}}
	f := setup(t, func(c *Config) {
		c.WatchSpotInterruption, c.SpotWatcher, c.SpotPollInterval = true, w, 50*time.Millisecond
	})
	select {
	case <-f.r.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the runner did not end once the notice was gone")
	}
	if rn := f.runner(t, f.r.ID()); rn.Status != api.RunnerOffline || rn.InterruptedAt == nil {
		t.Errorf("runner = %+v; want offline, interrupted", rn)
	}
}

func TestParseSpotNotice(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 10, 42, 7, 0, time.UTC)
	tests := []struct {
		in   string
		want *SpotNotice // nil: an error
	}{
		{`{"action": "terminate", "time": "2026-03-01T10:44:07Z"}`, &SpotNotice{Action: "terminate", Time: now.Add(2 * time.Minute)}},
		{`{"action":"hibernate","time":"2026-03-01T10:43:00Z"}`, &SpotNotice{Action: "hibernate", Time: now.Add(53 * time.Second)}},
		{`{"action": "stop"}`, &SpotNotice{Action: "stop", Time: now.Add(spotWarning)}},
		{`{"time": "2026-03-01T10:44:07Z"}`, nil},
		{`<html>`, nil},
		{``, nil},
	}
	for _, tt := range tests {
		got, err := parseSpotNotice([]byte(tt.in), now)
		switch {
		case tt.want == nil && err == nil:
			t.Errorf("parseSpotNotice(%q) = %+v, want an error", tt.in, got)
		case tt.want != nil && (err != nil || got.Action != tt.want.Action || !got.Time.Equal(tt.want.Time)):
			t.Errorf("parseSpotNotice(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func FuzzParseSpotNotice(f *testing.F) {
	f.Add([]byte(`{"action": "terminate", "time": "2026-03-01T10:44:07Z"}`))
	f.Add([]byte(`{"action": ""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := parseSpotNotice(b, time.Unix(0, 0))
		if err == nil && (n == nil || n.Action == "" || n.Time.IsZero()) {
			t.Fatalf("parseSpotNotice(%q) = %+v with no error", b, n)
		}
	})
}

// TestIMDSWatcher runs the watcher against the fake service: no
// notice, a notice, and a failure.
func TestIMDSWatcher(t *testing.T) {
	t.Parallel()
	imds := newFakeIMDS(t)
	w := NewIMDSWatcher(imds.URL)
	ctx := t.Context()
	if n, err := w.SpotNotice(ctx); n != nil || err != nil {
		t.Fatalf("with no notice: %+v, %v", n, err)
	}
	at := time.Date(2026, 3, 1, 10, 44, 7, 0, time.UTC)
	imds.announce("terminate", at)
	if n, err := w.SpotNotice(ctx); err != nil || n == nil || n.Action != "terminate" || !n.Time.Equal(at) {
		t.Fatalf("with a notice: %+v, %v", n, err)
	}
	imds.setFail(true)
	if n, err := w.SpotNotice(ctx); err == nil || n != nil {
		t.Fatalf("failing: %+v, %v; want an error", n, err)
	}
}
