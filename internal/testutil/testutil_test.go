package testutil

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	c := NewClock(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("Now = %v, want %v", got, t0)
	}
	if got := c.Now(); !got.Equal(t0) {
		t.Errorf("the clock moved by itself: %v", got)
	}
	c.Advance(90 * time.Second)
	if got, want := c.Now(), t0.Add(90*time.Second); !got.Equal(want) {
		t.Errorf("after Advance, Now = %v, want %v", got, want)
	}
	c.Set(t0.Add(-time.Hour))
	if got, want := c.Now(), t0.Add(-time.Hour); !got.Equal(want) {
		t.Errorf("after Set, Now = %v, want %v", got, want)
	}
}

// TestClockConcurrent: the race detector sees no race between readers and
// writers, and no Advance is lost.
func TestClockConcurrent(t *testing.T) {
	t.Parallel()
	var c Clock
	now := c.Now
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				c.Advance(time.Second)
				_ = now()
			}
		})
	}
	wg.Wait()
	if got, want := c.Now(), (time.Time{}).Add(800*time.Second); !got.Equal(want) {
		t.Errorf("Now = %v, want %v", got, want)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as testing's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f with a fatalRecorder in a goroutine of its own and returns
// the message of its Fatalf, or "" when it did not fail.
func run(t *testing.T, f func(tb testing.TB)) string {
	t.Helper()
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

func TestEventuallyHolds(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	go func() {
		for range 3 {
			time.Sleep(time.Millisecond)
			n.Add(1)
		}
	}()
	if msg := run(t, func(tb testing.TB) {
		Eventually(tb, "n to be 3", func() bool { return n.Load() == 3 })
	}); msg != "" {
		t.Fatalf("Eventually failed: %s", msg)
	}
}

func TestEventuallyWithinFails(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	msg := run(t, func(tb testing.TB) {
		EventuallyWithin(tb, 50*time.Millisecond, "the impossible", func() bool { calls.Add(1); return false })
	})
	if msg != "waited 50ms for the impossible" {
		t.Errorf("message %q", msg)
	}
	if calls.Load() < 2 {
		t.Errorf("the condition was checked %d times, want it checked until the deadline", calls.Load())
	}
}

func TestEventuallyErr(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	if msg := run(t, func(tb testing.TB) {
		EventuallyErr(tb, "the third try", func() error {
			if n.Add(1) < 3 {
				return errors.New("too early")
			}
			return nil
		})
	}); msg != "" {
		t.Fatalf("EventuallyErr failed: %s", msg)
	}
}

// TestPollReturnsTheLastError: a failing wait quotes what the check saw
// last, not first.
func TestPollReturnsTheLastError(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	err := poll(30*time.Millisecond, func() error { return fmt.Errorf("try %d", n.Add(1)) })
	if err == nil || !strings.HasPrefix(err.Error(), "try ") || err.Error() == "try 1" {
		t.Errorf("poll = %v, want the last try's error", err)
	}
}
