package storetest

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// sharedRunner registers a self-hosted runner of u that takes anyone's jobs.
func (f *fixture) sharedRunner(u *store.User) *store.Runner {
	f.t.Helper()
	id := f.id("runner")
	r, err := f.s.RunnerCreate(f.ctx, store.RunnerCreateParams{
		ID: id, UserID: u.ID, Name: "name-" + id, Hostname: "host-" + id, Executor: "shell", Version: "1.0",
		Resources: cpuHost, TokenHash: "hash-" + id, TokenExpiresAt: base.Add(24 * time.Hour), Now: f.tick(), Shared: true,
	})
	if err != nil {
		f.t.Fatalf("RunnerCreate: %v", err)
	}
	if !r.Shared {
		f.t.Fatal("RunnerCreate(shared) made a runner that is not shared")
	}
	return r
}

// jobsOf submits n runs of one job for u and returns their job IDs.
func (f *fixture) jobsOf(u *store.User, n int) []string {
	f.t.Helper()
	var ids []string
	for range n {
		ids = append(ids, f.run(u, spec("w")).Jobs[0].ID)
	}
	return ids
}

var shareTests = []test{
	{"a member's runner takes only its user's jobs, a shared one anyone's", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		bobs := f.jobsOf(bob, 1)
		own := f.runner(alice, cpuHost)
		f.noClaim(own)
		shared := f.sharedRunner(alice)
		if j := f.claim(shared); j.ID != bobs[0] || j.RunnerID != shared.ID {
			t.Fatalf("shared runner claimed %s, want bob's %s", j.ID, bobs[0])
		}
		got, err := f.s.RunnerGet(f.ctx, shared.ID)
		if err != nil || !got.Shared || got.JobID != bobs[0] {
			t.Fatalf("RunnerGet(shared) = %+v, %v", got, err)
		}
		if got, _ := f.s.RunnerGet(f.ctx, own.ID); got.Shared {
			t.Error("a runner registered without Shared reads as shared")
		}
	}},
	{"an on-demand instance's runner takes anyone's jobs", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		bobs := f.jobsOf(bob, 1)
		_, rn := f.register(f.instances(f.limit(alice, 1), 1)[0])
		if j := f.claim(rn); j.ID != bobs[0] {
			t.Fatalf("the instance's runner claimed %s, want bob's %s", j.ID, bobs[0])
		}
	}},
	{"free runners go to users in turn, FIFO within a user", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob, carol := f.user(), f.user(), f.user()
		// Alice queues first and most: a claim by queue order alone would
		// give her every job before bob's.
		as := f.jobsOf(alice, 4)
		bs := f.jobsOf(bob, 2)
		cs := f.jobsOf(carol, 1)
		r := f.sharedRunner(alice)
		var got []string
		for range 7 {
			j := f.claim(r)
			got = append(got, j.ID)
			f.finish(f.set(j, api.StatusRunning), api.StatusDone)
		}
		want := []string{as[0], bs[0], cs[0], as[1], bs[1], as[2], as[3]}
		if !slices.Equal(got, want) {
			t.Fatalf("claims = %v, want %v", got, want)
		}
		f.noClaim(r)
	}},
	{"a user's own runner's claims count for the turn", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		as := f.jobsOf(alice, 3)
		bs := f.jobsOf(bob, 1)
		own := f.runner(alice, cpuHost)
		if j := f.claim(own); j.ID != as[0] {
			t.Fatalf("alice's runner claimed %s, want %s", j.ID, as[0])
		}
		// Alice just got a job: bob's turn on a shared runner.
		shared := f.sharedRunner(bob)
		if j := f.claim(shared); j.ID != bs[0] {
			t.Fatalf("shared runner claimed %s, want bob's %s", j.ID, bs[0])
		}
		if j := f.claim(shared); j.ID != as[1] {
			t.Fatalf("shared runner claimed %s, want alice's %s", j.ID, as[1])
		}
	}},
	{"a user at their cap gets no claim; others do", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		u, err := f.s.UserSetMaxRunning(f.ctx, store.UserSetMaxRunningParams{UserID: alice.ID, MaxRunning: 2})
		if err != nil || u.MaxRunning != 2 {
			t.Fatalf("UserSetMaxRunning = %+v, %v", u, err)
		}
		if got, _ := f.s.UserGet(f.ctx, alice.ID); got.MaxRunning != 2 {
			t.Fatalf("UserGet after UserSetMaxRunning: MaxRunning %d, want 2", got.MaxRunning)
		}
		f.jobsOf(alice, 4)
		r1, r2, r3 := f.sharedRunner(alice), f.sharedRunner(alice), f.sharedRunner(alice)
		j1, j2 := f.claim(r1), f.claim(r2)
		if j1.UserID != alice.ID || j2.UserID != alice.ID {
			t.Fatal("the first claims did not go to alice")
		}
		f.noClaim(r3) // alice runs 2 of 2
		caps, err := f.s.UserCapList(f.ctx)
		if err != nil || len(caps) != 1 || *caps[0] != (store.UserCap{UserID: alice.ID, MaxRunning: 2, Running: 2}) {
			t.Fatalf("UserCapList = %v, %v; want alice's 2 of 2", caps, err)
		}
		bs := f.jobsOf(bob, 1)
		if j := f.claim(r3); j.ID != bs[0] {
			t.Fatalf("claim with alice capped = %s, want bob's %s", j.ID, bs[0])
		}
		// Her own runner is capped too.
		f.noClaim(f.runner(alice, cpuHost))
		// A job that ends frees a place.
		f.finish(f.set(j1, api.StatusRunning), api.StatusDone)
		if j := f.claim(r1); j.UserID != alice.ID {
			t.Fatalf("claim after alice's job ended = %s of %s, want alice's", j.ID, j.UserID)
		}
		// 0 lifts the cap.
		if _, err := f.s.UserSetMaxRunning(f.ctx, store.UserSetMaxRunningParams{UserID: alice.ID}); err != nil {
			t.Fatal(err)
		}
		if j, err := f.tryClaim(f.runner(alice, cpuHost), cpuHost); err != nil || j.UserID != alice.ID {
			t.Fatalf("claim with the cap lifted = %v, %v", jobID(j), err)
		}
	}},
	{"set max running: bad input", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		_, err := f.s.UserSetMaxRunning(f.ctx, store.UserSetMaxRunningParams{UserID: "nobody", MaxRunning: 1})
		wantErr(t, "UserSetMaxRunning of an unknown user", err, store.ErrNotFound)
		if _, err := f.s.UserSetMaxRunning(f.ctx, store.UserSetMaxRunningParams{UserID: u.ID, MaxRunning: -1}); err == nil {
			t.Error("UserSetMaxRunning(-1) succeeded")
		}
		if got, _ := f.s.UserGet(f.ctx, u.ID); got.MaxRunning != 0 {
			t.Errorf("MaxRunning after refused sets = %d", got.MaxRunning)
		}
	}},
	{"concurrent claims keep the cap and give each job once", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		if _, err := f.s.UserSetMaxRunning(f.ctx, store.UserSetMaxRunningParams{UserID: alice.ID, MaxRunning: 3}); err != nil {
			t.Fatal(err)
		}
		f.jobsOf(alice, 10)
		f.jobsOf(bob, 10)
		const n = 12
		runners := make([]*store.Runner, n)
		for i := range runners {
			runners[i] = f.sharedRunner(bob)
		}
		jobs := make([]*store.Job, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, r := range runners {
			wg.Go(func() { jobs[i], errs[i] = f.tryClaim(r, cpuHost) })
		}
		wg.Wait()
		seen := map[string]bool{}
		perUser := map[string]int{}
		for i := range n {
			if errs[i] != nil {
				if !errors.Is(errs[i], store.ErrNotFound) {
					t.Fatalf("claim %d: %v", i, errs[i])
				}
				continue
			}
			if seen[jobs[i].ID] {
				t.Fatalf("job %s claimed twice", jobs[i].ID)
			}
			seen[jobs[i].ID] = true
			perUser[jobs[i].UserID]++
		}
		if perUser[alice.ID] != 3 || perUser[bob.ID] != 9 {
			t.Fatalf("claims by user = %v; want alice's 3 (her cap) and bob's 9", perUser)
		}
	}},
}
