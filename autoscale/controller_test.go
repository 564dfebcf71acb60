package autoscale_test

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/autoscale"
	"github.com/dstackai/dstack/autoscale/plan"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/fake"
	"github.com/dstackai/dstack/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestScaleUpRunIdleTeardown(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", false, 2)
	jobID := e.submit(small)
	e.step()

	calls := e.cloud.LaunchCalls()
	if len(calls) != 1 || len(calls[0].Instances) != 1 {
		t.Fatalf("launch calls = %+v, want one of one instance", calls)
	}
	req := calls[0]
	if req.ServerID != e.id || req.IdempotencyKey == "" || req.ServerURL != "http://server:3000" || req.Instances[0].JoinToken == "" {
		t.Fatalf("launch request = %+v", req)
	}
	ins := e.instances(store.InstanceLaunching)
	if len(ins) != 1 || ins[0].CloudID == "" || ins[0].JobID != jobID || ins[0].LaunchKey != req.IdempotencyKey {
		t.Fatalf("records after launch = %+v", ins)
	}
	e.step() // nothing more to launch while the instance boots
	if n := len(e.cloud.LaunchCalls()); n != 1 {
		t.Fatalf("%d launch calls, want still 1", n)
	}

	r := e.register(ins[0])
	j := e.claim(r)
	if j == nil || j.ID != jobID {
		t.Fatalf("the instance's runner claimed %+v, want %s", j, jobID)
	}
	e.step()
	busy := e.instances(store.InstanceRunning)
	if len(busy) != 1 || busy[0].JobID != jobID || busy[0].IdleSince != nil {
		t.Fatalf("busy instance = %+v", busy)
	}
	e.clock.Advance(time.Hour) // busy instances never idle out
	e.step()
	if len(e.instances(store.InstanceRunning)) != 1 {
		t.Fatal("a busy instance was terminated")
	}

	e.finish(j, r)
	e.step()
	idle := e.instances(store.InstanceRunning)
	if len(idle) != 1 || idle[0].JobID != "" || idle[0].IdleSince == nil || !idle[0].IdleSince.Equal(e.clock.Now()) {
		t.Fatalf("idle instance = %+v", idle)
	}
	e.clock.Advance(idleTimeout - time.Second)
	e.step()
	if len(e.instances(store.InstanceRunning)) != 1 {
		t.Fatal("terminated before the idle timeout")
	}
	e.clock.Advance(2 * time.Second)
	e.step()
	if got := e.instances(store.InstanceTerminated); len(got) != 1 || got[0].Reason != "idle_timeout" {
		t.Fatalf("terminated records = %+v", got)
	}
	if live := e.cloud.Live(); len(live) != 0 {
		t.Fatalf("cloud still has %+v", live)
	}
}

func TestSeveralJobsOneLaunch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", false, 5)
	for range 3 {
		e.submit(small)
	}
	e.step()
	calls := e.cloud.LaunchCalls()
	if len(calls) != 1 || len(calls[0].Instances) != 3 {
		t.Fatalf("launch calls = %d (first with %d instances), want one of 3", len(calls), len(calls[0].Instances))
	}
	seen := map[string]bool{}
	for _, s := range calls[0].Instances {
		if seen[s.JoinToken] {
			t.Fatal("two instances share a join token")
		}
		seen[s.JoinToken] = true
	}
}

func TestCheapestFitAndSpot(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", false, 1)
	e.limit("f.small", true, 1)
	e.limit("f.large", false, 1)
	e.submit(api.Resources{CPU: 2})                      // only f.large fits
	e.submit(api.Resources{CPU: 1, Interruptible: true}) // spot is cheaper
	e.submit(small)                                      // on-demand only
	e.step()
	got := map[string]int{}
	for _, c := range e.cloud.LaunchCalls() {
		got[c.Offer.Key().String()] += len(c.Instances)
	}
	want := map[string]int{"fake/r1/f.large/on-demand": 1, "fake/r1/f.small/spot": 1, "fake/r1/f.small/on-demand": 1}
	if len(got) != len(want) {
		t.Fatalf("launched %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("launched %v, want %v", got, want)
		}
	}
}

