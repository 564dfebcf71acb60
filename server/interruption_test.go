package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// notice is an interruption notice as a runner reports it.
var notice = api.RunnerInterruptionRequest{Action: "terminate", Time: time.Date(2030, 1, 2, 10, 44, 7, 0, time.UTC)}

// runnerByID finds a runner in the user's list.
func runnerByID(t *testing.T, c *client.Client, id string) api.Runner {
	t.Helper()
	return findRunner(t, c, id, func(r api.Runner) bool { return r.ID == id })
}

// findRunner returns the runner of the user's list that is (which names
// it for the failure).
func findRunner(t *testing.T, c *client.Client, which string, is func(api.Runner) bool) api.Runner {
	t.Helper()
	rs, err := c.RunnerList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if is(r) {
			return r
		}
	}
	t.Fatalf("no runner %s", which)
	return api.Runner{}
}

// claimFor asks for a job for rc, waiting up to wait; nil when none came.
func claimFor(t *testing.T, rc *client.Client, wait time.Duration) *api.Assignment {
	t.Helper()
	a, err := rc.RunnerClaim(context.Background(), api.ClaimRequest{Free: bigRunner, Wait: api.Duration(wait)})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return a
}

func TestRunnerInterruption(t *testing.T) {
	t.Parallel()
	clock := testutil.NewClock(time.Now())
	e := setup(t, withClock(clock))
	ctx := context.Background()
	r1, r2 := registerRunner(t, e.admin, "spot"), registerRunner(t, e.admin, "other")
	run := e.submit(t, e.admin, bashJob("a"))
	a := claim(t, r1)
	setStatus(t, r1, a, api.StatusRunning)
	queued := e.submit(t, e.admin, bashJob("b"))

	noticedAt := clock.Now()
	resp, err := r1.RunnerInterruption(ctx, notice)
	if err != nil {
		t.Fatalf("report interruption: %v", err)
	}
	want := "spot instance reclaimed by the cloud (notice at " + noticedAt.UTC().Format(time.TimeOnly) + "; terminate at 10:44:07 UTC)"
	if resp.Reason != want || !resp.InterruptedAt.Equal(noticedAt.Truncate(time.Microsecond)) {
		t.Fatalf("interruption = %+v; want reason %q at %s", resp, want, noticedAt)
	}
	// The job shows why at once; it is still the runner's to stop.
	if j := getJob(t, e.admin, run.Name, a.Job.ID); j.Status != api.StatusRunning || j.StatusReason != want {
		t.Fatalf("job after the notice = %s (%q); want running with the reason", j.Status, j.StatusReason)
	}
	if got := runnerByID(t, e.admin, a.Job.RunnerID); got.InterruptedAt == nil || got.InterruptionReason != want || got.Status != api.RunnerOnline {
		t.Fatalf("runner after the notice = %+v; want online, interrupted", got)
	}

	// A repeat keeps the first report.
	clock.Advance(time.Minute)
	again, err := r1.RunnerInterruption(ctx, api.RunnerInterruptionRequest{Action: "stop", Time: notice.Time.Add(time.Hour)})
	if err != nil || again.Reason != resp.Reason || !again.InterruptedAt.Equal(resp.InterruptedAt) {
		t.Fatalf("repeated report = %+v, %v; want the first, %+v", again, err, resp)
	}

	// The interrupted runner is given nothing, though a job waits; the
	// other runner takes it.
	if got := claimFor(t, r1, 300*time.Millisecond); got != nil {
		t.Fatalf("the interrupted runner was given %s", got.Job.ID)
	}
	b := claim(t, r2)
	if b.Job.ID != queued.Jobs[0].ID {
		t.Fatalf("the other runner claimed %s, want %s", b.Job.ID, queued.Jobs[0].ID)
	}
	if got := runnerByID(t, e.admin, b.Job.RunnerID); got.InterruptedAt != nil {
		t.Fatalf("the other runner is interrupted too: %+v", got)
	}

	// A runner gives back only its own job.
	_, err = r2.JobSetStatus(ctx, a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusInterrupted, Reason: "not mine"})
	wantAPIError(t, "giving back another runner's job", err, http.StatusConflict, api.CodeLeaseLost)

	// Given back, the job is queued again at once for its next attempt,
	// and a waiting claimer is woken for it (well before its recheck).
	setStatus(t, r2, b, api.StatusRunning)
	setStatus(t, r2, b, api.StatusDone)
	claimed := make(chan *api.Assignment, 1)
	go func() {
		got, _ := r2.RunnerClaim(ctx, api.ClaimRequest{Free: bigRunner, Wait: api.Duration(30 * time.Second)})
		claimed <- got
	}()
	j, err := r1.JobSetStatus(ctx, a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusInterrupted, ExitCode: ptrInt(143), Reason: want})
	if err != nil {
		t.Fatalf("give the job back: %v", err)
	}
	wantReason := "interrupted: " + want + "; requeued for attempt 2 of 3"
	if j.Status != api.StatusPending || j.Attempt != 1 || j.RunnerID != "" || j.StatusReason != wantReason {
		t.Fatalf("job given back = %s attempt %d on %q (%q); want pending, attempt 1, no runner, %q", j.Status, j.Attempt, j.RunnerID, j.StatusReason, wantReason)
	}
	select {
	case got := <-claimed:
		if got == nil || got.Job.ID != a.Job.ID || got.Job.Attempt != 1 {
			t.Fatalf("the waiting claimer got %+v; want %s on attempt 1", got, a.Job.ID)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("the waiting claimer was not woken by the requeue")
	}
	// The old lease is spent: a repeat is lease_lost.
	_, err = r1.JobSetStatus(ctx, a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusInterrupted})
	wantAPIError(t, "giving the job back twice", err, http.StatusConflict, api.CodeLeaseLost)

	// The interruption survives a restart of the server.
	e.srv.Restart(t) // on the same port: the clients go on
	e.submit(t, e.admin, bashJob("c"))
	if got := claimFor(t, r1, 300*time.Millisecond); got != nil {
		t.Fatalf("after a restart the interrupted runner was given %s", got.Job.ID)
	}
}

