package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/version"
)

// maxWait bounds a long-poll: a runner may ask to wait up to it. Waiters
// also re-check the store now and then (Config.Recheck), which picks up
// work queued by another replica.
const maxWait = 60 * time.Second

// checkRegistration trims and checks what a registering or joining runner
// says of itself.
func checkRegistration(req *api.RunnerRegisterRequest) error {
	req.Name = strings.TrimSpace(req.Name)
	if err := api.CheckRunnerName(req.Name); err != nil {
		return invalid("%v", err)
	}
	if len(req.Hostname) > 255 || api.HasControl(req.Hostname) {
		return invalid("runner hostname %q must be at most 255 bytes without control characters", req.Hostname)
	}
	if req.Resources.CPUs < 1 || req.Resources.MemoryMiB < 1 {
		return invalid("runner resources must report at least one CPU and some memory")
	}
	return nil
}

// tokenID is t's ID, "" for nil.
func tokenID(t *store.Token) string {
	if t == nil {
		return ""
	}
	return t.ID
}

func (s *Server) handleRunnerRegister(w http.ResponseWriter, r *http.Request, u *store.User) error {
	var req api.RunnerRegisterRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := checkRegistration(&req); err != nil {
		return err
	}
	if req.Shared && !u.Admin {
		return errAdminOnly("register a shared runner (one that takes every user's jobs)")
	}
	token := newToken(runnerTokenPrefix)
	now := s.cfg.Now()
	rn, err := s.store.RunnerCreate(r.Context(), store.RunnerCreateParams{
		ID: newID(), UserID: u.ID, Name: req.Name, Hostname: req.Hostname, Executor: req.Executor, Version: req.Version,
		Resources: req.Resources, TokenHash: hashToken(token), TokenExpiresAt: now.Add(s.cfg.RunnerTokenTTL), Now: now,
		TokenID: tokenID(requestToken(r)),
		Shared:  req.Shared,
	})
	if err != nil {
		return fmt.Errorf("register runner: %w", err)
	}
	s.log.Info("runner registered", "runner", rn.Name, "id", rn.ID, "user", u.Name, "shared", rn.Shared, "cpus", req.Resources.CPUs, "gpus", len(req.Resources.GPUs))
	s.checkRunnerVersion(rn.Name, rn.ID, req.Version)
	s.wakeAutoscaler() // a job nothing fitted may fit it
	s.events.publish(u.ID, api.EventRunners)
	writeJSON(w, http.StatusCreated, api.RunnerRegisterResponse{
		RunnerID: rn.ID, Token: token, ExpiresAt: rn.TokenExpiresAt,
		HeartbeatInterval: api.Duration(heartbeatInterval(s.cfg.HeartbeatTimeout)), ClaimBeats: true,
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
	s.checkRunnerVersion(rn.Name, rn.ID, req.Version)
	s.wakeAutoscaler()
	s.events.publish(rn.UserID, api.EventRunners, api.EventInstances)
	writeJSON(w, http.StatusCreated, api.RunnerRegisterResponse{
		RunnerID: rn.ID, Token: token, ExpiresAt: rn.TokenExpiresAt,
		HeartbeatInterval: api.Duration(heartbeatInterval(s.cfg.HeartbeatTimeout)), ClaimBeats: true,
	})
	return nil
}

// checkRunnerVersion warns of a runner built from another version than the
// server: it may speak an older API. `dstack runners --json` shows each
// runner's version.
func (s *Server) checkRunnerVersion(name, id, v string) {
	if v == version.Version {
		return
	}
	s.log.Warn("runner of another version registered: update it (dstack-runner version prints its version)",
		"runner", name, "id", id, "runner_version", v, "server_version", version.Version)
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
			InterruptedAt: rn.InterruptedAt, InterruptionReason: rn.InterruptionReason, Shared: rn.Shared,
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
	now := s.cfg.Now()
	if rn.Online && req.Resources == nil {
		// The usual beat: written with the others (heartbeats.go).
		s.beats.note(rn.ID, now)
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	// A runner coming back online, or reporting its resources: at once.
	if err := s.store.RunnerHeartbeat(r.Context(), store.RunnerHeartbeatParams{ID: rn.ID, Now: now, Resources: req.Resources}); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if !rn.Online {
		s.forgetRunner(rn.ID) // its cached copy says offline
		s.events.publish(rn.UserID, api.EventRunners)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// runnersRevived tells the users of runners that a written heartbeat
// brought back online.
func (s *Server) runnersRevived(ids []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	users := map[string]bool{}
	for _, id := range ids {
		s.forgetRunner(id)
		rn, err := s.store.RunnerGet(ctx, id)
		if err != nil {
			continue
		}
		s.log.Info("runner back online", "runner", rn.Name, "id", rn.ID)
		if !users[rn.UserID] {
			users[rn.UserID] = true
			s.events.publish(rn.UserID, api.EventRunners)
		}
	}
}

// handleRunnerOffline marks a runner that shuts down offline at once.
func (s *Server) handleRunnerOffline(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	s.beats.forget(rn.ID) // an unwritten beat must not bring it back
	defer s.forgetRunner(rn.ID)
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
// A runner that goes away while it waits ends its request normally.
func (s *Server) handleClaim(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	var req api.ClaimRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	// Up to a quarter less than asked, at random: runners that started
	// together (after a restart of the server, say) do not come back
	// together wait after wait.
	wait := min(time.Duration(req.Wait), maxWait)
	if wait >= 4 {
		wait -= rand.N(wait / 4) //nolint:gosec // jitter, not a secret
	}
	ctx := r.Context()
	var err error
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	var re *time.Timer
	defer func() {
		if re != nil {
			re.Stop()
		}
	}()
	// The runner is heard for as long as it waits (ClaimBeats).
	defer s.beats.hold(rn.ID, s.cfg.Now())()
	wt := s.queue.claimWaiter(rn, freeShape(req.Free))
	defer wt.leave()
	// A runner back for another wait, with nothing changed since its last
	// one ended empty, waits without looking (queue.idleSince); its re-check
	// comes when it would have come.
	look, lookedAt, reIn := true, time.Time{}, time.Duration(0)
	steady := time.Duration(req.Wait) >= idleWait && wt.mayIdle
	if steady {
		if at, ok := wt.idleSince(time.Now()); ok {
			look, lookedAt, reIn = false, at, max(0, s.queue.recheck-time.Since(at))
		}
	}
	for {
		tok := wt.arm()
		if look {
			lookedAt = time.Now()
			var job *store.Job
			onFreshStack(func() { // this goroutine waits long: keep its stack small
				job, err = s.claim(ctx, rn, req.Free)
			})
			if err == nil {
				wt.leave()
				wt.done(tok, true)
				wt.busy()
				writeJSON(w, http.StatusOK, api.Assignment{Job: toAPIJob(job), Lease: job.Lease})
				return nil
			}
			if ctx.Err() != nil {
				// The runner went away (it restarts, or its wait ended on its
				// side): nothing failed, and writeError says so (499, debug).
				wt.pass(tok)
				return fmt.Errorf("claim: %w", ctx.Err())
			}
			if !errors.Is(err, store.ErrNotFound) {
				wt.pass(tok) // the job may fit this runner: another may take it
				return fmt.Errorf("claim: %w", err)
			}
			wt.done(tok, false)
			reIn = s.queue.recheckAfter()
		}
		look = true
		if re == nil {
			re = time.NewTimer(reIn)
		} else {
			re.Reset(reIn)
		}
		select {
		case <-wt.ch:
		case <-re.C:
		case <-deadline.C:
			if steady {
				wt.idleEnd(lookedAt)
			}
			w.WriteHeader(http.StatusNoContent)
			return nil
		case <-ctx.Done():
			return fmt.Errorf("wait for a job: %w", ctx.Err())
		}
	}
}

// claim assigns rn a pending job that fits free, if there is one
// (store.ErrNotFound otherwise). A runner claims only when it runs
// nothing: a job it holds that has not started never reached it, and is
// assigned again (Redeliver).
func (s *Server) claim(ctx context.Context, rn *store.Runner, free api.HostResources) (*store.Job, error) {
	now := s.cfg.Now()
	job, err := s.store.JobClaimNext(ctx, claimParams(rn, free, now))
	s.metrics.looked(err)
	if err != nil {
		return nil, err
	}
	s.assigned(job, rn, now)
	return job, nil
}

// claimParams is rn's claim of a job that fits free.
func claimParams(rn *store.Runner, free api.HostResources, now time.Time) store.JobClaimNextParams {
	return store.JobClaimNextParams{RunnerID: rn.ID, UserID: rn.UserID, Free: free, Now: now, Redeliver: true}
}

// assigned records that rn claimed job at now: its attempt, the metrics,
// the events of the users concerned, the log.
func (s *Server) assigned(job *store.Job, rn *store.Runner, now time.Time) {
	if job.Redelivered {
		s.log.Warn("job assigned again: the runner claims while holding it, so it never received its assignment",
			"job", job.ID, "run", job.RunName, "runner", rn.Name, "lease", job.Lease)
		return
	}
	s.markAttempt(job, rn)
	s.metrics.observeClaim(job, now)
	s.events.publish(job.UserID, api.EventRuns, api.EventRunners)
	if job.UserID != rn.UserID {
		s.events.publish(rn.UserID, api.EventRunners)
	}
	s.log.Info("job assigned", "job", job.ID, "run", job.RunName, "workflow", job.Workflow, "runner", rn.Name, "lease", job.Lease)
}

// idleWait is the shortest claim wait after which a runner counts as idle
// (queue.idleSince): runners wait 30s by default.
const idleWait = 5 * time.Second

// freeShape is the part of a claim's free resources that decides which
// jobs fit.
func freeShape(f api.HostResources) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d/%d", f.CPUs, f.MemoryMiB, len(f.GPUs))
	if len(f.GPUs) > 0 {
		fmt.Fprintf(&b, "/%s/%d", strings.ToLower(f.GPUs[0].Name), f.GPUs[0].MemoryMiB)
	}
	return b.String()
}

// runnerJob loads a job for the runner that holds it under the lease in the
// request. A job of another runner is not found; a stale lease is lost.
func (s *Server) runnerJob(r *http.Request, rn *store.Runner) (*store.Job, error) {
	lease, err := requestLease(r)
	if err != nil {
		return nil, err
	}
	return s.checkRunnerJob(r.Context(), rn, r.PathValue("id"), lease)
}

// requestLease reads the lease header of a runner's request about its job.
func requestLease(r *http.Request) (int64, error) {
	lease, err := strconv.ParseInt(r.Header.Get(api.LeaseHeader), 10, 64)
	if err != nil {
		return 0, invalid("missing or malformed %s header: send the lease of the job's assignment", api.LeaseHeader)
	}
	return lease, nil
}

// checkRunnerJob loads job id for the runner that holds it under lease, with
// runnerJob's errors.
func (s *Server) checkRunnerJob(ctx context.Context, rn *store.Runner, id string, lease int64) (*store.Job, error) {
	job, err := s.store.JobGet(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && job.UserID != rn.UserID && !takesAnyones(rn)) {
		return nil, notFound("no job %s", id)
	}
	if err != nil {
		return nil, err
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
	// The change itself checks the job is the runner's under the lease;
	// only when it is not is the job read, to say why.
	lease, err := requestLease(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	p := store.JobSetStatusParams{
		ID: id, RunnerID: rn.ID, Lease: lease, Status: req.Status, ExitCode: req.ExitCode, Reason: req.Reason, Now: s.cfg.Now(),
	}
	if req.Status.Finished() && req.LogUnsent > 0 {
		p.LogEnd, p.LogMissing = s.logShortfall(r.Context(), id, req)
	}
	var (
		job, next *store.Job
		claimed   bool // the end was made with the next claim
	)
	if req.Next != nil && req.Status.Finished() {
		// The end and the next claim share a transaction; where that fails
		// the end is made alone, and the runner claims as usual if the
		// claim fails after it. A claim that finds nothing counts as a
		// look for the runner's next wait (queue.idleSince), as the end of
		// an empty wait does: the wait that follows need not look again.
		wt := s.queue.claimWaiter(rn, freeShape(req.Next.Free))
		wt.mark()
		lookedAt := time.Now()
		job, next, err = s.store.JobEndAndClaim(r.Context(), p, claimParams(rn, req.Next.Free, p.Now))
		claimed = err == nil
		switch {
		case next != nil:
			wt.busy()
			s.metrics.looked(nil)
		case claimed:
			s.metrics.looked(store.ErrNotFound)
			wt.idleEnd(lookedAt)
		}
		if err != nil && !errors.Is(err, store.ErrLeaseLost) && !errors.Is(err, store.ErrNotFound) && r.Context().Err() == nil {
			s.log.Warn("end a job with its runner's next claim; ending it alone", "job", id, "runner", rn.Name, "err", err)
			job, err = s.store.JobSetStatus(r.Context(), p)
		}
	} else {
		job, err = s.store.JobSetStatus(r.Context(), p)
	}
	if errors.Is(err, store.ErrLeaseLost) || errors.Is(err, store.ErrNotFound) {
		if _, cerr := s.checkRunnerJob(r.Context(), rn, id, lease); cerr != nil {
			return cerr
		}
	}
	if err != nil {
		return err
	}
	if job.LogMissing > 0 {
		s.log.Warn("job finished with an incomplete log: its runner keeps sending the rest", "job", job.ID, "run", job.RunName,
			"status", job.Status, "missing", job.LogMissing)
	}
	if job.Status.Finished() {
		if s.cfg.logStore() == LogStoreDatabase {
			s.endLog(job.ID)
		} else {
			s.finishLog(job.ID)
		}
		if job.Unblocks {
			// Jobs that waited for it are queued, or its user's cap
			// has room again: a waiting runner may claim one now.
			s.queue.wake(userKey(job.UserID))
		}
		s.queue.wake(jobKey(job.ID))
		s.metrics.jobFinished(job)
		s.wakeAutoscaler() // its runner is free, and its instance may idle
		s.dropCheckpoint(job)
	}
	s.events.publish(rn.UserID, api.EventRuns, api.EventRunners)
	s.log.Info("job status", "job", job.ID, "run", job.RunName, "status", job.Status, "runner", rn.Name)
	res := api.JobStatusResult{Job: toAPIJob(job)}
	switch {
	case next != nil:
		s.assigned(next, rn, p.Now)
		res.Next = &api.Assignment{Job: toAPIJob(next), Lease: next.Lease}
	case req.Next != nil && job.Status.Finished() && !claimed:
		// The end is recorded whatever the claim does: a claim that fails
		// only leaves the runner to claim as usual.
		next, err := s.claim(r.Context(), rn, req.Next.Free)
		switch {
		case err == nil:
			res.Next = &api.Assignment{Job: toAPIJob(next), Lease: next.Lease}
		case !errors.Is(err, store.ErrNotFound) && r.Context().Err() == nil:
			s.log.Warn("claim the runner's next job with its report of the end; it claims on its own", "runner", rn.Name, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, res)
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
		var job *store.Job
		onFreshStack(func() { job, err = s.runnerJob(r, rn) }) // this goroutine waits long
		if err != nil {
			return err
		}
		if job.StopRequested != "" {
			writeJSON(w, http.StatusOK, api.StopSignal{Stop: true, Abort: job.StopRequested == "abort"})
			return nil
		}
		if err := sleepUntil(r.Context(), woken, deadline.C, s.queue.recheckAfter()); err != nil {
			writeJSON(w, http.StatusOK, api.StopSignal{})
			return nil
		}
	}
}

// sleepUntil waits for woken or a recheck; it fails when the deadline passes
// or the request ends.
func sleepUntil(ctx context.Context, woken <-chan struct{}, deadline <-chan time.Time, recheck time.Duration) error {
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

// pruneEvery is how often, at most, offline runners past retention are
// looked for.
const pruneEvery = time.Minute

// reapLoop marks runners that stopped heartbeating offline and requeues
// their jobs, and removes the self-hosted runners offline for longer than
// RunnerRetention.
func (s *Server) reapLoop(ctx context.Context) {
	every := max(s.cfg.HeartbeatTimeout/4, 100*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	var pruned time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.reap(ctx, &pruned)
	}
}

// reap is one pass of reapLoop; pruned is when runners were last pruned.
func (s *Server) reap(ctx context.Context, pruned *time.Time) {
	// The heartbeats this replica heard are written first, so that no
	// runner it heard is marked offline; another replica's may be
	// unwritten for up to flushEvery, which the cut allows for.
	if err := s.beats.flush(ctx); err != nil {
		if ctx.Err() == nil {
			s.log.Error("write runner heartbeats before marking silent runners offline", "err", err)
		}
		return
	}
	now := s.cfg.Now()
	if s.cfg.RunnerRetention > 0 && now.Sub(*pruned) >= pruneEvery {
		*pruned = now
		s.pruneRunners(ctx, now)
	}
	// A runner is silent for the timeout counted while the server was up
	// to hear it: a server back from an outage longer than the timeout
	// would otherwise take every runner whose next beat is yet to come
	// for gone, and requeue the jobs they are running.
	cut := now.Add(-s.cfg.HeartbeatTimeout - flushEvery(s.cfg.HeartbeatTimeout))
	if !s.upSince.Before(cut) {
		return
	}
	jobs, err := s.store.RunnerMarkOffline(ctx, store.RunnerMarkOfflineParams{
		HeartbeatBefore: cut, MaxAttempts: s.cfg.MaxAttempts, Now: now,
	})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("mark offline runners", "err", err)
		}
		return
	}
	for _, j := range jobs {
		s.log.Warn("job interrupted: its runner stopped responding", "job", j.ID, "run", j.RunName, "status", j.Status, "attempt", j.Attempt)
		s.metrics.interrupted.Inc()
		s.queue.wake(userKey(j.UserID))
		s.queue.wake(jobKey(j.ID))
		if j.Status.Finished() {
			s.finishLog(j.ID)
		}
	}
	s.publishJobs(jobs, api.EventRuns, api.EventRunners)
}

// pruneRunners removes the self-hosted runners offline since before
// now - RunnerRetention.
func (s *Server) pruneRunners(ctx context.Context, now time.Time) {
	gone, err := s.store.RunnerDeleteOffline(ctx, store.RunnerDeleteOfflineParams{HeartbeatBefore: now.Add(-s.cfg.RunnerRetention)})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("remove offline runners", "err", err)
		}
		return
	}
	users := map[string]bool{}
	for _, r := range gone {
		s.log.Info("offline runner removed", "runner", r.Name, "id", r.ID, "last_heartbeat", r.LastHeartbeat, "retention", s.cfg.RunnerRetention)
		// A failure is logged and counted by auditServer; the removal
		// stands, as there is no one to answer.
		_ = s.auditServer(ctx, auditRunnerRm, r.Name, map[string]any{"id": r.ID, "owner": s.userName(ctx, r.UserID),
			"last_heartbeat": r.LastHeartbeat.UTC(), "reason": "offline longer than --runner-retention " + s.cfg.RunnerRetention.String()})
		if !users[r.UserID] {
			users[r.UserID] = true
			s.events.publish(r.UserID, api.EventRunners)
		}
	}
}

// handleRunnerRemove removes the offline runners whose ID or name is the
// path's ref: the caller's own, or anyone's for an admin. Runners of that
// name that are online, run a job or run on an on-demand instance are kept
// and said so; when none is removed the answer is 409 with why.
func (s *Server) handleRunnerRemove(w http.ResponseWriter, r *http.Request, u *store.User) error {
	ref := r.PathValue("ref")
	p := store.RunnerListParams{UserID: u.ID}
	if u.Admin {
		p.UserID = ""
	}
	rs, err := s.store.RunnerList(r.Context(), p)
	if err != nil {
		return fmt.Errorf("list runners: %w", err)
	}
	var matches []*store.Runner
	for _, rn := range rs {
		if rn.ID == ref {
			matches = []*store.Runner{rn}
			break
		}
		if rn.Name == ref {
			matches = append(matches, rn)
		}
	}
	if len(matches) == 0 {
		return api.Errorf(http.StatusNotFound, api.CodeNotFound, "no runner is named %q or has that ID: `dstack runners` lists them", ref)
	}
	out := api.RunnerRemoveResponse{Removed: []api.RunnerRef{}}
	users := map[string]bool{}
	for _, rn := range matches {
		ref := api.RunnerRef{ID: rn.ID, Name: rn.Name}
		switch {
		case rn.InstanceID != "":
			ref.Reason = fmt.Sprintf("it runs on on-demand instance %s and goes with it (`dstack on-demand` manages instances)", rn.InstanceID)
		case rn.Online && rn.JobID != "":
			ref.Reason = fmt.Sprintf("it is online and runs a job of run %s: only offline runners are removed", rn.RunName)
		case rn.Online:
			ref.Reason = "it is online: stop its dstack-runner first (only offline runners are removed)"
		}
		if ref.Reason == "" {
			err := s.store.RunnerDelete(r.Context(), store.RunnerDeleteParams{ID: rn.ID})
			switch {
			case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
				ref.Reason = "it came back online or changed meanwhile: try again"
			case err != nil:
				return fmt.Errorf("remove runner %s: %w", rn.ID, err)
			}
		}
		if ref.Reason != "" {
			out.Kept = append(out.Kept, ref)
			continue
		}
		s.forgetRunner(rn.ID)
		s.log.Info("runner removed", "runner", rn.Name, "id", rn.ID, "by", u.Name)
		out.Removed = append(out.Removed, ref)
		users[rn.UserID] = true
		if err := s.audit(r, u, auditRunnerRm, rn.Name, map[string]any{"id": rn.ID, "owner": s.userName(r.Context(), rn.UserID), "hostname": rn.Hostname}); err != nil {
			for id := range users {
				s.events.publish(id, api.EventRunners)
			}
			return err
		}
	}
	if len(out.Removed) == 0 {
		k := out.Kept[0]
		msg := fmt.Sprintf("runner %s (%s) is kept: %s", k.Name, k.ID, k.Reason)
		if len(out.Kept) > 1 {
			msg = fmt.Sprintf("none of the %d runners named %q is offline; the first, %s, is kept: %s", len(out.Kept), ref, k.ID, k.Reason)
		}
		return api.Errorf(http.StatusConflict, api.CodeConflict, "%s", msg)
	}
	for id := range users {
		s.events.publish(id, api.EventRunners)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
