// Package clock holds the one way every layer (the API client, the runner,
// the cloud backends) waits for a while: Sleep, which ends early with its
// context. It imports nothing but the standard library, so the runner may
// link it and stay small.
package clock

import (
	"context"
	"time"
)

// Sleep waits for d, or until ctx ends: then it returns ctx.Err(). With d
// zero or less it returns at once, with ctx.Err().
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
