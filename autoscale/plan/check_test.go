package plan

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
)

// fitsRef is the fit rule as the product states it, written apart from the
// planner's: CPUs, memory, and enough GPUs whose name contains the asked
// name case-insensitively and whose memory is at least the asked memory.
func fitsRef(r api.Resources, h api.HostResources) bool {
	if r.CPU > h.CPUs || r.MemoryMiB > h.MemoryMiB {
		return false
	}
	if r.GPU == nil || r.GPU.Count <= 0 {
		return true
	}
	n := 0
	for _, g := range h.GPUs {
		if strings.Contains(strings.ToLower(g.Name), strings.ToLower(strings.TrimSpace(r.GPU.Name))) && g.MemoryMiB >= r.GPU.MemoryMiB {
			n++
		}
	}
	return n >= r.GPU.Count
}

func spotOK(spot bool, r api.Resources) bool { return !spot || r.Interruptible }

// imageOK is the image rule: an instance bound to an image takes only jobs
// of that image.
func imageOK(in Instance, j Job) bool { return !in.ImageBound || in.Image == j.Image }

// check returns every way d breaks the rules for s.
func check(s Snapshot, d Decision) []string {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	timeout := s.IdleTimeout
	if timeout <= 0 {
		timeout = DefaultIdleTimeout
	}

	pending := map[string]Job{}
	for _, j := range s.Jobs {
		pending[j.ID] = j
	}
	limits := map[string]Limit{}
	for _, l := range s.Limits {
		limits[l.ID] = l
	}
	cheapest := map[backend.OfferKey]backend.Offer{}
	for _, o := range s.Offers {
		if c, ok := cheapest[o.Key()]; !ok || o.PricePerHour < c.PricePerHour {
			cheapest[o.Key()] = o
		}
	}
	available := func(k backend.OfferKey) bool { u, ok := s.Unavailable[k]; return !ok || !u.After(s.Now) }

	// Classify the instances the simple way.
	const (
		free = iota
		reserved
		busy
	)
	insts := slices.Clone(s.Instances)
	slices.SortFunc(insts, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	kind := map[string]int{}
	reservedFor := map[string]string{}
	count := map[string]int{}
	for _, in := range insts {
		count[in.LimitID]++
		if in.State == InstanceTerminating {
			continue
		}
		switch {
		case pending[in.JobID].ID != "" && reservedFor[in.JobID] == "" && limits[in.LimitID].ID != "" && imageOK(in, pending[in.JobID]):
			kind[in.ID] = reserved
			reservedFor[in.JobID] = in.ID
		case in.State != InstanceLaunching && in.JobID != "":
			kind[in.ID] = busy
		default:
			kind[in.ID] = free
		}
	}

	// Sorted lists.
	if !slices.IsSortedFunc(d.Launches, func(a, b Launch) int {
		return cmp.Or(strings.Compare(a.LimitID, b.LimitID), strings.Compare(a.Image, b.Image))
	}) ||
		!slices.IsSortedFunc(d.Terminations, func(a, b Termination) int { return strings.Compare(a.InstanceID, b.InstanceID) }) ||
		!slices.IsSortedFunc(d.Bindings, func(a, b Binding) int { return strings.Compare(a.JobID, b.JobID) }) ||
		!slices.IsSortedFunc(d.Waiting, func(a, b Waiting) int { return strings.Compare(a.JobID, b.JobID) }) {
		fail("a list of the decision is not sorted")
	}

	// Terminations.
	terminated := map[string]Termination{}
	for _, t := range d.Terminations {
		if _, dup := terminated[t.InstanceID]; dup {
			fail("instance %s terminated twice", t.InstanceID)
		}
		terminated[t.InstanceID] = t
	}
	survivors := map[string][]Instance{} // by limit: not terminating, not terminated
	for _, in := range insts {
		t, gone := terminated[in.ID]
		l, known := limits[in.LimitID]
		if in.State == InstanceTerminating {
			if gone {
				fail("instance %s is terminated again", in.ID)
			}
			continue
		}
		switch {
		case !known && (!gone || t.Reason != ReasonLimitDeleted):
			fail("instance %s of a deleted limit: terminated %v as %q", in.ID, gone, t.Reason)
		case known && !l.Enabled && (!gone || t.Reason != ReasonLimitDisabled):
			fail("instance %s of a disabled limit: terminated %v as %q", in.ID, gone, t.Reason)
		}
		if !gone {
			survivors[in.LimitID] = append(survivors[in.LimitID], in)
			continue
		}
		wantJob := ""
		if kind[in.ID] != free {
			wantJob = in.JobID
		}
		if t.JobID != wantJob || t.Requeue != (kind[in.ID] == busy) || t.LimitID != in.LimitID {
			fail("termination %+v of instance %+v (kind %d)", t, in, kind[in.ID])
		}
		if t.Reason == ReasonImage && (kind[in.ID] != free || in.State != InstanceRunning || !in.ImageBound) {
			fail("instance %s replaced for an image but it is not an idle instance bound to one", in.ID)
		}
		if t.Reason == ReasonIdle {
			since := in.IdleSince
			if since.IsZero() {
				since = in.StartedAt
			}
			if kind[in.ID] != free || in.State == InstanceLaunching || s.Now.Sub(since) < timeout {
				fail("instance %s terminated as idle but it is not idle for %s", in.ID, timeout)
			}
		}
	}
	for _, l := range s.Limits {
		ceiling := max(l.Max, 0)
		var over, nonTerm int
		var busyGone []Instance
		for _, in := range insts {
			if in.LimitID != l.ID || in.State == InstanceTerminating {
				continue
			}
			nonTerm++
			if t, ok := terminated[in.ID]; ok && t.Reason == ReasonOverLimit {
				over++
				if kind[in.ID] == busy {
					busyGone = append(busyGone, in)
				}
			}
		}
		if l.Enabled && over != max(nonTerm-ceiling, 0) {
			fail("limit %s (max %d, %d instances) had %d terminated as over its limit", l.ID, l.Max, nonTerm, over)
		}
		if l.Enabled && len(survivors[l.ID]) > ceiling {
			fail("limit %s keeps %d instances, over its max %d", l.ID, len(survivors[l.ID]), l.Max)
		}
		for _, gone := range busyGone {
			for _, in := range survivors[l.ID] {
				if kind[in.ID] != busy {
					fail("limit %s: busy instance %s terminated while %s (kind %d) survives", l.ID, gone.ID, in.ID, kind[in.ID])
				} else if in.StartedAt.After(gone.StartedAt) {
					fail("limit %s: busy %s terminated while the later started %s survives", l.ID, gone.ID, in.ID)
				}
			}
		}
	}

	// Launches, and the room they leave.
	planned := map[string]int{}
	launched := map[string]int{}
	launchOf := map[string]Launch{}
	for _, ln := range d.Launches {
		l, ok := limits[ln.LimitID]
		if _, dup := launchOf[ln.LimitID+"\x00"+ln.Image]; dup || !ok || !l.Enabled {
			fail("launch for limit %s: known %v, enabled %v, or twice for image %q", ln.LimitID, ok, l.Enabled, ln.Image)
			continue
		}
		launchOf[ln.LimitID+"\x00"+ln.Image] = ln
		if ln.Count != len(ln.JobIDs) || ln.Count <= 0 {
			fail("launch %s: count %d for %d jobs", ln.LimitID, ln.Count, len(ln.JobIDs))
		}
		if c, ok := cheapest[l.OfferKey()]; !ok || !sameOffer(c, ln.Offer) {
			fail("launch %s: offer %+v is not the limit's", ln.LimitID, ln.Offer)
		}
		if !available(l.OfferKey()) {
			fail("launch %s: its offer is unavailable", ln.LimitID)
		}
		launched[l.ID] += ln.Count
		if count[l.ID]+launched[l.ID] > max(l.Max, 0) {
			fail("launch %s: %d instances + %d launched > max %d", l.ID, count[l.ID], launched[l.ID], l.Max)
		}
		for _, id := range ln.JobIDs {
			planned[id]++
			j := pending[id]
			if j.ID == "" || !spotOK(l.Spot, j.Resources) || !fitsRef(j.Resources, ln.Offer.Resources()) {
				fail("launch %s (%+v) for job %+v that it does not fit", l.ID, ln.Offer, j)
			}
			if want := map[bool]string{true: j.Image, false: ""}[ln.Offer.PerImage]; ln.Image != want {
				fail("launch %s of image %q for job %s of image %q (offer per image: %v)", l.ID, ln.Image, j.ID, j.Image, ln.Offer.PerImage)
			}
		}
	}
	room := func(l Limit) int {
		if !l.Enabled {
			return 0
		}
		return max(l.Max, 0) - count[l.ID] - launched[l.ID]
	}
	// allowed lists the limits that could launch for j, ignoring room.
	allowed := func(j Job, ignoreAvailability bool) []Limit {
		var out []Limit
		for _, l := range s.Limits {
			o, sold := cheapest[l.OfferKey()]
			if l.Enabled && sold && spotOK(l.Spot, j.Resources) && fitsRef(j.Resources, o.Resources()) &&
				(ignoreAvailability || available(l.OfferKey())) {
				out = append(out, l)
			}
		}
		return out
	}

	// Bindings.
	runners := map[string]Runner{}
	for _, r := range s.Runners {
		runners[r.ID] = r
	}
	instByID := map[string]Instance{}
	for _, in := range insts {
		instByID[in.ID] = in
	}
	usedRunner, usedInst := map[string]bool{}, map[string]bool{}
	for _, b := range d.Bindings {
		planned[b.JobID]++
		j := pending[b.JobID]
		switch {
		case b.RunnerID != "" && b.InstanceID == "":
			r, ok := runners[b.RunnerID]
			if !ok || usedRunner[r.ID] || (r.UserID != j.UserID && !r.Shared) || !fitsRef(j.Resources, r.Free) {
				fail("binding %+v to a runner that cannot take it", b)
			}
			usedRunner[r.ID] = true
		case b.InstanceID != "" && b.RunnerID == "":
			in, ok := instByID[b.InstanceID]
			l := limits[in.LimitID]
			_, gone := terminated[in.ID]
			fit := reservedFor[j.ID] == in.ID ||
				kind[in.ID] == free && spotOK(l.Spot, j.Resources) && fitsRef(j.Resources, in.Offer.Resources()) && imageOK(in, j)
			if !ok || gone || usedInst[in.ID] || !l.Enabled || !fit {
				fail("binding %+v to an instance that cannot take it", b)
			}
			usedInst[in.ID] = true
		default:
			fail("binding %+v names not exactly one runner or instance", b)
		}
	}
	for _, in := range insts {
		if _, gone := terminated[in.ID]; kind[in.ID] == reserved && in.State != InstanceTerminating && !gone && !usedInst[in.ID] {
			fail("instance %s launching for job %s is not bound to it", in.ID, in.JobID)
		}
	}

	// What a job could have taken instead of launching or waiting.
	takeable := func(j Job) string {
		for _, r := range s.Runners {
			if !usedRunner[r.ID] && (r.UserID == j.UserID || r.Shared) && fitsRef(j.Resources, r.Free) {
				return "free runner " + r.ID
			}
		}
		for _, in := range insts {
			l, ok := limits[in.LimitID]
			t, gone := terminated[in.ID]
			if ok && l.Enabled && kind[in.ID] == free && in.State != InstanceTerminating &&
				!usedInst[in.ID] && (!gone || t.Reason == ReasonIdle) && spotOK(l.Spot, j.Resources) &&
				fitsRef(j.Resources, in.Offer.Resources()) && imageOK(in, j) {
				return "free instance " + in.ID
			}
		}
		return ""
	}
	for _, ln := range d.Launches {
		price := ln.Offer.PricePerHour
		for _, id := range ln.JobIDs {
			j := pending[id]
			if what := takeable(j); what != "" {
				fail("job %s launched for while %s can take it", id, what)
			}
			for _, l := range allowed(j, false) {
				if cheapest[l.OfferKey()].PricePerHour < price && room(l) > 0 {
					fail("job %s launched on %s at %v while %s at %v has room", id, ln.LimitID, price, l.ID, cheapest[l.OfferKey()].PricePerHour)
				}
			}
		}
	}
	for _, w := range d.Waiting {
		planned[w.JobID]++
		j := pending[w.JobID]
		if what := takeable(j); what != "" {
			fail("job %s waits while %s can take it", j.ID, what)
		}
		for _, l := range allowed(j, false) {
			if room(l) > 0 {
				fail("job %s waits while limit %s has room for it", j.ID, l.ID)
			}
		}
		fits, avail := len(allowed(j, true)) > 0, len(allowed(j, false)) > 0
		if want := map[bool]WaitCode{true: WaitNoRoom, false: WaitUnavailable}[avail]; !fits && w.Code != WaitNoLimit || fits && w.Code != want {
			fail("job %s waits as %q: allowed limits %v, available %v", j.ID, w.Code, fits, avail)
		}
		if w.Message == "" {
			fail("job %s waits without a message", j.ID)
		}
		// An idle instance of another image in a limit that allows it
		// makes room for it, unless it made room already.
		if w.Code == WaitNoRoom && !strings.Contains(w.Message, "goes to make room") {
			for _, l := range allowed(j, false) {
				for _, in := range survivors[l.ID] {
					if kind[in.ID] == free && in.State == InstanceRunning && !usedInst[in.ID] && !imageOK(in, j) {
						fail("job %s waits for room in %s while its idle instance %s of image %q could make room", j.ID, l.ID, in.ID, in.Image)
					}
				}
			}
		}
	}
	for _, j := range s.Jobs {
		if planned[j.ID] != 1 {
			fail("job %s is planned %d times", j.ID, planned[j.ID])
		}
	}

	// Idle instances past their timeout that took nothing are gone.
	for _, in := range insts {
		l, ok := limits[in.LimitID]
		since := in.IdleSince
		if since.IsZero() {
			since = in.StartedAt
		}
		if _, gone := terminated[in.ID]; ok && l.Enabled && !gone && kind[in.ID] == free && in.State == InstanceRunning &&
			!usedInst[in.ID] && s.Now.Sub(since) >= timeout {
			fail("instance %s idle since %s survives", in.ID, since)
		}
	}
	return errs
}

func sameOffer(a, b backend.Offer) bool {
	return a.Key() == b.Key() && a.PricePerHour == b.PricePerHour && a.CPUs == b.CPUs && a.MemoryMiB == b.MemoryMiB && slices.Equal(a.GPUs, b.GPUs)
}
