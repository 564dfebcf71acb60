package storetest

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// withResources returns s asking for res.
func withResources(s api.JobSpec, res api.Resources) api.JobSpec {
	s.Resources = res
	return s
}

var claimTests = []test{
	{"fifo within a user", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		first := f.run(u, spec("first"))
		second := f.run(u, spec("second"))
		got := f.claim(r)
		if got.RunID != first.ID || got.Status != api.StatusDownloading || got.RunnerID != r.ID || got.Lease == 0 {
			t.Fatalf("first claim = run %s status %s runner %s lease %d; want run %s downloading on %s with a lease",
				got.RunID, got.Status, got.RunnerID, got.Lease, first.ID, r.ID)
		}
		f.finish(got, api.StatusDone)
		if got := f.claim(r); got.RunID != second.ID {
			t.Fatalf("second claim took run %s, want %s", got.RunID, second.ID)
		}
		f.noClaim(r)
	}},
	{"only the runner's user", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		f.run(alice, spec("a"))
		f.noClaim(f.runner(bob, cpuHost))
		if j := f.claim(f.runner(alice, cpuHost)); j.UserID != alice.ID {
			t.Fatalf("claimed a job of %s", j.UserID)
		}
	}},
	{"resources must fit", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		big := f.run(u, withResources(spec("big"), api.Resources{CPU: 32}))
		gpu := f.run(u, withResources(spec("gpu"), api.Resources{GPU: &api.GPURequest{Count: 1, Name: "a100"}}))
		h100 := f.run(u, withResources(spec("h100"), api.Resources{GPU: &api.GPURequest{Count: 1, Name: "H100"}}))
		small := f.run(u, withResources(spec("small"), api.Resources{CPU: 2, MemoryMiB: 1024}))
		cpu := f.runner(u, cpuHost)
		// The older jobs do not fit: the small one is taken past them.
		if j := f.claim(cpu); j.RunID != small.ID {
			t.Fatalf("CPU runner claimed run %s, want %s", j.RunID, small.ID)
		}
		f.noClaim(cpu)
		// The A100 job lands on the A100 host, matched case-insensitively.
		g := f.runner(u, gpuHost)
		if j := f.claim(g); j.RunID != gpu.ID {
			t.Fatalf("GPU runner claimed run %s, want %s", j.RunID, gpu.ID)
		}
		f.noClaim(g)
		waiting := map[string]api.JobStatus{big.ID: api.StatusPending, h100.ID: api.StatusPending}
		for id, st := range waiting {
			if got := f.job(runFirstJob(t, f, id)).Status; got != st {
				t.Errorf("run %s: status %s, want %s", id, got, st)
			}
		}
	}},
	{"free resources, not total", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		f.run(u, withResources(spec("a"), api.Resources{CPU: 4}))
		if _, err := f.tryClaim(r, api.HostResources{CPUs: 2, MemoryMiB: cpuHost.MemoryMiB}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("claim with 2 free CPUs for a 4-CPU job: %v, want ErrNotFound", err)
		}
		if _, err := f.tryClaim(r, cpuHost); err != nil {
			t.Fatalf("claim with 8 free CPUs: %v", err)
		}
	}},
	{"submitted jobs wait", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		f.run(u, spec("prepare"), spec("train", "prepare"))
		r1, r2 := f.runner(u, cpuHost), f.runner(u, cpuHost)
		if j := f.claim(r1); j.Workflow != "prepare" {
			t.Fatalf("claimed %s, want prepare", j.Workflow)
		}
		f.noClaim(r2)
	}},
	{"concurrent claimers never share a job", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		const jobs, runners = 40, 8
		for range jobs {
			f.run(u, spec("a"))
		}
		rs := make([]*store.Runner, runners)
		for i := range rs {
			rs[i] = f.runner(u, cpuHost)
		}
		var (
			mu    sync.Mutex
			taken = map[string]string{}
			wg    sync.WaitGroup
		)
		for _, r := range rs {
			wg.Go(func() {
				for {
					j, err := f.s.JobClaimNext(f.ctx, store.JobClaimNextParams{RunnerID: r.ID, UserID: u.ID, Free: cpuHost, Now: base})
					if errors.Is(err, store.ErrNotFound) {
						return
					}
					if err != nil {
						t.Errorf("JobClaimNext: %v", err)
						return
					}
					mu.Lock()
					if other, ok := taken[j.ID]; ok {
						t.Errorf("job %s claimed by %s and %s", j.ID, other, r.ID)
					}
					taken[j.ID] = r.ID
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(taken) != jobs {
			t.Fatalf("%d jobs claimed, want %d", len(taken), jobs)
		}
	}},
}

// runFirstJob returns the ID of a run's first job.
func runFirstJob(t *testing.T, f *fixture, runID string) string {
	t.Helper()
	runs, err := f.s.RunList(f.ctx, store.RunListParams{})
	if err != nil {
		t.Fatalf("RunList: %v", err)
	}
	for _, r := range runs {
		if r.ID == runID {
			return r.Jobs[0].ID
		}
	}
	t.Fatalf("run %s not listed", runID)
	return ""
}

var statusTests = []test{
	{"lifecycle", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		f.run(u, spec("a"))
		j := f.claim(r)
		running := f.set(j, api.StatusRunning)
		if running.StartedAt == nil {
			t.Fatal("running job has no StartedAt")
		}
		code := 3
		done, err := f.s.JobSetStatus(f.ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease,
			Status: api.StatusFailed, ExitCode: &code, Reason: "exit status 3", Now: f.tick()})
		if err != nil {
			t.Fatalf("JobSetStatus failed: %v", err)
		}
		if done.Status != api.StatusFailed || done.ExitCode == nil || *done.ExitCode != 3 ||
			done.StatusReason != "exit status 3" || done.FinishedAt == nil {
			t.Fatalf("failed job = %+v", done)
		}
		sameTime(t, "StartedAt kept", *done.StartedAt, *running.StartedAt)
		// A finished job takes no more changes, even under its lease.
		_, err = f.trySet(j, api.StatusRunning)
		wantErr(t, "JobSetStatus after the end", err, store.ErrLeaseLost)
	}},
	{"the start of the upload is recorded, and a requeue forgets it", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		f.run(u, spec("a"))
		j := f.claim(r)
		if running := f.set(j, api.StatusRunning); running.UploadingAt != nil {
			t.Fatalf("a running job has UploadingAt %v", running.UploadingAt)
		}
		uploading := f.set(j, api.StatusUploading)
		if uploading.UploadingAt == nil || uploading.UploadingAt.Before(*uploading.StartedAt) {
			t.Fatalf("uploading job: UploadingAt %v, StartedAt %v", uploading.UploadingAt, uploading.StartedAt)
		}
		done := f.set(j, api.StatusDone)
		sameTime(t, "UploadingAt kept at the end", *done.UploadingAt, *uploading.UploadingAt)

		f.run(u, spec("b"))
		k := f.claim(r)
		f.set(k, api.StatusRunning)
		f.set(k, api.StatusUploading)
		got, err := f.s.JobInterrupt(f.ctx, store.JobInterruptParams{ID: k.ID, RunnerID: r.ID, Lease: k.Lease, Cause: "spot reclaim", MaxAttempts: 3, Now: f.tick()})
		if err != nil {
			t.Fatalf("JobInterrupt: %v", err)
		}
		for _, g := range got {
			if g.ID == k.ID && (g.Status != api.StatusPending || g.UploadingAt != nil || g.StartedAt != nil) {
				t.Fatalf("requeued job: status %s, StartedAt %v, UploadingAt %v; want pending with neither", g.Status, g.StartedAt, g.UploadingAt)
			}
		}
	}},
	{"lease fencing", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r, other := f.runner(u, cpuHost), f.runner(u, cpuHost)
		f.run(u, spec("a"))
		j := f.claim(r)
		stale := *j
		stale.Lease--
		_, err := f.trySet(&stale, api.StatusRunning)
		wantErr(t, "JobSetStatus with an old lease", err, store.ErrLeaseLost)
		foreign := *j
		foreign.RunnerID = other.ID
		_, err = f.trySet(&foreign, api.StatusRunning)
		wantErr(t, "JobSetStatus from another runner", err, store.ErrLeaseLost)
		f.wantStatus(map[*store.Job]api.JobStatus{j: api.StatusDownloading})
	}},
	{"runners cannot set waiting states", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		f.run(u, spec("a"))
		j := f.claim(r)
		for _, st := range []api.JobStatus{api.StatusPending, api.StatusSubmitted, api.StatusInterrupted, "bogus"} {
			if _, err := f.trySet(j, st); err == nil {
				t.Errorf("JobSetStatus(%s) succeeded", st)
			}
		}
		f.wantStatus(map[*store.Job]api.JobStatus{j: api.StatusDownloading})
	}},
	{"unknown job", func(t *testing.T, open Open) {
		f := setup(t, open)
		_, err := f.s.JobGet(f.ctx, "nope")
		wantErr(t, "JobGet", err, store.ErrNotFound)
		_, err = f.s.JobSetStatus(f.ctx, store.JobSetStatusParams{ID: "nope", Status: api.StatusRunning, Now: f.tick()})
		wantErr(t, "JobSetStatus", err, store.ErrNotFound)
	}},
}

