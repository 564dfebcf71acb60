package server

import (
	"context"
	"fmt"

	"github.com/dstackai/dstack/store"
)

// maxRunningCap bounds a user's cap of running jobs.
const maxRunningCap = 100000

// setUserMaxRunning caps u's active jobs at n (0: no cap), as `dstack users
// set NAME --max-running N` asks. From the next claim a runner gives u no
// job while u has n active ones, and the autoscaler says so of u's pending
// jobs ("waiting: user limit of N running jobs"); jobs already running go
// on. The caller checks that the asker is an admin.
func (s *Server) setUserMaxRunning(ctx context.Context, u *store.User, n int) (*store.User, error) {
	if n < 0 || n > maxRunningCap {
		return nil, invalid("--max-running %d is out of range: give 0 (no cap) to %d running jobs", n, maxRunningCap)
	}
	out, err := s.store.UserSetMaxRunning(ctx, store.UserSetMaxRunningParams{UserID: u.ID, MaxRunning: n})
	if err != nil {
		return nil, fmt.Errorf("set the running jobs cap of %s: %w", u.Name, err)
	}
	s.log.Info("running jobs cap set", "user", u.Name, "max_running", n)
	// A cap lifted or raised lets waiting runners claim; the reasons change.
	s.queue.wake(userKey(u.ID))
	s.wakeAutoscaler()
	return out, nil
}
