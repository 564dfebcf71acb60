package storetest

import (
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/dstackai/dstack/store"
)

// joinHash is the join token hash the fixture gives instance id.
func joinHash(id string) string { return "join-" + id }

// instanceParams are the arguments of n new instances of l, the i-th for
// jobIDs[i] when given.
func (f *fixture) instanceParams(l *store.Limit, n int, jobIDs ...string) store.InstanceCreateParams {
	p := store.InstanceCreateParams{LimitID: l.ID, PricePerHour: 0.192, LaunchKey: f.id("launch"), Now: f.tick()}
	for i := range n {
		id := f.id("instance")
		ic := store.InstanceCreate{ID: id, JoinTokenHash: joinHash(id)}
		if i < len(jobIDs) {
			ic.JobID = jobIDs[i]
		}
		p.Instances = append(p.Instances, ic)
	}
	return p
}

func (f *fixture) tryInstances(l *store.Limit, n int, jobIDs ...string) ([]*store.Instance, error) {
	return f.s.InstanceCreate(f.ctx, f.instanceParams(l, n, jobIDs...))
}

// instances records n instances of l, failing the test on error.
func (f *fixture) instances(l *store.Limit, n int, jobIDs ...string) []*store.Instance {
	f.t.Helper()
	ins, err := f.tryInstances(l, n, jobIDs...)
	if err != nil {
		f.t.Fatalf("InstanceCreate(%d of limit %s): %v", n, l.ID, err)
	}
	return ins
}

// instance reads an instance back.
func (f *fixture) instance(id string) *store.Instance {
	f.t.Helper()
	in, err := f.s.InstanceGet(f.ctx, id)
	if err != nil {
		f.t.Fatalf("InstanceGet(%s): %v", id, err)
	}
	return in
}

// setState moves an instance, failing the test on error.
func (f *fixture) setState(in *store.Instance, st store.InstanceState) (*store.Instance, []*store.Job) {
	f.t.Helper()
	got, jobs, err := f.s.InstanceSetState(f.ctx, store.InstanceSetStateParams{ID: in.ID, State: st, Reason: "test",
		MaxAttempts: 3, Now: f.tick()})
	if err != nil {
		f.t.Fatalf("InstanceSetState(%s, %s): %v", in.ID, st, err)
	}
	return got, jobs
}

// registerParams are the arguments of the registration of in's runner.
func (f *fixture) registerParams(in *store.Instance) store.InstanceRegisterParams {
	id := f.id("runner")
	return store.InstanceRegisterParams{JoinTokenHash: joinHash(in.ID), Runner: store.RunnerCreateParams{
		ID: id, Name: "name-" + id, Hostname: "host-" + id, Executor: "docker", Version: "1.0",
		Resources: cpuHost, TokenHash: "hash-" + id, TokenExpiresAt: base.Add(24 * 60 * 60 * 1e9), Now: f.tick(),
	}}
}

// register registers in's runner.
func (f *fixture) register(in *store.Instance) (*store.Instance, *store.Runner) {
	f.t.Helper()
	got, rn, err := f.s.InstanceRegister(f.ctx, f.registerParams(in))
	if err != nil {
		f.t.Fatalf("InstanceRegister(%s): %v", in.ID, err)
	}
	return got, rn
}

func instanceIDs(ins []*store.Instance) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.ID)
	}
	return out
}

