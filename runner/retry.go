package runner

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// backoff spaces out retries: exponential from min to max, with jitter so
// that many runners hitting a recovering server do not do it in step.
type backoff struct {
	min, max time.Duration
	next     time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max} }

// wait sleeps for the next delay; it returns false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	if b.next == 0 {
		b.next = b.min
	}
	// Full jitter over [d/2, d).
	d := b.next/2 + rand.N(b.next/2+1) //nolint:gosec // jitter, not a secret
	b.next = min(b.next*2, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (b *backoff) reset() { b.next = 0 }

// transient reports whether a failed call may succeed when repeated: the
// server could not be reached, broke off, or answered 5xx or 429.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Status >= 500 || ae.Status == http.StatusTooManyRequests || ae.Code == api.CodeUnavailable
	}
	var ue *client.UnreachableError
	if errors.As(err, &ue) {
		return true
	}
	// Anything else is the transport failing mid-body (a reset, an EOF).
	return true
}

// errLeaseLost says the job was taken from this runner: drop it.
var errLeaseLost = errors.New("the job is no longer assigned to this runner")

func isLeaseLost(err error) bool {
	return errors.Is(err, errLeaseLost) || client.IsCode(err, api.CodeLeaseLost)
}

func isUnauthenticated(err error) bool { return client.IsCode(err, api.CodeUnauthenticated) }
