package storetest

import (
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// offline marks r offline now, whenever it was heard from.
func (f *fixture) offline(r *store.Runner) {
	f.t.Helper()
	if _, err := f.s.RunnerMarkOffline(f.ctx, store.RunnerMarkOfflineParams{
		HeartbeatBefore: base, RunnerID: r.ID, MaxAttempts: 3, Now: f.tick(),
	}); err != nil {
		f.t.Fatalf("RunnerMarkOffline(%s): %v", r.ID, err)
	}
}

// runnerDeleteTests cover removing runners: by hand (RunnerDelete) and the
// offline self-hosted ones past retention (RunnerDeleteOffline).
var runnerDeleteTests = []test{
	{"an offline runner is removed and its jobs keep its name", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		run := f.run(u, spec("a"))
		a := f.finish(f.claim(r), api.StatusDone)
		err := f.s.RunnerDelete(f.ctx, store.RunnerDeleteParams{ID: r.ID})
		wantErr(t, "RunnerDelete of an online runner", err, store.ErrConflict)
		f.offline(r)
		if err := f.s.RunnerDelete(f.ctx, store.RunnerDeleteParams{ID: r.ID}); err != nil {
			t.Fatalf("RunnerDelete of an offline runner: %v", err)
		}
		_, err = f.s.RunnerGet(f.ctx, r.ID)
		wantErr(t, "RunnerGet after RunnerDelete", err, store.ErrNotFound)
		if rs, err := f.s.RunnerList(f.ctx, store.RunnerListParams{UserID: u.ID}); err != nil || len(rs) != 0 {
			t.Fatalf("RunnerList after RunnerDelete = %v, %v; want none", rs, err)
		}
		if j := f.job(a.ID); j.RunnerName != r.Name || j.Status != api.StatusDone {
			t.Fatalf("job of the removed runner: runner name %q, status %s; want %q, done", j.RunnerName, j.Status, r.Name)
		}
		if j := f.runJobs(run)["a"]; j.RunnerName != r.Name {
			t.Fatalf("run's job of the removed runner: runner name %q; want %q", j.RunnerName, r.Name)
		}
		err = f.s.RunnerDelete(f.ctx, store.RunnerDeleteParams{ID: r.ID})
		wantErr(t, "RunnerDelete twice", err, store.ErrNotFound)
	}},
	{"an unknown runner", func(t *testing.T, open Open) {
		f := setup(t, open)
		err := f.s.RunnerDelete(f.ctx, store.RunnerDeleteParams{ID: "nope"})
		wantErr(t, "RunnerDelete of an unknown runner", err, store.ErrNotFound)
	}},
	{"the runner of an on-demand instance goes with its instance", func(t *testing.T, open Open) {
		f := setup(t, open)
		_, rn, _, _ := f.busy()
		f.offline(rn)
		err := f.s.RunnerDelete(f.ctx, store.RunnerDeleteParams{ID: rn.ID})
		wantErr(t, "RunnerDelete of an instance's runner", err, store.ErrConflict)
		got, err := f.s.RunnerDeleteOffline(f.ctx, store.RunnerDeleteOfflineParams{HeartbeatBefore: f.at(time.Hour)})
		if err != nil || len(got) != 0 {
			t.Fatalf("RunnerDeleteOffline = %v, %v; want no instance's runner", got, err)
		}
	}},
	{"offline runners past retention are removed, others kept", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		old := f.runner(u, cpuHost)
		f.offline(old)
		online := f.runner(u, cpuHost) // heard from before the cut, not marked offline
		cut := f.tick()
		recent := f.runner(u, cpuHost)
		f.offline(recent)
		got, err := f.s.RunnerDeleteOffline(f.ctx, store.RunnerDeleteOfflineParams{HeartbeatBefore: cut})
		if err != nil {
			t.Fatalf("RunnerDeleteOffline: %v", err)
		}
		if len(got) != 1 || got[0].ID != old.ID || got[0].Name != old.Name {
			t.Fatalf("RunnerDeleteOffline removed %+v; want only %s", got, old.ID)
		}
		rs, err := f.s.RunnerList(f.ctx, store.RunnerListParams{})
		if err != nil {
			t.Fatal(err)
		}
		left := map[string]bool{}
		for _, r := range rs {
			left[r.ID] = true
		}
		if len(rs) != 2 || !left[online.ID] || !left[recent.ID] {
			t.Fatalf("runners left: %v; want %s and %s", left, online.ID, recent.ID)
		}
		if got, err := f.s.RunnerDeleteOffline(f.ctx, store.RunnerDeleteOfflineParams{HeartbeatBefore: cut}); err != nil || len(got) != 0 {
			t.Fatalf("RunnerDeleteOffline again = %v, %v; want nothing", got, err)
		}
	}},
}