var instanceTests = []test{
	{"create, get and list", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		spot := f.limitParams(alice, 3)
		spot.Spot = true
		res, err := f.s.LimitPut(f.ctx, spot)
		if err != nil {
			t.Fatal(err)
		}
		l := res.Limit
		job := f.run(alice, spec("a")).Jobs[0]
		p := f.instanceParams(l, 2, job.ID)
		created, err := f.s.InstanceCreate(f.ctx, p)
		if err != nil {
			t.Fatalf("InstanceCreate: %v", err)
		}
		if len(created) != 2 {
			t.Fatalf("InstanceCreate returned %d instances, want 2", len(created))
		}
		for i, in := range created {
			for name, got := range map[string]*store.Instance{"InstanceCreate": in, "InstanceGet": f.instance(in.ID)} {
				wantJob := ""
				if i == 0 {
					wantJob = job.ID
				}
				if got.ID != p.Instances[i].ID || got.UserID != alice.ID || got.LimitID != l.ID || got.Backend != "aws" ||
					got.Region != "eu-west-1" || got.InstanceType != l.InstanceType || !got.Spot || got.PricePerHour != 0.192 ||
					got.State != store.InstanceLaunching || got.LaunchKey != p.LaunchKey || got.CloudID != "" ||
					got.JobID != wantJob || got.RunnerID != "" || got.Reason != "" || got.LaunchedAt != nil ||
					got.RegisteredAt != nil || got.IdleSince != nil || got.TerminatingAt != nil || got.EndedAt != nil {
					t.Errorf("%s instance %d = %+v", name, i, got)
				}
				sameTime(t, name+" CreatedAt", got.CreatedAt, p.Now)
			}
		}
		_, err = f.s.InstanceGet(f.ctx, "nope")
		wantErr(t, "InstanceGet unknown", err, store.ErrNotFound)

		// Another user's, another backend's, and an ended instance.
		bl := f.limit(bob, 1)
		bobs := f.instances(bl, 1)[0]
		local := f.limitParams(alice, 1)
		local.Backend, local.Region = "local", "local"
		res, err = f.s.LimitPut(f.ctx, local)
		if err != nil {
			t.Fatal(err)
		}
		loc := f.instances(res.Limit, 1)[0]
		f.setState(created[1], store.InstanceGone)
		for _, tc := range []struct {
			name string
			p    store.InstanceListParams
			want []*store.Instance
		}{
			{"all", store.InstanceListParams{}, []*store.Instance{created[0], created[1], bobs, loc}},
			{"user", store.InstanceListParams{UserID: alice.ID}, []*store.Instance{created[0], created[1], loc}},
			{"limit", store.InstanceListParams{LimitID: l.ID}, []*store.Instance{created[0], created[1]}},
			{"backend", store.InstanceListParams{Backend: "local"}, []*store.Instance{loc}},
			{"states", store.InstanceListParams{States: []store.InstanceState{store.InstanceLaunching, store.InstanceRunning}},
				[]*store.Instance{created[0], bobs, loc}},
			{"user and states", store.InstanceListParams{UserID: alice.ID, States: []store.InstanceState{store.InstanceGone}},
				[]*store.Instance{created[1]}},
		} {
			got, err := f.s.InstanceList(f.ctx, tc.p)
			if err != nil {
				t.Fatalf("%s: InstanceList: %v", tc.name, err)
			}
			if g, w := instanceIDs(got), instanceIDs(tc.want); !reflect.DeepEqual(g, w) {
				t.Errorf("%s: InstanceList = %v, want %v", tc.name, g, w)
			}
		}
	}},
	{"never over the limit", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		l := f.limit(u, 3)
		two := f.instances(l, 2)
		_, err := f.tryInstances(l, 2)
		wantLimitReached(t, "2 more on 2 of 3", err)
		if got, _ := f.s.InstanceList(f.ctx, store.InstanceListParams{LimitID: l.ID}); len(got) != 2 {
			t.Fatalf("a refused InstanceCreate wrote instances: %d listed, want 2", len(got))
		}
		third := f.instances(l, 1)[0]
		_, err = f.tryInstances(l, 1)
		wantLimitReached(t, "1 more on 3 of 3", err)
		// Terminating instances still count; ended ones do not.
		f.setState(two[0], store.InstanceTerminating)
		_, err = f.tryInstances(l, 1)
		wantLimitReached(t, "1 more with one terminating", err)
		f.setState(two[0], store.InstanceTerminated)
		f.instances(l, 1)

		// A decrease leaves no room until enough instances have ended.
		res, err := f.s.LimitPut(f.ctx, store.LimitPutParams{UserID: u.ID, Backend: l.Backend, Region: l.Region,
			InstanceType: l.InstanceType, Spot: l.Spot, Max: 2, Now: f.tick()})
		if err != nil || res.PrevMax != 3 || res.Limit.Instances != 3 {
			t.Fatalf("LimitPut(2) = %+v, %v; want previous maximum 3 and 3 instances", res, err)
		}
		_, err = f.tryInstances(l, 1)
		wantLimitReached(t, "after a decrease to 2 with 3 instances", err)
		f.setState(two[1], store.InstanceGone)
		_, err = f.tryInstances(l, 1)
		wantLimitReached(t, "after a decrease to 2 with 2 instances", err)
		f.setState(third, store.InstanceGone)
		f.instances(l, 1)
	}},
	{"concurrent creates never exceed the limit", func(t *testing.T, open Open) {
		f := setup(t, open)
		l := f.limit(f.user(), 3)
		const racers = 20
		params := make([]store.InstanceCreateParams, racers)
		for i := range params {
			params[i] = f.instanceParams(l, 1)
		}
		errs := make([]error, racers)
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() { _, errs[i] = f.s.InstanceCreate(f.ctx, params[i]) })
		}
		wg.Wait()
		created := 0
		for i, err := range errs {
			switch {
			case err == nil:
				created++
			case !errors.Is(err, store.ErrLimitReached):
				t.Errorf("InstanceCreate %d: %v, want nil or ErrLimitReached", i, err)
			}
		}
		got, err := f.s.InstanceList(f.ctx, store.InstanceListParams{LimitID: l.ID})
		if err != nil {
			t.Fatal(err)
		}
		if created != 3 || len(got) != 3 {
			t.Fatalf("%d racers created %d instances, %d recorded; want exactly 3", racers, created, len(got))
		}
	}},
	{"concurrent creates and a decrease", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		l := f.limit(u, 10)
		const racers = 20
		params := make([]store.InstanceCreateParams, racers)
		for i := range params {
			params[i] = f.instanceParams(l, 1)
		}
		var (
			wg   sync.WaitGroup
			drop *store.LimitPutResult
		)
		for i := range racers {
			wg.Go(func() {
				if _, err := f.s.InstanceCreate(f.ctx, params[i]); err != nil && !errors.Is(err, store.ErrLimitReached) {
					t.Errorf("InstanceCreate: %v", err)
				}
			})
		}
		wg.Go(func() {
			var err error
			drop, err = f.s.LimitPut(f.ctx, store.LimitPutParams{UserID: u.ID, Backend: l.Backend, Region: l.Region,
				InstanceType: l.InstanceType, Max: 2, Now: f.tick()})
			if err != nil {
				t.Errorf("LimitPut: %v", err)
			}
		})
		wg.Wait()
		if drop == nil {
			t.FailNow()
		}
		// The decrease saw drop.Limit.Instances instances; every create
		// after it had room only up to the new maximum.
		got, _ := f.s.InstanceList(f.ctx, store.InstanceListParams{LimitID: l.ID})
		if want := max(2, drop.Limit.Instances); len(got) > want || len(got) > 10 {
			t.Fatalf("%d instances; the decrease to 2 saw %d, so at most %d", len(got), drop.Limit.Instances, want)
		}
		_, err := f.tryInstances(l, 1)
		wantLimitReached(t, "after the decrease", err)
	}},
	{"a deleted limit has no room", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		l := f.limit(u, 3)
		in := f.instances(l, 1)[0]
		if _, err := f.s.LimitDelete(f.ctx, store.LimitDeleteParams{ID: l.ID}); err != nil {
			t.Fatalf("LimitDelete: %v", err)
		}
		_, err := f.tryInstances(l, 1)
		wantLimitReached(t, "InstanceCreate of a deleted limit", err)
		wantErr(t, "InstanceCreate of a deleted limit", err, store.ErrNotFound)
		// Its instance stays, with the limit's ID and key, to be terminated.
		got := f.instance(in.ID)
		if got.LimitID != l.ID || got.InstanceType != l.InstanceType || got.State != store.InstanceLaunching {
			t.Fatalf("instance of the deleted limit = %+v", got)
		}
	}},
	{"create refuses bad arguments", func(t *testing.T, open Open) {
		f := setup(t, open)
		l := f.limit(f.user(), 3)
		if _, err := f.tryInstances(l, 0); err == nil {
			t.Error("InstanceCreate of no instances succeeded")
		}
		_, err := f.tryInstances(l, 1, "no-such-job")
		wantErr(t, "InstanceCreate for an unknown job", err, store.ErrNotFound)
		p := f.instanceParams(l, 2)
		p.Instances[1].ID = p.Instances[0].ID
		_, err = f.s.InstanceCreate(f.ctx, p)
		wantErr(t, "InstanceCreate with one ID twice", err, store.ErrConflict)
		if got, _ := f.s.InstanceList(f.ctx, store.InstanceListParams{}); len(got) != 0 {
			t.Fatalf("refused creates left %d instances", len(got))
		}
	}},
	{"set launched", func(t *testing.T, open Open) {
		f := setup(t, open)
		l := f.limit(f.user(), 5)
		ins := f.instances(l, 3)
		now := f.tick()
		got, err := f.s.InstanceSetLaunched(f.ctx, store.InstanceSetLaunchedParams{
			CloudIDs: map[string]string{ins[0].ID: "i-0", ins[1].ID: "i-1"}, Now: now})
		if err != nil || len(got) != 2 {
			t.Fatalf("InstanceSetLaunched = %d, %v", len(got), err)
		}
		for i, in := range ins[:2] {
			g := f.instance(in.ID)
			if g.CloudID != []string{"i-0", "i-1"}[i] || g.State != store.InstanceLaunching || g.LaunchedAt == nil {
				t.Fatalf("launched instance = %+v", g)
			}
			sameTime(t, "LaunchedAt", *g.LaunchedAt, now)
		}
		// Again with the same IDs: a retried launch. LaunchedAt stays.
		if _, err := f.s.InstanceSetLaunched(f.ctx, store.InstanceSetLaunchedParams{
			CloudIDs: map[string]string{ins[0].ID: "i-0"}, Now: f.tick()}); err != nil {
			t.Fatalf("InstanceSetLaunched again: %v", err)
		}
		sameTime(t, "LaunchedAt after a retry", *f.instance(ins[0].ID).LaunchedAt, now)
		// A batch with a bad entry writes nothing.
		_, err = f.s.InstanceSetLaunched(f.ctx, store.InstanceSetLaunchedParams{
			CloudIDs: map[string]string{ins[2].ID: "i-2", "nope": "i-x"}, Now: f.tick()})
		wantErr(t, "InstanceSetLaunched of an unknown instance", err, store.ErrNotFound)
		_, err = f.s.InstanceSetLaunched(f.ctx, store.InstanceSetLaunchedParams{
			CloudIDs: map[string]string{ins[2].ID: "i-2", ins[0].ID: "i-other"}, Now: f.tick()})
		wantErr(t, "InstanceSetLaunched with another cloud ID", err, store.ErrConflict)
		if g := f.instance(ins[2].ID); g.CloudID != "" {
			t.Fatalf("refused batch recorded cloud ID %q", g.CloudID)
		}
		// An instance terminated while its launch was in flight still
		// gets its cloud ID, so that it can be terminated.
		f.setState(ins[2], store.InstanceTerminating)
		if _, err := f.s.InstanceSetLaunched(f.ctx, store.InstanceSetLaunchedParams{
			CloudIDs: map[string]string{ins[2].ID: "i-2"}, Now: f.tick()}); err != nil {
			t.Fatalf("InstanceSetLaunched of a terminating instance: %v", err)
		}
		if g := f.instance(ins[2].ID); g.CloudID != "i-2" || g.State != store.InstanceTerminating {
			t.Fatalf("terminating instance after InstanceSetLaunched = %+v", g)
		}
	}},
	{"bind and idle", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		l := f.limit(u, 5)
		ins := f.instances(l, 2)
		in, _ := f.register(ins[0])
		if in.IdleSince == nil || in.JobID != "" {
			t.Fatalf("instance registered for no job = %+v; want idle", in)
		}
		job := f.run(u, spec("a")).Jobs[0]
		got, err := f.s.InstanceBindJob(f.ctx, store.InstanceBindJobParams{ID: in.ID, JobID: job.ID})
		if err != nil || got.JobID != job.ID || got.IdleSince != nil {
			t.Fatalf("InstanceBindJob = %+v, %v; want bound, not idle", got, err)
		}
		now := f.tick()
		got, err = f.s.InstanceSetIdle(f.ctx, store.InstanceSetIdleParams{ID: in.ID, Now: now})
		if err != nil || got.JobID != "" || got.IdleSince == nil {
			t.Fatalf("InstanceSetIdle = %+v, %v; want idle", got, err)
		}
		sameTime(t, "IdleSince", *got.IdleSince, now)
		// Idle already: IdleSince stays.
		got, err = f.s.InstanceSetIdle(f.ctx, store.InstanceSetIdleParams{ID: in.ID, Now: f.tick()})
		if err != nil {
			t.Fatalf("InstanceSetIdle again: %v", err)
		}
		sameTime(t, "IdleSince after a second InstanceSetIdle", *got.IdleSince, now)
		// A launching instance can be bound too.
		if got, err := f.s.InstanceBindJob(f.ctx, store.InstanceBindJobParams{ID: ins[1].ID, JobID: job.ID}); err != nil || got.JobID != job.ID {
			t.Fatalf("InstanceBindJob of a launching instance = %+v, %v", got, err)
		}

		_, err = f.s.InstanceBindJob(f.ctx, store.InstanceBindJobParams{ID: in.ID, JobID: "nope"})
		wantErr(t, "InstanceBindJob to an unknown job", err, store.ErrNotFound)
		_, err = f.s.InstanceBindJob(f.ctx, store.InstanceBindJobParams{ID: "nope", JobID: job.ID})
		wantErr(t, "InstanceBindJob of an unknown instance", err, store.ErrNotFound)
		f.setState(in, store.InstanceTerminating)
		_, err = f.s.InstanceBindJob(f.ctx, store.InstanceBindJobParams{ID: in.ID, JobID: job.ID})
		wantErr(t, "InstanceBindJob of a terminating instance", err, store.ErrNotFound)
		_, err = f.s.InstanceSetIdle(f.ctx, store.InstanceSetIdleParams{ID: in.ID, Now: f.tick()})
		wantErr(t, "InstanceSetIdle of a terminating instance", err, store.ErrNotFound)
	}},
}
