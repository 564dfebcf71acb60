package storetest

import (
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

var logIncompleteTests = []test{
	{"a final status marks the log incomplete until it is stored", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		run := f.run(u, spec("a"))
		j := f.claim(r)
		f.set(j, api.StatusRunning)
		done, err := f.s.JobSetStatus(f.ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease,
			Status: api.StatusDone, Now: f.tick(), LogEnd: 1000, LogMissing: 600})
		if err != nil {
			t.Fatalf("JobSetStatus: %v", err)
		}
		if done.LogEnd != 1000 || done.LogMissing != 600 {
			t.Fatalf("done job: log end %d, missing %d; want 1000, 600", done.LogEnd, done.LogMissing)
		}
		got, err := f.s.RunGet(f.ctx, store.RunGetParams{Name: run.Name})
		if err != nil {
			t.Fatal(err)
		}
		if got.Jobs[0].LogMissing != 600 {
			t.Errorf("RunGet: log missing %d, want 600", got.Jobs[0].LogMissing)
		}

		_, err = f.s.JobLogStored(f.ctx, store.JobLogStoredParams{ID: j.ID, Lease: j.Lease - 1, Size: 1000})
		wantErr(t, "JobLogStored under another lease", err, store.ErrLeaseLost)
		_, err = f.s.JobLogStored(f.ctx, store.JobLogStoredParams{ID: "nope", Lease: j.Lease, Size: 1000})
		wantErr(t, "JobLogStored of an unknown job", err, store.ErrNotFound)

		part, err := f.s.JobLogStored(f.ctx, store.JobLogStoredParams{ID: j.ID, Lease: j.Lease, Size: 700})
		if err != nil {
			t.Fatalf("JobLogStored: %v", err)
		}
		if part.LogMissing != 300 || part.LogEnd != 1000 {
			t.Errorf("after 700 bytes: missing %d, end %d; want 300, 1000", part.LogMissing, part.LogEnd)
		}
		full, err := f.s.JobLogStored(f.ctx, store.JobLogStoredParams{ID: j.ID, Lease: j.Lease, Size: 1000})
		if err != nil {
			t.Fatalf("JobLogStored: %v", err)
		}
		if full.LogMissing != 0 || full.LogEnd != 0 || full.Status != api.StatusDone {
			t.Errorf("complete log: missing %d, end %d, status %s; want 0, 0, done", full.LogMissing, full.LogEnd, full.Status)
		}
		// Complete: nothing more is taken.
		_, err = f.s.JobLogStored(f.ctx, store.JobLogStoredParams{ID: j.ID, Lease: j.Lease, Size: 1000})
		wantErr(t, "JobLogStored of a complete log", err, store.ErrLeaseLost)
	}},
	{"only a final status marks it", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		f.run(u, spec("a"))
		j := f.claim(r)
		running, err := f.s.JobSetStatus(f.ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease,
			Status: api.StatusRunning, Now: f.tick(), LogEnd: 10, LogMissing: 10})
		if err != nil {
			t.Fatalf("JobSetStatus: %v", err)
		}
		if running.LogMissing != 0 || running.LogEnd != 0 {
			t.Errorf("running job: log end %d, missing %d; want 0", running.LogEnd, running.LogMissing)
		}
	}},
}
