package server_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// longClaim starts a claim that waits up to a minute, longer than any
// re-check, and returns what it got.
func longClaim(ctx context.Context, rc *client.Client, free api.HostResources) <-chan claimResult {
	out := make(chan claimResult, 1)
	go func() {
		a, err := rc.RunnerClaim(ctx, api.ClaimRequest{Free: free, Wait: api.Duration(time.Minute)})
		out <- claimResult{a, err}
	}()
	return out
}

type claimResult struct {
	a   *api.Assignment
	err error
}

func waitClaimers(t *testing.T, srv *servertest.Server, n int) {
	t.Helper()
	testutil.Eventually(t, "claims to wait on the server", func() bool { return server.ClaimWaiters(srv.Server) == n })
}

// TestClaimWakePassesToARunnerThatFits: a new job wakes one waiting runner,
// the one that waited longest; when the job does not fit it, the wake goes
// on to the next, which claims the job at once, not at a re-check (a
// re-check comes later than the test waits).
func TestClaimWakePassesToARunnerThatFits(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	smallRes := api.HostResources{CPUs: 2, MemoryMiB: 4 << 10, DiskMiB: 10 << 10}
	small := registerRunnerWith(t, e.admin, "small", smallRes)
	big := registerRunnerWith(t, e.admin, "big", bigRunner)
	smallGot := longClaim(ctx, small, smallRes)
	waitClaimers(t, e.srv, 1)
	bigGot := longClaim(ctx, big, bigRunner)
	waitClaimers(t, e.srv, 2)

	run := e.submit(t, e.admin, withResources(bashJob("train"), api.Resources{CPU: 4}))
	select {
	case r := <-bigGot:
		if r.err != nil || r.a == nil || r.a.Job.ID != run.Jobs[0].ID {
			t.Fatalf("the big runner's claim: %+v, %v; want job %s", r.a, r.err, run.Jobs[0].ID)
		}
	case r := <-smallGot:
		t.Fatalf("the small runner's claim ended: %+v, %v", r.a, r.err)
	case <-time.After(testutil.Wait):
		t.Fatalf("waited %s for the runner the job fits to claim it", testutil.Wait)
	}
	waitClaimers(t, e.srv, 1) // the small runner waits on
}

// TestClaimWakeWakesOneRunnerPerJob: a job wakes one of several runners
// alike; the others wait on, and each further job wakes one more.
func TestClaimWakeWakesOneRunnerPerJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan claimResult, 3)
	for _, name := range []string{"r1", "r2", "r3"} {
		rc := registerRunner(t, e.admin, name)
		go func() { got <- <-longClaim(ctx, rc, bigRunner) }()
	}
	waitClaimers(t, e.srv, 3)
	for i, want := range []int{2, 1} {
		e.submit(t, e.admin, bashJob("train"))
		r := <-got
		if r.err != nil || r.a == nil {
			t.Fatalf("job %d: claim %+v, %v", i, r.a, r.err)
		}
		waitClaimers(t, e.srv, want)
	}
}

// TestClaimOfAGoneRunnerIsNotAServerError: a runner that goes away while
// its claim waits (it restarts) ends the request normally: no 500, nothing
// logged above debug.
func TestClaimOfAGoneRunnerIsNotAServerError(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	e := setup(t, servertest.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	rc := registerRunner(t, e.admin, "r")
	ctx, cancel := context.WithCancel(context.Background())
	res := longClaim(ctx, rc, bigRunner)
	waitClaimers(t, e.srv, 1)
	cancel()
	if r := <-res; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("claim after its context ended: %+v, %v", r.a, r.err)
	}
	waitClaimers(t, e.srv, 0)
	testutil.Eventually(t, "the gone claim to be counted", func() bool {
		return scrape(t, e.srv.URL)[`dstack_http_requests_total{code="499",method="post"}`] == 1
	})
	if got := scrape(t, e.srv.URL)[`dstack_http_requests_total{code="500",method="post"}`]; got != 0 {
		t.Errorf(`dstack_http_requests_total{code="500"} = %v, want 0`, got)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=ERROR") || (strings.Contains(line, "level=WARN") && strings.Contains(line, "path=")) {
			t.Errorf("a gone runner's claim was logged above debug: %s", line)
		}
	}
}

