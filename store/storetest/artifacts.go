package storetest

import (
	"testing"

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
}
