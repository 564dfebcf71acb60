package autoscale

import (
	"testing"

	"github.com/dstackai/dstack/store"
)

// TestWaitingMessageKeepsTheInterruption: a requeued job that waits says
// why it waits and why its previous attempt ended, so that `dstack ps` does
// not lose the interruption its requeue reported.
func TestWaitingMessageKeepsTheInterruption(t *testing.T) {
	const msg = "waiting: 1 runner that fits is offline"
	for _, tc := range []struct {
		job  store.PendingJob
		want string
	}{
		{store.PendingJob{Attempt: 0}, msg},
		{store.PendingJob{Attempt: 1}, msg},
		{store.PendingJob{Attempt: 1, LastInterruption: "runner old stopped responding"}, msg + " (attempt 1: runner old stopped responding)"},
		{store.PendingJob{Attempt: 2, LastInterruption: "spot instance reclaimed"}, msg + " (attempt 2: spot instance reclaimed)"},
	} {
		if got := waitingMessage(msg, &tc.job); got != tc.want {
			t.Errorf("waitingMessage(%+v) = %q, want %q", tc.job, got, tc.want)
		}
	}
}
