package autoscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/dstackai/dstack/autoscale/plan"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/store"
)

// launchAll carries out the launches of one decision, in parallel (each
// limit has at most one per image). A launch the cloud refuses for
// capacity or quota marks its offer unavailable and asks for another pass
// at once, so the next offer is tried without waiting for the tick.
func (c *Controller) launchAll(ctx context.Context, ls []plan.Launch, s *snapshot) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		errs  []error
		retry bool
	)
	for _, l := range ls {
		wg.Go(func() {
			again, err := c.launch(ctx, l, s)
			mu.Lock()
			defer mu.Unlock()
			retry = retry || again
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if retry {
		// Another pass right away plans the jobs on the next offer.
		if err := c.plan(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// launch records the intent for one launch, calls the backend and records
// what it returned. It reports whether the offer was refused for capacity or
// quota (and marked unavailable), which calls for a new plan.
func (c *Controller) launch(ctx context.Context, l plan.Launch, s *snapshot) (bool, error) {
	lim := s.limits[l.LimitID]
	b := c.backends.Get(l.Offer.Backend)
	if lim == nil || b == nil {
		return false, nil // a limit of a backend this server does not run
	}
	now := c.cfg.Now()
	key := "dl-" + randomHex(12)
	specs := make([]backend.InstanceSpec, l.Count)
	creates := make([]store.InstanceCreate, l.Count)
	for i := range l.Count {
		token, hash := NewJoinToken()
		id := randomHex(8)
		specs[i] = backend.InstanceSpec{RecordID: id, JoinToken: token}
		creates[i] = store.InstanceCreate{ID: id, JoinTokenHash: hash}
		if i < len(l.JobIDs) {
			creates[i].JobID = l.JobIDs[i]
		}
	}
	log := c.log.With("limit", l.LimitID, "offer", l.Offer.Key().String(), "count", l.Count, "launch_key", key)
	if l.Offer.PerImage {
		log = log.With("image", l.Image)
	}
	_, err := c.st.InstanceCreate(ctx, store.InstanceCreateParams{
		LimitID: l.LimitID, PricePerHour: l.Offer.PricePerHour, LaunchKey: key, Instances: creates, Now: now,
		ImageBound: l.Offer.PerImage, Image: l.Image,
	})
	if errors.Is(err, store.ErrLimitReached) {
		log.Info("launch skipped: the limit has no room (changed since the plan)")
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("record launch intent: %w", err)
	}
	c.statMu.Lock()
	for _, id := range l.JobIDs {
		if j := s.pending[id]; j != nil {
			c.metrics.toLaunch.Observe(now.Sub(j.QueuedAt).Seconds())
			c.launchedFor[id] = j.QueuedAt
		}
	}
	c.statMu.Unlock()
	c.metrics.launches.WithLabelValues(l.Offer.Backend).Inc()
	log.Info("launching instances", "jobs", l.JobIDs)
	req := backend.LaunchRequest{
		Offer: l.Offer, IdempotencyKey: key, ServerID: c.cfg.ServerID, LimitID: l.LimitID,
		ServerURL: c.cfg.ServerURL, Instances: specs, Image: l.Image,
	}
	lctx, cancel := context.WithTimeout(ctx, c.cfg.LaunchTimeout)
	got, err := b.Launch(lctx, req)
	cancel()
	if err != nil {
		if failureKind(err) == "unknown" {
			c.remember(req, creates) // called again next pass: see settle.go
		}
		return c.launchFailed(ctx, l, creates, err, log)
	}
	_, err = c.recordLaunched(ctx, b, creates, got, log)
	return false, err
}

// launchFailed deals with a Launch that returned an error. A refusal
// (capacity, quota, unsupported, invalid, throttled) launched nothing: the
// records end. Any other error (a timeout, a lost connection) leaves the
// outcome unknown: the records stay launching for the reconciler, which
// adopts what the cloud lists with their tags and ends the rest after Grace.
func (c *Controller) launchFailed(ctx context.Context, l plan.Launch, creates []store.InstanceCreate, err error, log *slog.Logger) (bool, error) {
	kind := failureKind(err)
	log.Warn("launch failed", "kind", kind, "err", err)
	if kind == "unknown" {
		return false, nil
	}
	for _, cr := range creates {
		c.end(ctx, cr.ID, store.InstanceGone, "launch refused: "+backend.Reason(err))
	}
	if backend.Unavailable(err) {
		if merr := c.markUnavailable(ctx, l.Offer.Key(), err); merr != nil {
			return false, merr
		}
		return true, nil
	}
	return false, nil
}

// markUnavailable marks offer k unavailable for UnavailableFor, with the
// cloud's words of err as the limit's capacity note.
func (c *Controller) markUnavailable(ctx context.Context, k backend.OfferKey, err error) error {
	now := c.cfg.Now()
	if merr := c.st.OfferMarkUnavailable(ctx, store.OfferMarkUnavailableParams{
		Backend: k.Backend, Region: k.Region, InstanceType: k.InstanceType, Spot: k.Spot,
		Until: now.Add(c.cfg.UnavailableFor), Reason: backend.Reason(err), Now: now,
	}); merr != nil {
		return fmt.Errorf("mark offer unavailable: %w", merr)
	}
	return nil
}

// failureKind names a launch error for the log and for what to do next:
// backend.ErrorKind's name of a refusal, or "unknown" when the outcome is
// unknown (no kind, or the call's context ended).
func failureKind(err error) string {
	switch k := backend.ErrorKind(err); k {
	case "no_capacity", "quota", "unsupported", "invalid", "throttled":
		return k
	}
	return "unknown"
}

// terminate moves an instance to terminating (requeueing the job its runner
// holds), asks the backend to terminate it, and records it terminated. An
// instance with no cloud ID yet is ended at once: should the cloud still
// start it, the reconciler terminates it as the instance of an ended record.
func (c *Controller) terminate(ctx context.Context, in *store.Instance, reason string) error {
	if in == nil {
		return nil
	}
	out, jobs, err := c.st.InstanceSetState(ctx, store.InstanceSetStateParams{
		ID: in.ID, State: store.InstanceTerminating, Reason: reason, MaxAttempts: c.cfg.MaxAttempts, Now: c.cfg.Now(),
	})
	if err != nil {
		return fmt.Errorf("terminate instance %s: %w", in.ID, err)
	}
	c.jobsChanged(jobs)
	c.log.Info("terminating instance", "instance", in.ID, "cloud_id", out.CloudID, "reason", reason, "requeued", len(jobs))
	if out.CloudID != "" {
		b := c.backends.Get(out.Backend)
		if b == nil {
			return fmt.Errorf("terminate instance %s: backend %q is not configured on this server", in.ID, out.Backend)
		}
		if err := b.Terminate(ctx, []string{out.CloudID}); err != nil {
			return fmt.Errorf("terminate instance %s (%s): %w", in.ID, out.CloudID, err)
		}
	}
	c.end(ctx, in.ID, store.InstanceTerminated, reason)
	return nil
}

// end moves an instance to a final state, logging a failure: the reconciler
// tries again.
func (c *Controller) end(ctx context.Context, id string, st store.InstanceState, reason string) {
	_, jobs, err := c.st.InstanceSetState(ctx, store.InstanceSetStateParams{
		ID: id, State: st, Reason: reason, MaxAttempts: c.cfg.MaxAttempts, Now: c.cfg.Now(),
	})
	if err != nil {
		c.log.Warn("record instance ended", "instance", id, "state", st, "err", err)
		return
	}
	c.jobsChanged(jobs)
}

func (c *Controller) jobsChanged(jobs []*store.Job) {
	if len(jobs) > 0 && c.cfg.JobsChanged != nil {
		c.cfg.JobsChanged(jobs)
	}
}
