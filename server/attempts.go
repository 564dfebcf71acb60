package server

import (
	"context"
	"fmt"
	"time"

	"github.com/dstackai/dstack/store"
)

// A requeued job runs again from the start, and its next attempt's output
// follows the earlier ones' in the job's one log. So that a reader of the
// log (`dstack logs`, `logs -f`, `dstack run`, the web UI) tells the attempts
// apart, the server writes a line of its own where each later attempt
// begins, when a runner claims the job:
//
//	--- attempt 2 of 3 on runner r2 (attempt 1: runner r1 stopped responding) ---
//
// A first attempt gets none: the log of a job that was never requeued is
// exactly the job's output. The runner of the attempt appends after the
// line (it starts at the log's size when it claims the job).

// attemptMarker is the line that heads a requeued job's attempt on runner.
// job.Attempt counts from 0; people count attempts from 1.
func attemptMarker(job *store.Job, runner string, maxAttempts int) string {
	why := ""
	if job.LastInterruption != "" {
		why = fmt.Sprintf(" (attempt %d: %s)", job.Attempt, job.LastInterruption)
	}
	return fmt.Sprintf("--- attempt %d of %d on runner %s%s ---\n", job.Attempt+1, max(maxAttempts, job.Attempt+1), runner, why)
}

// markAttempt writes the marker of a requeued job's attempt into its log. A
// failure to write it is logged and does not hold the job back.
func (s *Server) markAttempt(job *store.Job, rn *store.Runner) {
	if job.Attempt == 0 {
		return
	}
	line := attemptMarker(job, rn.Name, s.cfg.MaxAttempts)
	// The job's earlier runners lost their lease with the requeue: no one
	// else appends to the log now.
	// The job is the runner's now, whether or not the runner still
	// waits for the answer.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	size, err := s.logs.Size(ctx, job.ID)
	if err == nil {
		_, err = s.logs.Append(ctx, job.ID, size, []byte(line), s.cfg.Now())
	}
	if err != nil {
		s.log.Warn("write the attempt's first line into the job's log", "job", job.ID, "attempt", job.Attempt+1, "err", err)
	}
}
