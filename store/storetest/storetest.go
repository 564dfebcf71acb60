// Package storetest is the conformance suite every store.Store passes: Run
// checks each method's documented behaviour, BenchmarkJobClaimNext and
// BenchmarkJobListPending measure the queue. A store's own tests call them with a function that opens a new,
// empty, unmigrated database for one test.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// Open returns a new, empty store that no other test uses, not yet migrated,
// and closes it in t.Cleanup.
type Open func(t *testing.T) store.Store

// Run runs the conformance suite, each test in parallel on its own store.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	groups := map[string][]test{
		"Migrate":   migrateTests,
		"User":      userTests,
		"UserAdmin": userAdminTests,
		"Token":     tokenTests,
		"Runner":    runnerTests,
		"Tally":     tallyTests,
		"Run":       runTests,
		"Claim":     claimTests,
		"Batch":     batchTests,
		"EndClaim":  append(endClaimTests, endInterruptTests...),
		"Status":    statusTests,
		"Depends":   dependsTests,
		"Stop":      stopTests,
		"Offline":   offlineTests,
		"Heartbeat": heartbeatBatchTests,
		"Interrupt": interruptTests,
		"Pending":   pendingTests,
		"Reasons":   pendingReasonTests,
		"Tag":       tagTests,
		// On-demand runners.
		"Limit":         limitTests,
		"OnDemand":      onDemandTests,
		"Instance":      instanceTests,
		"Register":      registerTests,
		"InstanceState": instanceStateTests,
		"Offer":         offerTests,
		"Lease":         leaseTests,
		"Setting":       settingTests,
		"ArtifactStore": artifactStoreTests,
		"LogIncomplete": logIncompleteTests,
		"RunnerDelete":  runnerDeleteTests,
		"Storage":       storageTests,
		"Share":         shareTests,
		"Audit":         auditTests,
		"Log":           logTests,
		"Replica":       replicaTests,
		"Checkpoint":    checkpointTests,
		"Usage":         usageTests,
		"Image":         imageTests,
	}
	for group, tests := range groups {
		t.Run(group, func(t *testing.T) {
			t.Parallel()
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, open)
				})
			}
		})
	}
}

// test is one case of the suite. Most start with setup(t, open).
type test struct {
	name string
	fn   func(t *testing.T, open Open)
}

// fixture is a migrated store and helpers to fill it.
type fixture struct {
	t   *testing.T
	ctx context.Context
	s   store.Store

	mu  sync.Mutex
	seq int       // for unique names
	now time.Time // the fake clock; tick advances it
}

// base is the fake clock's start, with microseconds so that their round trip
// is checked everywhere.
var base = time.Date(2024, 5, 1, 12, 0, 0, 123456000, time.UTC)

func setup(t *testing.T, open Open) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: t.Context(), s: open(t), now: base}
	if err := f.s.Migrate(f.ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return f
}

// tick advances the clock by a second and returns the new time.
func (f *fixture) tick() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(time.Second)
	return f.now
}

// id returns a new unique string with the prefix.
func (f *fixture) id(prefix string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	return fmt.Sprintf("%s-%d", prefix, f.seq)
}

func (f *fixture) user() *store.User {
	f.t.Helper()
	id := f.id("user")
	u, err := f.s.UserCreate(f.ctx, store.UserCreateParams{ID: id, Name: id, TokenHash: "hash-" + id, Now: f.tick()})
	if err != nil {
		f.t.Fatalf("UserCreate: %v", err)
	}
	return u
}

// cpuHost is a runner's machine without GPUs.
var cpuHost = api.HostResources{CPUs: 8, MemoryMiB: 32 << 10, DiskMiB: 100 << 10}

func (f *fixture) runner(u *store.User, res api.HostResources) *store.Runner {
	f.t.Helper()
	id := f.id("runner")
	r, err := f.s.RunnerCreate(f.ctx, store.RunnerCreateParams{
		ID: id, UserID: u.ID, Name: "name-" + id, Hostname: "host-" + id, Executor: "shell", Version: "1.0",
		Resources: res, TokenHash: "hash-" + id, TokenExpiresAt: base.Add(24 * time.Hour), Now: f.tick(),
	})
	if err != nil {
		f.t.Fatalf("RunnerCreate: %v", err)
	}
	return r
}