// running launches, registers and has every instance claim a job; it
// returns the runners by instance ID.
func (e *env) running() map[string]*store.Runner {
	e.t.Helper()
	e.step()
	out := map[string]*store.Runner{}
	for _, in := range e.instances(store.InstanceLaunching) {
		out[in.ID] = e.register(in)
	}
	e.step()
	return out
}

func TestLimitDecreaseIdleFirstThenNewestBusy(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", false, 3)
	for range 3 {
		e.submit(small)
	}
	runners := e.running()
	if len(runners) != 3 {
		t.Fatalf("%d instances running, want 3", len(runners))
	}
	held := map[string]*store.Job{}
	var order []string // instance IDs in claim order
	for _, in := range e.instances(store.InstanceRunning) {
		e.clock.Advance(time.Second)
		if j := e.claim(runners[in.ID]); j != nil {
			held[in.ID] = j
			order = append(order, in.ID)
		}
	}
	// The first one finishes and idles; two stay busy.
	e.finish(held[order[0]], runners[order[0]])
	e.step()

	e.limit("f.small", false, 1)
	e.step()
	term := map[string]*store.Instance{}
	for _, in := range e.instances(store.InstanceTerminated) {
		term[in.ID] = in
	}
	if len(term) != 2 || term[order[0]] == nil {
		t.Fatalf("terminated %v, want the idle %s and one busy", keys(term), order[0])
	}
	// Of the busy ones, the most recently started goes: they started
	// together, so either may; its job is requeued.
	var gone string
	for id := range term {
		if id != order[0] {
			gone = id
		}
	}
	if j := e.job(held[gone].ID); j.Status != api.StatusPending || j.Attempt != 1 {
		t.Fatalf("job of the terminated busy instance: %s attempt %d, want pending attempt 1", j.Status, j.Attempt)
	}
	if len(e.instances(store.InstanceRunning)) != 1 {
		t.Fatal("want one instance left")
	}
	if n := len(e.cloud.Live()); n != 1 {
		t.Fatalf("cloud has %d instances, want 1", n)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestDisableTerminatesEnableResumes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", false, 2)
	e.submit(small)
	e.submit(small)
	e.running()
	if err := e.st.OnDemandSetEnabled(e.ctx, store.OnDemandSetEnabledParams{Enabled: false, Now: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	e.step()
	if n := len(e.instances(store.InstanceLaunching, store.InstanceRunning, store.InstanceTerminating)); n != 0 {
		t.Fatalf("%d instances left after disable", n)
	}
	if n := len(e.cloud.Live()); n != 0 {
		t.Fatalf("cloud has %d instances after disable", n)
	}
	if w := e.c.Waiting(); len(w) != 2 {
		t.Fatalf("waiting = %v, want both jobs with a reason", w)
	}
	if err := e.st.OnDemandSetEnabled(e.ctx, store.OnDemandSetEnabledParams{Enabled: true, Now: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	e.step()
	if n := len(e.instances(store.InstanceLaunching)); n != 2 {
		t.Fatalf("%d instances launching after enable, want 2", n)
	}
}

func TestLimitDeletedTerminates(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", false, 1)
	e.submit(small)
	e.running()
	if _, err := e.st.LimitDelete(e.ctx, store.LimitDeleteParams{}); err != nil {
		t.Fatal(err)
	}
	e.step()
	got := e.instances(store.InstanceTerminated)
	if len(got) != 1 || got[0].Reason != "limit_deleted" || len(e.cloud.Live()) != 0 {
		t.Fatalf("after delete: %+v, cloud %d", got, len(e.cloud.Live()))
	}
}

func TestCapacityErrorMarksUnavailableAndTriesNext(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", false, 1)
	e.limit("f.large", false, 1)
	e.cloud.Refuse(fake.Catalogue[0].Key(), backend.Errorf(backend.ErrNoCapacity, "launch", "InsufficientInstanceCapacity", "none left"))
	e.submit(small)
	e.step()
	calls := e.cloud.LaunchCalls()
	if len(calls) != 2 || calls[0].Offer.InstanceType != "f.small" || calls[1].Offer.InstanceType != "f.large" {
		t.Fatalf("launch calls = %+v, want f.small then f.large", calls)
	}
	un, err := e.st.OfferUnavailableList(e.ctx, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(un) != 1 || un[0].InstanceType != "f.small" || un[0].Reason != "InsufficientInstanceCapacity: none left" {
		t.Fatalf("unavailable = %+v", un)
	}
	if g := e.instances(store.InstanceGone); len(g) != 1 {
		t.Fatalf("refused records = %+v, want one gone", g)
	}
	if l := e.instances(store.InstanceLaunching); len(l) != 1 || l[0].InstanceType != "f.large" {
		t.Fatalf("launching = %+v", l)
	}
}

func TestRegistrationTimeout(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", false, 1)
	jobID := e.submit(small)
	e.step()
	first := e.instances(store.InstanceLaunching)
	e.clock.Advance(registerTimeout)
	e.step()
	if got, err := e.st.InstanceGet(e.ctx, first[0].ID); err != nil || got.State != store.InstanceTerminated || got.Reason != "registration_timeout" {
		t.Fatalf("timed-out instance = %+v, %v", got, err)
	}
	// The job is planned again, on a new instance.
	again := e.instances(store.InstanceLaunching)
	if len(again) != 1 || again[0].JobID != jobID || again[0].ID == first[0].ID {
		t.Fatalf("relaunched = %+v", again)
	}
	if n := len(e.cloud.Live()); n != 1 {
		t.Fatalf("cloud has %d instances, want 1", n)
	}
}

func TestUntrackedInstanceTerminatedAfterGrace(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.cloud.Plant(e.id)
	other := e.cloud.Plant("another-server")
	e.step()
	e.clock.Advance(grace - time.Second)
	e.step()
	if len(e.cloud.Live()) != 2 {
		t.Fatal("terminated before the grace period")
	}
	e.clock.Advance(2 * time.Second)
	e.step()
	live := e.cloud.Live()
	if len(live) != 1 || live[0].CloudID != other {
		t.Fatalf("live = %+v, want only %s (another server's); %s terminated", live, other, id)
	}
}

// TestInstanceNamingAnotherInstancesRecord: an instance tagged with a live
// record that names another cloud instance is unknown: a warning names
// it, it is terminated once the grace period has passed, and the record
// and its own instance are left alone.
func TestInstanceNamingAnotherInstancesRecord(t *testing.T) {
	t.Parallel()
	e := setup(t)
	logs := &syncBuffer{}
	e.c = e.controller(func(c *autoscale.Config) {
		c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs, tWriter{t}), nil))
	})
	l := e.limit("f.small", false, 1)
	e.submit(small)
	e.step()
	recs := e.instances(store.InstanceLaunching)
	if len(recs) != 1 || recs[0].CloudID == "" {
		t.Fatalf("launched %+v, want one instance", recs)
	}
	rec := recs[0]
	// The extra is over the limit until the grace period ends: no
	// limit check after these passes.
	pass := func() {
		t.Helper()
		if err := e.c.Step(e.ctx); err != nil {
			t.Fatalf("Step: %v", err)
		}
	}
	extra := e.cloud.PlantAs(e.id, l.ID, rec.ID)
	pass()
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "names another instance") || !strings.Contains(logs.String(), extra) {
		t.Errorf("no warning names %s, whose record names %s:\n%s", extra, rec.CloudID, logs.String())
	}
	e.clock.Advance(grace - time.Second)
	pass()
	if n := len(e.cloud.Live()); n != 2 {
		t.Fatalf("%d instances live before the grace period, want 2", n)
	}
	e.clock.Advance(2 * time.Second)
	pass()
	live := e.cloud.Live()
	if len(live) != 1 || live[0].CloudID != rec.CloudID {
		t.Fatalf("live = %+v, want only the record's own %s", live, rec.CloudID)
	}
	if got, err := e.st.InstanceGet(e.ctx, rec.ID); err != nil || got.State.Ended() || got.CloudID != rec.CloudID {
		t.Fatalf("the record is %+v (%v), want it live on %s", got, err, rec.CloudID)
	}
}

func TestVanishedInstanceRequeuesJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", false, 1)
	jobID := e.submit(small)
	runners := e.running()
	var in *store.Instance
	for _, x := range e.instances(store.InstanceRunning) {
		in = x
	}
	if e.claim(runners[in.ID]) == nil {
		t.Fatal("no job claimed")
	}
	e.step()
	e.cloud.Vanish(in.CloudID)
	e.step()
	if got, _ := e.st.InstanceGet(e.ctx, in.ID); got.State != store.InstanceGone {
		t.Fatalf("vanished instance is %s, want gone", got.State)
	}
	if j := e.job(jobID); j.Status != api.StatusPending {
		t.Fatalf("job is %s, want pending again", j.Status)
	}
	if n := len(e.instances(store.InstanceLaunching)); n != 1 {
		t.Fatalf("%d relaunched, want 1", n)
	}
}

func TestNoLaunchWhenSelfHostedRunnerFree(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", false, 1)
	_, err := e.st.RunnerCreate(e.ctx, store.RunnerCreateParams{ID: "self", UserID: e.user.ID, Name: "self", Executor: "shell",
		Resources: api.HostResources{CPUs: 8, MemoryMiB: 8 << 10}, TokenHash: "self", TokenExpiresAt: e.clock.Now().Add(time.Hour), Now: e.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	e.submit(small)
	e.step()
	if n := len(e.cloud.LaunchCalls()); n != 0 {
		t.Fatalf("%d launches with a free self-hosted runner", n)
	}
}

// TestWaitingReasonStored: why a job waits is stored as its StatusReason
// (what `dstack ps` shows), changed as the reason changes, and cleared once
// an instance is launched for it.
func TestWaitingReasonStored(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.submit(small)
	e.step()
	if got := e.job(id).StatusReason; !strings.Contains(got, "no on-demand limit is set") {
		t.Fatalf("reason with no limit = %q", got)
	}
	big := e.submit(api.Resources{CPU: 512})
	e.limit("f.small", false, 1)
	e.submit(small) // no room once the first job takes the limit's instance
	e.step()
	if got := e.job(id).StatusReason; got != "" {
		t.Fatalf("reason of a job an instance launches for = %q, want none", got)
	}
	if got := e.job(big).StatusReason; !strings.Contains(got, "no limit allows") || !strings.Contains(got, "512 CPUs") {
		t.Fatalf("reason of a job no limit fits = %q", got)
	}
	if w := e.c.Waiting(); len(w) != 2 || w[big].Code != plan.WaitNoLimit {
		t.Fatalf("waiting = %v", w)
	}
	for jobID, w := range e.c.Waiting() {
		if got := e.job(jobID).StatusReason; got != w.Message {
			t.Errorf("job %s: stored reason %q, controller's %q", jobID, got, w.Message)
		}
	}
}

// TestBackendsChangeWhileRunning: a controller on a backend.Set follows it
// pass by pass. With no backend it launches nothing and says why jobs wait
// from the registered runners; with one it plans, and its reasons replace
// those; a backend put back in the set is used at the next pass.
func TestBackendsChangeWhileRunning(t *testing.T) {
	t.Parallel()
	e := setup(t)
	set := backend.NewSet()
	c := e.controller(func(cfg *autoscale.Config) { cfg.Backends = set })
	const noRunner = "no runner is registered: start one with dstack-runner start"
	id := e.submit(small)
	e.stepWith(c)
	if got := e.job(id).StatusReason; !c.Leader() || len(e.cloud.LaunchCalls()) != 0 || got != noRunner {
		t.Fatalf("with no backend: leader %v, %d launches, reason %q", c.Leader(), len(e.cloud.LaunchCalls()), got)
	}
	if w := c.Waiting(); w[id].Code != plan.WaitNoRunner {
		t.Fatalf("waiting with no backend = %v", w)
	}

	set.Put(e.cloud)
	e.stepWith(c)
	if got := e.job(id).StatusReason; !strings.Contains(got, "no on-demand limit is set") {
		t.Fatalf("with a backend: reason %q", got)
	}
	set.Remove(e.cloud.Name())
	e.stepWith(c)
	if got := e.job(id).StatusReason; got != noRunner {
		t.Fatalf("backend removed: reason %q, want %q", got, noRunner)
	}
	// Only the lease holder says why: another replica writes nothing.
	other := e.controller(func(cfg *autoscale.Config) { cfg.Backends = backend.NewSet() })
	e.stepWith(other)
	if other.Leader() {
		t.Fatal("two controllers hold the lease")
	}

	set.Put(e.cloud)
	e.limit("f.small", false, 1)
	e.stepWith(c)
	if calls := e.cloud.LaunchCalls(); len(calls) != 1 {
		t.Fatalf("%d launch calls once the backend is back, want 1", len(calls))
	}
	if got := e.job(id).StatusReason; got != "" {
		t.Fatalf("reason of a job an instance launches for = %q, want none", got)
	}
}

// TestNoBackendReasons: with no backend, a job no runner fits says what the
// runners lack; the reason goes once a runner that fits registers, and a
// requeued job keeps the reason its requeue gave.
func TestNoBackendReasons(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.controller(func(cfg *autoscale.Config) { cfg.Backends = nil })
	e.selfHosted("small", api.HostResources{CPUs: 8, MemoryMiB: 16 << 10})
	big := e.submit(api.Resources{CPU: 64})
	e.stepWith(c)
	if got, want := e.job(big).StatusReason, "no runner has 64 CPUs (the largest has 8); add a runner that does, or lower resources"; got != want {
		t.Fatalf("reason = %q, want %q", got, want)
	}
	// A big runner takes the job before the next pass and goes silent: the
	// job is requeued with the cause, which a pass leaves alone although a
	// free runner fits it now.
	r := e.selfHosted("big", api.HostResources{CPUs: 64, MemoryMiB: 64 << 10})
	if j := e.claim(r); j == nil || j.ID != big {
		t.Fatalf("claimed %v, want %s", j, big)
	}
	if _, err := e.st.RunnerMarkOffline(e.ctx, store.RunnerMarkOfflineParams{RunnerID: r.ID,
		MaxAttempts: 3, Now: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	requeued := e.job(big).StatusReason
	if e.job(big).Status != api.StatusPending || !strings.Contains(requeued, "requeued") {
		t.Fatalf("job after its runner went away: %s %q", e.job(big).Status, requeued)
	}
	e.selfHosted("big2", api.HostResources{CPUs: 64, MemoryMiB: 64 << 10})
	e.stepWith(c)
	if got := e.job(big).StatusReason; got != requeued {
		t.Fatalf("requeued job's reason = %q, want %q kept", got, requeued)
	}
}

// selfHosted registers a self-hosted runner of e's user.
func (e *env) selfHosted(name string, res api.HostResources) *store.Runner {
	e.t.Helper()
	r, err := e.st.RunnerCreate(e.ctx, store.RunnerCreateParams{ID: "r-" + name, UserID: e.user.ID, Name: name,
		Executor: "shell", Version: "test", Resources: res, TokenHash: "rt-" + name,
		TokenExpiresAt: e.clock.Now().Add(24 * time.Hour), Now: e.clock.Now()})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// syncBuffer is a bytes.Buffer safe for the controller's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
