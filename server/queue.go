package server

import (
	"strings"
	"sync"

	"github.com/dstackai/dstack/store"
)

// queue wakes the requests that wait on state: runners long-polling for a job
// (per user, or for any user's job: anyUserKey) and for a stop of their job
// (per job). A waiter takes the
// channel before it looks at the store, so a change made after its look
// always wakes it.
//
// A wake-up is a hint, not a hand-off: woken claimers race for jobs in the
// store, whose claim is atomic. Wakes reach the other server replicas
// through relay (bus.go); waiters also re-check on a timer, which covers a
// wake lost on the way.
type queue struct {
	mu   sync.Mutex
	subs map[string]chan struct{}
	// relay, when set, passes every wake on to the other replicas.
	relay func(key string)
}

func newQueue() *queue { return &queue{subs: map[string]chan struct{}{}} }

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

// wake wakes every waiter on key, here and on the other replicas; a wake of
// a user's key wakes the waiters on anyUserKey too.
func (q *queue) wake(key string) {
	if q.relay != nil {
		q.relay(key)
	}
	q.wakeHere(key)
}

// wakeHere is wake on this replica only: for a wake another replica sent.
func (q *queue) wakeHere(key string) {
	q.close(key)
	if strings.HasPrefix(key, "user/") && key != anyUserKey {
		q.close(anyUserKey)
	}
}

// wakeAll wakes every waiter of this replica, for wakes that may have been
// missed.
func (q *queue) wakeAll() {
	q.mu.Lock()
	subs := q.subs
	q.subs = map[string]chan struct{}{}
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
