package storetest

import (
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

var migrateTests = []test{
	{"twice is harmless", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		if err := f.s.Migrate(f.ctx); err != nil {
			t.Fatalf("second Migrate: %v", err)
		}
		if _, err := f.s.UserGet(f.ctx, u.ID); err != nil {
			t.Fatalf("UserGet after second Migrate: %v", err)
		}
	}},
	{"concurrent callers", func(t *testing.T, open Open) {
		s := open(t)
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Go(func() { errs[i] = s.Migrate(t.Context()) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("Migrate %d: %v", i, err)
			}
		}
		if n, err := s.UserCount(t.Context()); err != nil || n != 0 {
			t.Fatalf("UserCount after migrations = %d, %v; want 0, nil", n, err)
		}
	}},
}

var userTests = []test{
	{"create and get", func(t *testing.T, open Open) {
		f := setup(t, open)
		// Not UTC and with nanoseconds: read back in UTC, at microseconds.
		now := time.Date(2024, 5, 1, 14, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))
		u, err := f.s.UserCreate(f.ctx, store.UserCreateParams{ID: "u1", Name: "alice", TokenHash: "h1", Admin: true, Now: now})
		if err != nil {
			t.Fatalf("UserCreate: %v", err)
		}
		sameTime(t, "UserCreate CreatedAt", u.CreatedAt, now)
		for name, get := range map[string]func() (*store.User, error){
			"UserGet":            func() (*store.User, error) { return f.s.UserGet(f.ctx, "u1") },
			"UserGetByTokenHash": func() (*store.User, error) { return f.s.UserGetByTokenHash(f.ctx, "h1") },
		} {
			got, err := get()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got.ID != "u1" || got.Name != "alice" || !got.Admin {
				t.Errorf("%s = %+v", name, got)
			}
			sameTime(t, name+" CreatedAt", got.CreatedAt, now)
		}
		if n, err := f.s.UserCount(f.ctx); err != nil || n != 1 {
			t.Errorf("UserCount = %d, %v; want 1", n, err)
		}
	}},
	{"not found", func(t *testing.T, open Open) {
		f := setup(t, open)
		f.user()
		_, err := f.s.UserGet(f.ctx, "nobody")
		wantErr(t, "UserGet", err, store.ErrNotFound)
		_, err = f.s.UserGetByTokenHash(f.ctx, "nothing")
		wantErr(t, "UserGetByTokenHash", err, store.ErrNotFound)
	}},
	{"conflicts", func(t *testing.T, open Open) {
		f := setup(t, open)
		mk := func(id, name, hash string) error {
			_, err := f.s.UserCreate(f.ctx, store.UserCreateParams{ID: id, Name: name, TokenHash: hash, Now: f.tick()})
			return err
		}
		if err := mk("u1", "alice", "h1"); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "same ID", mk("u1", "bob", "h2"), store.ErrConflict)
		wantErr(t, "same name", mk("u2", "alice", "h2"), store.ErrConflict)
		wantErr(t, "same token", mk("u2", "bob", "h1"), store.ErrConflict)
		if n, _ := f.s.UserCount(f.ctx); n != 1 {
			t.Errorf("UserCount = %d after conflicts, want 1", n)
		}
	}},
}

var gpuHost = api.HostResources{CPUs: 16, MemoryMiB: 64 << 10, DiskMiB: 500 << 10,
	GPUs: []api.GPU{{Name: "NVIDIA A100-SXM4-80GB", MemoryMiB: 80 << 10}, {Name: "NVIDIA A100-SXM4-80GB", MemoryMiB: 80 << 10}}}

