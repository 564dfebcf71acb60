package autoscale_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/autoscale"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/store"
)

// crashAt is a fault that stops the controller in the middle of a pass: it
// cancels the pass's context, as a process dying would leave things, and
// the test goes on with a new controller on the same store.
type crashAt struct {
	mu     sync.Mutex
	cancel context.CancelFunc
}

func (c *crashAt) crash() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel != nil {
		c.cancel()
	}
	return context.Canceled
}

func TestFaults(t *testing.T) {
	t.Parallel()
	type fault struct {
		name string
		// inject sets the fault up on the cloud; crash is armed for the
		// first pass.
		inject func(e *env, crash *crashAt)
		// crashes: the first pass runs under a context the fault cancels,
		// and a new controller carries on.
		crashes bool
	}
	faults := []fault{
		{name: "launch error", inject: func(e *env, _ *crashAt) {
			n := 0
			e.cloud.SetBeforeLaunch(func(context.Context, backend.LaunchRequest) error {
				n++
				if n == 1 {
					return errors.New("connection reset")
				}
				return nil
			})
		}},
		{name: "throttled", inject: func(e *env, _ *crashAt) {
			n := 0
			e.cloud.SetBeforeLaunch(func(context.Context, backend.LaunchRequest) error {
				n++
				if n == 1 {
					return backend.Errorf(backend.ErrThrottled, "launch", "RequestLimitExceeded", "slow down")
				}
				return nil
			})
		}},
		{name: "timeout after a successful launch", inject: func(e *env, _ *crashAt) {
			n := 0
			e.cloud.SetAfterLaunch(func(context.Context, backend.LaunchRequest) error {
				n++
				if n == 1 {
					return context.DeadlineExceeded
				}
				return nil
			})
		}},
		{name: "crash between intent and launch", crashes: true, inject: func(e *env, c *crashAt) {
			n := 0
			e.cloud.SetBeforeLaunch(func(context.Context, backend.LaunchRequest) error {
				n++
				if n == 1 {
					return c.crash()
				}
				return nil
			})
		}},
		{name: "crash between launch and record", crashes: true, inject: func(e *env, c *crashAt) {
			n := 0
			e.cloud.SetAfterLaunch(func(context.Context, backend.LaunchRequest) error {
				n++
				if n == 1 {
					return c.crash()
				}
				return nil
			})
		}},
		{name: "instances vanish", inject: func(e *env, _ *crashAt) {
			n := 0
			e.cloud.SetAfterLaunch(func(_ context.Context, req backend.LaunchRequest) error {
				n++
				if n == 1 {
					e.cloud.VanishLaunch(req.IdempotencyKey)
				}
				return nil
			})
		}},
		{name: "duplicate calls", inject: func(e *env, _ *crashAt) {
			e.cloud.SetDuplicate(true)
		}},
	}
	for _, fl := range faults {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			e.limit("f.small", false, 2)
			jobs := []string{e.submit(small), e.submit(small), e.submit(small)}
			crash := &crashAt{}
			fl.inject(e, crash)
			c := e.c
			if fl.crashes {
				ctx, cancel := context.WithCancel(e.ctx)
				crash.mu.Lock()
				crash.cancel = cancel
				crash.mu.Unlock()
				_ = c.Step(ctx) // dies mid-pass
				cancel()
				e.checkLimits()
				e.clock.Advance(leaseTTL) // the dead holder's lease expires
				c = e.controller(nil)
			}
			// Carry on: passes, the runners of launched instances join and
			// run what they can, time passes beyond every grace period.
			for round := 0; round < 12; round++ {
				if err := c.Step(e.ctx); err != nil {
					t.Logf("round %d: %v", round, err)
				}
				e.checkLimits()
				for _, in := range e.instances(store.InstanceLaunching) {
					if in.CloudID != "" && e.cloud.Token(in.ID) != "" {
						r := e.register(in)
						if j := e.claim(r); j != nil {
							e.finish(j, r)
						}
					}
				}
				for _, r := range e.idleRunners() {
					if j := e.claim(r); j != nil {
						e.finish(j, r)
					}
				}
				e.clock.Advance(grace / 2)
			}
			e.clock.Advance(idleTimeout)
			for range 3 {
				if err := c.Step(e.ctx); err != nil {
					t.Logf("final: %v", err)
				}
				e.checkLimits()
				e.clock.Advance(grace)
			}
			for _, id := range jobs {
				if j := e.job(id); j.Status != api.StatusDone {
					t.Errorf("job %s is %s, want done", id, j.Status)
				}
			}
			if live := e.cloud.Live(); len(live) != 0 {
				t.Errorf("cloud still has %+v after the idle timeout and the grace period", live)
			}
			if n := len(e.instances(store.InstanceLaunching, store.InstanceRunning, store.InstanceTerminating)); n != 0 {
				t.Errorf("%d instance records still counted", n)
			}
		})
	}
}

