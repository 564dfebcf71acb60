package plan

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// shapeKey is what makes two jobs interchangeable for planning.
type shapeKey struct {
	user          *userState
	need          need
	interruptible bool
	image         string
}

// shape is the candidates of the jobs of one shapeKey, each list sorted in
// the order the jobs should take them and walked with a cursor that only
// moves forward: within a pass runners and instances are only taken and a
// limit's room only shrinks, so what a cursor has passed stays useless.
type shape struct {
	runners []*runnerState
	rc      int
	pools   []*pool // idle pools, then launching pools, each cheapest first
	pc      int
	limits  []*limitState // launchable, cheapest first
	lc      int

	// For the waiting reason.
	// overBudget counts the limits that would launch for the shape were
	// the budget not spent.
	overBudget       int
	unavailable      int       // fitting allowed offers marked unavailable
	unavailableUntil time.Time // the earliest of their until times
	wait             *Waiting  // computed for the first job that waits
}

func (p *planner) shape(j *jobState) *shape {
	u := p.user(j.UserID)
	k := shapeKey{user: u, need: j.need, interruptible: j.Resources.Interruptible, image: j.Image}
	if sh := p.shapes[k]; sh != nil {
		return sh
	}
	team := p.team
	team.sort()
	sh := &shape{}
	for _, rs := range [][]*runnerState{u.runners, p.shared} {
		for _, r := range rs {
			if r.m.fits(k.need) {
				sh.runners = append(sh.runners, r)
			}
		}
	}
	slices.SortFunc(sh.runners, smallerRunner)
	for _, pools := range [][]*pool{team.idle, team.launching} {
		for _, pl := range pools {
			if (!pl.limit.Spot || k.interruptible) && pl.takes(k.image) && pl.m.fits(k.need) {
				sh.pools = append(sh.pools, pl)
			}
		}
	}
	for _, l := range team.launchable {
		if (l.Spot && !k.interruptible) || !l.m.fits(k.need) {
			continue
		}
		if p.budget != "" {
			sh.overBudget++
			continue
		}
		if !l.unavailableUntil.IsZero() {
			if sh.unavailable == 0 || l.unavailableUntil.Before(sh.unavailableUntil) {
				sh.unavailableUntil = l.unavailableUntil
			}
			sh.unavailable++
			continue
		}
		sh.limits = append(sh.limits, l)
	}
	p.shapes[k] = sh
	return sh
}

