package autoscale

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/store"
)

// Reasons the controller gives instances it ends on its own account (Plan
// gives the others).
const (
	ReasonRegisterTimeout = "registration_timeout"
	ReasonGone            = "the cloud no longer has the instance"
	ReasonNeverLaunched   = "no cloud instance was found for the launch"
	ReasonUnknown         = "tagged instance with no record"
)

// reconcile brings the records and the backends' lists into agreement:
//
//   - a record launching with no cloud ID is adopted when the backend lists
//     an instance tagged with it (a crash, or a timed-out call, between the
//     launch and its record), and marked gone after Grace otherwise;
//   - a record whose cloud instance the backend no longer has (or lists as
//     gone) is marked gone, which requeues its runner's job; a terminating
//     one is recorded terminated;
//   - a launched record whose runner has not joined after RegisterTimeout is
//     terminated;
//   - a tagged instance whose record has ended is terminated at once, and
//     one with no record at all, or whose record names another cloud
//     instance (an endpoint that repeated a launch index or tagged the
//     wrong instance), once it has been seen for Grace.
//
// A backend whose List fails is left alone until the next reconcile.
func (c *Controller) reconcile(ctx context.Context) error {
	listStart := c.cfg.Now()
	var errs []error
	listedOK := map[string]bool{}
	byCloud := map[string]backend.Instance{}
	byRecord := map[string]backend.Instance{}
	backendOf := map[string]backend.Backend{}
	if err := c.watchRegions(ctx); err != nil {
		return err
	}
	for _, b := range c.backends.All() {
		name := b.Name()
		ins, err := b.List(ctx, c.cfg.ServerID)
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s instances: %w", name, err))
			continue
		}
		listedOK[name] = true
		for _, in := range ins {
			byCloud[in.CloudID] = in
			backendOf[in.CloudID] = b
			if in.Tags.RecordID != "" {
				byRecord[in.Tags.RecordID] = in
			}
		}
	}
	recs, err := c.st.InstanceList(ctx, store.InstanceListParams{States: counted})
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list instances: %w", err))...)
	}
	now := c.cfg.Now()
	live := map[string]string{} // counted record ID → its cloud ID
	for _, rec := range recs {
		live[rec.ID] = rec.CloudID
		if !listedOK[rec.Backend] {
			continue
		}
		if err := c.reconcileRecord(ctx, rec, byCloud, byRecord, listStart, now); err != nil {
			errs = append(errs, err)
		}
	}
	for id, in := range byCloud {
		if owner, ok := live[in.Tags.RecordID]; ok && (owner == "" || owner == id) {
			// Its record's instance, or one a record with no cloud ID
			// yet adopts (above, or on the next pass).
			continue
		}
		if err := c.reconcileUntracked(ctx, backendOf[id], in, now); err != nil {
			errs = append(errs, err)
		}
	}
	for id := range c.unknownSince {
		if _, ok := byCloud[id]; !ok {
			delete(c.unknownSince, id)
		}
	}
	return errors.Join(errs...)
}

// reconcileRecord checks one counted record against the backend's list.
func (c *Controller) reconcileRecord(ctx context.Context, rec *store.Instance, byCloud, byRecord map[string]backend.Instance, listStart, now time.Time) error {
	b := c.backends.Get(rec.Backend)
	if rec.CloudID == "" {
		if ci, ok := byRecord[rec.ID]; ok && ci.State != backend.StateGone {
			if _, err := c.st.InstanceSetLaunched(ctx, store.InstanceSetLaunchedParams{CloudIDs: map[string]string{rec.ID: ci.CloudID}, Now: now}); err != nil {
				return fmt.Errorf("adopt instance %s (%s): %w", rec.ID, ci.CloudID, err)
			}
			c.log.Info("adopted a launched instance found by its tags", "instance", rec.ID, "cloud_id", ci.CloudID)
			return nil
		}
		switch {
		case rec.State == store.InstanceTerminating:
			c.end(ctx, rec.ID, store.InstanceTerminated, rec.Reason)
		case now.Sub(rec.CreatedAt) >= c.cfg.Grace:
			c.log.Warn("launch never completed: the instance record ends", "instance", rec.ID, "launch_key", rec.LaunchKey, "job", rec.JobID)
			c.end(ctx, rec.ID, store.InstanceGone, ReasonNeverLaunched)
		}
		return nil
	}
	ci, listed := byCloud[rec.CloudID]
	recent := rec.LaunchedAt != nil && rec.LaunchedAt.After(listStart)
	if (!listed && !recent) || (listed && ci.State == backend.StateGone) {
		switch {
		case rec.State == store.InstanceTerminating:
			c.end(ctx, rec.ID, store.InstanceTerminated, rec.Reason)
		case listed && backend.Unavailable(ci.Failure):
			// Accepted, then given up for capacity (a Pod no node takes):
			// a launch refused late, as launchFailed treats one refused at
			// once.
			c.log.Warn("the cloud gave up a launched instance for capacity", "instance", rec.ID, "cloud_id", rec.CloudID, "err", ci.Failure)
			c.end(ctx, rec.ID, store.InstanceGone, "launch refused: "+backend.Reason(ci.Failure))
			if err := c.markUnavailable(ctx, ci.Offer, ci.Failure); err != nil {
				return err
			}
		default:
			c.log.Warn("instance gone from the cloud", "instance", rec.ID, "cloud_id", rec.CloudID, "job", rec.JobID)
			c.end(ctx, rec.ID, store.InstanceGone, ReasonGone)
		}
		if listed && b != nil && !c.cleaned[rec.CloudID] {
			c.cleaned[rec.CloudID] = true
			if err := b.Terminate(ctx, []string{rec.CloudID}); err != nil {
				return fmt.Errorf("remove gone instance %s: %w", rec.CloudID, err)
			}
		}
		return nil
	}
	switch {
	case rec.State == store.InstanceLaunching && rec.LaunchedAt != nil && now.Sub(*rec.LaunchedAt) >= c.cfg.RegisterTimeout:
		c.log.Warn("the instance's runner did not join in time", "instance", rec.ID, "cloud_id", rec.CloudID, "timeout", c.cfg.RegisterTimeout)
		return c.terminate(ctx, rec, ReasonRegisterTimeout)
	case rec.State == store.InstanceTerminating && b != nil:
		// A termination that failed before: try again.
		if err := b.Terminate(ctx, []string{rec.CloudID}); err != nil {
			return fmt.Errorf("terminate instance %s (%s): %w", rec.ID, rec.CloudID, err)
		}
		c.end(ctx, rec.ID, store.InstanceTerminated, rec.Reason)
	}
	return nil
}

