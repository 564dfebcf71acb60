package storetest

import (
	"errors"
	"sync"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// endAndClaim ends j with st and claims its runner's next job with free.
func (f *fixture) endAndClaim(j *store.Job, st api.JobStatus, free api.HostResources) (ended, next *store.Job, err error) {
	now := f.tick()
	return f.s.JobEndAndClaim(f.ctx,
		store.JobSetStatusParams{ID: j.ID, RunnerID: j.RunnerID, Lease: j.Lease, Status: st, Now: now},
		store.JobClaimNextParams{RunnerID: j.RunnerID, UserID: j.UserID, Free: free, Now: now})
}

// twoJobsOneRunning submits two jobs of a new user and starts the first on
// a new runner of hers.
func (f *fixture) twoJobsOneRunning() (ids []string, running *store.Job) {
	f.t.Helper()
	u := f.user()
	ids = f.jobsOf(u, 2)
	return ids, f.set(f.claim(f.runner(u, cpuHost)), api.StatusRunning)
}

// endClaimTests hold JobEndAndClaim to JobSetStatus followed by
// JobClaimNext, alone and with many runners at once.
var endClaimTests = []test{
	{"a job's end gives its runner the next job", func(t *testing.T, open Open) {
		f := setup(t, open)
		ids, first := f.twoJobsOneRunning()
		ended, next, err := f.endAndClaim(first, api.StatusDone, cpuHost)
		if err != nil {
			t.Fatalf("JobEndAndClaim: %v", err)
		}
		if ended.ID != ids[0] || ended.Status != api.StatusDone || ended.FinishedAt == nil {
			t.Fatalf("ended %s: %s, finished at %v; want %s done with its end time", ended.ID, ended.Status, ended.FinishedAt, ids[0])
		}
		if next == nil || next.ID != ids[1] || next.Status != api.StatusDownloading || next.RunnerID != first.RunnerID {
			t.Fatalf("next = %+v; want %s downloading on %s", next, ids[1], first.RunnerID)
		}
		f.wantStatus(map[*store.Job]api.JobStatus{ended: api.StatusDone, next: api.StatusDownloading})
		// Nothing left: the end is made, and no job comes with it.
		next = f.set(next, api.StatusRunning)
		ended, none, err := f.endAndClaim(next, api.StatusFailed, cpuHost)
		if err != nil || ended.Status != api.StatusFailed || none != nil {
			t.Fatalf("JobEndAndClaim with no job pending = %v, %v, %v; want the job failed and no next job", ended, jobID(none), err)
		}
	}},
	{"an end says whether it may let another job be claimed", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		// Independent jobs, no cap: an end frees nothing for others.
		f.jobsOf(u, 2)
		first := f.set(f.claim(r), api.StatusRunning)
		if ended := f.set(first, api.StatusDone); ended.Unblocks {
			t.Error("the end of an independent job of a user without a cap unblocks jobs; want not")
		}
		second := f.set(f.claim(r), api.StatusRunning)
		if ended, _, err := f.endAndClaim(second, api.StatusDone, cpuHost); err != nil || ended.Unblocks {
			t.Errorf("JobEndAndClaim of an independent job = unblocks %v, %v; want not", ended != nil && ended.Unblocks, err)
		}
		// An end that queues the job waiting for it; one that fails it.
		jobs := f.runJobs(f.run(u, spec("prepare"), spec("train", "prepare")))
		prepare := f.set(f.claim(r), api.StatusRunning)
		if prepare.ID != jobs["prepare"].ID {
			t.Fatalf("claimed %s; want prepare", prepare.ID)
		}
		if ended := f.set(prepare, api.StatusDone); !ended.Unblocks {
			t.Error("the end that queued a dependent does not unblock jobs")
		}
		train := f.set(f.claim(r), api.StatusRunning)
		if ended := f.set(train, api.StatusDone); ended.Unblocks {
			t.Error("the end of the run's last job unblocks jobs; want not")
		}
		f.runJobs(f.run(u, spec("prepare"), spec("train", "prepare")))
		prepare = f.set(f.claim(r), api.StatusRunning)
		if ended := f.set(prepare, api.StatusFailed); ended.Unblocks {
			t.Error("a failure that failed its dependent unblocks jobs; want not")
		}
		// Under a cap every end frees a place.
		if _, err := f.s.UserSetMaxRunning(f.ctx, store.UserSetMaxRunningParams{UserID: u.ID, MaxRunning: 1}); err != nil {
			t.Fatal(err)
		}
		f.jobsOf(u, 2)
		third := f.set(f.claim(r), api.StatusRunning)
		ended, next, err := f.endAndClaim(third, api.StatusStopped, cpuHost)
		if err != nil || !ended.Unblocks || next == nil {
			t.Fatalf("JobEndAndClaim under a cap = unblocks %v, next %s, %v; want it to unblock, and the next job", ended != nil && ended.Unblocks, jobID(next), err)
		}
		if running := f.set(next, api.StatusRunning); running.Unblocks {
			t.Error("a change to running unblocks jobs; want only ends to")
		}
	}},
	{"an end under a lost lease claims nothing", func(t *testing.T, open Open) {
		f := setup(t, open)
		ids, j := f.twoJobsOneRunning()
		stale := *j
		stale.Lease--
		if _, next, err := f.endAndClaim(&stale, api.StatusDone, cpuHost); !errors.Is(err, store.ErrLeaseLost) || next != nil {
			t.Fatalf("JobEndAndClaim under a stale lease = %s, %v; want ErrLeaseLost and no claim", jobID(next), err)
		}
		if got := f.job(ids[1]); got.Status != api.StatusPending {
			t.Fatalf("the next job is %s after a refused end; want it still pending", got.Status)
		}
		f.wantStatus(map[*store.Job]api.JobStatus{j: api.StatusRunning})
	}},
	{"a job's end queues its dependent, which its runner gets at once", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		run := f.run(u, spec("prepare"), spec("train", "prepare"))
		jobs := f.runJobs(run)
		r := f.runner(u, cpuHost)
		prepare := f.set(f.claim(r), api.StatusRunning)
		_, next, err := f.endAndClaim(prepare, api.StatusDone, cpuHost)
		if err != nil {
			t.Fatalf("JobEndAndClaim: %v", err)
		}
		if next == nil || next.ID != jobs["train"].ID {
			t.Fatalf("next = %s; want train (%s), queued by the end", jobID(next), jobs["train"].ID)
		}
	}},
	{"a job's end frees its user's place under the cap", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		if _, err := f.s.UserSetMaxRunning(f.ctx, store.UserSetMaxRunningParams{UserID: u.ID, MaxRunning: 1}); err != nil {
			t.Fatal(err)
		}
		f.jobsOf(u, 3)
		r, other := f.runner(u, cpuHost), f.runner(u, cpuHost)
		j := f.set(f.claim(r), api.StatusRunning)
		f.noClaim(other) // at the cap
		_, next, err := f.endAndClaim(j, api.StatusDone, cpuHost)
		if err != nil || next == nil {
			t.Fatalf("JobEndAndClaim at the cap = %s, %v; want the next job, the ended one no longer counting", jobID(next), err)
		}
		f.noClaim(other) // at the cap again
	}},
	{"runners ending jobs together take each pending job once, by turn of user", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		const runners = 16
		f.jobsOf(alice, runners)
		f.jobsOf(bob, runners)
		held := make([]*store.Job, runners)
		for i := range held {
			held[i] = f.set(f.claim(f.sharedRunner(alice)), api.StatusRunning)
		}
		// Alice's runners took turns: half the jobs are alice's, half
		// bob's, and as many of each are left.
		var (
			mu   sync.Mutex
			got  = map[string]string{} // job → runner
			user = map[string]int{}
			wg   sync.WaitGroup
		)
		for _, j := range held {
			wg.Go(func() {
				ended, next, err := f.endAndClaim(j, api.StatusDone, cpuHost)
				if err != nil || ended.Status != api.StatusDone || next == nil {
					t.Errorf("JobEndAndClaim(%s) = %v, %s, %v; want it done and a next job", j.ID, ended, jobID(next), err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if prev, ok := got[next.ID]; ok {
					t.Errorf("job %s claimed by %s and %s", next.ID, prev, next.RunnerID)
				}
				got[next.ID] = next.RunnerID
				user[next.UserID]++
			})
		}
		wg.Wait()
		if user[alice.ID] != runners/2 || user[bob.ID] != runners/2 {
			t.Fatalf("%d next claims went %d to alice and %d to bob; want turns, %d each", runners, user[alice.ID], user[bob.ID], runners/2)
		}
	}},
}

// endInterruptTests: interruptions of runners that report their jobs' ends
// at the same time fail neither.
var endInterruptTests = []test{
	{"runners interrupted as they end their jobs fail neither", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		const runners = 24
		f.jobsOf(u, 2*runners)
		held := make([]*store.Job, runners)
		for i := range held {
			held[i] = f.set(f.claim(f.runner(u, cpuHost)), api.StatusRunning)
		}
		var wg sync.WaitGroup
		for _, j := range held {
			wg.Go(func() {
				if _, _, err := f.endAndClaim(j, api.StatusDone, cpuHost); err != nil {
					t.Errorf("JobEndAndClaim(%s) while its runner is interrupted: %v", j.ID, err)
				}
			})
			wg.Go(func() {
				if _, _, err := f.s.RunnerInterrupt(f.ctx, store.RunnerInterruptParams{ID: j.RunnerID, Reason: "spot reclaimed", Now: base}); err != nil {
					t.Errorf("RunnerInterrupt(%s) as it ends its job: %v", j.RunnerID, err)
				}
			})
		}
		wg.Wait()
	}},
}
