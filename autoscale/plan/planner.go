package plan

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dstackai/dstack/backend"
)

// planner is one pass of Plan: the snapshot indexed, and the decision as it
// grows.
type planner struct {
	now         time.Time
	idleTimeout time.Duration
	backends    []string // nil: not known
	budget      string   // Snapshot.Budget
	// registered is Snapshot.Registered; byUser groups it on the first
	// job that waits.
	registered       []RegisteredRunner
	byUser           map[string][]RegisteredRunner
	sharedRegistered []RegisteredRunner

	jobs      []*jobState   // round-robin by user, each user's in queue order
	instances []*instState  // by ID
	limits    []*limitState // by ID
	byLimitID map[string]*limitState
	users     map[string]*userState
	// team holds the limits and their pools, which every user's jobs
	// choose from; shared are the free shared runners, smallest first.
	team   *userState
	shared []*runnerState
	// caps are the users with a cap of running jobs, by ID.
	caps   map[string]*userCap
	shapes map[shapeKey]*shape
	// roomless are the jobs of this pass that wait for room (rule 4).
	roomless []roomless

	out Decision
}

type jobState struct {
	Job
	sec      int64 // QueuedAt as Unix seconds and nanoseconds, for a cheap sort
	nsec     int
	need     need
	reserved *instState // the instance launching (or registered) for it
}

// userCap is how many more jobs a capped user may start in this pass.
type userCap struct {
	max, left int
}

// userState is one user's share of the snapshot (or, for planner.team,
// the limits every user shares).
type userState struct {
	limits  []*limitState  // by ID
	runners []*runnerState // free ones of the user, not shared; smallest first
	// What the user's jobs choose from, in the order they choose, filled
	// once the limits' instances are counted: enabled limits with an offer
	// cheapest first, and their pools of free instances.
	sorted          bool
	launchable      []*limitState
	idle, launching []*pool
}

// registeredOf is the runners that may take user's jobs: theirs and the
// shared ones.
func (p *planner) registeredOf(user string) []RegisteredRunner {
	if p.byUser == nil {
		p.byUser = map[string][]RegisteredRunner{}
		var shared []RegisteredRunner
		for _, r := range p.registered {
			if r.Shared {
				shared = append(shared, r)
			} else {
				p.byUser[r.UserID] = append(p.byUser[r.UserID], r)
			}
		}
		p.sharedRegistered = shared
	}
	return append(slices.Clip(p.byUser[user]), p.sharedRegistered...)
}

func (p *planner) user(id string) *userState {
	u := p.users[id]
	if u == nil {
		u = &userState{}
		p.users[id] = u
	}
	return u
}

type runnerState struct {
	Runner
	m    machine
	used bool
}

// instKind is what an instance is doing, as far as planning goes; it is
// also the order in which an over-limit limit gives its instances up.
type instKind int

const (
	instFree     instKind = iota // idle, or launching for no pending job
	instReserved                 // launching (or registered) for a pending job
	instBusy                     // running a job
)

type instState struct {
	Instance
	kind       instKind
	limit      *limitState // nil when the limit is gone
	job        *jobState   // the pending job it is reserved for
	terminated bool        // by this pass
	taken      bool        // a pending job was bound to it by this pass
}

type limitState struct {
	Limit
	offer            *backend.Offer // nil when no backend offers it
	m                machine        // the offer's
	unavailableUntil time.Time      // zero when available
	live             []*instState   // not terminating, not terminated by this pass
	count            int            // instances counted against Max
	room             int            // launches still allowed in this pass
	// idle and launching are the free instances, running and launching,
	// in one pool per image binding.
	idle, launching []*pool
	// launches are the limit's launches of this pass, by image ("" for
	// jobs with none, and for every launch of an offer not PerImage).
	launches map[string]*Launch
}

// pool is a limit's free instances of one state and one image binding,
// taken from head on.
type pool struct {
	limit *limitState
	insts []*instState
	head  int
	m     machine
	price float64
	// bound and image are the instances' image binding: bound ones take
	// only jobs of image.
	bound bool
	image string
}

// takes reports whether the pool's instances may take a job of image.
func (pl *pool) takes(image string) bool { return !pl.bound || pl.image == image }

func (p *pool) empty() bool { return p.head == len(p.insts) }

