package storetest

import (
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// interruptTests cover a runner whose machine the cloud reclaims: it is
// marked (RunnerInterrupt) and gives its job back (JobInterrupt).
var interruptTests = []test{
	{"an interrupted runner claims nothing", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r, other := f.runner(u, cpuHost), f.runner(u, cpuHost)
		run := f.run(u, spec("a"), spec("b"))
		a := f.set(f.claim(r), api.StatusRunning)
		const reason = "spot instance reclaimed by the cloud (notice at 12:00:05; terminate at 12:02:05 UTC)"
		now := f.tick()
		got, changed, err := f.s.RunnerInterrupt(f.ctx, store.RunnerInterruptParams{ID: r.ID, Reason: reason, Now: now})
		if err != nil {
			t.Fatalf("RunnerInterrupt: %v", err)
		}
		if got.ID != r.ID || got.InterruptedAt == nil || got.InterruptionReason != reason || !got.Online || got.JobID != a.ID {
			t.Fatalf("RunnerInterrupt runner = %+v; want interrupted, still online, still holding %s", got, a.ID)
		}
		sameTime(t, "InterruptedAt", *got.InterruptedAt, now)
		if len(changed) != 1 || changed[0].ID != a.ID || changed[0].StatusReason != reason ||
			changed[0].Status != api.StatusRunning || changed[0].RunnerID != r.ID || changed[0].Lease != a.Lease {
			t.Fatalf("RunnerInterrupt changed %+v; want job %s still running on its runner with the reason", changed, a.ID)
		}
		// The runner is given nothing more; another takes the queued job.
		f.noClaim(r)
		if j := f.claim(other); j.ID != f.runJobs(run)["b"].ID {
			t.Fatalf("the other runner claimed %s, want b", j.ID)
		}
		// Every read shows it.
		if rs, err := f.s.RunnerList(f.ctx, store.RunnerListParams{UserID: u.ID}); err != nil || len(rs) != 2 {
			t.Fatalf("RunnerList = %v, %v", rs, err)
		} else {
			for _, x := range rs {
				if (x.ID == r.ID) != (x.InterruptedAt != nil) {
					t.Errorf("RunnerList: runner %s InterruptedAt %v", x.ID, x.InterruptedAt)
				}
			}
		}
		if x, err := f.s.RunnerGetByTokenHash(f.ctx, "hash-"+r.ID); err != nil || x.InterruptedAt == nil || x.InterruptionReason != reason {
			t.Fatalf("RunnerGetByTokenHash = %+v, %v; want interrupted", x, err)
		}
	}},
	{"a repeated report keeps the first", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		f.run(u, spec("a"))
		first := f.tick()
		if _, _, err := f.s.RunnerInterrupt(f.ctx, store.RunnerInterruptParams{ID: r.ID, Reason: "first", Now: first}); err != nil {
			t.Fatalf("RunnerInterrupt: %v", err)
		}
		got, changed, err := f.s.RunnerInterrupt(f.ctx, store.RunnerInterruptParams{ID: r.ID, Reason: "second", Now: f.tick()})
		if err != nil {
			t.Fatalf("second RunnerInterrupt: %v", err)
		}
		if got.InterruptedAt == nil || got.InterruptionReason != "first" || len(changed) != 0 {
			t.Fatalf("second RunnerInterrupt = %+v, %d jobs; want the first report kept, no job", got, len(changed))
		}
		sameTime(t, "InterruptedAt after a repeat", *got.InterruptedAt, first)
		f.noClaim(r)
		// A heartbeat does not undo it.
		if err := f.s.RunnerHeartbeat(f.ctx, store.RunnerHeartbeatParams{ID: r.ID, Now: f.tick()}); err != nil {
			t.Fatalf("RunnerHeartbeat: %v", err)
		}
		f.noClaim(r)
	}},
	{"an unknown runner", func(t *testing.T, open Open) {
		f := setup(t, open)
		_, _, err := f.s.RunnerInterrupt(f.ctx, store.RunnerInterruptParams{ID: "nope", Reason: "x", Now: f.tick()})
		wantErr(t, "RunnerInterrupt of an unknown runner", err, store.ErrNotFound)
	}},
	{"a given-back job is requeued, then fails", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r1, r2 := f.runner(u, cpuHost), f.runner(u, cpuHost)
		run := f.run(u, spec("a"), spec("b", "a"))
		j := f.set(f.claim(r1), api.StatusRunning)
		const cause = "spot instance reclaimed by the cloud"
		changed, err := f.s.JobInterrupt(f.ctx, store.JobInterruptParams{ID: j.ID, RunnerID: r1.ID, Lease: j.Lease, Cause: cause, MaxAttempts: 2, Now: f.tick()})
		if err != nil {
			t.Fatalf("JobInterrupt: %v", err)
		}
		want := "interrupted: " + cause + "; requeued for attempt 2 of 2"
		if len(changed) != 1 || changed[0].ID != j.ID || changed[0].Status != api.StatusPending || changed[0].Attempt != 1 ||
			changed[0].Lease <= j.Lease || changed[0].RunnerID != "" || changed[0].StatusReason != want || changed[0].StartedAt != nil {
			t.Fatalf("JobInterrupt changed %+v; want %s pending, attempt 1, a new lease, no runner, reason %q", changed, j.ID, want)
		}
		// The old lease is spent.
		_, err = f.s.JobInterrupt(f.ctx, store.JobInterruptParams{ID: j.ID, RunnerID: r1.ID, Lease: j.Lease, Cause: cause, MaxAttempts: 2, Now: f.tick()})
		wantErr(t, "a repeated JobInterrupt", err, store.ErrLeaseLost)
		_, err = f.trySet(j, api.StatusDone)
		wantErr(t, "JobSetStatus under the old lease", err, store.ErrLeaseLost)
		if r, _ := f.s.RunnerGet(f.ctx, r1.ID); r.JobID != "" {
			t.Errorf("runner still holds %s", r.JobID)
		}

		// The next attempt is the last: given back again, it fails, and so
		// does its dependent.
		again := f.claim(r2)
		if again.ID != j.ID || again.Attempt != 1 {
			t.Fatalf("claimed %s attempt %d, want %s attempt 1", again.ID, again.Attempt, j.ID)
		}
		changed, err = f.s.JobInterrupt(f.ctx, store.JobInterruptParams{ID: j.ID, RunnerID: r2.ID, Lease: again.Lease, Cause: cause, MaxAttempts: 2, Now: f.tick()})
		if err != nil {
			t.Fatalf("second JobInterrupt: %v", err)
		}
		if len(changed) != 2 || changed[0].ID != j.ID || changed[0].Status != api.StatusFailed || changed[0].FinishedAt == nil ||
			!strings.Contains(changed[0].StatusReason, cause) || !strings.Contains(changed[0].StatusReason, "giving up") {
			t.Fatalf("second JobInterrupt changed %+v; want the job failed, giving up, then its dependent", changed)
		}
		f.wantStatus(map[*store.Job]api.JobStatus{f.runJobs(run)["b"]: api.StatusFailed})
	}},
	{"a stopped job given back ends stopped", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		run := f.run(u, spec("a"))
		j := f.set(f.claim(r), api.StatusRunning)
		if _, err := f.s.JobRequestStop(f.ctx, store.JobRequestStopParams{RunID: run.ID, Now: f.tick()}); err != nil {
			t.Fatalf("JobRequestStop: %v", err)
		}
		changed, err := f.s.JobInterrupt(f.ctx, store.JobInterruptParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease, Cause: "reclaimed", MaxAttempts: 3, Now: f.tick()})
		if err != nil {
			t.Fatalf("JobInterrupt: %v", err)
		}
		if len(changed) != 1 || changed[0].Status != api.StatusStopped || changed[0].StatusReason != "reclaimed" {
			t.Fatalf("JobInterrupt changed %+v; want the job stopped", changed)
		}
	}},
	{"only the job's runner under its lease gives it back", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r, other := f.runner(u, cpuHost), f.runner(u, cpuHost)
		f.run(u, spec("a"))
		j := f.claim(r)
		for name, p := range map[string]store.JobInterruptParams{
			"another runner": {ID: j.ID, RunnerID: other.ID, Lease: j.Lease},
			"an old lease":   {ID: j.ID, RunnerID: r.ID, Lease: j.Lease - 1},
		} {
			p.Cause, p.MaxAttempts, p.Now = "x", 3, f.tick()
			_, err := f.s.JobInterrupt(f.ctx, p)
			wantErr(t, "JobInterrupt by "+name, err, store.ErrLeaseLost)
		}
		_, err := f.s.JobInterrupt(f.ctx, store.JobInterruptParams{ID: "nope", RunnerID: r.ID, Lease: 1, Cause: "x", MaxAttempts: 3, Now: f.tick()})
		wantErr(t, "JobInterrupt of an unknown job", err, store.ErrNotFound)
		// A finished job cannot be given back.
		done := f.finish(j, api.StatusDone)
		_, err = f.s.JobInterrupt(f.ctx, store.JobInterruptParams{ID: j.ID, RunnerID: r.ID, Lease: done.Lease, Cause: "x", MaxAttempts: 3, Now: f.tick()})
		wantErr(t, "JobInterrupt of a finished job", err, store.ErrLeaseLost)
		f.wantStatus(map[*store.Job]api.JobStatus{j: api.StatusDone})
	}},
	{"an interrupted runner that goes silent gives its reason", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		f.run(u, spec("a"))
		j := f.claim(r)
		const reason = "spot instance reclaimed by the cloud (notice at 12:00:05; terminate at 12:02:05 UTC)"
		if _, _, err := f.s.RunnerInterrupt(f.ctx, store.RunnerInterruptParams{ID: r.ID, Reason: reason, Now: f.tick()}); err != nil {
			t.Fatalf("RunnerInterrupt: %v", err)
		}
		changed, err := f.s.RunnerMarkOffline(f.ctx, store.RunnerMarkOfflineParams{HeartbeatBefore: f.tick().Add(time.Hour), MaxAttempts: 3, Now: f.tick()})
		if err != nil {
			t.Fatalf("RunnerMarkOffline: %v", err)
		}
		want := "interrupted: " + reason + "; requeued for attempt 2 of 3"
		if len(changed) != 1 || changed[0].ID != j.ID || changed[0].Status != api.StatusPending || changed[0].StatusReason != want {
			t.Fatalf("RunnerMarkOffline changed %+v; want %s pending with reason %q", changed, j.ID, want)
		}
	}},
}
