package autoscale_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/autoscale"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/fake"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/postgres"
	"github.com/dstackai/dstack/store/sqlite"
	"github.com/dstackai/dstack/store/storetest"
)

// env is a store, a fake cloud, a user and a controller.
type env struct {
	t     *testing.T
	ctx   context.Context
	st    store.Store
	cloud *fake.Backend
	clock *testutil.Clock
	user  *store.User
	c     *autoscale.Controller
	id    string // the server ID
	seq   atomic.Int64
}

// Test timeouts: short enough to step past with the fake clock.
const (
	idleTimeout     = 5 * time.Minute
	grace           = time.Minute
	registerTimeout = 10 * time.Minute
	leaseTTL        = 30 * time.Second
)

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "dstack.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func openPostgres(t *testing.T) store.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), storetest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func setup(t *testing.T) *env {
	return setupWith(t, openSQLite(t))
}

func setupWith(t *testing.T, st store.Store) *env {
	t.Helper()
	ctx := context.Background()
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, st: st, clock: testutil.NewClock(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))}
	e.cloud = fake.New(e.clock.Now)
	id, err := autoscale.ServerID(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	e.id = id
	e.user, err = st.UserCreate(ctx, store.UserCreateParams{ID: "u1", Name: "alice", TokenHash: "h-u1", Now: e.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	e.c = e.controller(nil)
	return e
}

// controller returns a new controller on e's store and cloud; tweak may
// change its config.
func (e *env) controller(tweak func(*autoscale.Config)) *autoscale.Controller {
	e.t.Helper()
	cfg := autoscale.Config{
		Store: e.st, Backends: []backend.Backend{e.cloud}, ServerID: e.id, ServerURL: "http://server:3000",
		IdleTimeout: idleTimeout, Grace: grace, RegisterTimeout: registerTimeout, LeaseTTL: leaseTTL,
		LaunchTimeout: 5 * time.Second, Now: e.clock.Now, Logger: slog.New(slog.NewTextHandler(tWriter{e.t}, nil)),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	c, err := autoscale.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// tWriter sends logs to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func (e *env) step() {
	e.t.Helper()
	e.stepWith(e.c)
}

func (e *env) stepWith(c *autoscale.Controller) {
	e.t.Helper()
	if err := c.Step(e.ctx); err != nil {
		e.t.Fatalf("Step: %v", err)
	}
	e.checkLimits()
}

// limit sets a limit of the fake cloud for e's user.
func (e *env) limit(typ string, spot bool, max int) *store.Limit {
	e.t.Helper()
	res, err := e.st.LimitPut(e.ctx, store.LimitPutParams{
		ID: fmt.Sprint("l-", typ, spot), UserID: e.user.ID, Backend: "fake", Region: fake.Region,
		InstanceType: typ, Spot: spot, Max: max, Now: e.clock.Now(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Limit
}

var small = api.Resources{CPU: 1, MemoryMiB: 512}

// submit queues a run of one job and returns the job's ID.
func (e *env) submit(res api.Resources) string {
	e.t.Helper()
	n := e.seq.Add(1)
	id := fmt.Sprint("job-", n)
	_, err := e.st.RunCreate(e.ctx, store.RunCreateParams{
		ID: fmt.Sprint("run-", n), Name: fmt.Sprint("run-", n), UserID: e.user.ID, Workflow: "w", CodeID: "c", Now: e.clock.Now(),
		Jobs: []store.JobCreate{{ID: id, Spec: api.JobSpec{Workflow: "w", Provider: "bash", Commands: []string{"true"}, Resources: res}}},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// instances lists the instance records in the given states (all when none).
func (e *env) instances(states ...store.InstanceState) []*store.Instance {
	e.t.Helper()
	ins, err := e.st.InstanceList(e.ctx, store.InstanceListParams{States: states})
	if err != nil {
		e.t.Fatal(err)
	}
	return ins
}

// register joins the runner of an instance, as its boot would.
func (e *env) register(in *store.Instance) *store.Runner {
	e.t.Helper()
	tok := e.cloud.Token(in.ID)
	_, r, err := e.st.InstanceRegister(e.ctx, store.InstanceRegisterParams{
		JoinTokenHash: autoscale.HashToken(tok),
		Runner: store.RunnerCreateParams{ID: "r-" + in.ID, Name: "r-" + in.ID, Executor: "shell", Version: "test",
			Resources: api.HostResources{CPUs: 1, MemoryMiB: 1 << 10}, TokenHash: "rt-" + in.ID,
			TokenExpiresAt: e.clock.Now().Add(24 * time.Hour), Now: e.clock.Now()},
	})
	if err != nil {
		e.t.Fatalf("register instance %s: %v", in.ID, err)
	}
	return r
}

// claim has r take the next job; it returns nil when there is none.
func (e *env) claim(r *store.Runner) *store.Job {
	e.t.Helper()
	j, err := e.st.JobClaimNext(e.ctx, store.JobClaimNextParams{RunnerID: r.ID, UserID: r.UserID, Free: r.Resources, Now: e.clock.Now()})
	if err != nil {
		return nil
	}
	return j
}

// finish runs a claimed job to done.
func (e *env) finish(j *store.Job, r *store.Runner) {
	e.t.Helper()
	for _, st := range []api.JobStatus{api.StatusRunning, api.StatusDone} {
		var err error
		j, err = e.st.JobSetStatus(e.ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease, Status: st, Now: e.clock.Now()})
		if err != nil {
			e.t.Fatalf("set job %s %s: %v", j.ID, st, err)
		}
	}
}

func (e *env) job(id string) *store.Job {
	e.t.Helper()
	j, err := e.st.JobGet(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

// checkLimits fails the test when a limit counts more instances than its
// maximum, in the store or in the cloud.
func (e *env) checkLimits() {
	e.t.Helper()
	ls, err := e.st.LimitList(e.ctx, store.LimitListParams{})
	if err != nil {
		e.t.Fatal(err)
	}
	live := map[string]int{}
	for _, in := range e.cloud.Live() {
		live[in.Tags.LimitID]++
	}
	for _, l := range ls {
		if l.Instances > l.Max {
			e.t.Fatalf("limit %s counts %d instances, over its maximum %d", l.ID, l.Instances, l.Max)
		}
		if live[l.ID] > l.Max {
			e.t.Fatalf("the cloud has %d instances of limit %s, over its maximum %d", live[l.ID], l.ID, l.Max)
		}
	}
}

func openSQLiteB(b *testing.B) store.Store {
	st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "dstack.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

func mustUser(b *testing.B, st store.Store) *store.User {
	u, err := st.UserCreate(context.Background(), store.UserCreateParams{ID: "u1", Name: "alice", TokenHash: "h", Now: time.Now()})
	if err != nil {
		b.Fatal(err)
	}
	return u
}

func mustLimit(b *testing.B, st store.Store, userID string, max int) {
	_, err := st.LimitPut(context.Background(), store.LimitPutParams{ID: "l1", UserID: userID, Backend: "fake", Region: fake.Region,
		InstanceType: "f.small", Max: max, Now: time.Now()})
	if err != nil {
		b.Fatal(err)
	}
}

func submitB(b *testing.B, st store.Store, userID string, i int) {
	id := fmt.Sprint("b-", i)
	_, err := st.RunCreate(context.Background(), store.RunCreateParams{ID: id, Name: id, UserID: userID, Workflow: "w", CodeID: "c", Now: time.Now(),
		Jobs: []store.JobCreate{{ID: id, Spec: api.JobSpec{Workflow: "w", Provider: "bash", Commands: []string{"true"}, Resources: small}}}})
	if err != nil {
		b.Fatal(err)
	}
}
