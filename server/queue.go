package server

import (
	"container/list"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/dstackai/dstack/store"
)

// queue wakes the requests that wait on state: runners long-polling for a job
// (per user, or for any user's job: anyUserKey) and for a stop of their job
// (per job).
//
// Stop waiters watch a key, and a wake of the key wakes them all: a
// waiter takes the channel before it looks at the store, so a change made
// after its look always wakes it.
//
// Claim waiters queue instead, oldest first, and a new pending job wakes one
// of them, not all: a wake is a token handed to the oldest claim waiter of
// the job's user or of anyone's jobs. The waiter tries a claim (the store's
// claim is atomic, so a token is a hint, not a hand-off). A waiter that
// claims nothing passes the token to the next waiter that queued before
// the token was made and whose free resources differ from every waiter that
// already failed with it: a job that fits only some runners reaches one of
// them at once, and among runners alike one failed claim is enough. A
// waiter that leaves holding a token passes it on too.
//
// Wakes reach the other server replicas through relay (bus.go); waiters
// also re-check the store after recheckAfter, which covers a wake lost on
// the way.
type queue struct {
	mu   sync.Mutex
	subs map[string]chan struct{}
	// waiting holds the claim waiters per key, by shape, oldest first.
	waiting map[string]*waitList
	seq     uint64
	// gens counts the wakes of each claim key (a user's; anyUserKey counts
	// them all), and idle holds the runners whose last wait ended with no
	// job: a runner that comes back for another wait before anything woke
	// its key, and within recheck, waits at once instead of looking at the
	// store again (see idleSince).
	gens map[string]uint64
	idle map[string]idleLook
	// relay, when set, passes every wake on to the other replicas
	// (bus.go), where it wakes one claim waiter that chains as here.
	relay func(key string)
	// recheck is Config.Recheck.
	recheck time.Duration
}

// idleLook is a runner's last wait that ended with no job.
type idleLook struct {
	shape string
	gen   uint64
	at    time.Time
}

func newQueue() *queue {
	return &queue{subs: map[string]chan struct{}{}, waiting: map[string]*waitList{},
		gens: map[string]uint64{}, idle: map[string]idleLook{}, recheck: recheck}
}

// recheck is how long, by default (Config.Recheck), a waiter waits for a
// wake before it looks at the store anyway; recheckAfter jitters it so that idle waiters do not look
// together. Within one replica a wake comes at once; the re-check bounds
// how late a change that woke nobody here (another replica's, unless its
// wakes reach this one) is seen. Each look of an idle runner costs a write
// on SQLite: with 10,000 runners, a re-check every 2 minutes is about 80
// looks a second.
const recheck = 2 * time.Minute

func (q *queue) recheckAfter() time.Duration {
	return q.recheck + rand.N(q.recheck/2) //nolint:gosec // jitter, not a secret
}

// watch returns a channel closed at the next wake of key.
func (q *queue) watch(key string) <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	ch, ok := q.subs[key]
	if !ok {
		ch = make(chan struct{})
		q.subs[key] = ch
	}
	return ch
}

// wake wakes every waiter watching key. A wake of a user's key says that
// some of the user's jobs may have become pending, how many unknown: it
// wakes one claim waiter, and each claim the wake leads to wakes one more,
// until a claim finds nothing.
func (q *queue) wake(key string) {
	if q.relay != nil {
		q.relay(key)
	}
	q.wakeHere(key)
}

// wakeHere is wake on this replica only: for a wake another replica sent.
func (q *queue) wakeHere(key string) {
	q.close(key)
	if userID, ok := strings.CutPrefix(key, "user/"); ok && key != anyUserKey {
		q.offerHere(userID, 1, true)
	}
}

// wakeAll wakes every waiter of this replica, for wakes that may have been
// missed: each claim waiter tries a claim.
func (q *queue) wakeAll() {
	q.mu.Lock()
	subs := q.subs
	q.subs = map[string]chan struct{}{}
	bound := q.seq + 1
	for key, l := range q.waiting {
		for range l.n {
			if !q.deliverLocked(&wakeToken{key: key, bound: bound}) {
				break
			}
		}
	}
	q.mu.Unlock()
	for _, ch := range subs {
		close(ch)
	}
}