// sort fills u's candidate lists, once: the orders are the same for every
// shape, which only filters them.
func (u *userState) sort() {
	if u.sorted {
		return
	}
	u.sorted = true
	for _, l := range u.limits {
		if !l.Enabled {
			continue // its instances are terminated
		}
		u.idle = append(u.idle, l.idle...)
		u.launching = append(u.launching, l.launching...)
		if l.offer != nil {
			u.launchable = append(u.launchable, l)
		}
	}
	byPrice := func(a, b *pool) int {
		return cmp.Or(cmp.Compare(a.price, b.price), strings.Compare(a.limit.ID, b.limit.ID),
			cmpBool(a.bound, b.bound), strings.Compare(a.image, b.image))
	}
	slices.SortFunc(u.idle, byPrice)
	slices.SortFunc(u.launching, byPrice)
	// Cheapest first; at one price on-demand before spot, which the cloud
	// cannot take back.
	slices.SortFunc(u.launchable, func(a, b *limitState) int {
		return cmp.Or(cmp.Compare(a.offer.PricePerHour, b.offer.PricePerHour), cmpBool(a.Spot, b.Spot), strings.Compare(a.ID, b.ID))
	})
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

func (sh *shape) nextRunner() *runnerState {
	for ; sh.rc < len(sh.runners); sh.rc++ {
		if r := sh.runners[sh.rc]; !r.used {
			return r
		}
	}
	return nil
}

func (sh *shape) nextInstance() *instState {
	for ; sh.pc < len(sh.pools); sh.pc++ {
		if pl := sh.pools[sh.pc]; !pl.empty() {
			in := pl.insts[pl.head]
			pl.head++
			return in
		}
	}
	return nil
}

func (sh *shape) nextLimit() *limitState {
	for ; sh.lc < len(sh.limits); sh.lc++ {
		if l := sh.limits[sh.lc]; l.room > 0 {
			return l
		}
	}
	return nil
}

// waiting says why a job of this shape waits. Jobs of one shape wait for
// one reason, so it is worked out once.
func (sh *shape) waiting(p *planner, j *jobState) Waiting {
	if sh.wait == nil {
		w := p.whyWaiting(sh, j)
		sh.wait = &w
	}
	w := *sh.wait
	w.JobID = j.ID
	return w
}

func (p *planner) whyWaiting(sh *shape, j *jobState) Waiting {
	what := instanceFor(j.Resources)
	switch {
	case sh.overBudget > 0:
		return Waiting{Code: WaitBudget, Message: p.budget}
	case len(sh.limits) == 1:
		l := sh.limits[0]
		return Waiting{Code: WaitNoRoom, Message: fmt.Sprintf(
			"the limit that allows %s (%s %s) is at its maximum of %d", what, l.InstanceType, purchase(l.Spot), max(l.Max, 0))}
	case len(sh.limits) > 1:
		return Waiting{Code: WaitNoRoom, Message: fmt.Sprintf(
			"all %d limits that allow %s are at their maximum", len(sh.limits), what)}
	case sh.unavailable > 0:
		return Waiting{Code: WaitUnavailable, Message: fmt.Sprintf(
			"the cloud refused every allowed offer of %s; trying again after %s",
			what, sh.unavailableUntil.UTC().Format("15:04:05 UTC"))}
	}
	limits := p.team.limits
	var enabled, unknown, spotOnly int
	var missing []string // backends of limits the server does not have
	n := j.need
	for _, l := range limits {
		if !l.Enabled {
			continue
		}
		enabled++
		switch {
		case l.offer == nil && p.backends != nil && !slices.Contains(p.backends, l.Backend):
			if !slices.Contains(missing, l.Backend) {
				missing = append(missing, l.Backend)
			}
		case l.offer == nil:
			unknown++
		case l.Spot && !j.Resources.Interruptible && l.m.fits(n):
			spotOnly++
		}
	}
	// How the user's own runners stand: busy, or none could take it.
	rf := fitRegistered(j.Resources, p.registeredOf(j.UserID))
	// A free runner that fits went to an earlier job of this pass, or
	// this one would have it.
	rf.busy, rf.free = rf.busy+rf.free, 0
	busy := rf.waitingFor()
	w := Waiting{Code: WaitNoLimit}
	switch {
	case len(limits) == 0 && busy != "":
		w.Message = busy + "; no on-demand limit is set to launch more (`dstack on-demand limit` adds one)"
	case len(limits) == 0 && rf.lack != "":
		w.Message = rf.lack + " and no on-demand limit is set; " + rf.fix + ", or add a limit with `dstack on-demand limit`"
	case len(limits) == 0 && rf.registered == 0:
		w.Message = "no runner is registered and no on-demand limit is set; start one with dstack-runner start, or add a limit with `dstack on-demand limit`"
	case len(limits) == 0:
		w.Message = "no runner can take it and no on-demand limit is set; add one with `dstack on-demand limit`"
	case enabled == 0 && busy != "":
		w.Message = busy + "; on-demand runners are disabled (`dstack on-demand enable` enables them)"
	case enabled == 0 && rf.lack != "":
		w.Message = rf.lack + " and on-demand runners are disabled; " + rf.fix + ", or enable them with `dstack on-demand enable`"
	case enabled == 0 && rf.registered == 0:
		w.Message = "no runner is registered and on-demand runners are disabled; start one with dstack-runner start, or enable them with `dstack on-demand enable`"
	case enabled == 0:
		w.Message = "no runner can take it and on-demand runners are disabled; enable them with `dstack on-demand enable`"
	default:
		switch {
		case busy != "":
			w.Message = busy + "; no limit allows " + what
		case rf.lack != "":
			w.Message = rf.lack + " and no limit allows " + what
		default:
			w.Message = "no limit allows " + what
		}
		if spotOnly > 0 {
			w.Message += "; spot limits allow it, for interruptible jobs only (`interruptible: true`)"
		}
		switch {
		case unknown == 1:
			w.Message += "; 1 of the limits names an instance type no backend offers now"
		case unknown > 1:
			w.Message += fmt.Sprintf("; %d of the limits name an instance type no backend offers now", unknown)
		}
		for _, b := range missing {
			if b == "aws" {
				w.Message += "; the AWS limits wait: AWS is not configured on this server (`dstack aws config`)"
			} else {
				w.Message += fmt.Sprintf("; the limits of backend %s wait: this server does not have it now", b)
			}
		}
	}
	return w
}

func purchase(spot bool) string {
	if spot {
		return "spot"
	}
	return "on-demand"
}