var runnerTests = []test{
	{"create and get", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		now := f.tick()
		p := store.RunnerCreateParams{ID: "r1", UserID: u.ID, Name: "gpu-box", Hostname: "box.local", Executor: "docker",
			Version: "0.1.0", Resources: gpuHost, TokenHash: "rh1", TokenExpiresAt: now.Add(time.Hour), Now: now}
		created, err := f.s.RunnerCreate(f.ctx, p)
		if err != nil {
			t.Fatalf("RunnerCreate: %v", err)
		}
		byID, err := f.s.RunnerGet(f.ctx, "r1")
		if err != nil {
			t.Fatalf("RunnerGet: %v", err)
		}
		byToken, err := f.s.RunnerGetByTokenHash(f.ctx, "rh1")
		if err != nil {
			t.Fatalf("RunnerGetByTokenHash: %v", err)
		}
		for name, r := range map[string]*store.Runner{"RunnerCreate": created, "RunnerGet": byID, "RunnerGetByTokenHash": byToken} {
			if r.ID != "r1" || r.UserID != u.ID || r.Name != "gpu-box" || r.Hostname != "box.local" ||
				r.Executor != "docker" || r.Version != "0.1.0" || !r.Online || r.JobID != "" || r.RunName != "" {
				t.Errorf("%s = %+v", name, r)
			}
			if !reflect.DeepEqual(r.Resources, gpuHost) {
				t.Errorf("%s resources = %+v, want %+v", name, r.Resources, gpuHost)
			}
			sameTime(t, name+" RegisteredAt", r.RegisteredAt, now)
			sameTime(t, name+" LastHeartbeat", r.LastHeartbeat, now)
			sameTime(t, name+" TokenExpiresAt", r.TokenExpiresAt, now.Add(time.Hour))
		}
		_, err = f.s.RunnerGet(f.ctx, "r2")
		wantErr(t, "RunnerGet unknown", err, store.ErrNotFound)
		_, err = f.s.RunnerGetByTokenHash(f.ctx, "other")
		wantErr(t, "RunnerGetByTokenHash unknown", err, store.ErrNotFound)
		many, err := f.s.RunnersByTokenHash(f.ctx, []string{"other", "rh1"})
		if err != nil {
			t.Fatalf("RunnersByTokenHash: %v", err)
		}
		if len(many) != 1 || many["rh1"] == nil || !reflect.DeepEqual(many["rh1"], byToken) {
			t.Errorf("RunnersByTokenHash(other, rh1) = %+v, want rh1: %+v alone", many, byToken)
		}
		p.ID = "r2"
		_, err = f.s.RunnerCreate(f.ctx, p)
		wantErr(t, "RunnerCreate with a taken token", err, store.ErrConflict)
	}},
	{"list with held jobs", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		ra, rb := f.runner(alice, cpuHost), f.runner(bob, cpuHost)
		idle := f.runner(alice, cpuHost)
		run := f.run(alice, spec("a"))
		j := f.claim(ra)
		all, err := f.s.RunnerList(f.ctx, store.RunnerListParams{})
		if err != nil {
			t.Fatalf("RunnerList: %v", err)
		}
		got := map[string]*store.Runner{}
		for _, r := range all {
			got[r.ID] = r
		}
		if len(all) != 3 || got[ra.ID] == nil || got[rb.ID] == nil || got[idle.ID] == nil {
			t.Fatalf("RunnerList() = %d runners %v, want the 3", len(all), got)
		}
		if got[ra.ID].JobID != j.ID || got[ra.ID].RunName != run.Name {
			t.Errorf("runner holding a job: JobID %q RunName %q, want %q %q", got[ra.ID].JobID, got[ra.ID].RunName, j.ID, run.Name)
		}
		if got[idle.ID].JobID != "" || got[idle.ID].RunName != "" {
			t.Errorf("idle runner: JobID %q RunName %q, want none", got[idle.ID].JobID, got[idle.ID].RunName)
		}
		mine, err := f.s.RunnerList(f.ctx, store.RunnerListParams{UserID: alice.ID})
		if err != nil || len(mine) != 2 {
			t.Fatalf("RunnerList(alice) = %d runners, %v; want 2", len(mine), err)
		}
		for _, r := range mine {
			if r.UserID != alice.ID {
				t.Errorf("RunnerList(alice) has %s of %s", r.ID, r.UserID)
			}
		}
		// A finished job is no longer held.
		f.finish(j, api.StatusDone)
		if r, _ := f.s.RunnerGet(f.ctx, ra.ID); r.JobID != "" {
			t.Errorf("after the job is done the runner holds %q", r.JobID)
		}
	}},
	{"heartbeat", func(t *testing.T, open Open) {
		f := setup(t, open)
		r := f.runner(f.user(), cpuHost)
		now := f.tick()
		if err := f.s.RunnerHeartbeat(f.ctx, store.RunnerHeartbeatParams{ID: r.ID, Now: now}); err != nil {
			t.Fatalf("RunnerHeartbeat: %v", err)
		}
		got, _ := f.s.RunnerGet(f.ctx, r.ID)
		sameTime(t, "LastHeartbeat", got.LastHeartbeat, now)
		if !reflect.DeepEqual(got.Resources, cpuHost) {
			t.Errorf("resources changed by a heartbeat without any: %+v", got.Resources)
		}
		res := gpuHost
		if err := f.s.RunnerHeartbeat(f.ctx, store.RunnerHeartbeatParams{ID: r.ID, Now: f.tick(), Resources: &res}); err != nil {
			t.Fatalf("RunnerHeartbeat: %v", err)
		}
		if got, _ := f.s.RunnerGet(f.ctx, r.ID); !reflect.DeepEqual(got.Resources, gpuHost) {
			t.Errorf("resources = %+v, want %+v", got.Resources, gpuHost)
		}
		err := f.s.RunnerHeartbeat(f.ctx, store.RunnerHeartbeatParams{ID: "nope", Now: f.tick()})
		wantErr(t, "RunnerHeartbeat unknown", err, store.ErrNotFound)
	}},
}

