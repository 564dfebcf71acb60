package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/clock"
)

// The retry policy: one for every caller of the API (the CLI following a
// run, the runner reporting, shipping logs, claiming and registering).
//
// Retryable says which failures may succeed when the call is repeated:
//
//   - the server could not be reached (UnreachableError), or the transport
//     broke off mid-body (a reset, an unexpected EOF);
//   - 429 Too Many Requests and 503 Service Unavailable, waiting at least
//     the Retry-After the server sent (see Backoff.Wait);
//   - 502 Bad Gateway and 504 Gateway Timeout (a proxy in front of a server
//     that is restarting);
//   - 507 Insufficient Storage: the server's disk is full and it refuses
//     writes until space is freed; what the caller holds (a job's log, a
//     status) stays safe to send again later;
//   - 500 Internal Server Error: a failed transaction (the database went
//     away, a conflict between replicas) usually succeeds on the next try.
//     Every call retried through this policy is idempotent (reads, status
//     reports under a lease, log appends at an offset), so repeating it is
//     safe; calls that are not (submitting a run, uploading code) are never
//     retried by their callers;
//   - any answer whose code is "unavailable", whatever its status.
//
// Anything else is final: other 4xx (the request is wrong, the credential
// refused, the lease lost; callers handle those they can repair, such as
// re-registering on 401), 501, 505 and other 5xx (the server cannot do it
// at all), and the caller's own context ending.
//
// Backoff spaces out the retries: exponential from Min to Max with jitter,
// so that many runners or CLIs hitting a recovering server do not do it in
// step. Do combines both for a call that is simply repeated until it
// succeeds, fails for good, or its context ends.

// MaxRetryAfter bounds the wait a server's Retry-After can ask for, so that
// a wrong header cannot stall a caller for hours.
const MaxRetryAfter = time.Minute

// Retryable reports whether a failed call may succeed when repeated; see
// the policy above.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ue *UnreachableError
	if errors.As(err, &ue) {
		return true
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		if ae.Code == api.CodeUnavailable {
			return true
		}
		switch ae.Status {
		case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusInsufficientStorage:
			return true
		}
		return false
	}
	// Anything else is the transport failing mid-body (a reset, an EOF).
	return true
}

// RetryAfter is how long the server asked the caller to wait before trying
// again (its Retry-After header), at most MaxRetryAfter; 0 when it did not
// say.
func RetryAfter(err error) time.Duration {
	var ae *api.Error
	if !errors.As(err, &ae) || ae.RetryAfter <= 0 {
		return 0
	}
	return min(ae.RetryAfter, MaxRetryAfter)
}

// parseRetryAfter reads a Retry-After header: seconds, or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(MaxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), MaxRetryAfter)
	}
	return 0
}

// Backoff spaces out retries: each delay doubles from Min up to Max, and is
// drawn at random from its upper half. It is not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	next     time.Duration
}

// NewBackoff returns a Backoff from min to max.
func NewBackoff(min, max time.Duration) *Backoff { return &Backoff{Min: min, Max: max} }

// Next returns the next delay, in [d/2, d] for the current step d, and
// advances the step.
func (b *Backoff) Next() time.Duration {
	if b.next <= 0 {
		b.next = b.Min
	}
	d := b.next/2 + rand.N(b.next/2+1) //nolint:gosec // jitter, not a secret
	b.next = min(b.next*2, b.Max)
	return d
}

// Reset starts the delays again from Min, after a call that succeeded.
func (b *Backoff) Reset() { b.next = 0 }

// Wait sleeps for the next delay, or for the Retry-After that err carries
// when that is longer; it returns ctx.Err() when ctx ended first.
func (b *Backoff) Wait(ctx context.Context, err error) error {
	return clock.Sleep(ctx, max(b.Next(), RetryAfter(err)))
}

// Policy says how Do repeats a call.
type Policy struct {
	// Min and Max bound the delays between tries (see Backoff).
	Min, Max time.Duration
	// OnRetry, when set, is told of every failure about to be retried.
	OnRetry func(err error)
}

// Do calls f until it succeeds, fails with an error Retryable says is
// final (returned as it is), or ctx ends (ctx.Err() is returned).
func Do(ctx context.Context, p Policy, f func(context.Context) error) error {
	bo := NewBackoff(p.Min, p.Max)
	for {
		err := f(ctx)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case !Retryable(err):
			return err
		}
		if p.OnRetry != nil {
			p.OnRetry(err)
		}
		if werr := bo.Wait(ctx, err); werr != nil {
			return werr
		}
	}
}
