package storetest

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

var registerTests = []test{
	{"the join token registers one runner", func(t *testing.T, open Open) {
		f := setup(t, open)
		u, other := f.user(), f.user()
		l := f.limit(u, 3)
		job := f.run(u, spec("a")).Jobs[0]
		ins := f.instances(l, 2, job.ID)
		p := f.registerParams(ins[0])
		p.Runner.UserID, p.Runner.InstanceID = other.ID, "ignored"
		in, rn, err := f.s.InstanceRegister(f.ctx, p)
		if err != nil {
			t.Fatalf("InstanceRegister: %v", err)
		}
		if in.State != store.InstanceRunning || in.RunnerID != rn.ID || in.RegisteredAt == nil || in.JobID != job.ID ||
			in.IdleSince != nil {
			t.Fatalf("registered instance = %+v; want running, its runner, still for its job", in)
		}
		sameTime(t, "RegisteredAt", *in.RegisteredAt, p.Runner.Now)
		if rn.ID != p.Runner.ID || rn.UserID != u.ID || rn.InstanceID != in.ID || rn.Backend != "aws" ||
			rn.Region != "eu-west-1" || rn.InstanceType != l.InstanceType || rn.Spot || rn.InstanceState != store.InstanceRunning ||
			!rn.Online || rn.Name != p.Runner.Name {
			t.Fatalf("registered runner = %+v; want the instance's user and fields", rn)
		}
		if got, err := f.s.RunnerGetByTokenHash(f.ctx, p.Runner.TokenHash); err != nil || got.InstanceID != in.ID {
			t.Fatalf("RunnerGetByTokenHash = %+v, %v", got, err)
		}

		// The token is used up.
		again := f.registerParams(ins[0])
		_, _, err = f.s.InstanceRegister(f.ctx, again)
		wantErr(t, "second InstanceRegister with one token", err, store.ErrNotFound)
		_, err = f.s.RunnerGet(f.ctx, again.Runner.ID)
		wantErr(t, "RunnerGet of the refused second runner", err, store.ErrNotFound)
		_, _, err = f.s.InstanceRegister(f.ctx, store.InstanceRegisterParams{JoinTokenHash: "unknown", Runner: again.Runner})
		wantErr(t, "InstanceRegister with an unknown token", err, store.ErrNotFound)
		_, _, err = f.s.InstanceRegister(f.ctx, store.InstanceRegisterParams{Runner: again.Runner})
		wantErr(t, "InstanceRegister without a token", err, store.ErrNotFound)

		// A refused runner leaves the token for another try.
		p = f.registerParams(ins[1])
		p.Runner.TokenHash = "hash-" + rn.ID
		_, _, err = f.s.InstanceRegister(f.ctx, p)
		wantErr(t, "InstanceRegister with a taken runner token", err, store.ErrConflict)
		if got := f.instance(ins[1].ID); got.State != store.InstanceLaunching || got.RunnerID != "" {
			t.Fatalf("instance after a refused registration = %+v", got)
		}
		if in, _ := f.register(ins[1]); in.IdleSince == nil {
			t.Fatalf("instance registered for no job = %+v; want idle since registration", in)
		}
	}},
	{"concurrent registrations with one token", func(t *testing.T, open Open) {
		f := setup(t, open)
		in := f.instances(f.limit(f.user(), 1), 1)[0]
		const racers = 10
		params := make([]store.InstanceRegisterParams, racers)
		for i := range params {
			params[i] = f.registerParams(in)
		}
		errs := make([]error, racers)
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() { _, _, errs[i] = f.s.InstanceRegister(f.ctx, params[i]) })
		}
		wg.Wait()
		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, store.ErrNotFound):
				t.Errorf("InstanceRegister %d: %v, want nil or ErrNotFound", i, err)
			}
		}
		runners, _ := f.s.RunnerList(f.ctx, store.RunnerListParams{})
		if ok != 1 || len(runners) != 1 {
			t.Fatalf("%d registrations succeeded and %d runners exist; want 1 and 1", ok, len(runners))
		}
	}},
	{"a terminating instance cannot register", func(t *testing.T, open Open) {
		f := setup(t, open)
		in := f.instances(f.limit(f.user(), 1), 1)[0]
		f.setState(in, store.InstanceTerminating)
		_, _, err := f.s.InstanceRegister(f.ctx, f.registerParams(in))
		wantErr(t, "InstanceRegister of a terminating instance", err, store.ErrNotFound)
	}},
	{"runner list shows instances", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		self := f.runner(u, cpuHost)
		spot := f.limitParams(u, 1)
		spot.Spot = true
		res, err := f.s.LimitPut(f.ctx, spot)
		if err != nil {
			t.Fatal(err)
		}
		in, rn := f.register(f.instances(res.Limit, 1)[0])
		byID := func() map[string]*store.Runner {
			rs, err := f.s.RunnerList(f.ctx, store.RunnerListParams{UserID: u.ID})
			if err != nil {
				t.Fatalf("RunnerList: %v", err)
			}
			out := map[string]*store.Runner{}
			for _, r := range rs {
				out[r.ID] = r
			}
			return out
		}
		got := byID()
		if s := got[self.ID]; s.InstanceID != "" || s.Backend != "" || s.InstanceType != "" || s.InstanceState != "" {
			t.Errorf("self-hosted runner has instance fields: %+v", s)
		}
		if r := got[rn.ID]; r.InstanceID != in.ID || r.Backend != "aws" || r.Region != "eu-west-1" ||
			r.InstanceType != res.Limit.InstanceType || !r.Spot || r.InstanceState != store.InstanceRunning {
			t.Errorf("instance runner = %+v", r)
		}
		f.setState(in, store.InstanceTerminating)
		if r := byID()[rn.ID]; r.InstanceState != store.InstanceTerminating {
			t.Errorf("instance runner state %q after InstanceSetState, want terminating", r.InstanceState)
		}
		// RunnerCreate records an instance ID too, and refuses an unknown one.
		p := store.RunnerCreateParams{ID: "r-direct", UserID: u.ID, Name: "direct", TokenHash: "direct",
			InstanceID: in.ID, TokenExpiresAt: base, Now: f.tick()}
		if r, err := f.s.RunnerCreate(f.ctx, p); err != nil || r.InstanceID != in.ID || r.InstanceType != res.Limit.InstanceType {
			t.Fatalf("RunnerCreate with an instance = %+v, %v", r, err)
		}
		p.ID, p.TokenHash, p.InstanceID = "r-bad", "bad", "nope"
		_, err = f.s.RunnerCreate(f.ctx, p)
		wantErr(t, "RunnerCreate with an unknown instance", err, store.ErrNotFound)
	}},
}

