package storetest

import (
	"errors"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

func (f *fixture) putCheckpoint(j *store.Job, size int64, manifest string) (cur, prev *store.Checkpoint, err error) {
	return f.s.CheckpointPut(f.ctx, store.CheckpointPutParams{JobID: j.ID, Lease: j.Lease, Size: size, Files: 1, Manifest: []byte(manifest), Now: f.tick()})
}

var checkpointTests = []test{
	{"latest replaces the previous, under the lease, across attempts", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		run := f.run(u, spec("train"))
		if _, err := f.s.CheckpointGet(f.ctx, run.Jobs[0].ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("CheckpointGet before any = %v, want ErrNotFound", err)
		}
		j := f.claim(r)
		if _, _, err := f.s.CheckpointPut(f.ctx, store.CheckpointPutParams{JobID: j.ID, Lease: j.Lease + 1, Manifest: []byte("{}"), Now: f.tick()}); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("CheckpointPut under another lease = %v, want ErrLeaseLost", err)
		}
		c1, prev, err := f.putCheckpoint(j, 10, `{"files":1}`)
		if err != nil || prev != nil || c1.Seq != 1 || c1.Attempt != 0 || c1.Size != 10 || string(c1.Manifest) != `{"files":1}` {
			t.Fatalf("first CheckpointPut = %+v, %+v, %v", c1, prev, err)
		}
		c2, prev, err := f.putCheckpoint(j, 20, `{"files":2}`)
		if err != nil || prev == nil || prev.Seq != 1 || string(prev.Manifest) != `{"files":1}` || c2.Seq != 2 {
			t.Fatalf("second CheckpointPut = %+v, %+v, %v", c2, prev, err)
		}
		// The runner goes away: the next attempt starts from the latest.
		changed, err := f.s.JobInterrupt(f.ctx, store.JobInterruptParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease, Cause: "spot", MaxAttempts: 3, Now: f.tick()})
		if err != nil || len(changed) == 0 || changed[0].Status != api.StatusPending {
			t.Fatalf("JobInterrupt = %v, %v", changed, err)
		}
		if _, _, err := f.putCheckpoint(j, 30, `{"late":1}`); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("CheckpointPut of the lost attempt = %v, want ErrLeaseLost", err)
		}
		got, err := f.s.CheckpointGet(f.ctx, j.ID)
		if err != nil || got.Seq != 2 || string(got.Manifest) != `{"files":2}` || got.Size != 20 || !got.CreatedAt.Equal(c2.CreatedAt) {
			t.Fatalf("CheckpointGet after the interruption = %+v, %v; want seq 2", got, err)
		}
		j2 := f.claim(r)
		if j2.ID != j.ID || j2.Attempt != 1 {
			t.Fatalf("claimed %s attempt %d", j2.ID, j2.Attempt)
		}
		c3, _, err := f.putCheckpoint(j2, 5, `{"files":3}`)
		if err != nil || c3.Attempt != 1 || c3.Seq != 3 {
			t.Fatalf("CheckpointPut of attempt 2 = %+v, %v", c3, err)
		}
		list, err := f.s.CheckpointList(f.ctx, store.CheckpointListParams{RunIDs: []string{run.ID, "other"}})
		if err != nil || len(list) != 1 || list[0].JobID != j.ID || list[0].Seq != 3 || list[0].Manifest != nil {
			t.Fatalf("CheckpointList = %+v, %v", list, err)
		}
		if u := f.usage(u); u.Checkpoints != 5 {
			t.Fatalf("storage used by checkpoints %d, want 5", u.Checkpoints)
		}
		// A finished job takes no more.
		j2 = f.finish(j2, api.StatusDone)
		if _, _, err := f.putCheckpoint(j2, 1, `{}`); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("CheckpointPut of a done job = %v, want ErrLeaseLost", err)
		}
	}},
	{"delete trashes the bytes; run delete takes them", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		run := f.run(u, spec("train"))
		j := f.claim(r)
		if _, _, err := f.putCheckpoint(j, 7, `{}`); err != nil {
			t.Fatal(err)
		}
		now := f.tick()
		d, err := f.s.CheckpointDelete(f.ctx, store.CheckpointDeleteParams{JobID: j.ID, Now: now, ClaimUntil: now.Add(60e9)})
		if err != nil {
			t.Fatal(err)
		}
		wantTrash(t, "CheckpointDelete", d.Trash, "checkpoints::"+j.ID)
		if _, err := f.s.CheckpointGet(f.ctx, j.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("CheckpointGet after delete = %v", err)
		}
		if _, err := f.s.CheckpointDelete(f.ctx, store.CheckpointDeleteParams{JobID: j.ID, Now: now, ClaimUntil: now}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("second CheckpointDelete = %v, want ErrNotFound", err)
		}
		if u := f.usage(u); u.Checkpoints != 0 {
			t.Fatalf("storage used by checkpoints %d after delete", u.Checkpoints)
		}
		if _, _, err := f.putCheckpoint(j, 9, `{}`); err != nil {
			t.Fatal(err)
		}
		f.finish(j, api.StatusFailed)
		if _, err := f.deleteRun(store.RunDeleteParams{UserID: u.ID, Name: run.Name}); err != nil {
			t.Fatalf("RunDelete: %v", err)
		}
		if _, err := f.s.CheckpointGet(f.ctx, j.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("CheckpointGet after RunDelete = %v", err)
		}
	}},
	{"resume requeues what is not done", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		other := f.user()
		r := f.runner(u, cpuHost)
		run := f.run(u, spec("prep"), spec("train", "prep"), spec("eval", "train"))
		if _, err := f.s.RunResume(f.ctx, store.RunResumeParams{Name: run.Name, UserID: u.ID, Now: f.tick()}); !errors.Is(err, store.ErrRunUnfinished) {
			t.Fatalf("RunResume of a running run = %v, want ErrRunUnfinished", err)
		}
		f.finish(f.claim(r), api.StatusDone)
		train := f.claim(r)
		if _, _, err := f.putCheckpoint(train, 3, `{}`); err != nil {
			t.Fatal(err)
		}
		f.finish(train, api.StatusFailed) // eval fails with it
		if _, err := f.s.RunResume(f.ctx, store.RunResumeParams{Name: run.Name, UserID: other.ID, Now: f.tick()}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("RunResume of another user's run = %v, want ErrNotFound", err)
		}
		got, err := f.s.RunResume(f.ctx, store.RunResumeParams{Name: run.Name, UserID: u.ID, Now: f.tick()})
		if err != nil {
			t.Fatal(err)
		}
		want := []api.JobStatus{api.StatusDone, api.StatusPending, api.StatusSubmitted}
		for i, j := range got.Jobs {
			if j.Status != want[i] {
				t.Fatalf("job %s is %s, want %s", j.Workflow, j.Status, want[i])
			}
		}
		if j := got.Jobs[1]; j.Attempt != 1 || j.Lease <= train.Lease || j.FinishedAt != nil || j.ExitCode != nil || j.LastInterruption == "" {
			t.Fatalf("resumed job %+v", j)
		}
		if _, err := f.s.CheckpointGet(f.ctx, train.ID); err != nil {
			t.Fatalf("the checkpoint is gone after resume: %v", err)
		}
		j := f.claim(r)
		if j.ID != train.ID || j.Attempt != 1 {
			t.Fatalf("claimed %s attempt %d, want %s attempt 1", j.Workflow, j.Attempt, train.Workflow)
		}
		f.finish(j, api.StatusDone)
		f.finish(f.claim(r), api.StatusDone)
		if _, err := f.s.RunResume(f.ctx, store.RunResumeParams{Name: run.Name, Now: f.tick()}); !errors.Is(err, store.ErrRunDone) || !errors.Is(err, store.ErrConflict) {
			t.Fatalf("RunResume of a done run = %v, want ErrRunDone", err)
		}
	}},
}