func (q *queue) close(key string) {
	q.mu.Lock()
	ch, ok := q.subs[key]
	delete(q.subs, key)
	q.mu.Unlock()
	if ok {
		close(ch)
	}
}

// offer wakes up to n claim waiters for n jobs of userID that became
// pending. chain: a claim that succeeds wakes another waiter, for when how
// many jobs became pending is unknown.
func (q *queue) offer(userID string, n int, chain bool) {
	if q.relay != nil {
		q.relay(userKey(userID)) // one wake there, which chains
	}
	q.offerHere(userID, n, chain)
}

// offerHere is offer on this replica only.
func (q *queue) offerHere(userID string, n int, chain bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.gens[userKey(userID)]++
	q.gens[anyUserKey]++
	bound := q.seq + 1 // every waiter queued so far
	for range n {
		t := &wakeToken{key: userKey(userID), bound: bound, chain: chain}
		if !q.deliverLocked(t) {
			return
		}
	}
}

// wakeToken is one wake of claim waiters: a job of key's user may be pending.
type wakeToken struct {
	key string
	// bound: only waiters queued before the token was made (seq < bound)
	// get it, so that a token passed on ends once every waiter had it.
	bound uint64
	// failed holds the shapes of the waiters that claimed nothing with it.
	failed map[string]bool
	chain  bool
}

// waitList is the claim waiters of one key, in a list per shape, each
// oldest first: the oldest waiter of a shape no claim failed for is at the
// front of one of them, however many runners alike wait.
type waitList struct {
	byShape map[string]*list.List
	n       int
}

// deliverLocked hands t to the oldest waiter that may take it and reports
// whether there was one.
func (q *queue) deliverLocked(t *wakeToken) bool {
	var best *waiter
	for _, key := range [2]string{t.key, anyUserKey} {
		l := q.waiting[key]
		if l == nil {
			continue
		}
		for shape, sl := range l.byShape {
			w := sl.Front().Value.(*waiter)
			if w.seq >= t.bound || t.failed[shape] || (best != nil && w.seq > best.seq) {
				continue
			}
			best = w
		}
	}
	if best == nil {
		return false
	}
	q.unqueueLocked(best)
	best.tok = t
	select {
	case best.ch <- struct{}{}:
	default:
	}
	return true
}

func (q *queue) unqueueLocked(w *waiter) {
	if w.el == nil {
		return
	}
	l := q.waiting[w.key]
	sl := l.byShape[w.shape]
	sl.Remove(w.el)
	w.el = nil
	l.n--
	if sl.Len() == 0 {
		delete(l.byShape, w.shape)
	}
	if l.n == 0 {
		delete(q.waiting, w.key)
	}
}

// waiter is one runner's claim request waiting for a job.
type waiter struct {
	q      *queue
	runner string
	key    string
	shape  string
	gen    uint64 // the key's wakes when the waiter last armed
	ch     chan struct{}
	seq    uint64
	el     *list.Element
	tok    *wakeToken // handed over and not yet used
	// mayIdle: the runner may wait without looking (idleSince). The
	// runners of on-demand instances, and interrupted ones, always look:
	// their state changes without a wake.
	mayIdle bool
}

// claimWaiter returns a waiter for the runner's jobs that claims with free.
// Its shape says which waiters a failed claim speaks for: those that ask
// for the same users' jobs with the same free resources.
func (q *queue) claimWaiter(rn *store.Runner, free string) *waiter {
	shape := claimKey(rn) + "|" + free
	if rn.InstanceID != "" {
		shape += "|instance:" + rn.InstanceID
	}
	if rn.InterruptedAt != nil {
		shape += "|interrupted:" + rn.ID
	}
	return &waiter{q: q, runner: rn.ID, key: claimKey(rn), shape: shape, ch: make(chan struct{}, 1),
		mayIdle: rn.InstanceID == "" && rn.InterruptedAt == nil}
}

