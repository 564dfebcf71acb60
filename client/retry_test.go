package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dstackai/dstack/api"
)

func TestRetryable(t *testing.T) {
	t.Parallel()
	status := func(s int) error { return &api.Error{Status: s, Code: api.CodeInternal, Message: http.StatusText(s)} }
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"canceled", context.Canceled, false},
		{"deadline", fmt.Errorf("get run: %w", context.DeadlineExceeded), false},
		{"unreachable", &UnreachableError{URL: "http://x", Err: errors.New("connection refused")}, true},
		{"broken body", io.ErrUnexpectedEOF, true},
		{"400", status(http.StatusBadRequest), false},
		{"401", status(http.StatusUnauthorized), false},
		{"403", status(http.StatusForbidden), false},
		{"404", status(http.StatusNotFound), false},
		{"409", status(http.StatusConflict), false},
		{"413", status(http.StatusRequestEntityTooLarge), false},
		{"429", status(http.StatusTooManyRequests), true},
		{"500", status(http.StatusInternalServerError), true},
		{"501", status(http.StatusNotImplemented), false},
		{"502", status(http.StatusBadGateway), true},
		{"503", status(http.StatusServiceUnavailable), true},
		{"504", status(http.StatusGatewayTimeout), true},
		{"505", status(http.StatusHTTPVersionNotSupported), false},
		{"507", &api.Error{Status: http.StatusInsufficientStorage, Code: api.CodeInsufficientStorage, Message: "disk full"}, true},
		{"unavailable code", &api.Error{Status: 499, Code: api.CodeUnavailable, Message: "client closed the request"}, true},
		{"lease lost", &api.Error{Status: http.StatusConflict, Code: api.CodeLeaseLost, Message: "lease lost"}, false},
		{"wrapped 503", fmt.Errorf("report status: %w", status(http.StatusServiceUnavailable)), true},
	} {
		if got := Retryable(tc.err); got != tc.want {
			t.Errorf("%s: Retryable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestRetryAfterFromServer reads Retry-After off real answers.
func TestRetryAfterFromServer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		status int
		header string
		body   string
		want   time.Duration
	}{
		{"503 seconds", http.StatusServiceUnavailable, "7", `{"error":{"code":"unavailable","message":"storage failed"}}`, 7 * time.Second},
		{"429 plain body", http.StatusTooManyRequests, "2", "slow down", 2 * time.Second},
		{"507 without header", http.StatusInsufficientStorage, "", `{"error":{"code":"insufficient_storage","message":"disk full"}}`, 0},
		{"hours capped", http.StatusServiceUnavailable, "7200", "busy", MaxRetryAfter},
		{"garbage", http.StatusServiceUnavailable, "soon", "busy", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.header != "" {
					w.Header().Set("Retry-After", tc.header)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			c, err := New(srv.URL, "t")
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Me(t.Context())
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Status != tc.status {
				t.Fatalf("Me: %v, want an API error with status %d", err, tc.status)
			}
			if got := RetryAfter(err); got != tc.want {
				t.Errorf("RetryAfter = %v, want %v", got, tc.want)
			}
			if !Retryable(err) {
				t.Errorf("status %d is not retryable", tc.status)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{" 30 ", 30 * time.Second},
		{"99999999999999", MaxRetryAfter},
		{now.Add(20 * time.Second).Format(http.TimeFormat), 20 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(time.Hour).Format(http.TimeFormat), MaxRetryAfter},
		{"tomorrow", 0},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "5", "-1", "Wed, 21 Oct 2015 07:28:00 GMT", "x"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		if d := parseRetryAfter(s, now); d < 0 || d > MaxRetryAfter {
			t.Errorf("parseRetryAfter(%q) = %v, outside [0, %v]", s, d, MaxRetryAfter)
		}
	})
}

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	const lo, hi = 100 * time.Millisecond, time.Second
	b := NewBackoff(lo, hi)
	for round := range 50 {
		step := lo
		for i := range 8 {
			d := b.Next()
			if d < step/2 || d > step {
				t.Fatalf("round %d, try %d: delay %v outside [%v, %v]", round, i, d, step/2, step)
			}
			step = min(step*2, hi)
		}
		b.Reset()
	}
}

func TestBackoffWaitHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := NewBackoff(10*time.Millisecond, 20*time.Millisecond)
		for _, tc := range []struct {
			after, want time.Duration
		}{
			{5 * time.Second, 5 * time.Second},
			{2 * time.Hour, MaxRetryAfter},
		} {
			err := &api.Error{Status: http.StatusServiceUnavailable, Code: api.CodeUnavailable, Message: "busy", RetryAfter: tc.after}
			start := time.Now()
			if werr := b.Wait(t.Context(), err); werr != nil {
				t.Fatal(werr)
			}
			if got := time.Since(start); got != tc.want {
				t.Errorf("Retry-After %v: waited %v, want %v", tc.after, got, tc.want)
			}
		}
		// Without Retry-After, the backoff's own delay.
		start := time.Now()
		if err := b.Wait(t.Context(), errors.New("reset")); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got > 20*time.Millisecond {
			t.Errorf("waited %v without Retry-After, want at most the backoff's 20ms", got)
		}
	})
}

func TestDo(t *testing.T) {
	t.Parallel()
	unavailable := &api.Error{Status: http.StatusServiceUnavailable, Code: api.CodeUnavailable, Message: "busy", RetryAfter: 5 * time.Second}
	notFound := &api.Error{Status: http.StatusNotFound, Code: api.CodeNotFound, Message: "no such run"}

	t.Run("retries until success, honouring Retry-After", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			var calls, retries int
			p := Policy{Min: time.Millisecond, Max: 10 * time.Millisecond, OnRetry: func(error) { retries++ }}
			start := time.Now()
			err := Do(t.Context(), p, func(context.Context) error {
				calls++
				if calls < 3 {
					return unavailable
				}
				return nil
			})
			if err != nil || calls != 3 || retries != 2 {
				t.Fatalf("Do = %v after %d calls and %d retries, want nil after 3 and 2", err, calls, retries)
			}
			if got := time.Since(start); got != 10*time.Second {
				t.Errorf("took %v, want the two Retry-Afters (10s)", got)
			}
		})
	})
	t.Run("final error returned at once", func(t *testing.T) {
		t.Parallel()
		calls := 0
		err := Do(t.Context(), Policy{Min: time.Millisecond, Max: time.Millisecond}, func(context.Context) error {
			calls++
			return fmt.Errorf("get run: %w", notFound)
		})
		if !errors.Is(err, notFound) || calls != 1 {
			t.Errorf("Do = %v after %d calls, want the 404 after 1", err, calls)
		}
	})
	t.Run("ends with ctx", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			err := Do(ctx, Policy{Min: time.Second, Max: 4 * time.Second}, func(context.Context) error {
				return &UnreachableError{URL: "http://x", Err: errors.New("connection refused")}
			})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Do = %v, want %v", err, context.DeadlineExceeded)
			}
		})
	})
}