func ptrInt(v int) *int { return &v }

func TestRunnerInterruptionIsChecked(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tok := registerRunnerToken(t, e.admin, "spot")
	for _, tc := range []struct{ name, body, part string }{
		{"no action", `{"time":"2030-01-01T00:00:00Z"}`, "action"},
		{"an action that is not a word", `{"action":"rm -rf /","time":"2030-01-01T00:00:00Z"}`, "action"},
		{"no time", `{"action":"terminate"}`, "time"},
		{"an unknown field", `{"action":"terminate","time":"2030-01-01T00:00:00Z","runner_id":"x"}`, "runner_id"},
		{"no body", ``, "empty"},
	} {
		rp := do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/runner/interruption", token: tok, body: tc.body})
		wantError(t, tc.name, rp, http.StatusBadRequest, api.CodeInvalid, tc.part)
	}
	rs, err := e.admin.RunnerList(context.Background())
	if err != nil || len(rs) != 1 || rs[0].InterruptedAt != nil {
		t.Fatalf("after refused reports, runners = %+v, %v; want one, not interrupted", rs, err)
	}
}

// TestInterruptedRunnerThatGoesSilent: a runner that reported an
// interruption but never gave its job back loses it at the heartbeat
// timeout, with the interruption as the cause.
func TestInterruptedRunnerThatGoesSilent(t *testing.T) {
	t.Parallel()
	e := setup(t, servertest.WithHeartbeatTimeout(time.Second))
	r1 := registerRunner(t, e.admin, "spot")
	run := e.submit(t, e.admin, bashJob("a"))
	a := claim(t, r1)
	resp, err := r1.RunnerInterruption(context.Background(), notice)
	if err != nil {
		t.Fatal(err)
	}
	var j api.Job
	testutil.Eventually(t, "the silent runner's job to be requeued", func() bool {
		j = getJob(t, e.admin, run.Name, a.Job.ID)
		return j.Status == api.StatusPending
	})
	// The requeue says why; the autoscaler's next pass may already have
	// replaced that with why the job waits, which keeps the cause.
	requeued := "interrupted: " + resp.Reason + "; requeued for attempt 2 of 3"
	waiting := "(attempt 1: " + resp.Reason + ")"
	if j.Attempt != 1 || (j.StatusReason != requeued && !(strings.HasPrefix(j.StatusReason, "waiting: ") && strings.HasSuffix(j.StatusReason, waiting))) {
		t.Fatalf("requeued job = attempt %d, %q; want attempt 1, %q or a waiting reason ending %q", j.Attempt, j.StatusReason, requeued, waiting)
	}
}

// TestInterruptedJobOutOfAttemptsFails: a job given back on its last
// attempt fails, saying why.
func TestInterruptedJobOutOfAttemptsFails(t *testing.T) {
	t.Parallel()
	e := setup(t, servertest.WithConfig(func(c *server.Config) { c.MaxAttempts = 1 }))
	r1 := registerRunner(t, e.admin, "spot")
	e.submit(t, e.admin, bashJob("a"))
	a := claim(t, r1)
	j, err := r1.JobSetStatus(context.Background(), a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusInterrupted, Reason: "reclaimed"})
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != api.StatusFailed || !strings.Contains(j.StatusReason, "reclaimed") || !strings.Contains(j.StatusReason, "giving up") || j.FinishedAt == nil {
		t.Fatalf("job given back on its last attempt = %s (%q); want failed, giving up", j.Status, j.StatusReason)
	}
}
