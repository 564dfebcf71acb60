package server

import "sync"

// queue wakes the requests that wait on state: runners long-polling for a job
// (per user) and for a stop of their job (per job). A waiter takes the
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

// wake wakes every waiter on key.
func (q *queue) wake(key string) {
	q.mu.Lock()
	ch, ok := q.subs[key]
	delete(q.subs, key)
	q.mu.Unlock()
	if ok {
		close(ch)
	}
}

func userKey(userID string) string { return "user/" + userID }
func jobKey(jobID string) string   { return "job/" + jobID }