// TestHeartbeatsBatchedSilentRunnerGoesOffline: heartbeats are written in
// batches, yet a runner that heartbeats stays online and a silent one goes
// offline; a runner that comes back is online at once.
func TestHeartbeatsBatchedSilentRunnerGoesOffline(t *testing.T) {
	t.Parallel()
	clock := testutil.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := setup(t, withClock(clock), servertest.WithHeartbeatTimeout(4*time.Second))
	ctx := context.Background()
	alive := registerRunner(t, e.admin, "alive")
	silent := registerRunner(t, e.admin, "silent")

	clock.Advance(3 * time.Second)
	if err := alive.RunnerHeartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(3 * time.Second) // silent 6s, alive 3s
	status := func(name string) api.RunnerStatus { return runnerStatus(t, e.admin, name) }
	testutil.Eventually(t, "the silent runner to go offline", func() bool { return status("silent") == api.RunnerOffline })
	if got := status("alive"); got != api.RunnerOnline {
		t.Fatalf("the runner that heartbeats is %s, want online", got)
	}

	if err := silent.RunnerHeartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := status("silent"); got != api.RunnerOnline {
		t.Fatalf("a runner back is %s right after its heartbeat, want online", got)
	}
}

// runnerStatus is the status of the runner named name.
func runnerStatus(t *testing.T, admin *client.Client, name string) api.RunnerStatus {
	t.Helper()
	return findRunner(t, admin, name, func(r api.Runner) bool { return r.Name == name }).Status
}