// arm queues w, if it is not queued, and returns the token that woke it
// (nil when none did): the caller claims next, and then calls done with
// that token. Call arm before looking at the store, so that a job queued
// after the look wakes it.
func (w *waiter) arm() *wakeToken {
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	t := w.tok
	w.tok = nil
	w.gen = q.gens[w.key]
	select {
	case <-w.ch:
	default:
	}
	if w.el == nil {
		q.seq++
		w.seq = q.seq
		l := q.waiting[w.key]
		if l == nil {
			l = &waitList{byShape: map[string]*list.List{}}
			q.waiting[w.key] = l
		}
		sl := l.byShape[w.shape]
		if sl == nil {
			sl = list.New()
			l.byShape[w.shape] = sl
		}
		w.el = sl.PushBack(w)
		l.n++
	}
	return t
}

// done reports the claim that followed arm: claimed says whether it got a
// job. A token that led to nothing goes to the next waiter; one that led to
// a claim wakes another waiter when it chains.
func (w *waiter) done(t *wakeToken, claimed bool) {
	if t == nil {
		return
	}
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if claimed {
		if t.chain {
			q.deliverLocked(&wakeToken{key: t.key, bound: q.seq + 1, chain: true})
		}
		return
	}
	if t.failed == nil {
		t.failed = map[string]bool{}
	}
	t.failed[w.shape] = true
	q.deliverLocked(t)
}

// pass hands t, which w could not use (its claim failed, not for want of
// a job), to the next waiter.
func (w *waiter) pass(t *wakeToken) {
	if t == nil {
		return
	}
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	q.deliverLocked(t)
}

// idleSince reports, for a runner that asks for a job again, when its last
// wait ended with no job, if nothing woke its key since, its free
// resources are the same and that was less than recheck ago: the store
// would answer as it did, and the runner may wait without looking. With
// every runner idle, a claim looks at the store about once per recheck
// rather than once per wait. A runner that may not idle (mayIdle) always
// looks.
func (w *waiter) idleSince(now time.Time) (time.Time, bool) {
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	l, ok := q.idle[w.runner]
	if !ok || !w.mayIdle || l.shape != w.shape || l.gen != q.gens[w.key] || now.Sub(l.at) >= q.recheck || now.Before(l.at) {
		return time.Time{}, false
	}
	return l.at, true
}

// mark notes the wakes of w's key before a look at the store made without
// arm: a claim made with the report of a job's end, which idleEnd may
// then record.
func (w *waiter) mark() {
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	w.gen = q.gens[w.key]
}

// idleEnd records that w's wait ended with no job, its last look at the
// store being at at; nothing for a runner that may not idle.
func (w *waiter) idleEnd(at time.Time) {
	if !w.mayIdle {
		return
	}
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.idle) >= 1024 && len(q.idle)%1024 == 0 {
		for id, l := range q.idle { // drop the stale, now and then
			if at.Sub(l.at) >= q.recheck {
				delete(q.idle, id)
			}
		}
	}
	q.idle[w.runner] = idleLook{shape: w.shape, gen: w.gen, at: at}
}

// busy forgets w's runner's idle wait: it got a job.
func (w *waiter) busy() {
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.idle, w.runner)
}

// leave takes w off the queue; a token it holds goes to the next waiter.
func (w *waiter) leave() {
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	q.unqueueLocked(w)
	if t := w.tok; t != nil {
		w.tok = nil
		q.deliverLocked(t)
	}
}

func userKey(userID string) string { return "user/" + userID }

// anyUserKey is what runners that take any user's jobs watch.
const anyUserKey = "user/*"

// claimKey is what a runner waiting for a job watches.
func claimKey(rn *store.Runner) string {
	if takesAnyones(rn) {
		return anyUserKey
	}
	return userKey(rn.UserID)
}

// takesAnyones reports whether a runner takes any user's jobs: a shared
// self-hosted runner, or the runner of an on-demand instance.
func takesAnyones(rn *store.Runner) bool { return rn.Shared || rn.InstanceID != "" }
func jobKey(jobID string) string         { return "job/" + jobID }
