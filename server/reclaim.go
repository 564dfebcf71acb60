package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// redeliver answers a claim with the job the runner already holds, when it
// holds one it has not started: a runner claims only when it runs nothing,
// so such a job's assignment never reached it (the replica that made it
// died before answering, or the connection broke). It is given again under
// the same lease; without this it would wait on a live runner for ever. It
// reports whether it answered.
//
// The runner is read afresh (the credential's cache may hold it from before
// the assignment): one read per claim request, not per re-check.
func (s *Server) redeliver(ctx context.Context, w http.ResponseWriter, cached *store.Runner) (bool, error) {
	rn, err := s.store.RunnerGet(ctx, cached.ID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim: %w", err)
	}
	if rn.JobID == "" {
		return false, nil
	}
	job, err := s.store.JobGet(ctx, rn.JobID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim: %w", err)
	}
	if job.RunnerID != rn.ID || job.Status != api.StatusDownloading {
		return false, nil
	}
	s.log.Warn("job assigned again: the runner claims while holding it, so it never received its assignment",
		"job", job.ID, "run", job.RunName, "runner", rn.Name, "lease", job.Lease)
	writeJSON(w, http.StatusOK, api.Assignment{Job: toAPIJob(job), Lease: job.Lease})
	return true, nil
}