// runJobs returns a run's jobs by workflow.
func (f *fixture) runJobs(run *store.Run) map[string]*store.Job {
	f.t.Helper()
	got, err := f.s.RunGet(f.ctx, store.RunGetParams{Name: run.Name})
	if err != nil {
		f.t.Fatalf("RunGet(%s): %v", run.Name, err)
	}
	out := map[string]*store.Job{}
	for _, j := range got.Jobs {
		out[j.Workflow] = j
	}
	return out
}

var dependsTests = []test{
	{"done queues dependents", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		run := f.run(u, spec("a"), spec("b"), spec("c", "a", "b"))
		jobs := f.runJobs(run)
		f.wantStatus(map[*store.Job]api.JobStatus{jobs["a"]: api.StatusPending, jobs["b"]: api.StatusPending, jobs["c"]: api.StatusSubmitted})
		f.finish(f.claim(r), api.StatusDone)
		f.wantStatus(map[*store.Job]api.JobStatus{jobs["c"]: api.StatusSubmitted})
		f.finish(f.claim(r), api.StatusDone)
		f.wantStatus(map[*store.Job]api.JobStatus{jobs["c"]: api.StatusPending})
		if j := f.claim(r); j.Workflow != "c" {
			t.Fatalf("claimed %s, want c", j.Workflow)
		}
	}},
	{"a dependent goes to the back of the queue", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		run := f.run(u, spec("a"), spec("b", "a"))
		later := f.run(u, spec("later"))
		a := f.claim(r)
		if a.RunID != run.ID {
			t.Fatalf("claimed run %s first, want %s", a.RunID, run.ID)
		}
		f.finish(a, api.StatusDone)
		if j := f.claim(r); j.RunID != later.ID {
			t.Fatalf("after a is done, claimed %s of run %s; want the older pending run %s", j.Workflow, j.RunID, later.ID)
		}
		// It joined the queue when a was done; a when the run was submitted.
		jobs := f.runJobs(run)
		ended := f.job(a.ID).FinishedAt
		if b := f.job(jobs["b"].ID); ended == nil || !b.QueuedAt.Equal(*ended) {
			t.Errorf("b was queued at %v, want when a ended (%v)", b.QueuedAt, ended)
		}
		if got := f.job(a.ID).QueuedAt; !got.Equal(run.SubmittedAt) {
			t.Errorf("a was queued at %v, want when the run was submitted (%v)", got, run.SubmittedAt)
		}
	}},
	{"failure cascades", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		run := f.run(u, spec("a"), spec("b", "a"), spec("c", "b"), spec("side"))
		jobs := f.runJobs(run)
		a := f.claim(r)
		f.finish(a, api.StatusFailed)
		f.wantStatus(map[*store.Job]api.JobStatus{jobs["b"]: api.StatusFailed, jobs["c"]: api.StatusFailed, jobs["side"]: api.StatusPending})
		if got := f.job(jobs["b"].ID); got.StatusReason == "" || got.FinishedAt == nil {
			t.Errorf("failed dependent has reason %q, finished %v", got.StatusReason, got.FinishedAt)
		}
		if j := f.claim(r); j.Workflow != "side" {
			t.Fatalf("claimed %s, want side", j.Workflow)
		}
	}},
}

