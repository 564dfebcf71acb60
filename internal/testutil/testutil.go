// Package testutil is what tests share to deal with time: a fake Clock
// that moves only when told, and Eventually, which waits for a condition
// that another goroutine or process makes true.
//
// Where a test is about time passing inside its own goroutines, prefer
// testing/synctest; these are for the rest (real processes, sockets,
// servers).
package testutil

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// Clock is a fake clock: it stands still until Advance or Set moves it. It
// is safe for concurrent use; its Now method fits every Now func() time.Time
// of the code under test.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock that reads t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Wait is how long Eventually waits before it fails the test. It bounds a
// test that would otherwise hang, on a machine that may be slow and
// loaded; it is no assertion about speed.
const Wait = 30 * time.Second

// Eventually checks every minPoll, or, when a check takes longer (it runs
// a command, say), as often as it takes: it waits as long as the last
// check took, so that it never keeps the machine busy with checks alone.
const minPoll = 5 * time.Millisecond

// Eventually checks cond until it holds, and fails the test when it does
// not within Wait, saying it was waiting for what. It must be called from
// the test's goroutine.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	EventuallyWithin(tb, Wait, what, cond)
}

// EventuallyWithin is Eventually with its own bound, for a test that waits
// on something slow to start (a server, a container, an instance).
func EventuallyWithin(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	if err := poll(d, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}); err != nil {
		tb.Fatalf("waited %s for %s", d, what)
	}
}

// EventuallyErr checks check until it returns nil, and fails the test when
// it does not within Wait, saying it was waiting for what and quoting the
// last error, which should say what the test saw instead.
func EventuallyErr(tb testing.TB, what string, check func() error) {
	tb.Helper()
	if err := poll(Wait, check); err != nil {
		tb.Fatalf("waited %s for %s: %v", Wait, what, err)
	}
}

var errNotYet = errors.New("not yet")

// poll calls check until it returns nil or d has passed since the first
// call; it returns check's last error.
func poll(d time.Duration, check func() error) error {
	deadline := time.Now().Add(d)
	for {
		start := time.Now()
		err := check()
		if err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return err
		}
		time.Sleep(max(minPoll, time.Since(start)))
	}
}
