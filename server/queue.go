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
// store, whose claim is atomic. Waiters also re-check on a timer, which covers
// changes made by another server replica.
type queue struct {
	mu   sync.Mutex
	subs map[string]chan struct{}
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

// wake wakes every waiter on key; a wake of a user's key wakes the waiters
// on anyUserKey too.
func (q *queue) wake(key string) {
	q.close(key)
	if strings.HasPrefix(key, "user/") && key != anyUserKey {
		q.close(anyUserKey)
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