var stopTests = []test{
	{"waiting jobs end at once, active ones are flagged", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		run := f.run(u, spec("a"), spec("b", "a"), spec("c"))
		jobs := f.runJobs(run)
		a := f.claim(r)
		got, err := f.s.JobRequestStop(f.ctx, store.JobRequestStopParams{RunID: run.ID, Now: f.tick()})
		if err != nil {
			t.Fatalf("JobRequestStop: %v", err)
		}
		if len(got) != 3 {
			t.Fatalf("JobRequestStop returned %d jobs, want 3", len(got))
		}
		f.wantStatus(map[*store.Job]api.JobStatus{a: api.StatusDownloading, jobs["b"]: api.StatusStopped, jobs["c"]: api.StatusStopped})
		if j := f.job(a.ID); j.StopRequested != "stop" {
			t.Fatalf("active job StopRequested = %q, want stop", j.StopRequested)
		}
		f.noClaim(r)
		// Abort overrides stop; stop never downgrades abort.
		for _, abort := range []bool{true, false} {
			if _, err := f.s.JobRequestStop(f.ctx, store.JobRequestStopParams{RunID: run.ID, Abort: abort, Now: f.tick()}); err != nil {
				t.Fatalf("JobRequestStop(abort=%v): %v", abort, err)
			}
			if j := f.job(a.ID); j.StopRequested != "abort" {
				t.Fatalf("after stop(abort=%v) StopRequested = %q, want abort", abort, j.StopRequested)
			}
		}
		// The runner reports the end under its lease.
		f.set(a, api.StatusAborted)
		f.wantStatus(map[*store.Job]api.JobStatus{a: api.StatusAborted, jobs["c"]: api.StatusStopped})
	}},
	{"abort of waiting jobs", func(t *testing.T, open Open) {
		f := setup(t, open)
		run := f.run(f.user(), spec("a"))
		if _, err := f.s.JobRequestStop(f.ctx, store.JobRequestStopParams{RunID: run.ID, Abort: true, Now: f.tick()}); err != nil {
			t.Fatalf("JobRequestStop: %v", err)
		}
		f.wantStatus(map[*store.Job]api.JobStatus{f.runJobs(run)["a"]: api.StatusAborted})
	}},
	{"unknown run", func(t *testing.T, open Open) {
		f := setup(t, open)
		_, err := f.s.JobRequestStop(f.ctx, store.JobRequestStopParams{RunID: "nope", Now: f.tick()})
		wantErr(t, "JobRequestStop", err, store.ErrNotFound)
	}},
}

