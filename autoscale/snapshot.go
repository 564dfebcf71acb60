package autoscale

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dstackai/dstack/autoscale/plan"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/cost"
	"github.com/dstackai/dstack/store"
)

// snapshot is plan's input and what the controller needs besides.
type snapshot struct {
	plan.Snapshot
	pending map[string]*store.PendingJob
	limits  map[string]*store.Limit
}

var counted = []store.InstanceState{store.InstanceLaunching, store.InstanceRunning, store.InstanceTerminating}

// snapshot reads the store and the backends' offers, first bringing the
// instances' jobs up to date with their runners. It returns the counted
// instance records by ID.
func (c *Controller) snapshot(ctx context.Context) (*snapshot, map[string]*store.Instance, error) {
	now := c.cfg.Now()
	jobs, err := c.st.JobListPending(ctx, store.JobListPendingParams{})
	if err != nil {
		return nil, nil, fmt.Errorf("list pending jobs: %w", err)
	}
	runners, err := c.st.RunnerList(ctx, store.RunnerListParams{})
	if err != nil {
		return nil, nil, fmt.Errorf("list runners: %w", err)
	}
	insts, err := c.st.InstanceList(ctx, store.InstanceListParams{States: counted})
	if err != nil {
		return nil, nil, fmt.Errorf("list instances: %w", err)
	}
	limits, err := c.st.LimitList(ctx, store.LimitListParams{})
	if err != nil {
		return nil, nil, fmt.Errorf("list limits: %w", err)
	}
	caps, err := c.st.UserCapList(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list capped users: %w", err)
	}
	unavail, err := c.st.OfferUnavailableList(ctx, now)
	if err != nil {
		return nil, nil, fmt.Errorf("list unavailable offers: %w", err)
	}

	s := &snapshot{
		Snapshot: plan.Snapshot{
			Now: now, IdleTimeout: c.cfg.IdleTimeout, Unavailable: map[backend.OfferKey]time.Time{},
			Backends: append([]string{}, c.backends.Names()...),
		},
		pending: make(map[string]*store.PendingJob, len(jobs)),
		limits:  make(map[string]*store.Limit, len(limits)),
	}
	for _, j := range jobs {
		s.pending[j.ID] = j
		s.Jobs = append(s.Jobs, plan.Job{ID: j.ID, UserID: j.UserID, Resources: j.Resources, QueuedAt: j.QueuedAt, Image: j.Image})
	}
	byRunner := map[string]*store.Runner{}
	for _, r := range runners {
		byRunner[r.ID] = r
		// An interrupted runner (its machine is being reclaimed) takes no
		// job: it is as good as gone.
		if r.InstanceID == "" && r.Online && r.JobID == "" && r.InterruptedAt == nil {
			s.Runners = append(s.Runners, plan.Runner{ID: r.ID, UserID: r.UserID, Free: r.Resources, Shared: r.Shared})
		}
		if r.InstanceID == "" {
			s.Registered = append(s.Registered, registered(r))
		}
	}
	s.Users = usersOf(caps)
	for _, l := range limits {
		s.limits[l.ID] = l
		s.Limits = append(s.Limits, plan.Limit{
			ID: l.ID, UserID: l.UserID, Backend: l.Backend, Region: l.Region, InstanceType: l.InstanceType,
			Spot: l.Spot, Max: l.Max, Enabled: l.OnDemandEnabled,
		})
	}
	for _, u := range unavail {
		k := backend.OfferKey{Backend: u.Backend, Region: u.Region, InstanceType: u.InstanceType, Spot: u.Spot}
		s.Unavailable[k] = u.Until
	}
	budget, err := cost.ReadBudget(ctx, c.st, now)
	if err != nil {
		return nil, nil, err
	}
	s.Budget = cost.BudgetReason(budget)
	s.Offers = c.offersFor(ctx, limits, insts)
	offerByKey := map[backend.OfferKey]backend.Offer{}
	for _, o := range s.Offers {
		if prev, ok := offerByKey[o.Key()]; !ok || o.PricePerHour < prev.PricePerHour {
			offerByKey[o.Key()] = o
		}
	}

	recs := make(map[string]*store.Instance, len(insts))
	for _, in := range insts {
		in = c.syncJob(ctx, in, byRunner[in.RunnerID], s.pending, now)
		recs[in.ID] = in
		key := instanceKey(in)
		o, ok := offerByKey[key]
		if !ok {
			o = backend.Offer{Backend: key.Backend, Region: key.Region, InstanceType: key.InstanceType, Spot: key.Spot, PricePerHour: in.PricePerHour}
		}
		pi := plan.Instance{ID: in.ID, LimitID: in.LimitID, Offer: o, State: planState(in.State), JobID: in.JobID, StartedAt: in.CreatedAt,
			ImageBound: in.ImageBound, Image: in.Image}
		if r := byRunner[in.RunnerID]; r != nil && r.InterruptedAt != nil && pi.State == plan.InstanceRunning {
			// The cloud reclaims it (a spot interruption its runner
			// reported): it takes no job, is not kept for the job it ran,
			// and counts against its limit as a terminating instance until
			// the cloud no longer lists it and the reconciler ends its
			// record.
			pi.State = plan.InstanceTerminating
		}
		if in.LaunchedAt != nil {
			pi.StartedAt = *in.LaunchedAt
		}
		if in.IdleSince != nil {
			pi.IdleSince = *in.IdleSince
		}
		s.Instances = append(s.Instances, pi)
	}
	c.metrics.observeInstances(insts, s.limits)
	return s, recs, nil
}

