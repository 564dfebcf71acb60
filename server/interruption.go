package server

import (
	"fmt"
	"net/http"
	"strings"
	"unicode"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// A runner on a spot instance that the cloud reclaims (an interruption
// notice in EC2's instance metadata, seen by `dstack-runner start
// --watch-spot-interruption`) goes through:
//
//	POST /runner/interruption   the runner is interrupted (kept in the store,
//	                            so across restarts): no claim gives it a job
//	                            again, the job it holds shows why at once, and
//	                            the autoscaler counts it, and its instance, as
//	                            going away (autoscale/snapshot.go)
//	POST /runner/jobs/{id}/status {"status": "interrupted"}
//	                            after stopping the job (and uploading its
//	                            artifacts when there was time): the job is
//	                            requeued at once, attempt+1 within MaxAttempts
//	POST /runner/offline        the runner is gone
//
// Should the runner die before it gives its job back, the heartbeat timeout
// requeues the job as for any silent runner, with the interruption as the
// cause (store.RunnerMarkOffline).

// maxReason bounds the words a runner may put in a job's status reason.
const maxReason = 1000

// handleRunnerInterruption records a runner's interruption notice. It is
// idempotent: a repeat keeps the first notice.
func (s *Server) handleRunnerInterruption(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	var req api.RunnerInterruptionRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	req.Action = strings.TrimSpace(req.Action)
	if req.Action == "" || len(req.Action) > 32 || strings.IndexFunc(req.Action, func(c rune) bool { return !unicode.IsLetter(c) && c != '-' && c != '_' }) >= 0 {
		return invalid("action %q: give what the cloud will do to the machine, such as terminate, stop or hibernate", req.Action)
	}
	if req.Time.IsZero() {
		return invalid("time: give when the cloud will act, as an RFC 3339 time")
	}
	now := s.cfg.Now()
	got, jobs, err := s.store.RunnerInterrupt(r.Context(), store.RunnerInterruptParams{ID: rn.ID, Reason: req.Describe(now), Now: now})
	if err != nil {
		return fmt.Errorf("record interruption of runner %s: %w", rn.Name, err)
	}
	s.log.Warn("runner interrupted: the cloud reclaims its machine", "runner", rn.Name, "id", rn.ID,
		"action", req.Action, "at", req.Time, "instance", rn.InstanceID, "jobs", len(jobs))
	for _, j := range jobs {
		s.log.Info("job to be requeued: its runner's machine is reclaimed", "job", j.ID, "run", j.RunName, "status", j.Status)
	}
	// Its instance is going: the autoscaler plans a replacement.
	s.wakeAutoscaler()
	writeJSON(w, http.StatusOK, api.RunnerInterruptionResponse{InterruptedAt: *got.InterruptedAt, Reason: got.InterruptionReason})
	return nil
}

// handleJobInterrupted requeues a job its runner gives back because its
// machine is going away: the runner stopped it (and uploaded its artifacts
// when there was time) and reports status interrupted with the cause.
func (s *Server) handleJobInterrupted(w http.ResponseWriter, r *http.Request, rn *store.Runner, req api.JobStatusUpdate) error {
	job, err := s.runnerJob(r, rn)
	if err != nil {
		return err
	}
	cause := strings.TrimSpace(req.Reason)
	if cause == "" {
		cause = fmt.Sprintf("runner %s was interrupted", rn.Name)
	}
	if len(cause) > maxReason {
		cause = cause[:maxReason]
	}
	changed, err := s.store.JobInterrupt(r.Context(), store.JobInterruptParams{
		ID: job.ID, RunnerID: rn.ID, Lease: job.Lease, Cause: cause, MaxAttempts: s.cfg.MaxAttempts, Now: s.cfg.Now(),
	})
	if err != nil {
		return err
	}
	s.metrics.interrupted.Inc()
	for _, j := range changed {
		s.queue.wake(userKey(j.UserID))
		s.queue.wake(jobKey(j.ID))
		if j.Status.Finished() {
			s.finishLog(j.ID)
			s.metrics.jobFinished(j)
		}
	}
	s.wakeAutoscaler()
	out := changed[0]
	s.log.Warn("job interrupted: its runner gave it back", "job", out.ID, "run", out.RunName, "runner", rn.Name,
		"status", out.Status, "attempt", out.Attempt, "reason", out.StatusReason)
	writeJSON(w, http.StatusOK, toAPIJob(out))
	return nil
}