// reconcileUntracked deals with a tagged instance no counted record has.
func (c *Controller) reconcileUntracked(ctx context.Context, b backend.Backend, in backend.Instance, now time.Time) error {
	if b == nil {
		return nil
	}
	if in.State == backend.StateGone {
		if c.cleaned[in.CloudID] {
			return nil
		}
		c.cleaned[in.CloudID] = true
		return b.Terminate(ctx, []string{in.CloudID})
	}
	ended := false
	other := "" // the cloud instance its live record names instead
	if in.Tags.RecordID != "" {
		rec, err := c.st.InstanceGet(ctx, in.Tags.RecordID)
		switch {
		case err == nil:
			ended = rec.State.Ended()
			if !ended && rec.CloudID != in.CloudID {
				other = rec.CloudID
			}
		case !errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("look up instance %s: %w", in.Tags.RecordID, err)
		}
	}
	if !ended {
		since, ok := c.unknownSince[in.CloudID]
		if !ok {
			c.unknownSince[in.CloudID] = now
			if other != "" {
				c.log.Warn("tagged instance whose record names another instance: terminating it after the grace period",
					"cloud_id", in.CloudID, "record", in.Tags.RecordID, "record_cloud_id", other, "grace", c.cfg.Grace)
			} else {
				c.log.Warn("tagged instance with no record: terminating it after the grace period unless a record appears",
					"cloud_id", in.CloudID, "record", in.Tags.RecordID, "grace", c.cfg.Grace)
			}
			return nil
		}
		if now.Sub(since) < c.cfg.Grace {
			return nil
		}
	}
	c.log.Warn("terminating an instance the server does not track", "cloud_id", in.CloudID, "record", in.Tags.RecordID, "record_ended", ended, "record_cloud_id", other)
	c.metrics.garbage.Inc()
	if err := b.Terminate(ctx, []string{in.CloudID}); err != nil {
		return fmt.Errorf("terminate untracked instance %s: %w", in.CloudID, err)
	}
	delete(c.unknownSince, in.CloudID)
	return nil
}

// watchRegions names to each backend that lists by region the regions of
// the server's counted instance records and of its limits, before List:
// a record whose region the backend did not look in would be taken for an
// instance the cloud no longer has.
func (c *Controller) watchRegions(ctx context.Context) error {
	recs, err := c.st.InstanceList(ctx, store.InstanceListParams{States: counted})
	if err != nil {
		return fmt.Errorf("list instances: %w", err)
	}
	limits, err := c.st.LimitList(ctx, store.LimitListParams{})
	if err != nil {
		return fmt.Errorf("list limits: %w", err)
	}
	regions := map[string][]string{}
	for _, r := range recs {
		regions[r.Backend] = append(regions[r.Backend], r.Region)
	}
	for _, l := range limits {
		regions[l.Backend] = append(regions[l.Backend], l.Region)
	}
	for _, b := range c.backends.All() {
		if w, ok := b.(backend.RegionWatcher); ok && len(regions[b.Name()]) > 0 {
			w.WatchRegions(regions[b.Name()]...)
		}
	}
	return nil
}