// syncJob makes a running instance's JobID say what its runner does: the
// job it holds (busy), or none once the job it was bound to is no longer
// pending (idle from now). A job bound to it that is still pending stays:
// the runner has not claimed it yet.
func (c *Controller) syncJob(ctx context.Context, in *store.Instance, r *store.Runner, pending map[string]*store.PendingJob, now time.Time) *store.Instance {
	if in.State != store.InstanceRunning || r == nil {
		return in
	}
	var (
		out *store.Instance
		err error
	)
	switch {
	case r.JobID != "" && r.JobID != in.JobID:
		out, err = c.st.InstanceBindJob(ctx, store.InstanceBindJobParams{ID: in.ID, JobID: r.JobID})
	case r.JobID == "" && in.JobID != "" && pending[in.JobID] == nil:
		out, err = c.st.InstanceSetIdle(ctx, store.InstanceSetIdleParams{ID: in.ID, Now: now})
	case r.JobID == "" && in.JobID == "" && in.IdleSince == nil:
		out, err = c.st.InstanceSetIdle(ctx, store.InstanceSetIdleParams{ID: in.ID, Now: now})
	default:
		c.observeStart(in.JobID, r.JobID, now)
		return in
	}
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			c.log.Warn("update instance's job", "instance", in.ID, "err", err)
		}
		return in
	}
	c.observeStart(out.JobID, r.JobID, now)
	return out
}

// observeStart records, once, how long a job the controller launched an
// instance for took from pending to its runner holding it.
func (c *Controller) observeStart(_, held string, now time.Time) {
	if held == "" {
		return
	}
	c.statMu.Lock()
	defer c.statMu.Unlock()
	if since, ok := c.launchedFor[held]; ok {
		c.metrics.toRunning.Observe(now.Sub(since).Seconds())
		delete(c.launchedFor, held)
	}
}

func planState(st store.InstanceState) plan.InstanceState {
	switch st {
	case store.InstanceLaunching:
		return plan.InstanceLaunching
	case store.InstanceTerminating:
		return plan.InstanceTerminating
	}
	return plan.InstanceRunning
}

func instanceKey(in *store.Instance) backend.OfferKey {
	return backend.OfferKey{Backend: in.Backend, Region: in.Region, InstanceType: in.InstanceType, Spot: in.Spot}
}

type offerCacheKey struct{ backend, region string }

type cachedOffers struct {
	offers  []backend.Offer
	fetched time.Time
}

// offersFor returns the offers of every (backend, region) a limit or an
// instance names, from the cache when fresh. A backend that fails keeps its
// last offers (or none), so its limits wait rather than the pass failing.
func (c *Controller) offersFor(ctx context.Context, limits []*store.Limit, insts []*store.Instance) []backend.Offer {
	now := c.cfg.Now()
	if v := c.backends.Version(); v != c.offersOf {
		// A backend was put or removed (AWS configured with other
		// credentials or region): what the old one offered is moot.
		clear(c.offers)
		c.offersOf = v
	}
	want := map[offerCacheKey]bool{}
	for _, l := range limits {
		want[offerCacheKey{l.Backend, l.Region}] = true
	}
	for _, in := range insts {
		want[offerCacheKey{in.Backend, in.Region}] = true
	}
	var out []backend.Offer
	for k := range want {
		b := c.backends.Get(k.backend)
		if b == nil {
			continue
		}
		co, ok := c.offers[k]
		if !ok || now.Sub(co.fetched) >= c.cfg.OfferTTL {
			os, err := b.Offers(ctx, k.region)
			if err != nil {
				c.log.Warn("list offers", "backend", k.backend, "region", k.region, "err", err)
			} else {
				co = cachedOffers{offers: os, fetched: now}
				c.offers[k] = co
			}
		}
		out = append(out, co.offers...)
	}
	return out
}

// registered is a self-hosted runner as pending reasons see it.
func registered(r *store.Runner) plan.RegisteredRunner {
	return plan.RegisteredRunner{
		UserID: r.UserID, Resources: r.Resources, Busy: r.JobID != "",
		Offline: !r.Online || r.InterruptedAt != nil, Shared: r.Shared,
	}
}

// usersOf is the users' caps as plan takes them.
func usersOf(caps []*store.UserCap) []plan.User {
	out := make([]plan.User, len(caps))
	for i, c := range caps {
		out[i] = plan.User{ID: c.UserID, MaxRunning: c.MaxRunning, Running: c.Running}
	}
	return out
}