var offlineTests = []test{
	{"requeue then give up", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		lost := f.runner(u, cpuHost)
		run := f.run(u, spec("a"))
		j := f.claim(lost)
		f.set(j, api.StatusRunning)
		alive := f.runner(u, cpuHost)
		cut := f.tick()
		if err := f.s.RunnerHeartbeat(f.ctx, store.RunnerHeartbeatParams{ID: alive.ID, Now: cut.Add(time.Second)}); err != nil {
			t.Fatalf("RunnerHeartbeat: %v", err)
		}
		changed, err := f.s.RunnerMarkOffline(f.ctx, store.RunnerMarkOfflineParams{HeartbeatBefore: cut, MaxAttempts: 2, Now: f.tick()})
		if err != nil {
			t.Fatalf("RunnerMarkOffline: %v", err)
		}
		if len(changed) != 1 || changed[0].ID != j.ID || changed[0].Status != api.StatusPending ||
			changed[0].Attempt != 1 || changed[0].Lease <= j.Lease || changed[0].RunnerID != "" {
			t.Fatalf("RunnerMarkOffline changed %+v; want job %s pending, attempt 1, new lease, no runner", changed, j.ID)
		}
		if r, _ := f.s.RunnerGet(f.ctx, lost.ID); r.Online || r.JobID != "" {
			t.Fatalf("lost runner online %v, job %q", r.Online, r.JobID)
		}
		if r, _ := f.s.RunnerGet(f.ctx, alive.ID); !r.Online {
			t.Fatal("runner that heartbeated is offline")
		}
		// The lost runner's stale lease is refused.
		_, err = f.trySet(j, api.StatusDone)
		wantErr(t, "JobSetStatus from the lost runner", err, store.ErrLeaseLost)
		// A heartbeat brings the runner back; it claims the requeued job.
		if err := f.s.RunnerHeartbeat(f.ctx, store.RunnerHeartbeatParams{ID: lost.ID, Now: f.tick()}); err != nil {
			t.Fatalf("RunnerHeartbeat: %v", err)
		}
		if r, _ := f.s.RunnerGet(f.ctx, lost.ID); !r.Online {
			t.Fatal("heartbeat did not bring the runner back online")
		}
		again := f.claim(alive)
		if again.ID != j.ID || again.Attempt != 1 {
			t.Fatalf("claimed %s attempt %d, want %s attempt 1", again.ID, again.Attempt, j.ID)
		}
		// The second loss reaches MaxAttempts: the job fails.
		changed, err = f.s.RunnerMarkOffline(f.ctx, store.RunnerMarkOfflineParams{HeartbeatBefore: f.tick().Add(time.Hour), MaxAttempts: 2, Now: f.tick()})
		if err != nil {
			t.Fatalf("RunnerMarkOffline: %v", err)
		}
		if len(changed) != 1 || changed[0].Status != api.StatusFailed || changed[0].StatusReason == "" {
			t.Fatalf("second loss changed %+v; want the job failed with a reason", changed)
		}
		if got := f.runJobs(run)["a"]; got.Status != api.StatusFailed {
			t.Fatalf("job status %s, want failed", got.Status)
		}
	}},
	{"a runner going offline by itself", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		leaving, staying := f.runner(u, cpuHost), f.runner(u, cpuHost)
		f.run(u, spec("a"))
		j := f.claim(leaving)
		changed, err := f.s.RunnerMarkOffline(f.ctx, store.RunnerMarkOfflineParams{RunnerID: leaving.ID, MaxAttempts: 3, Now: f.tick()})
		if err != nil {
			t.Fatalf("RunnerMarkOffline: %v", err)
		}
		if len(changed) != 1 || changed[0].ID != j.ID || changed[0].Status != api.StatusPending {
			t.Fatalf("RunnerMarkOffline changed %+v; want job %s requeued", changed, j.ID)
		}
		if r, _ := f.s.RunnerGet(f.ctx, leaving.ID); r.Online {
			t.Error("the runner that left is online")
		}
		if r, _ := f.s.RunnerGet(f.ctx, staying.ID); !r.Online {
			t.Error("the other runner, heard from as recently, went offline")
		}
	}},
	{"a lost job with a stop request ends", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		run := f.run(u, spec("a"), spec("b", "a"))
		j := f.claim(r)
		if _, err := f.s.JobRequestStop(f.ctx, store.JobRequestStopParams{RunID: run.ID, Now: f.tick()}); err != nil {
			t.Fatalf("JobRequestStop: %v", err)
		}
		if _, err := f.s.RunnerMarkOffline(f.ctx, store.RunnerMarkOfflineParams{HeartbeatBefore: f.tick(), MaxAttempts: 3, Now: f.tick()}); err != nil {
			t.Fatalf("RunnerMarkOffline: %v", err)
		}
		jobs := f.runJobs(run)
		f.wantStatus(map[*store.Job]api.JobStatus{j: api.StatusStopped, jobs["b"]: api.StatusStopped})
	}},
}

