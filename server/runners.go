package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// Long-poll bounds: a runner may ask to wait up to maxWait; waiters re-check
// the store every recheck, which picks up work queued by another replica.
const (
	maxWait = 60 * time.Second
	recheck = 5 * time.Second
)

// checkRegistration trims and checks what a registering or joining runner
// says of itself.
func checkRegistration(req *api.RunnerRegisterRequest) error {
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" || len(req.Name) > 200 {
		return invalid("runner name must be 1 to 200 characters")
	}
	if req.Resources.CPUs < 1 || req.Resources.MemoryMiB < 1 {
		return invalid("runner resources must report at least one CPU and some memory")
	}
	return nil
}

func (s *Server) handleRunnerRegister(w http.ResponseWriter, r *http.Request, u *store.User) error {
	var req api.RunnerRegisterRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := checkRegistration(&req); err != nil {
		return err
	}
	token := newToken(runnerTokenPrefix)
	now := s.cfg.Now()
	rn, err := s.store.RunnerCreate(r.Context(), store.RunnerCreateParams{
		ID: newID(), UserID: u.ID, Name: req.Name, Hostname: req.Hostname, Executor: req.Executor, Version: req.Version,
		Resources: req.Resources, TokenHash: hashToken(token), TokenExpiresAt: now.Add(s.cfg.RunnerTokenTTL), Now: now,
	})
	if err != nil {
		return fmt.Errorf("register runner: %w", err)
	}
	s.log.Info("runner registered", "runner", rn.Name, "id", rn.ID, "user", u.Name, "cpus", req.Resources.CPUs, "gpus", len(req.Resources.GPUs))
	s.wakeAutoscaler() // a job nothing fitted may fit it
	s.events.publish(u.ID, api.EventRunners)
	writeJSON(w, http.StatusCreated, api.RunnerRegisterResponse{
		RunnerID: rn.ID, Token: token, ExpiresAt: rn.TokenExpiresAt,
		HeartbeatInterval: api.Duration(s.cfg.HeartbeatTimeout / 3),
	})
	return nil
}

// handleRunnerJoin registers the runner of an on-demand instance by the
// instance's single-use join token, sent in the body with no Authorization
// header: the token stands in for a user's, and works for its instance only.
func (s *Server) handleRunnerJoin(w http.ResponseWriter, r *http.Request) {
	if err := s.runnerJoin(w, r); err != nil {
		s.writeError(w, r, err)
	}
}

func (s *Server) runnerJoin(w http.ResponseWriter, r *http.Request) error {
	var req api.RunnerJoinRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	refused := api.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated,
		"join token refused: it is unknown, already used, or its instance is no longer launching")
	if strings.TrimSpace(req.JoinToken) == "" {
		return refused
	}
	if err := checkRegistration(&req.RunnerRegisterRequest); err != nil {
		return err
	}
	token := newToken(runnerTokenPrefix)
	now := s.cfg.Now()
	in, rn, err := s.store.InstanceRegister(r.Context(), store.InstanceRegisterParams{
		JoinTokenHash: hashToken(req.JoinToken),
		Runner: store.RunnerCreateParams{
			ID: newID(), Name: req.Name, Hostname: req.Hostname, Executor: req.Executor, Version: req.Version,
			Resources: req.Resources, TokenHash: hashToken(token), TokenExpiresAt: now.Add(s.cfg.RunnerTokenTTL), Now: now,
		},
	})
	if errors.Is(err, store.ErrNotFound) {
		return refused
	}
	if err != nil {
		return fmt.Errorf("join runner: %w", err)
	}
	s.log.Info("on-demand runner joined", "runner", rn.Name, "id", rn.ID, "instance", in.ID, "cloud_id", in.CloudID,
		"instance_type", in.InstanceType, "cpus", req.Resources.CPUs)
	s.wakeAutoscaler()
	s.events.publish(rn.UserID, api.EventRunners, api.EventInstances)
	writeJSON(w, http.StatusCreated, api.RunnerRegisterResponse{
		RunnerID: rn.ID, Token: token, ExpiresAt: rn.TokenExpiresAt,
		HeartbeatInterval: api.Duration(s.cfg.HeartbeatTimeout / 3),
	})
	return nil
}

