package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// pendingIDs lists the pending jobs' IDs in the order JobListPending gives.
func (f *fixture) pendingIDs(p store.JobListPendingParams) []string {
	f.t.Helper()
	got, err := f.s.JobListPending(f.ctx, p)
	if err != nil {
		f.t.Fatalf("JobListPending: %v", err)
	}
	var out []string
	for _, j := range got {
		out = append(out, j.ID)
	}
	return out
}

var pendingTests = []test{
	{"every user's, in queue order", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		gpu := api.Resources{CPU: 4, MemoryMiB: 16 << 10, ShmSizeMiB: 1024, Interruptible: true,
			GPU: &api.GPURequest{Count: 1, Name: "A100", MemoryMiB: 40 << 10}}
		first := f.run(alice, withResources(spec("a"), gpu), spec("b", "a"))
		second := f.run(bob, spec("c"))
		third := f.run(alice, spec("d"))
		a, b, c, d := first.Jobs[0], first.Jobs[1], second.Jobs[0], third.Jobs[0]

		got, err := f.s.JobListPending(f.ctx, store.JobListPendingParams{})
		if err != nil {
			t.Fatalf("JobListPending: %v", err)
		}
		if len(got) != 3 {
			t.Fatalf("JobListPending = %d jobs, want 3", len(got))
		}
		pa := got[0]
		if pa.ID != a.ID || pa.RunID != first.ID || pa.RunName != first.Name || pa.UserID != alice.ID ||
			pa.Workflow != "a" || pa.Attempt != 0 || !reflect.DeepEqual(pa.Resources, gpu) {
			t.Fatalf("first pending job = %+v", pa)
		}
		sameTime(t, "SubmittedAt", pa.SubmittedAt, first.SubmittedAt)
		sameTime(t, "QueuedAt", pa.QueuedAt, first.SubmittedAt)
		if ids := f.pendingIDs(store.JobListPendingParams{}); !reflect.DeepEqual(ids, []string{a.ID, c.ID, d.ID}) {
			t.Fatalf("JobListPending = %v, want a, c, d", ids)
		}
		if ids := f.pendingIDs(store.JobListPendingParams{UserID: alice.ID}); !reflect.DeepEqual(ids, []string{a.ID, d.ID}) {
			t.Fatalf("JobListPending(alice) = %v, want a, d", ids)
		}

		// a done: b joins the back of the queue, queued then.
		ra := f.runner(alice, gpuHost)
		ja := f.set(f.claim(ra), api.StatusRunning)
		done := f.tick()
		if _, err := f.s.JobSetStatus(f.ctx, store.JobSetStatusParams{ID: ja.ID, RunnerID: ra.ID, Lease: ja.Lease,
			Status: api.StatusDone, Now: done}); err != nil {
			t.Fatalf("JobSetStatus: %v", err)
		}
		got, _ = f.s.JobListPending(f.ctx, store.JobListPendingParams{})
		if len(got) != 3 || got[0].ID != c.ID || got[1].ID != d.ID || got[2].ID != b.ID {
			t.Fatalf("after a is done, JobListPending = %v, want c, d, b", f.pendingIDs(store.JobListPendingParams{}))
		}
		sameTime(t, "QueuedAt of a dependent", got[2].QueuedAt, done)
		sameTime(t, "SubmittedAt of a dependent", got[2].SubmittedAt, first.SubmittedAt)

		// A requeued job keeps its place and its QueuedAt.
		rb := f.runner(bob, cpuHost)
		f.claim(rb)
		if _, err := f.s.RunnerMarkOffline(f.ctx, store.RunnerMarkOfflineParams{HeartbeatBefore: f.tick().Add(time.Hour),
			MaxAttempts: 3, Now: f.tick()}); err != nil {
			t.Fatalf("RunnerMarkOffline: %v", err)
		}
		got, _ = f.s.JobListPending(f.ctx, store.JobListPendingParams{})
		if len(got) != 3 || got[0].ID != c.ID || got[0].Attempt != 1 {
			t.Fatalf("after a requeue, JobListPending = %v; want c first, attempt 1", f.pendingIDs(store.JobListPendingParams{}))
		}
		sameTime(t, "QueuedAt of a requeued job", got[0].QueuedAt, second.SubmittedAt)
	}},
}

