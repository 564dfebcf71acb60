package server

import (
	"fmt"
	"testing"
	"time"

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

// TestQueueIdleRunnerWaitsWithoutLooking: a runner whose last wait ended
// empty need not look at the store again until a wake of its key, a change
// of its free resources, or recheck.
func TestQueueIdleRunnerWaitsWithoutLooking(t *testing.T) {
	t.Parallel()
	q := newQueue()
	rn := &store.Runner{ID: "r", UserID: "u"}
	w := q.claimWaiter(rn, "8/16384/0")
	now := time.Now()
	if _, ok := w.idleSince(now); ok {
		t.Fatal("a runner never seen idle should look")
	}
	w.arm()
	w.idleEnd(now)
	w.leave()
	again := q.claimWaiter(rn, "8/16384/0")
	if at, ok := again.idleSince(now.Add(time.Second)); !ok || !at.Equal(now) {
		t.Fatalf("idleSince = %s, %v; want the last look, true", at, ok)
	}
	if _, ok := q.claimWaiter(rn, "4/16384/0").idleSince(now.Add(time.Second)); ok {
		t.Fatal("a runner with other free resources should look")
	}
	if _, ok := again.idleSince(now.Add(recheck)); ok {
		t.Fatal("a runner idle for recheck should look")
	}
	q.offer("v", 1, false) // another user's job: a user's runner need not look...
	if _, ok := again.idleSince(now.Add(time.Second)); !ok {
		t.Fatal("another user's job should not make u's runner look")
	}
	shared := q.claimWaiter(&store.Runner{ID: "s", UserID: "admin", Shared: true}, "8/16384/0")
	shared.arm()
	shared.idleEnd(now)
	shared.leave()
	q.offer("u", 1, false)
	if _, ok := again.idleSince(now.Add(time.Second)); ok {
		t.Fatal("a job of u should make u's runner look")
	}
	if _, ok := shared.idleSince(now.Add(time.Second)); ok {
		t.Fatal("any user's job should make a shared runner look")
	}
}

// BenchmarkQueueWakeThatFindsNothing: a wake whose claim finds nothing,
// among many waiting runners alike (10,000 runners of one user waiting
// while the queue is empty, each job's end a wake). Handing the wake on
// must not walk the runners alike: one failed claim speaks for them all.
func BenchmarkQueueWakeThatFindsNothing(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) {
			q := newQueue()
			ws := make([]*waiter, n)
			for i := range ws {
				ws[i] = q.claimWaiter(&store.Runner{ID: fmt.Sprintf("r%d", i), UserID: "u"}, "8/16384/0")
				ws[i].arm()
			}
			i := 0
			for b.Loop() {
				q.offerHere("u", 1, true)
				// The wake goes to the longest waiting runner, which
				// then waits again, at the back.
				w := ws[i%n]
				i++
				if !woken(w) {
					b.Fatal("the wake did not go to the longest waiting runner")
				}
				tok := w.arm()
				w.done(tok, false)
			}
		})
	}
}