func newPlanner(s Snapshot) *planner {
	p := &planner{
		now:         s.Now,
		idleTimeout: s.IdleTimeout,
		byLimitID:   make(map[string]*limitState, len(s.Limits)),
		users:       map[string]*userState{},
		team:        &userState{},
		caps:        map[string]*userCap{},
		shapes:      make(map[shapeKey]*shape, min(len(s.Jobs), 1024)),
	}
	if p.idleTimeout <= 0 {
		p.idleTimeout = DefaultIdleTimeout
	}
	p.backends = s.Backends
	p.budget = s.Budget
	p.registered = s.Registered

	offers := make(map[backend.OfferKey]*backend.Offer, len(s.Offers))
	for i := range s.Offers {
		o := &s.Offers[i]
		if prev, ok := offers[o.Key()]; !ok || cheaper(o, prev) {
			offers[o.Key()] = o
		}
	}

	p.limits = make([]*limitState, 0, len(s.Limits))
	for _, l := range s.Limits {
		ls := &limitState{Limit: l}
		if o := offers[l.OfferKey()]; o != nil {
			ls.offer = o
			ls.m = machineOf(o.Resources())
		}
		if until, ok := s.Unavailable[l.OfferKey()]; ok && until.After(s.Now) {
			ls.unavailableUntil = until
		}
		p.limits = append(p.limits, ls)
	}
	slices.SortFunc(p.limits, func(a, b *limitState) int { return strings.Compare(a.ID, b.ID) })
	for _, l := range p.limits {
		p.byLimitID[l.ID] = l
		p.team.limits = append(p.team.limits, l)
	}
	for _, u := range s.Users {
		if u.MaxRunning > 0 {
			p.caps[u.ID] = &userCap{max: u.MaxRunning, left: max(u.MaxRunning-u.Running, 0)}
		}
	}

	p.jobs = make([]*jobState, len(s.Jobs))
	states := make([]jobState, len(s.Jobs))
	for i, j := range s.Jobs {
		states[i] = jobState{Job: j, sec: j.QueuedAt.Unix(), nsec: j.QueuedAt.Nanosecond(), need: needOf(j.Resources)}
		p.jobs[i] = &states[i]
	}
	slices.SortFunc(p.jobs, func(a, b *jobState) int {
		return cmp.Or(cmp.Compare(a.sec, b.sec), cmp.Compare(a.nsec, b.nsec), strings.Compare(a.ID, b.ID))
	})
	p.jobs = roundRobin(p.jobs)
	for _, r := range s.Runners {
		rs := &runnerState{Runner: r, m: machineOf(r.Free)}
		if r.Shared {
			p.shared = append(p.shared, rs)
		} else {
			u := p.user(r.UserID)
			u.runners = append(u.runners, rs)
		}
	}
	slices.SortFunc(p.shared, smallerRunner)
	for _, u := range p.users {
		slices.SortFunc(u.runners, smallerRunner)
	}

	p.instances = make([]*instState, len(s.Instances))
	for i, in := range s.Instances {
		p.instances[i] = &instState{Instance: in, limit: p.byLimitID[in.LimitID]}
	}
	slices.SortFunc(p.instances, func(a, b *instState) int { return strings.Compare(a.ID, b.ID) })
	// An instance is reserved for the pending job it names; of several,
	// the first by ID.
	naming := map[string][]*instState{}
	for _, in := range p.instances {
		if in.State != InstanceTerminating && in.JobID != "" && in.limit != nil {
			naming[in.JobID] = append(naming[in.JobID], in)
		}
	}
	if len(naming) > 0 {
		for _, j := range p.jobs {
			for _, in := range naming[j.ID] {
				if in.job == nil && in.takes(j.Job) {
					in.kind, in.job, j.reserved = instReserved, j, in
					break
				}
			}
		}
	}
	for _, in := range p.instances {
		switch {
		case in.job != nil, in.State == InstanceTerminating:
		case in.State != InstanceLaunching && in.JobID != "":
			in.kind = instBusy
		default:
			in.kind = instFree
		}
	}
	return p
}

// smallerRunner orders runners smallest first, then by ID.
func smallerRunner(a, b *runnerState) int {
	if a.m.less(b.m) {
		return -1
	}
	if b.m.less(a.m) {
		return 1
	}
	return strings.Compare(a.ID, b.ID)
}