// createAndGet creates the run p and reads it back.
func (f *fixture) createAndGet(p store.RunCreateParams) (created, got *store.Run) {
	f.t.Helper()
	created, err := f.s.RunCreate(f.ctx, p)
	if err != nil {
		f.t.Fatalf("RunCreate: %v", err)
	}
	got, err = f.s.RunGet(f.ctx, store.RunGetParams{Name: p.Name})
	if err != nil {
		f.t.Fatalf("RunGet: %v", err)
	}
	return created, got
}

var runTests = []test{
	{"create gives the jobs back as a read does", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		train := api.JobSpec{Workflow: "train", Provider: "docker", Image: "python:3.12", Commands: []string{"python train.py"},
			Env: map[string]string{"A": "1"}, DependsOn: []string{"prepare"}, Artifacts: []string{"model"},
			Checkpoints: []string{"ckpt"}, CheckpointInterval: api.Duration(time.Minute),
			Resources: api.Resources{CPU: 4, GPU: &api.GPURequest{Count: 1, Name: "A100"}, Interruptible: true}}
		empty := spec("empty")
		empty.Commands, empty.Env = []string{}, map[string]string{}
		p := f.runParams(u, spec("prepare"), empty, train)
		p.ArtifactStore = "s3://bucket/dstack"
		created, got := f.createAndGet(p)
		if len(created.Jobs) != 3 || len(got.Jobs) != 3 {
			t.Fatalf("RunCreate gave %d jobs, RunGet %d; want 3", len(created.Jobs), len(got.Jobs))
		}
		for i := range got.Jobs {
			if !reflect.DeepEqual(created.Jobs[i], got.Jobs[i]) {
				t.Errorf("job %d:\nRunCreate %+v\nRunGet    %+v", i, created.Jobs[i], got.Jobs[i])
			}
		}
	}},
	{"create and get", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		train := spec("train", "prepare")
		train.Image = "python:3.12"
		train.Env = map[string]string{"A": "1"}
		train.Artifacts = []string{"model"}
		train.Variables = map[string]string{"epochs": "20"}
		train.Resources = api.Resources{CPU: 4, MemoryMiB: 16 << 10, GPU: &api.GPURequest{Count: 1, Name: "A100"}, Interruptible: true}
		p := f.runParams(u, spec("prepare"), train)
		created, got := f.createAndGet(p)
		for name, r := range map[string]*store.Run{"RunCreate": created, "RunGet": got} {
			if r.ID != p.ID || r.Name != p.Name || r.UserID != u.ID || r.UserName != u.Name || r.Workflow != "train" || r.CodeID != p.CodeID {
				t.Errorf("%s = %+v", name, r)
			}
			sameTime(t, name+" SubmittedAt", r.SubmittedAt, p.Now)
			if len(r.Jobs) != 2 {
				t.Fatalf("%s has %d jobs, want 2", name, len(r.Jobs))
			}
			for i, want := range []api.JobStatus{api.StatusPending, api.StatusSubmitted} {
				j := r.Jobs[i]
				if j.ID != p.Jobs[i].ID || j.Status != want || j.RunID != p.ID || j.RunName != p.Name ||
					j.UserID != u.ID || j.CodeID != p.CodeID || j.Workflow != p.Jobs[i].Spec.Workflow ||
					j.Attempt != 0 || j.RunnerID != "" || j.ExitCode != nil || j.ClaimedAt != nil || j.FinishedAt != nil {
					t.Errorf("%s job %d = %+v", name, i, j)
				}
				if !reflect.DeepEqual(j.Spec, p.Jobs[i].Spec) {
					t.Errorf("%s job %d spec = %+v, want %+v", name, i, j.Spec, p.Jobs[i].Spec)
				}
				sameTime(t, name+" job SubmittedAt", j.SubmittedAt, p.Now)
			}
		}
		other := f.user()
		_, err := f.s.RunGet(f.ctx, store.RunGetParams{Name: p.Name, UserID: other.ID})
		wantErr(t, "RunGet of another user's run", err, store.ErrNotFound)
		if _, err := f.s.RunGet(f.ctx, store.RunGetParams{Name: p.Name, UserID: u.ID}); err != nil {
			t.Errorf("RunGet by its user: %v", err)
		}
		_, err = f.s.RunGet(f.ctx, store.RunGetParams{Name: "nope"})
		wantErr(t, "RunGet unknown", err, store.ErrNotFound)
	}},
	{"name taken", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		first := f.run(u, spec("a"))
		p := f.runParams(u, spec("a"))
		p.Name = first.Name
		_, err := f.s.RunCreate(f.ctx, p)
		wantErr(t, "RunCreate with a taken name", err, store.ErrConflict)
		// Nothing of the refused run was written.
		_, err = f.s.JobGet(f.ctx, p.Jobs[0].ID)
		wantErr(t, "JobGet of the refused run's job", err, store.ErrNotFound)
	}},
	{"unknown dependency", func(t *testing.T, open Open) {
		f := setup(t, open)
		p := f.runParams(f.user(), spec("a", "missing"))
		if _, err := f.s.RunCreate(f.ctx, p); err == nil {
			t.Fatal("RunCreate with a dependency outside the run succeeded")
		}
		_, err := f.s.RunGet(f.ctx, store.RunGetParams{Name: p.Name})
		wantErr(t, "RunGet of the refused run", err, store.ErrNotFound)
	}},
	{"list", testRunList},
	{"list pages", testRunListPages},
	{"count by status", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		f.run(u, spec("a"), spec("b", "a"))
		f.run(u, spec("c"))
		f.run(u, spec("d"))
		f.finish(f.claim(r), api.StatusDone) // a done, b pending
		f.claim(r)                           // c downloading
		got, err := f.s.JobCountByStatus(f.ctx)
		if err != nil {
			t.Fatalf("JobCountByStatus: %v", err)
		}
		want := map[api.JobStatus]int{api.StatusDone: 1, api.StatusDownloading: 1, api.StatusPending: 2}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("JobCountByStatus = %v, want %v", got, want)
		}
	}},
}