// benchSetup migrates s and makes a user with n runners of its own.
func benchSetup(b *testing.B, s store.Store, n int) (*store.User, []*store.Runner) {
	ctx := b.Context()
	if err := s.Migrate(ctx); err != nil {
		b.Fatalf("Migrate: %v", err)
	}
	u, err := s.UserCreate(ctx, store.UserCreateParams{ID: "u", Name: "u", TokenHash: "h", Now: base})
	if err != nil {
		b.Fatal(err)
	}
	rs := make([]*store.Runner, n)
	for i := range rs {
		id := "r" + strconv.Itoa(i)
		if rs[i], err = s.RunnerCreate(ctx, store.RunnerCreateParams{ID: id, UserID: u.ID, Name: id, TokenHash: "h" + id,
			Resources: cpuHost, TokenExpiresAt: base.Add(time.Hour), Now: base}); err != nil {
			b.Fatal(err)
		}
	}
	return u, rs
}

// BenchmarkJobClaimNext measures claiming from a deep queue: each iteration
// claims one job and finishes it.
func BenchmarkJobClaimNext(b *testing.B, s store.Store) {
	ctx := b.Context()
	now := base
	u, rs := benchSetup(b, s, 1)
	r := rs[0]
	const queued = 10000
	for i := range queued + b.N {
		p := store.RunCreateParams{ID: "run-" + strconv.Itoa(i), Name: "run-" + strconv.Itoa(i), UserID: u.ID, Workflow: "a", CodeID: "c", Now: now,
			Jobs: []store.JobCreate{{ID: "job-" + strconv.Itoa(i), Spec: spec("a")}}}
		if _, err := s.RunCreate(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		j, err := s.JobClaimNext(ctx, store.JobClaimNextParams{RunnerID: r.ID, UserID: u.ID, Free: cpuHost, Now: now})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.JobSetStatus(ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease, Status: api.StatusDone, Now: now}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClaimConcurrent measures the queue's throughput at the store:
// 10,000 queued jobs of one run, 200 runners claiming and finishing them at
// once, as the server's runners do.
func BenchmarkClaimConcurrent(b *testing.B, s store.Store) {
	ctx := b.Context()
	now := base
	const queued = 10000
	u, rs := benchSetup(b, s, 200)
	var total time.Duration
	for it := range b.N {
		b.StopTimer()
		p := store.RunCreateParams{ID: "run-" + strconv.Itoa(it), Name: "run-" + strconv.Itoa(it), UserID: u.ID, Workflow: "a", CodeID: "c", Now: now}
		for i := range queued {
			p.Jobs = append(p.Jobs, store.JobCreate{ID: fmt.Sprintf("job-%d-%d", it, i), Spec: spec(fmt.Sprintf("w%d", i))})
		}
		if _, err := s.RunCreate(ctx, p); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for _, r := range rs {
			wg.Go(func() {
				for {
					j, err := s.JobClaimNext(ctx, store.JobClaimNextParams{RunnerID: r.ID, UserID: u.ID, Free: cpuHost, Now: now})
					if errors.Is(err, store.ErrNotFound) {
						return
					}
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := s.JobSetStatus(ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease, Status: api.StatusDone, Now: now}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		total += time.Since(start)
	}
	b.ReportMetric(float64(queued*b.N)/total.Seconds(), "jobs/s")
}

// BenchmarkRunCreate measures submitting: a run of 1,000 jobs an
// operation, the most the server takes in one run.
func BenchmarkRunCreate(b *testing.B, s store.Store) {
	ctx := b.Context()
	u, _ := benchSetup(b, s, 0)
	const size = 1000
	for it := range b.N {
		b.StopTimer()
		p := store.RunCreateParams{ID: "run-" + strconv.Itoa(it), Name: "run-" + strconv.Itoa(it), UserID: u.ID, Workflow: "a", CodeID: "c", Now: base}
		for i := range size {
			p.Jobs = append(p.Jobs, store.JobCreate{ID: fmt.Sprintf("job-%d-%d", it, i), Spec: spec(fmt.Sprintf("w%d", i))})
		}
		b.StartTimer()
		if _, err := s.RunCreate(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "jobs/s")
}