// roundRobin orders jobs, given in queue order, round-robin by user: the
// first job of each user (users in the order of their first job), then the
// second of each, and so on.
func roundRobin(jobs []*jobState) []*jobState {
	var users []string
	byUser := map[string][]*jobState{}
	for _, j := range jobs {
		if _, ok := byUser[j.UserID]; !ok {
			users = append(users, j.UserID)
		}
		byUser[j.UserID] = append(byUser[j.UserID], j)
	}
	if len(users) < 2 {
		return jobs
	}
	out := make([]*jobState, 0, len(jobs))
	for round := 0; len(out) < len(jobs); round++ {
		for _, u := range users {
			if js := byUser[u]; round < len(js) {
				out = append(out, js[round])
			}
		}
	}
	return out
}

// cheaper orders offers of one key: the lower price, then a total order so
// that the choice does not depend on the input's order.
func cheaper(a, b *backend.Offer) bool {
	if a.PricePerHour != b.PricePerHour {
		return a.PricePerHour < b.PricePerHour
	}
	if a.CPUs != b.CPUs {
		return a.CPUs < b.CPUs
	}
	if a.MemoryMiB != b.MemoryMiB {
		return a.MemoryMiB < b.MemoryMiB
	}
	return len(a.GPUs) < len(b.GPUs)
}

// terminateForLimits applies rules 1 and 2: instances of deleted and
// disabled limits go, and a limit over its maximum gives up the extras.
func (p *planner) terminateForLimits() {
	for _, in := range p.instances {
		l := in.limit
		switch {
		case l == nil:
			if in.State != InstanceTerminating {
				p.terminate(in, ReasonLimitDeleted)
			}
		case in.State == InstanceTerminating:
			l.count++
		case !l.Enabled:
			l.count++
			p.terminate(in, ReasonLimitDisabled)
		default:
			l.count++
			l.live = append(l.live, in)
		}
	}
	for _, l := range p.limits {
		ceiling := max(l.Max, 0)
		if extra := len(l.live) - ceiling; extra > 0 {
			slices.SortFunc(l.live, func(a, b *instState) int {
				return cmp.Or(cmp.Compare(a.kind, b.kind), b.StartedAt.Compare(a.StartedAt), strings.Compare(a.ID, b.ID))
			})
			for _, in := range l.live[:extra] {
				p.terminate(in, ReasonOverLimit)
			}
			l.live = l.live[extra:]
		}
		l.room = ceiling - l.count
		if l.room < 0 || !l.Enabled {
			l.room = 0
		}
		p.fillPools(l)
	}
}

// fillPools puts l's free instances into its pools, one per image binding:
// idle ones longest idle first (they are nearest their timeout), launching
// ones oldest first.
func (p *planner) fillPools(l *limitState) {
	type binding struct {
		bound bool
		image string
	}
	idle, launching := map[binding][]*instState{}, map[binding][]*instState{}
	for _, in := range l.live {
		if in.kind != instFree {
			continue
		}
		b := binding{in.ImageBound, in.Image}
		if !b.bound {
			b.image = ""
		}
		if in.State == InstanceLaunching {
			launching[b] = append(launching[b], in)
		} else {
			idle[b] = append(idle[b], in)
		}
	}
	mk := func(groups map[binding][]*instState, since func(*instState) time.Time) []*pool {
		var out []*pool
		for b, insts := range groups {
			slices.SortFunc(insts, func(a, b *instState) int {
				return cmp.Or(since(a).Compare(since(b)), strings.Compare(a.ID, b.ID))
			})
			// Instances of one limit share its instance type; the first
			// one's offer stands for all.
			out = append(out, &pool{limit: l, insts: insts, m: machineOf(insts[0].Offer.Resources()),
				price: insts[0].Offer.PricePerHour, bound: b.bound, image: b.image})
		}
		slices.SortFunc(out, func(a, b *pool) int { return cmp.Or(cmpBool(a.bound, b.bound), strings.Compare(a.image, b.image)) })
		return out
	}
	l.idle = mk(idle, (*instState).idleSince)
	l.launching = mk(launching, func(in *instState) time.Time { return in.StartedAt })
}

func (in *instState) idleSince() time.Time {
	if in.IdleSince.IsZero() {
		return in.StartedAt
	}
	return in.IdleSince
}

func (p *planner) terminate(in *instState, r Reason) {
	in.terminated = true
	t := Termination{InstanceID: in.ID, LimitID: in.LimitID, Reason: r}
	switch in.kind {
	case instReserved:
		t.JobID = in.JobID
		in.job.reserved = nil // the job is planned anew
	case instBusy:
		t.JobID, t.Requeue = in.JobID, true
	}
	p.out.Terminations = append(p.out.Terminations, t)
}

