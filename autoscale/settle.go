package autoscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/store"
)

// A launch whose outcome is unknown (the call timed out, its answer was
// lost) may have started instances that carry the launch's tags but not
// what the backend does after the cloud's answer (on EC2, the join token
// of each instance of a launch of several, tagged once RunInstances has
// answered). The controller keeps such a launch's request, join tokens
// included, in memory and makes the same call again at the start of the
// next passes: the backend's idempotency (EC2's ClientToken) makes it
// launch nothing new and answer with the instances of the first call,
// which are then recorded and made ready as if the first answer had come.
//
// The request is dropped once its records have cloud IDs (the reconciler
// may adopt them first), when the cloud refuses the call (nothing was
// launched: the records end), or after Grace (the reconciler ends what is
// left). A crash loses the requests; the reconciler and the registration
// timeout deal with what they would have settled.

// settleTimeout bounds one repeated call.
const settleTimeout = 30 * time.Second

// unsettled is a launch of unknown outcome.
type unsettled struct {
	req     backend.LaunchRequest
	creates []store.InstanceCreate
	since   time.Time
}

// remember keeps a launch of unknown outcome for settle.
func (c *Controller) remember(req backend.LaunchRequest, creates []store.InstanceCreate) {
	c.statMu.Lock()
	defer c.statMu.Unlock()
	if c.unsettled == nil {
		c.unsettled = map[string]*unsettled{}
	}
	c.unsettled[req.IdempotencyKey] = &unsettled{req: req, creates: creates, since: c.cfg.Now()}
}

// settle calls again every launch of unknown outcome whose records still
// wait for a cloud ID.
func (c *Controller) settle(ctx context.Context) error {
	c.statMu.Lock()
	pending := make([]*unsettled, 0, len(c.unsettled))
	for _, u := range c.unsettled {
		pending = append(pending, u)
	}
	c.statMu.Unlock()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, u := range pending {
		wg.Go(func() {
			done, err := c.settleOne(ctx, u)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if done {
				c.statMu.Lock()
				delete(c.unsettled, u.req.IdempotencyKey)
				c.statMu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// settleOne reports whether u needs no further call.
func (c *Controller) settleOne(ctx context.Context, u *unsettled) (bool, error) {
	key := u.req.IdempotencyKey
	log := c.log.With("limit", u.req.LimitID, "offer", u.req.Offer.Key().String(), "launch_key", key)
	if c.cfg.Now().Sub(u.since) >= c.cfg.Grace {
		log.Info("launch of unknown outcome left to the reconciler")
		return true, nil
	}
	var waiting []store.InstanceCreate
	for _, cr := range u.creates {
		rec, err := c.st.InstanceGet(ctx, cr.ID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("settle launch %s: %w", key, err)
		}
		if rec.State == store.InstanceLaunching && rec.CloudID == "" {
			waiting = append(waiting, cr)
		}
	}
	if len(waiting) == 0 {
		return true, nil
	}
	if len(waiting) < len(u.creates) {
		// Some records ended since (a limit went down) or were adopted:
		// the same call would ask for them again, and EC2 refuses a
		// smaller one under the same token. The reconciler adopts or
		// ends the rest.
		log.Info("launch of unknown outcome left to the reconciler: some of its records ended or were adopted")
		return true, nil
	}
	b := c.backends.Get(u.req.Offer.Backend)
	if b == nil {
		return true, nil
	}
	// The limit may have gone down (or been deleted, or on-demand runners
	// disabled) since: calling again would start what the plan is about to
	// end. Its launching records count against it, so the call is made
	// only while they all fit.
	limits, err := c.st.LimitList(ctx, store.LimitListParams{})
	if err != nil {
		return false, fmt.Errorf("settle launch %s: %w", key, err)
	}
	fits := false
	for _, l := range limits {
		if l.ID == u.req.LimitID {
			fits = l.OnDemandEnabled && l.Instances <= l.Max
		}
	}
	if !fits {
		log.Info("launch of unknown outcome left to the reconciler: its limit no longer allows it")
		return true, nil
	}
	log.Info("calling a launch of unknown outcome again", "instances", len(waiting))
	// Passes wait for settle: a cloud that is slow now must not hold up
	// terminations for a whole LaunchTimeout per launch.
	lctx, cancel := context.WithTimeout(ctx, min(c.cfg.LaunchTimeout, c.cfg.Grace, settleTimeout))
	got, err := b.Launch(lctx, u.req)
	cancel()
	if err != nil {
		if failureKind(err) == "unknown" {
			log.Warn("launch still of unknown outcome", "err", err)
			return false, nil
		}
		for _, cr := range waiting {
			c.end(ctx, cr.ID, store.InstanceGone, "launch refused: "+backend.Reason(err))
		}
		return true, nil
	}
	_, err = c.recordLaunched(ctx, b, waiting, got, log)
	return err == nil, err
}

// recordLaunched records the cloud IDs of the instances a launch returned
// and ends the records of specs the cloud granted no instance; it returns
// how many were granted. An instance that names no record of the launch,
// or a record another instance of the answer already names, is an extra
// no record counts: it is terminated at once.
func (c *Controller) recordLaunched(ctx context.Context, b backend.Backend, creates []store.InstanceCreate, got []backend.Instance, log *slog.Logger) (int, error) {
	want := map[string]bool{}
	for _, cr := range creates {
		want[cr.ID] = true
	}
	ids := map[string]string{}
	var extra []string
	for _, in := range got {
		if in.CloudID == "" {
			continue
		}
		rec := in.Tags.RecordID
		switch {
		case rec == "" || !want[rec]:
			log.Warn("the cloud returned an instance for no record of the launch; terminating it", "cloud_id", in.CloudID, "record", rec)
			extra = append(extra, in.CloudID)
		case ids[rec] != "" && ids[rec] != in.CloudID:
			log.Warn("the cloud returned two instances for one record; terminating the second",
				"instance", rec, "cloud_id", in.CloudID, "kept", ids[rec])
			extra = append(extra, in.CloudID)
		default:
			ids[rec] = in.CloudID
		}
	}
	var errs []error
	if len(extra) > 0 {
		c.metrics.garbage.Add(float64(len(extra)))
		if err := b.Terminate(ctx, extra); err != nil {
			// The reconciler terminates them after Grace.
			errs = append(errs, fmt.Errorf("terminate extra instances %v: %w", extra, err))
		}
	}
	if len(ids) > 0 {
		if _, err := c.st.InstanceSetLaunched(ctx, store.InstanceSetLaunchedParams{CloudIDs: ids, Now: c.cfg.Now()}); err != nil {
			// The reconciler adopts them by their tags.
			return 0, errors.Join(append(errs, fmt.Errorf("record launched instances: %w", err))...)
		}
	}
	for _, cr := range creates {
		if _, ok := ids[cr.ID]; !ok {
			c.end(ctx, cr.ID, store.InstanceGone, "the cloud granted only part of the launch")
		}
	}
	log.Info("instances launched", "granted", len(ids))
	return len(ids), errors.Join(errs...)
}
