package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

var artifactStoreTests = []test{
	{"kept with every job of the run", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		p := f.runParams(u, spec("prepare"), spec("train", "prepare"))
		p.ArtifactStore = "s3://bucket/dstack"
		run, err := f.s.RunCreate(f.ctx, p)
		if err != nil {
			t.Fatalf("RunCreate: %v", err)
		}
		plain := f.run(u, spec("other"))
		for _, j := range run.Jobs {
			if j.ArtifactStore != p.ArtifactStore {
				t.Errorf("RunCreate: job %s has artifact store %q, want %q", j.Workflow, j.ArtifactStore, p.ArtifactStore)
			}
			if got := f.job(j.ID); got.ArtifactStore != p.ArtifactStore {
				t.Errorf("JobGet: job %s has artifact store %q, want %q", j.Workflow, got.ArtifactStore, p.ArtifactStore)
			}
		}
		if got := f.job(plain.Jobs[0].ID); got.ArtifactStore != "" {
			t.Errorf("a run without one: artifact store %q, want empty", got.ArtifactStore)
		}
		got, err := f.s.RunGet(f.ctx, store.RunGetParams{Name: run.Name})
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range got.Jobs {
			if j.ArtifactStore != p.ArtifactStore {
				t.Errorf("RunGet: job %s has artifact store %q", j.Workflow, j.ArtifactStore)
			}
		}
		// A claim and a status change return it too.
		j := f.claim(f.runner(u, cpuHost))
		if j.ID != run.Jobs[0].ID || j.ArtifactStore != p.ArtifactStore {
			t.Fatalf("claimed %s with artifact store %q, want %s with %q", j.ID, j.ArtifactStore, run.Jobs[0].ID, p.ArtifactStore)
		}
		if j = f.finish(j, "done"); j.ArtifactStore != p.ArtifactStore {
			t.Errorf("JobSetStatus: artifact store %q", j.ArtifactStore)
		}
	}},
	{"hashes recorded, replaced and forgotten per job", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		a := f.run(u, spec("a")).Jobs[0]
		b := f.run(u, spec("b")).Jobs[0]
		put := func(job, path string, size int64, sum string) {
			t.Helper()
			if err := f.s.ArtifactPut(f.ctx, store.ArtifactPutParams{JobID: job, Path: path, Size: size, SHA256: sum}); err != nil {
				t.Fatalf("ArtifactPut %s %s: %v", job, path, err)
			}
		}
		list := func(job string) []store.Artifact {
			t.Helper()
			got, err := f.s.ArtifactList(f.ctx, store.ArtifactListParams{JobID: job})
			if err != nil {
				t.Fatalf("ArtifactList: %v", err)
			}
			out := make([]store.Artifact, len(got))
			for i, g := range got {
				out[i] = *g
			}
			return out
		}
		put(a.ID, "model/w.bin", 10, "aa")
		put(a.ID, "data.txt", 3, "bb")
		put(b.ID, "data.txt", 3, "cc")
		// A second upload of a path replaces its record.
		put(a.ID, "data.txt", 4, "dd")
		want := []store.Artifact{{JobID: a.ID, Path: "data.txt", Size: 4, SHA256: "dd"}, {JobID: a.ID, Path: "model/w.bin", Size: 10, SHA256: "aa"}}
		if got := list(a.ID); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("ArtifactList(a) = %+v, want %+v", got, want)
		}
		if got := list(b.ID); len(got) != 1 || got[0].SHA256 != "cc" {
			t.Errorf("ArtifactList(b) = %+v, want its one file", got)
		}
		if err := f.s.ArtifactDelete(f.ctx, store.ArtifactDeleteParams{JobID: a.ID, Path: "data.txt"}); err != nil {
			t.Fatalf("ArtifactDelete: %v", err)
		}
		// Forgetting what is not recorded is no error.
		if err := f.s.ArtifactDelete(f.ctx, store.ArtifactDeleteParams{JobID: a.ID, Path: "data.txt"}); err != nil {
			t.Fatalf("ArtifactDelete again: %v", err)
		}
		if got := list(a.ID); len(got) != 1 || got[0].Path != "model/w.bin" {
			t.Errorf("after ArtifactDelete: %+v", got)
		}
		if got := list("no-such-job"); len(got) != 0 {
			t.Errorf("ArtifactList of an unknown job: %+v", got)
		}
		err := f.s.ArtifactPut(f.ctx, store.ArtifactPutParams{JobID: "no-such-job", Path: "x", Size: 1, SHA256: "ee"})
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ArtifactPut for an unknown job: %v, want ErrNotFound", err)
		}
	}},
	{"a requeued job keeps why its last attempt ended", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		lost := f.runner(u, cpuHost)
		run := f.run(u, spec("a"))
		if j := f.job(run.Jobs[0].ID); j.LastInterruption != "" {
			t.Fatalf("a new job has LastInterruption %q", j.LastInterruption)
		}
		j := f.claim(lost)
		f.set(j, api.StatusRunning)
		changed, err := f.s.RunnerMarkOffline(f.ctx, store.RunnerMarkOfflineParams{HeartbeatBefore: f.tick().Add(time.Hour), MaxAttempts: 3, Now: f.tick()})
		if err != nil {
			t.Fatalf("RunnerMarkOffline: %v", err)
		}
		want := "runner " + lost.Name + " stopped responding"
		if len(changed) != 1 || changed[0].LastInterruption != want {
			t.Fatalf("RunnerMarkOffline changed %+v; want LastInterruption %q", changed, want)
		}
		// Pending reasons replace the status reason, not the cause.
		if _, err := f.s.JobSetPendingReasons(f.ctx, store.JobSetPendingReasonsParams{Reasons: map[string]string{j.ID: "waiting"}}); err != nil {
			t.Fatalf("JobSetPendingReasons: %v", err)
		}
		again := f.claim(f.runner(u, cpuHost))
		if again.ID != j.ID || again.Attempt != 1 || again.LastInterruption != want {
			t.Errorf("claimed %s attempt %d with LastInterruption %q; want %s attempt 1 with %q", again.ID, again.Attempt, again.LastInterruption, j.ID, want)
		}
	}},
}