func (s *Server) handleRunnerList(w http.ResponseWriter, r *http.Request, u *store.User) error {
	rs, err := s.store.RunnerList(r.Context(), store.RunnerListParams{UserID: u.ID})
	if err != nil {
		return fmt.Errorf("list runners: %w", err)
	}
	out := make([]api.Runner, 0, len(rs))
	for _, rn := range rs {
		st := api.RunnerOffline
		if rn.Online {
			st = api.RunnerOnline
		}
		ar := api.Runner{
			ID: rn.ID, Name: rn.Name, Hostname: rn.Hostname, Status: st, Executor: rn.Executor, Version: rn.Version,
			Resources: rn.Resources, JobID: rn.JobID, RunName: rn.RunName, RegisteredAt: rn.RegisteredAt, LastHeartbeat: rn.LastHeartbeat,
			InterruptedAt: rn.InterruptedAt, InterruptionReason: rn.InterruptionReason,
		}
		if rn.InstanceID != "" {
			ar.Backend, ar.Region, ar.InstanceType, ar.InstanceState = rn.Backend, rn.Region, rn.InstanceType, string(rn.InstanceState)
			ar.PurchaseType = api.PurchaseOnDemand
			if rn.Spot {
				ar.PurchaseType = api.PurchaseSpot
			}
		}
		out = append(out, ar)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	var req api.HeartbeatRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := s.store.RunnerHeartbeat(r.Context(), store.RunnerHeartbeatParams{ID: rn.ID, Now: s.cfg.Now(), Resources: req.Resources}); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if !rn.Online {
		s.events.publish(rn.UserID, api.EventRunners) // back online
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleRunnerOffline marks a runner that shuts down offline at once.
func (s *Server) handleRunnerOffline(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	jobs, err := s.store.RunnerMarkOffline(r.Context(), store.RunnerMarkOfflineParams{
		RunnerID: rn.ID, MaxAttempts: s.cfg.MaxAttempts, Now: s.cfg.Now(),
	})
	if err != nil {
		return fmt.Errorf("mark runner offline: %w", err)
	}
	s.log.Info("runner went offline", "runner", rn.Name, "id", rn.ID, "jobs_requeued", len(jobs))
	s.events.publish(rn.UserID, api.EventRunners, api.EventRuns)
	for _, j := range jobs {
		if j.Status == api.StatusPending {
			s.queue.wake(userKey(j.UserID))
		}
	}
	s.wakeAutoscaler()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleClaim assigns the runner a job, waiting for one up to the asked time.
func (s *Server) handleClaim(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	var req api.ClaimRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	wait := min(time.Duration(req.Wait), maxWait)
	ctx := r.Context()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		woken := s.queue.watch(userKey(rn.UserID))
		job, err := s.store.JobClaimNext(ctx, store.JobClaimNextParams{RunnerID: rn.ID, UserID: rn.UserID, Free: req.Free, Now: s.cfg.Now()})
		if err == nil {
			s.markAttempt(job, rn)
			s.metrics.observeClaim(job, s.cfg.Now())
			s.events.publish(rn.UserID, api.EventRuns, api.EventRunners)
			s.log.Info("job assigned", "job", job.ID, "run", job.RunName, "workflow", job.Workflow, "runner", rn.Name, "lease", job.Lease)
			writeJSON(w, http.StatusOK, api.Assignment{Job: toAPIJob(job), Lease: job.Lease})
			return nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("claim: %w", err)
		}
		re := time.NewTimer(recheck)
		select {
		case <-woken:
		case <-re.C:
		case <-deadline.C:
			re.Stop()
			w.WriteHeader(http.StatusNoContent)
			return nil
		case <-ctx.Done():
			re.Stop()
			return nil
		}
		re.Stop()
	}
}

// runnerJob loads a job for the runner that holds it under the lease in the
// request. A job of another runner is not found; a stale lease is lost.
func (s *Server) runnerJob(r *http.Request, rn *store.Runner) (*store.Job, error) {
	id := r.PathValue("id")
	job, err := s.store.JobGet(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && job.UserID != rn.UserID) {
		return nil, notFound("no job %s", id)
	}
	if err != nil {
		return nil, err
	}
	lease, perr := strconv.ParseInt(r.Header.Get(api.LeaseHeader), 10, 64)
	if perr != nil {
		return nil, invalid("missing or malformed %s header: send the lease of the job's assignment", api.LeaseHeader)
	}
	if job.RunnerID != rn.ID || job.Lease != lease || !job.Status.Active() {
		return nil, store.ErrLeaseLost
	}
	return job, nil
}

func (s *Server) handleJobCode(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	job, err := s.runnerJob(r, rn)
	if err != nil {
		return err
	}
	rc, size, err := s.blobs.Open(r.Context(), codeKey(job.CodeID), 0)
	if err != nil {
		return fmt.Errorf("open code %s: %w", job.CodeID, err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	return copyBody(w, rc)
}

// runnerStatuses are the states a runner may report.
var runnerStatuses = map[api.JobStatus]bool{
	api.StatusRunning: true, api.StatusUploading: true, api.StatusDone: true,
	api.StatusFailed: true, api.StatusStopped: true, api.StatusAborted: true,
}

func (s *Server) handleJobStatus(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	var req api.JobStatusUpdate
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Status == api.StatusInterrupted {
		return s.handleJobInterrupted(w, r, rn, req) // interruption.go
	}
	if !runnerStatuses[req.Status] {
		return invalid("a runner cannot set status %q", req.Status)
	}
	job, err := s.runnerJob(r, rn)
	if err != nil {
		return err
	}
	job, err = s.store.JobSetStatus(r.Context(), store.JobSetStatusParams{
		ID: job.ID, RunnerID: rn.ID, Lease: job.Lease, Status: req.Status, ExitCode: req.ExitCode, Reason: req.Reason, Now: s.cfg.Now(),
	})
	if err != nil {
		return err
	}
	if job.Status.Finished() {
		_ = s.logs.Finish(job.ID)
		s.queue.wake(userKey(job.UserID)) // dependents may be queued now
		s.queue.wake(jobKey(job.ID))
		s.metrics.jobFinished(job)
		s.wakeAutoscaler() // its runner is free, and its instance may idle
	}
	s.events.publish(rn.UserID, api.EventRuns, api.EventRunners)
	s.log.Info("job status", "job", job.ID, "run", job.RunName, "status", job.Status, "runner", rn.Name)
	writeJSON(w, http.StatusOK, toAPIJob(job))
	return nil
}

// handleJobWaitStop answers when the user stops the job, or after the wait.
func (s *Server) handleJobWaitStop(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
	if err != nil || wait < 0 {
		wait = 0
	}
	wait = min(wait, maxWait)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		woken := s.queue.watch(jobKey(r.PathValue("id")))
		job, err := s.runnerJob(r, rn)
		if err != nil {
			return err
		}
		if job.StopRequested != "" {
			writeJSON(w, http.StatusOK, api.StopSignal{Stop: true, Abort: job.StopRequested == "abort"})
			return nil
		}
		if err := sleepUntil(r.Context(), woken, deadline.C); err != nil {
			writeJSON(w, http.StatusOK, api.StopSignal{})
			return nil
		}
	}
}

// sleepUntil waits for woken or a recheck; it fails when the deadline passes
// or the request ends.
func sleepUntil(ctx context.Context, woken <-chan struct{}, deadline <-chan time.Time) error {
	re := time.NewTimer(recheck)
	defer re.Stop()
	select {
	case <-woken:
		return nil
	case <-re.C:
		return nil
	case <-deadline:
		return context.DeadlineExceeded
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reapLoop marks runners that stopped heartbeating offline and requeues
// their jobs.
func (s *Server) reapLoop(ctx context.Context) {
	every := max(s.cfg.HeartbeatTimeout/4, 100*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.cfg.Now()
		jobs, err := s.store.RunnerMarkOffline(ctx, store.RunnerMarkOfflineParams{
			HeartbeatBefore: now.Add(-s.cfg.HeartbeatTimeout), MaxAttempts: s.cfg.MaxAttempts, Now: now,
		})
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("mark offline runners", "err", err)
			}
			continue
		}
		for _, j := range jobs {
			s.log.Warn("job interrupted: its runner stopped responding", "job", j.ID, "run", j.RunName, "status", j.Status, "attempt", j.Attempt)
			s.metrics.interrupted.Inc()
			s.queue.wake(userKey(j.UserID))
			s.queue.wake(jobKey(j.ID))
			if j.Status.Finished() {
				_ = s.logs.Finish(j.ID)
			}
		}
		s.publishJobs(jobs, api.EventRuns, api.EventRunners)
	}
}