// busy returns a running instance whose runner holds a running job, the
// first of a run of two.
func (f *fixture) busy() (*store.Instance, *store.Runner, *store.Job, *store.Run) {
	f.t.Helper()
	u := f.user()
	run := f.run(u, spec("a"), spec("b", "a"))
	in, rn := f.register(f.instances(f.limit(u, 2), 1)[0])
	j := f.set(f.claim(rn), api.StatusRunning)
	return in, rn, j, run
}

var instanceStateTests = []test{
	{"terminating a busy instance requeues its job", func(t *testing.T, open Open) {
		f := setup(t, open)
		in, rn, j, _ := f.busy()
		got, changed, err := f.s.InstanceSetState(f.ctx, store.InstanceSetStateParams{ID: in.ID,
			State: store.InstanceTerminating, Reason: "over_limit", MaxAttempts: 3, Now: f.tick()})
		if err != nil {
			t.Fatalf("InstanceSetState: %v", err)
		}
		if got.State != store.InstanceTerminating || got.Reason != "over_limit" || got.TerminatingAt == nil || got.EndedAt != nil {
			t.Fatalf("instance = %+v; want terminating, with its reason", got)
		}
		if len(changed) != 1 || changed[0].ID != j.ID || changed[0].Status != api.StatusPending || changed[0].Attempt != 1 ||
			changed[0].Lease <= j.Lease || changed[0].RunnerID != "" || !strings.Contains(changed[0].StatusReason, "over_limit") {
			t.Fatalf("changed %+v; want job %s pending, attempt 1, new lease, no runner, the reason", changed, j.ID)
		}
		_, err = f.trySet(j, api.StatusDone)
		wantErr(t, "JobSetStatus under the old lease", err, store.ErrLeaseLost)
		// The runner of a terminating instance claims nothing; another does.
		if r, _ := f.s.RunnerGet(f.ctx, rn.ID); !r.Online || r.JobID != "" {
			t.Fatalf("runner of a terminating instance: online %v, job %q; want online, no job", r.Online, r.JobID)
		}
		f.noClaim(rn)
		u, _ := f.s.UserGet(f.ctx, rn.UserID)
		if again := f.claim(f.runner(u, cpuHost)); again.ID != j.ID {
			t.Fatalf("another runner claimed %s, want %s", again.ID, j.ID)
		}
		// Gone: ended, the runner offline.
		got, changed = f.setState(in, store.InstanceGone)
		if got.State != store.InstanceGone || got.EndedAt == nil || got.TerminatingAt == nil || len(changed) != 0 {
			t.Fatalf("gone instance = %+v, changed %v", got, changed)
		}
		if r, _ := f.s.RunnerGet(f.ctx, rn.ID); r.Online {
			t.Fatal("runner of a gone instance is online")
		}
	}},
	{"claims racing a termination leave no job on the instance", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		for range 30 {
			f.run(u, spec("a"))
		}
		in, rn := f.register(f.instances(f.limit(u, 1), 1)[0])
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				_, err := f.s.JobClaimNext(f.ctx, store.JobClaimNextParams{RunnerID: rn.ID, UserID: u.ID, Free: cpuHost, Now: base})
				if errors.Is(err, store.ErrNotFound) {
					return
				}
				if err != nil {
					t.Errorf("JobClaimNext: %v", err)
					return
				}
			}
		})
		wg.Go(func() {
			if _, _, err := f.s.InstanceSetState(f.ctx, store.InstanceSetStateParams{ID: in.ID,
				State: store.InstanceTerminating, MaxAttempts: 3, Now: f.tick()}); err != nil {
				t.Errorf("InstanceSetState: %v", err)
			}
		})
		wg.Wait()
		// Every claim either came before the termination, which requeued
		// it, or after, and found the instance terminating.
		counts, err := f.s.JobCountByStatus(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if counts[api.StatusDownloading] != 0 || counts[api.StatusPending] != 30 {
			t.Fatalf("jobs by status %v; want all 30 pending", counts)
		}
	}},
	{"gone past MaxAttempts fails the job", func(t *testing.T, open Open) {
		f := setup(t, open)
		in, _, j, run := f.busy()
		_, changed, err := f.s.InstanceSetState(f.ctx, store.InstanceSetStateParams{ID: in.ID,
			State: store.InstanceGone, Reason: "not in the cloud", MaxAttempts: 1, Now: f.tick()})
		if err != nil {
			t.Fatalf("InstanceSetState: %v", err)
		}
		jobs := f.runJobs(run)
		f.wantStatus(map[*store.Job]api.JobStatus{j: api.StatusFailed, jobs["b"]: api.StatusFailed})
		if len(changed) != 2 {
			t.Fatalf("changed %d jobs, want the job and its dependent", len(changed))
		}
		if got := f.instance(in.ID); got.TerminatingAt != nil || got.EndedAt == nil || got.Reason != "not in the cloud" {
			t.Fatalf("instance gone from running = %+v", got)
		}
	}},
	{"an idle instance ends without touching jobs", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		f.run(u, spec("a"))
		in, _ := f.register(f.instances(f.limit(u, 1), 1)[0])
		if _, changed := f.setState(in, store.InstanceTerminated); len(changed) != 0 {
			t.Fatalf("terminating an idle instance changed %v", changed)
		}
		got, err := f.s.JobListPending(f.ctx, store.JobListPendingParams{})
		if err != nil || len(got) != 1 {
			t.Fatalf("pending jobs = %d, %v; want the one", len(got), err)
		}
	}},
	{"states only move forward", func(t *testing.T, open Open) {
		f := setup(t, open)
		in := f.instances(f.limit(f.user(), 1), 1)[0]
		ended, _ := f.setState(in, store.InstanceTerminated)
		for _, st := range []store.InstanceState{store.InstanceTerminating, store.InstanceTerminated, store.InstanceGone} {
			got, changed := f.setState(in, st)
			if got.State != store.InstanceTerminated || got.Reason != ended.Reason || len(changed) != 0 {
				t.Errorf("InstanceSetState(%s) of a terminated instance = %+v", st, got)
			}
			sameTime(t, "EndedAt", *got.EndedAt, *ended.EndedAt)
		}
		for _, st := range []store.InstanceState{store.InstanceLaunching, store.InstanceRunning, "bogus"} {
			if _, _, err := f.s.InstanceSetState(f.ctx, store.InstanceSetStateParams{ID: in.ID, State: st, Now: f.tick()}); err == nil {
				t.Errorf("InstanceSetState(%s) succeeded", st)
			}
		}
		_, _, err := f.s.InstanceSetState(f.ctx, store.InstanceSetStateParams{ID: "nope", State: store.InstanceGone, Now: f.tick()})
		wantErr(t, "InstanceSetState of an unknown instance", err, store.ErrNotFound)
	}},
}