// assign applies rule 3 to every pending job, round-robin by user.
func (p *planner) assign() {
	for _, j := range p.jobs {
		if c := p.caps[j.UserID]; c != nil {
			if c.left == 0 {
				p.out.Waiting = append(p.out.Waiting, userLimitWaiting(j.ID, c.max))
				continue
			}
			// Whatever the job gets below (or waits for), it may
			// start: it takes one of the user's places in this pass.
			c.left--
		}
		if in := j.reserved; in != nil {
			p.out.Bindings = append(p.out.Bindings, Binding{JobID: j.ID, InstanceID: in.ID})
			continue
		}
		sh := p.shape(j)
		if r := sh.nextRunner(); r != nil {
			r.used = true
			p.out.Bindings = append(p.out.Bindings, Binding{JobID: j.ID, RunnerID: r.ID})
			continue
		}
		if in := sh.nextInstance(); in != nil {
			in.taken = true
			p.out.Bindings = append(p.out.Bindings, Binding{JobID: j.ID, InstanceID: in.ID})
			continue
		}
		if l := sh.nextLimit(); l != nil {
			l.room--
			image := ""
			if l.offer.PerImage {
				image = j.Image
			}
			ln := l.launches[image]
			if ln == nil {
				ln = &Launch{LimitID: l.ID, Offer: *l.offer, Image: image}
				if l.launches == nil {
					l.launches = map[string]*Launch{}
				}
				l.launches[image] = ln
			}
			ln.Count++
			ln.JobIDs = append(ln.JobIDs, j.ID)
			continue
		}
		p.out.Waiting = append(p.out.Waiting, sh.waiting(p, j))
		if sh.wait.Code == WaitNoRoom {
			p.roomless = append(p.roomless, roomless{job: j, shape: sh, waiting: len(p.out.Waiting) - 1})
		}
	}
}

// roomless is a job that waits for room in the limits that allow it.
type roomless struct {
	job     *jobState
	shape   *shape
	waiting int // its index in out.Waiting
}

// replaceForImages applies rule 4: for each job that waits for room, in
// the order planned, the first limit that allows it and has an idle
// instance no job took this pass, bound to another image, has that
// instance (the longest idle) terminated. The job still waits: the limit
// has room once the cloud reports the instance gone.
func (p *planner) replaceForImages() {
	for _, r := range p.roomless {
		for _, l := range r.shape.limits {
			in := l.idleOfOtherImage(r.job.Image)
			if in == nil {
				continue
			}
			p.terminate(in, ReasonImage)
			w := &p.out.Waiting[r.waiting]
			what := "no image"
			if in.Image != "" {
				what = "image " + in.Image
			}
			w.Message += fmt.Sprintf("; its idle instance %s of %s goes to make room for this job's", in.ID, what)
			break
		}
	}
}

// idleOfOtherImage is l's longest idle instance, bound to an image other
// than image, that no job took and nothing terminated in this pass.
func (l *limitState) idleOfOtherImage(image string) *instState {
	var best *instState
	for _, pl := range l.idle {
		if pl.takes(image) {
			continue
		}
		for _, in := range pl.insts {
			if !in.taken && !in.terminated {
				if best == nil || in.idleSince().Before(best.idleSince()) {
					best = in
				}
				break
			}
		}
	}
	return best
}

// terminateIdle applies rule 4.
func (p *planner) terminateIdle() {
	for _, in := range p.instances {
		if in.terminated || in.taken || in.kind != instFree || in.limit == nil ||
			in.State == InstanceTerminating || in.State == InstanceLaunching {
			continue
		}
		if !p.now.Before(in.idleSince().Add(p.idleTimeout)) {
			p.terminate(in, ReasonIdle)
		}
	}
}

func (p *planner) decision() Decision {
	for _, l := range p.limits {
		images := make([]string, 0, len(l.launches))
		for image := range l.launches {
			images = append(images, image)
		}
		slices.Sort(images)
		for _, image := range images {
			p.out.Launches = append(p.out.Launches, *l.launches[image])
		}
	}
	slices.SortFunc(p.out.Terminations, func(a, b Termination) int { return strings.Compare(a.InstanceID, b.InstanceID) })
	slices.SortFunc(p.out.Bindings, func(a, b Binding) int { return strings.Compare(a.JobID, b.JobID) })
	slices.SortFunc(p.out.Waiting, func(a, b Waiting) int { return strings.Compare(a.JobID, b.JobID) })
	return p.out
}