// BenchmarkJobListPending measures reading a queue of 10,000 pending jobs of
// 10 users, as the autoscaler does on every pass.
func BenchmarkJobListPending(b *testing.B, s store.Store) {
	ctx := b.Context()
	if err := s.Migrate(ctx); err != nil {
		b.Fatalf("Migrate: %v", err)
	}
	const users, runs, jobs = 10, 100, 100 // runs of jobs each
	res := api.Resources{CPU: 2, MemoryMiB: 4096, GPU: &api.GPURequest{Count: 1, Name: "T4"}, Interruptible: true}
	for u := range users {
		id := "u" + strconv.Itoa(u)
		if _, err := s.UserCreate(ctx, store.UserCreateParams{ID: id, Name: id, TokenHash: id, Now: base}); err != nil {
			b.Fatal(err)
		}
	}
	for r := range runs {
		id := "run-" + strconv.Itoa(r)
		p := store.RunCreateParams{ID: id, Name: id, UserID: "u" + strconv.Itoa(r%users), Workflow: "w0", CodeID: "c", Now: base}
		for j := range jobs {
			p.Jobs = append(p.Jobs, store.JobCreate{ID: id + "-" + strconv.Itoa(j), Spec: withResources(spec("w"+strconv.Itoa(j)), res)})
		}
		if _, err := s.RunCreate(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		got, err := s.JobListPending(ctx, store.JobListPendingParams{})
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != runs*jobs {
			b.Fatalf("%d pending jobs, want %d", len(got), runs*jobs)
		}
	}
}

var pendingReasonTests = []test{
	{"set on pending jobs only, cleared by a claim", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		run := f.run(u, spec("a"), spec("b", "a"), spec("c"))
		a, b, c := run.Jobs[0], run.Jobs[1], run.Jobs[2]
		set := func(reasons map[string]string) int {
			t.Helper()
			n, err := f.s.JobSetPendingReasons(f.ctx, store.JobSetPendingReasonsParams{Reasons: reasons})
			if err != nil {
				t.Fatalf("JobSetPendingReasons: %v", err)
			}
			return n
		}
		reason := func(j *store.Job) string { t.Helper(); return f.job(j.ID).StatusReason }

		if n := set(nil); n != 0 {
			t.Fatalf("JobSetPendingReasons(none) = %d, want 0", n)
		}
		// b is submitted (waiting for a), so only a and c change; an
		// unknown job is no error.
		if n := set(map[string]string{a.ID: "no room", b.ID: "no room", c.ID: "no limit", "unknown": "x"}); n != 2 {
			t.Fatalf("JobSetPendingReasons = %d changed, want 2", n)
		}
		if ra, rb, rc := reason(a), reason(b), reason(c); ra != "no room" || rb != "" || rc != "no limit" {
			t.Fatalf("reasons = %q, %q, %q; want \"no room\", \"\", \"no limit\"", ra, rb, rc)
		}
		// The same reason again changes nothing; "" clears one.
		if n := set(map[string]string{a.ID: "no room", c.ID: ""}); n != 1 {
			t.Fatalf("JobSetPendingReasons(same, clear) = %d changed, want 1", n)
		}
		if rc := reason(c); rc != "" {
			t.Fatalf("cleared reason = %q", rc)
		}

		// The claim clears a's reason, and a job no longer pending keeps
		// what it has.
		r := f.runner(u, cpuHost)
		ja := f.claim(r)
		if ja.ID != a.ID || ja.StatusReason != "" || reason(a) != "" {
			t.Fatalf("claimed %s with reason %q (stored %q); want a with none", ja.ID, ja.StatusReason, reason(a))
		}
		if n := set(map[string]string{a.ID: "stale"}); n != 0 || reason(a) != "" {
			t.Fatalf("JobSetPendingReasons on a claimed job = %d changed, reason %q; want 0, none", n, reason(a))
		}
		if got := f.job(a.ID).Status; got != api.StatusDownloading {
			t.Fatalf("claimed job is %s after JobSetPendingReasons, want downloading", got)
		}
	}},
	{"reasons set while runners claim fail neither", func(t *testing.T, open Open) {
		// The autoscaler sets the reasons of every pending job while
		// runners claim them: neither may wait on the other's rows in a
		// cycle (a deadlock, which the database breaks by failing one).
		f := setup(t, open)
		u := f.user()
		// The jobs' IDs go down in queue order: claims, which take the
		// first pending jobs, lock rows in the opposite order of IDs.
		var ids []string
		for i := range 600 {
			p := f.runParams(u, spec("w"))
			p.Jobs[0].ID = fmt.Sprintf("job-%04d", 9999-i)
			if _, err := f.s.RunCreate(f.ctx, p); err != nil {
				t.Fatalf("RunCreate: %v", err)
			}
			ids = append(ids, p.Jobs[0].ID)
		}
		runners := make([]*store.Runner, 16)
		for i := range runners {
			runners[i] = f.runner(u, cpuHost)
		}
		var (
			wg      sync.WaitGroup
			claimed atomic.Int64
		)
		for _, r := range runners {
			wg.Go(func() {
				for {
					_, err := f.tryClaim(r, cpuHost)
					if errors.Is(err, store.ErrNotFound) {
						return
					}
					if err != nil {
						t.Errorf("JobClaimNext while reasons are set: %v", err)
						return
					}
					claimed.Add(1)
				}
			})
		}
		// As many passes at once as the autoscalers of several replicas
		// make, while the runners claim (where writes queue for one lock,
		// as on SQLite, the passes end before the claims).
		for k := range 4 {
			wg.Go(func() {
				for pass := 0; pass < 10 && claimed.Load() < int64(len(ids)) && !t.Failed(); pass++ {
					reasons := make(map[string]string, len(ids))
					for _, id := range ids {
						reasons[id] = fmt.Sprintf("no runner fits (pass %d of %d)", pass, k)
					}
					if _, err := f.s.JobSetPendingReasons(f.ctx, store.JobSetPendingReasonsParams{Reasons: reasons}); err != nil {
						t.Errorf("JobSetPendingReasons while runners claim: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		if n := claimed.Load(); n != int64(len(ids)) {
			t.Fatalf("runners claimed %d of %d jobs", n, len(ids))
		}
		for _, id := range ids {
			if j := f.job(id); j.Status != api.StatusDownloading || j.StatusReason != "" {
				t.Fatalf("job %s: %s with reason %q after its claim; want downloading with none", id, j.Status, j.StatusReason)
			}
		}
	}},
}
