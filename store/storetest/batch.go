package storetest

import (
	"errors"
	"sync"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// batchTests hold the store to one claim, or one status change, at a time
// when many come at once: a store may do them together, but each must have
// the outcome it would have had alone, in some order.
var batchTests = []test{
	{"concurrent claims of shared runners take turns between users", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		f.jobsOf(alice, 30)
		f.jobsOf(bob, 30)
		const runners = 20
		rs := make([]*store.Runner, runners)
		for i := range rs {
			rs[i] = f.sharedRunner(alice)
		}
		var (
			mu  sync.Mutex
			got = map[string]int{}
			wg  sync.WaitGroup
		)
		for _, r := range rs {
			wg.Go(func() {
				j, err := f.s.JobClaimNext(f.ctx, store.JobClaimNextParams{RunnerID: r.ID, UserID: r.UserID, Free: cpuHost, Now: base})
				if err != nil {
					t.Errorf("JobClaimNext: %v", err)
					return
				}
				mu.Lock()
				got[j.UserID]++
				mu.Unlock()
			})
		}
		wg.Wait()
		if got[alice.ID] != runners/2 || got[bob.ID] != runners/2 {
			t.Fatalf("%d claims went %d to alice and %d to bob; want turns, %d each", runners, got[alice.ID], got[bob.ID], runners/2)
		}
	}},
	{"a job that fits is found past many older ones that do not", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		gpu := withResources(spec("gpu"), api.Resources{GPU: &api.GPURequest{Count: 1}})
		for range 150 {
			f.run(u, gpu)
		}
		cpu := f.run(u, spec("cpu"))
		r := f.runner(u, cpuHost)
		if j := f.claim(r); j.RunID != cpu.ID {
			t.Fatalf("CPU runner claimed run %s, want %s (the only job that fits, behind 150 GPU jobs)", j.RunID, cpu.ID)
		}
		f.noClaim(r)
	}},
	{"the turn of a user whose older jobs do not fit still counts", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		gpu := withResources(spec("gpu"), api.Resources{GPU: &api.GPURequest{Count: 1}})
		for range 150 {
			f.run(alice, gpu)
		}
		mine := f.run(alice, spec("cpu")).Jobs[0].ID
		f.jobsOf(bob, 1)
		// Neither user has claimed: the older job that fits, alice's,
		// comes first.
		if j := f.claim(f.sharedRunner(bob)); j.ID != mine {
			t.Fatalf("shared runner claimed %s of %s, want alice's %s", j.ID, j.UserID, mine)
		}
	}},
	{"jobs of one run ending at once queue their dependent", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		const parents = 12
		specs := make([]api.JobSpec, 0, parents+1)
		var names []string
		for i := range parents {
			name := string(rune('a' + i))
			specs = append(specs, spec(name))
			names = append(names, name)
		}
		specs = append(specs, spec("last", names...))
		run := f.run(u, specs...)
		var claimed []*store.Job
		for range parents {
			claimed = append(claimed, f.set(f.claim(f.runner(u, cpuHost)), api.StatusRunning))
		}
		var wg sync.WaitGroup
		for _, j := range claimed {
			wg.Go(func() {
				if _, err := f.s.JobSetStatus(f.ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: j.RunnerID, Lease: j.Lease, Status: api.StatusDone, Now: base}); err != nil {
					t.Errorf("JobSetStatus(%s): %v", j.ID, err)
				}
			})
		}
		wg.Wait()
		f.wantStatus(map[*store.Job]api.JobStatus{f.runJobs(run)["last"]: api.StatusPending})
	}},
	{"a stale lease fails alone among concurrent status changes", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		var claimed []*store.Job
		for range 10 {
			f.run(u, spec("w"))
			claimed = append(claimed, f.claim(f.runner(u, cpuHost)))
		}
		errs := make([]error, len(claimed))
		var wg sync.WaitGroup
		for i, j := range claimed {
			lease := j.Lease
			if i == 3 {
				lease++ // stale
			}
			wg.Go(func() {
				_, errs[i] = f.s.JobSetStatus(f.ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: j.RunnerID, Lease: lease, Status: api.StatusRunning, Now: base})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if i == 3 && !errors.Is(err, store.ErrLeaseLost) {
				t.Errorf("status change under a stale lease: %v, want ErrLeaseLost", err)
			}
			if i != 3 && err != nil {
				t.Errorf("status change of job %d: %v", i, err)
			}
		}
		if _, err := f.s.JobSetStatus(f.ctx, store.JobSetStatusParams{ID: "no-such-job", RunnerID: claimed[0].RunnerID, Lease: 1, Status: api.StatusRunning, Now: base}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("status change of an unknown job: %v, want ErrNotFound", err)
		}
	}},
	{"a runner that holds nothing is given again the job it never started", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		f.jobsOf(u, 2)
		r := f.runner(u, cpuHost)
		lost := f.claim(r)
		claim := func() *store.Job {
			t.Helper()
			j, err := f.s.JobClaimNext(f.ctx, store.JobClaimNextParams{RunnerID: r.ID, UserID: u.ID, Free: cpuHost, Now: f.tick(), Redeliver: true})
			if err != nil {
				t.Fatalf("JobClaimNext(Redeliver): %v", err)
			}
			return j
		}
		if lost.Redelivered {
			t.Fatal("a first claim reads as given again")
		}
		if again := claim(); again.ID != lost.ID || again.Lease != lost.Lease || !again.Redelivered {
			t.Fatalf("claim with Redeliver = %s lease %d given again %v; want %s again under lease %d", again.ID, again.Lease, again.Redelivered, lost.ID, lost.Lease)
		}
		f.set(lost, api.StatusRunning)
		if next := claim(); next.ID == lost.ID || next.Redelivered {
			t.Fatal("a started job was given again; want the other job")
		}
	}},
}