// TestRunnerWaitingInAClaimNeedsNoHeartbeat: the server says that a claim
// stands for a runner's heartbeats, and a runner that only waits in claims
// stays online past the heartbeat timeout while a silent one goes offline;
// once its claim ends, it goes offline in turn. A runner that goes offline
// while its claim is still open is not brought back by it.
func TestRunnerWaitingInAClaimNeedsNoHeartbeat(t *testing.T) {
	t.Parallel()
	clock := testutil.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := setup(t, withClock(clock), servertest.WithHeartbeatTimeout(4*time.Second))
	reg, err := e.admin.RunnerRegister(t.Context(), api.RunnerRegisterRequest{
		Name: "waiting", Hostname: "waiting.example", Executor: "shell", Version: "test", Resources: bigRunner,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reg.ClaimBeats {
		t.Fatal("the registration does not say that a claim stands for heartbeats")
	}
	waiting := e.admin.WithToken(reg.Token)
	silent := registerRunner(t, e.admin, "silent")
	status := func(name string) api.RunnerStatus { return runnerStatus(t, e.admin, name) }
	// silentGoesOffline waits for a pass of the reaper after the clock
	// moved: the silent runner, online, goes offline in it.
	silentGoesOffline := func() {
		t.Helper()
		if err := silent.RunnerHeartbeat(t.Context(), api.HeartbeatRequest{}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			clock.Advance(2 * time.Second)
		}
		testutil.Eventually(t, "the silent runner to go offline", func() bool { return status("silent") == api.RunnerOffline })
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	claim := longClaim(ctx, waiting, bigRunner)
	waitClaimers(t, e.srv, 1)
	silentGoesOffline()
	if got := status("waiting"); got != api.RunnerOnline {
		t.Fatalf("the runner waiting in a claim for 6s, with no heartbeat, is %s; want online", got)
	}

	cancel()
	<-claim
	waitClaimers(t, e.srv, 0)
	for range 3 {
		clock.Advance(2 * time.Second)
	}
	testutil.Eventually(t, "the runner whose claim ended to go offline", func() bool { return status("waiting") == api.RunnerOffline })

	// Back, waiting again, then gone for good while its claim is open.
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	claim = longClaim(ctx, waiting, bigRunner)
	waitClaimers(t, e.srv, 1)
	testutil.Eventually(t, "the runner back in a claim to be online", func() bool { return status("waiting") == api.RunnerOnline })
	if err := waiting.RunnerOffline(t.Context()); err != nil {
		t.Fatal(err)
	}
	silentGoesOffline()
	if got := status("waiting"); got != api.RunnerOffline {
		t.Fatalf("a runner that went offline is %s after its claim, still open, was counted; want offline", got)
	}
	cancel()
	<-claim
}

// TestIdleRunnerGetsAJobQueuedBetweenItsWaits: a runner whose wait ended
// with no job, and which skips its next look at the store, still gets a job
// queued between its two waits.
func TestIdleRunnerGetsAJobQueuedBetweenItsWaits(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rc := registerRunner(t, e.admin, "r")
	ctx := context.Background()
	a, err := rc.RunnerClaim(ctx, api.ClaimRequest{Free: bigRunner, Wait: api.Duration(5 * time.Second)})
	if err != nil || a != nil {
		t.Fatalf("claim with nothing queued: %+v, %v", a, err)
	}
	run := e.submit(t, e.admin, bashJob("train"))
	select {
	case r := <-longClaim(ctx, rc, bigRunner):
		if r.err != nil || r.a == nil || r.a.Job.ID != run.Jobs[0].ID {
			t.Fatalf("claim: %+v, %v; want job %s", r.a, r.err, run.Jobs[0].ID)
		}
	case <-time.After(testutil.Wait):
		t.Fatalf("waited %s for the idle runner to claim the job", testutil.Wait)
	}
}

// looksNone is how many looks at the queue found no job, from /metrics.
func looksNone(t *testing.T, srv *servertest.Server) float64 {
	t.Helper()
	return scrape(t, srv.URL)[`dstack_queue_looks_total{result="none"}`]
}

// TestAnEndThatFreesNothingWakesNoRunner: a job's end that queues no job
// and frees no place under a cap wakes no waiting runner, and the runner
// that ended it, having found nothing with the report, waits without
// looking again: one look for the end, not one per runner. Both runners
// still get the next jobs at once.
func TestAnEndThatFreesNothingWakesNoRunner(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	busy := registerRunner(t, e.admin, "busy")
	waiting := registerRunner(t, e.admin, "waiting")
	e.submit(t, e.admin, bashJob("train"))
	a := claim(t, busy)
	setStatus(t, busy, a, api.StatusRunning)
	waited := longClaim(ctx, waiting, bigRunner)
	waitClaimers(t, e.srv, 1)

	before := looksNone(t, e.srv)
	res, err := busy.JobSetStatus(ctx, a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusDone, Next: &api.ClaimRequest{Free: bigRunner}})
	if err != nil || res.Next != nil {
		t.Fatalf("end with the next claim, nothing queued: %+v, %v", res, err)
	}
	again := longClaim(ctx, busy, bigRunner)
	waitClaimers(t, e.srv, 2)
	if got := looksNone(t, e.srv) - before; got != 1 {
		t.Errorf("looks that found no job after an end that freed nothing = %v; want 1 (the end's own)", got)
	}

	run := e.submit(t, e.admin, bashJob("a"), bashJob("b"))
	got := map[string]bool{}
	for range 2 {
		select {
		case r := <-waited:
			if r.err != nil || r.a == nil {
				t.Fatalf("the waiting runner's claim: %+v, %v", r.a, r.err)
			}
			got[r.a.Job.ID] = true
		case r := <-again:
			if r.err != nil || r.a == nil {
				t.Fatalf("the claim after the end: %+v, %v", r.a, r.err)
			}
			got[r.a.Job.ID] = true
		case <-time.After(testutil.Wait):
			t.Fatalf("waited %s for both runners to claim a job", testutil.Wait)
		}
	}
	if !got[run.Jobs[0].ID] || !got[run.Jobs[1].ID] {
		t.Fatalf("claimed %v; want both jobs of run %s", got, run.Name)
	}
}

// TestAnEndThatFreesAJobWakesARunner: a job's end that queues the job that
// waited for it, or frees a place under its user's cap, wakes a waiting
// runner, which claims the job at once, not at a re-check.
func TestAnEndThatFreesAJobWakesARunner(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		jobs []api.JobSpec
		cap  bool
	}{
		{"a dependent queued", []api.JobSpec{bashJob("prep"), bashJob("train", "prep")}, false},
		{"a place under the cap", []api.JobSpec{bashJob("prep"), bashJob("train")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			owner, ownerID := newUserWithID(t, e, "owner")
			if tc.cap {
				u, err := e.srv.Store().UserGet(ctx, ownerID)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := server.SetUserMaxRunning(e.srv.Server, u, 1); err != nil {
					t.Fatal(err)
				}
			}
			busy := registerRunner(t, owner, "busy")
			waiting := registerRunner(t, owner, "waiting")
			run := e.submit(t, owner, tc.jobs...)
			a := claim(t, busy)
			if a.Job.ID != run.Jobs[0].ID {
				t.Fatalf("claimed %s; want %s", a.Job.ID, run.Jobs[0].ID)
			}
			setStatus(t, busy, a, api.StatusRunning)
			waited := longClaim(ctx, waiting, bigRunner)
			waitClaimers(t, e.srv, 1)
			setStatus(t, busy, a, api.StatusDone)
			select {
			case r := <-waited:
				if r.err != nil || r.a == nil || r.a.Job.ID != run.Jobs[1].ID {
					t.Fatalf("the waiting runner's claim: %+v, %v; want job %s", r.a, r.err, run.Jobs[1].ID)
				}
			case <-time.After(testutil.Wait):
				t.Fatalf("waited %s for the waiting runner to claim the job the end freed", testutil.Wait)
			}
		})
	}
}