// idleRunners are the online instance runners holding no job.
func (e *env) idleRunners() []*store.Runner {
	e.t.Helper()
	rs, err := e.st.RunnerList(e.ctx, store.RunnerListParams{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*store.Runner
	for _, r := range rs {
		if r.Online && r.JobID == "" && r.InstanceState == store.InstanceRunning {
			out = append(out, r)
		}
	}
	return out
}

func TestLaunchTimeout(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.c = e.controller(func(c *autoscale.Config) { c.LaunchTimeout = 20 * time.Millisecond })
	e.limit("f.small", false, 1)
	jobID := e.submit(small)
	n := 0
	e.cloud.SetBeforeLaunch(func(ctx context.Context, _ backend.LaunchRequest) error {
		n++
		if n == 1 {
			<-ctx.Done() // the cloud never answers
			return ctx.Err()
		}
		return nil
	})
	e.step()
	ins := e.instances(store.InstanceLaunching)
	if len(ins) != 1 || ins[0].CloudID != "" {
		t.Fatalf("after a timed-out launch: %+v, want one record launching with no cloud ID", ins)
	}
	e.clock.Advance(grace)
	e.step()
	if got, _ := e.st.InstanceGet(e.ctx, ins[0].ID); got.State != store.InstanceGone {
		t.Fatalf("timed-out record is %s, want gone", got.State)
	}
	again := e.instances(store.InstanceLaunching)
	if len(again) != 1 || again[0].CloudID == "" || again[0].JobID != jobID {
		t.Fatalf("relaunch = %+v", again)
	}
}

// TestLimitNeverExceededUnderConcurrentSubmissions submits jobs from several
// goroutines while two controllers (one holding the lease, one waiting)
// pass concurrently and limits change; after every pass, neither the store
// nor the cloud has a limit over its maximum.
func TestLimitNeverExceededUnderConcurrentSubmissions(t *testing.T) {
	t.Parallel()
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			rng := rand.New(rand.NewPCG(seed, 7))
			e.limit("f.small", false, 1+rng.IntN(3))
			e.limit("f.large", false, 1+rng.IntN(2))
			other := e.controller(nil)
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 5 {
						res := small
						if (g+i)%3 == 0 {
							res = api.Resources{CPU: 2}
						}
						e.submit(res)
					}
				}()
			}
			for _, c := range []*autoscale.Controller{e.c, other} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 10 {
						if err := c.Step(e.ctx); err != nil {
							t.Errorf("Step: %v", err)
						}
					}
				}()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					e.limit("f.small", false, rng.IntN(3))
				}
			}()
			wg.Wait()
			e.step()
			e.checkLimits()
			if e.c.Leader() == other.Leader() {
				t.Fatal("both or neither controller hold the lease")
			}
		})
	}
}

// TestLaunchAnswerNamesOneRecordTwice: a backend answers a launch of two
// with two instances that name the same record. The first keeps it; the
// second is an extra no record counts, terminated in the same pass; the
// record of no instance ends and its job is launched for again. The cloud
// never runs more instances of the limit than its maximum.
func TestLaunchAnswerNamesOneRecordTwice(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", false, 2)
	jobs := []string{e.submit(small), e.submit(small)}
	e.cloud.RepeatRecordOnce()
	e.step()
	e.checkLimits()
	live := e.cloud.Live()
	if len(live) != 1 {
		t.Fatalf("the cloud runs %d instances after the pass, want 1 (the repeat terminated): %+v", len(live), live)
	}
	recs := e.instances(store.InstanceLaunching)
	if len(recs) != 1 || recs[0].CloudID != live[0].CloudID {
		t.Fatalf("records launching %+v; want one naming %s", recs, live[0].CloudID)
	}
	for range 3 {
		e.step()
		e.checkLimits()
		byRecord := map[string]string{}
		n := 0
		for _, in := range e.cloud.Live() {
			n++
			if other, ok := byRecord[in.Tags.RecordID]; ok {
				t.Fatalf("instances %s and %s both name record %s", other, in.CloudID, in.Tags.RecordID)
			}
			byRecord[in.Tags.RecordID] = in.CloudID
		}
		if n > 2 {
			t.Fatalf("the cloud runs %d instances of a limit of 2", n)
		}
		for _, in := range e.instances(store.InstanceLaunching) {
			if in.CloudID != "" && e.cloud.Token(in.ID) != "" {
				r := e.register(in)
				if j := e.claim(r); j != nil {
					e.finish(j, r)
				}
			}
		}
		e.clock.Advance(grace)
	}
	for _, id := range jobs {
		if j := e.job(id); j.Status != api.StatusDone {
			t.Errorf("job %s is %s, want done", id, j.Status)
		}
	}
}