func testRunList(t *testing.T, open Open) {
	f := setup(t, open)
	alice, bob := f.user(), f.user()
	r := f.runner(alice, cpuHost)
	old := f.run(alice, spec("a"))
	f.finish(f.claim(r), api.StatusDone) // old ends at its ...
	cut := f.tick()                      // ... before cut
	late := f.run(alice, spec("b"))
	f.finish(f.claim(r), api.StatusFailed) // late ends after cut
	waiting := f.run(alice, spec("c"), spec("d", "c"))
	bobs := f.run(bob, spec("e"))

	names := func(runs []*store.Run) []string {
		var out []string
		for _, r := range runs {
			out = append(out, r.Name)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		p    store.RunListParams
		want []string
	}{
		{"all", store.RunListParams{}, []string{bobs.Name, waiting.Name, late.Name, old.Name}},
		{"limit", store.RunListParams{Limit: 2}, []string{bobs.Name, waiting.Name}},
		{"user", store.RunListParams{UserID: alice.ID}, []string{waiting.Name, late.Name, old.Name}},
		{"finished after", store.RunListParams{FinishedAfter: cut}, []string{bobs.Name, waiting.Name, late.Name}},
		{"user, finished after, limit", store.RunListParams{UserID: alice.ID, FinishedAfter: cut, Limit: 1}, []string{waiting.Name}},
	} {
		runs, err := f.s.RunList(f.ctx, tc.p)
		if err != nil {
			t.Fatalf("%s: RunList: %v", tc.name, err)
		}
		if got := names(runs); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: RunList = %v, want %v", tc.name, got, tc.want)
		}
	}
	runs, _ := f.s.RunList(f.ctx, store.RunListParams{UserID: alice.ID})
	if len(runs) != 3 {
		t.Fatalf("RunList(alice) = %d runs", len(runs))
	}
	w := runs[0]
	if w.UserName != alice.Name || len(w.Jobs) != 2 || w.Jobs[0].Workflow != "c" || w.Jobs[1].Workflow != "d" ||
		w.Jobs[0].Status != api.StatusPending || w.Jobs[1].Status != api.StatusSubmitted {
		t.Errorf("RunList run %+v with jobs %v, want alice's c (pending) and d (submitted)", w, w.Jobs)
	}
	if l := runs[1]; len(l.Jobs) != 1 || l.Jobs[0].Status != api.StatusFailed || l.Jobs[0].FinishedAt == nil {
		t.Errorf("RunList late run jobs %+v, want one failed", l.Jobs)
	}
}
