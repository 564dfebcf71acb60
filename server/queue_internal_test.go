package server

import (
	"testing"

	"github.com/dstackai/dstack/store"
)

// woken reports whether w was handed a wake.
func woken(w *waiter) bool {
	select {
	case <-w.ch:
		w.ch <- struct{}{} // arm drains it
		return true
	default:
		return false
	}
}

func TestQueueWakesOneWaiterAndPassesItOn(t *testing.T) {
	t.Parallel()
	q := newQueue()
	rn := &store.Runner{ID: "r", UserID: "u"}
	small1 := q.claimWaiter(rn, "2/4096/0")
	small2 := q.claimWaiter(rn, "2/4096/0")
	shared := q.claimWaiter(&store.Runner{ID: "s", UserID: "admin", Shared: true}, "2/4096/0|shared")
	big := q.claimWaiter(rn, "16/65536/0")
	other := q.claimWaiter(&store.Runner{ID: "o", UserID: "v"}, "16/65536/0")
	for _, w := range []*waiter{small1, small2, shared, big, other} {
		if tok := w.arm(); tok != nil {
			t.Fatal("a waiter armed for the first time holds a wake")
		}
	}

	q.offer("u", 1, false)
	if !woken(small1) || woken(small2) || woken(shared) || woken(big) || woken(other) {
		t.Fatal("a job of u should wake u's longest waiting runner only")
	}
	// small1 claims nothing: the wake skips small2, alike, and goes on.
	tok := small1.arm()
	small1.done(tok, false)
	if woken(small2) || !woken(shared) {
		t.Fatal("a wake that found nothing should pass to the next waiter of another shape (the shared runner)")
	}
	tok = shared.arm()
	shared.done(tok, false)
	if !woken(big) {
		t.Fatal("the wake should reach the big runner")
	}
	// The big runner claims nothing either: the wake ends, and reaches
	// neither another user's runner nor a waiter that queued after it.
	tok = big.arm()
	big.done(tok, false)
	for _, w := range []*waiter{small1, small2, shared, big, other} {
		if woken(w) {
			t.Fatal("a wake every waiter had should end")
		}
	}

	// A wake of unknown size chains: a claim that succeeds wakes one more.
	q.wake(userKey("u"))
	if !woken(small2) {
		t.Fatal("the wake should go to the longest waiting runner")
	}
	tok = small2.arm()
	small2.leave()
	small2.done(tok, true)
	if !woken(small1) {
		t.Fatal("a claim of a chained wake should wake the next waiter")
	}
	// A waiter that leaves with a wake passes it on.
	small1.leave()
	if !woken(shared) {
		t.Fatal("a waiter that left should pass its wake on")
	}
}