// spec is a job spec for workflow, depending on deps.
func spec(workflow string, deps ...string) api.JobSpec {
	return api.JobSpec{Workflow: workflow, Provider: "bash", Commands: []string{"echo " + workflow}, DependsOn: deps}
}

func (f *fixture) run(u *store.User, specs ...api.JobSpec) *store.Run {
	f.t.Helper()
	r, err := f.s.RunCreate(f.ctx, f.runParams(u, specs...))
	if err != nil {
		f.t.Fatalf("RunCreate: %v", err)
	}
	return r
}

func (f *fixture) runParams(u *store.User, specs ...api.JobSpec) store.RunCreateParams {
	id := f.id("run")
	p := store.RunCreateParams{ID: id, Name: "name-" + id, UserID: u.ID, Workflow: specs[len(specs)-1].Workflow,
		CodeID: "code-" + id, Now: f.tick()}
	for _, s := range specs {
		p.Jobs = append(p.Jobs, store.JobCreate{ID: f.id("job"), Spec: s})
	}
	return p
}

// claim claims the next job for r, failing the test when there is none.
func (f *fixture) claim(r *store.Runner) *store.Job {
	f.t.Helper()
	j, err := f.tryClaim(r, r.Resources)
	if err != nil {
		f.t.Fatalf("JobClaimNext for %s: %v", r.ID, err)
	}
	return j
}

func (f *fixture) tryClaim(r *store.Runner, free api.HostResources) (*store.Job, error) {
	return f.s.JobClaimNext(f.ctx, store.JobClaimNextParams{RunnerID: r.ID, UserID: r.UserID, Free: free, Now: f.tick()})
}

// noClaim asserts that r finds nothing to claim.
func (f *fixture) noClaim(r *store.Runner) {
	f.t.Helper()
	if j, err := f.tryClaim(r, r.Resources); !errors.Is(err, store.ErrNotFound) {
		f.t.Fatalf("JobClaimNext for %s = %v, %v; want ErrNotFound", r.ID, jobID(j), err)
	}
}

// set moves a claimed job to st under its lease, failing the test on error.
func (f *fixture) set(j *store.Job, st api.JobStatus) *store.Job {
	f.t.Helper()
	got, err := f.trySet(j, st)
	if err != nil {
		f.t.Fatalf("JobSetStatus(%s, %s): %v", j.ID, st, err)
	}
	return got
}

func (f *fixture) trySet(j *store.Job, st api.JobStatus) (*store.Job, error) {
	return f.s.JobSetStatus(f.ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: j.RunnerID, Lease: j.Lease, Status: st, Now: f.tick()})
}

// finish runs a claimed job to st.
func (f *fixture) finish(j *store.Job, st api.JobStatus) *store.Job {
	f.t.Helper()
	j = f.set(j, api.StatusRunning)
	return f.set(j, st)
}

func (f *fixture) job(id string) *store.Job {
	f.t.Helper()
	j, err := f.s.JobGet(f.ctx, id)
	if err != nil {
		f.t.Fatalf("JobGet(%s): %v", id, err)
	}
	return j
}

// wantStatus asserts the stored state of jobs.
func (f *fixture) wantStatus(want map[*store.Job]api.JobStatus) {
	f.t.Helper()
	for j, st := range want {
		if got := f.job(j.ID); got.Status != st {
			f.t.Errorf("job %s (%s): status %s (%q), want %s", j.ID, j.Spec.Workflow, got.Status, got.StatusReason, st)
		}
	}
}

func jobID(j *store.Job) string {
	if j == nil {
		return "<nil>"
	}
	return j.ID
}

// wantErr asserts that err is target.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

// sameTime asserts a time read back from the store: equal to want at
// microsecond precision, and in UTC.
func sameTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want.Truncate(time.Microsecond)) || got.Location() != time.UTC {
		t.Errorf("%s = %v, want %v in UTC", what, got, want.Truncate(time.Microsecond))
	}
}
