package sqlcore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// JobGet finds a job by ID.
func (s *Store) JobGet(ctx context.Context, id string) (*store.Job, error) {
	j, err := scanJob(s.read.QueryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return j, nil
}

// claimSQL is JobClaimNext's main statement. The inner SELECT picks, among
// the pending jobs that fit the runner's free resources, that the runner may
// take (its user's, or anyone's for a shared runner or the runner of an
// on-demand instance), and whose user is under their cap of active jobs
// (users.max_running, 0 for none), the job of the user whose last claim is
// the oldest (users.claim_seq), their first in queue order; the UPDATE takes
// it. JobClaimNext then moves the user's claim_seq past every other user's,
// so the next claim goes to another user with a job that fits: free runners
// go round-robin by user, FIFO within a user.
//
// Claims are serialised (the single writer on SQLite, an advisory lock on
// PostgreSQL), so each sees the turns and counts the previous ones left. On
// PostgreSQL the inner SELECT also locks the job and skips rows others hold
// (a stop request, say), and the row is checked again once locked.
//
// The runner of an instance bound to an image (store.Instance.ImageBound:
// a Kubernetes runner Pod made of the image) takes only the jobs of that
// image (jobs.image, ” for jobs with none); any other runner takes any.
//
// A runner whose machine is being reclaimed (RunnerInterrupt) claims
// nothing; on PostgreSQL the claim reads that under a share lock too.
//
// The runner of an on-demand instance claims only while the instance is
// running. On PostgreSQL the claim reads the instance's state under a share
// lock, so it either waits for an InstanceSetState that moves the instance on
// and then claims nothing, or makes that InstanceSetState wait and see the
// job, which it then requeues.
//
// $1 runner, $2 now, $3 user, $4 free CPUs, $5 free memory, $6 free GPUs,
// $7 free GPU memory, $8 free GPU name (lowercased).
func claimSQL(d Dialect) string {
	return `UPDATE jobs SET status = 'downloading', runner_id = $1, claimed_at = $2, lease = lease + 1,
		status_reason = ''
		WHERE id = (SELECT j.id FROM jobs j
			WHERE j.status = 'pending'
			AND (j.user_id = $3 OR (SELECT r.shared OR r.instance_id IS NOT NULL FROM runners r WHERE r.id = $1))
			AND j.cpu <= $4 AND j.memory_mib <= $5 AND j.gpu_count <= $6 AND j.gpu_memory_mib <= $7
			AND (j.gpu_name = '' OR ` + d.Strpos + `($8, j.gpu_name) > 0)
			AND j.image = COALESCE((SELECT i.image FROM runners r JOIN instances i ON i.id = r.instance_id
				WHERE r.id = $1 AND i.image_bound), j.image)
			AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = j.user_id AND u.max_running > 0
				AND (SELECT COUNT(*) FROM jobs a WHERE a.user_id = u.id AND a.status IN ` + activeStatuses + `) >= u.max_running)
			ORDER BY (SELECT u.claim_seq FROM users u WHERE u.id = j.user_id), j.queue_seq LIMIT 1` + d.SkipLocked + `)
		AND COALESCE((SELECT i.state FROM instances i
			WHERE i.id = (SELECT r.instance_id FROM runners r WHERE r.id = $1)` + d.ForShare + `), 'running') = 'running'
		AND (SELECT r.interrupted_at FROM runners r WHERE r.id = $1` + d.ForKeyShare + `) IS NULL
		RETURNING ` + jobColumns
}

// JobClaimNext assigns the runner the next pending job that fits p.Free, by
// turn of user (claimSQL). The runner's GPUs are taken as alike: the first
// one's name and memory stand for all of them. Claims made at the same time
// share a transaction (claimBatch).
func (s *Store) JobClaimNext(ctx context.Context, p store.JobClaimNextParams) (*store.Job, error) {
	j, err := s.claims.do(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("claim job for runner %s: %w", p.RunnerID, err)
	}
	return j, nil
}

// claimOne is one claim through claimSQL; the caller holds the claim lock.
func (s *Store) claimOne(ctx context.Context, q Querier, p store.JobClaimNextParams) (*store.Job, error) {
	var (
		gpuName string
		gpuMem  int64
	)
	if len(p.Free.GPUs) > 0 {
		gpuName = strings.ToLower(p.Free.GPUs[0].Name)
		gpuMem = p.Free.GPUs[0].MemoryMiB
	}
	j, err := scanJob(q.QueryRow(ctx, s.claimSQL, p.RunnerID, micros(p.Now), p.UserID,
		p.Free.CPUs, p.Free.MemoryMiB, len(p.Free.GPUs), gpuMem, gpuName))
	if err != nil {
		return nil, err
	}
	if _, err := q.Exec(ctx, `UPDATE users SET claim_seq = (SELECT MAX(claim_seq) FROM users) + 1 WHERE id = $1`, j.UserID); err != nil {
		return nil, err
	}
	return j, nil
}

// JobSetStatus moves an active job to p.Status under its lease. Changes
// made at the same time share a transaction (setStatusBatch).
func (s *Store) JobSetStatus(ctx context.Context, p store.JobSetStatusParams) (*store.Job, error) {
	if !p.Status.Active() && !p.Status.Finished() {
		return nil, fmt.Errorf("set status of job %s: a runner cannot move a job to %q", p.ID, p.Status)
	}
	j, err := s.statuses.do(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("set status of job %s: %w", p.ID, err)
	}
	return j, nil
}

// JobEndAndClaim ends a job and claims its runner's next one in one
// transaction. Calls made at the same time share it (endClaimBatch).
func (s *Store) JobEndAndClaim(ctx context.Context, p store.JobSetStatusParams, next store.JobClaimNextParams) (*store.Job, *store.Job, error) {
	if !p.Status.Finished() {
		return nil, nil, fmt.Errorf("end job %s: %q is not a final state", p.ID, p.Status)
	}
	if next.RunnerID != p.RunnerID {
		return nil, nil, fmt.Errorf("end job %s: the next claim is runner %s's, not runner %s's", p.ID, next.RunnerID, p.RunnerID)
	}
	r, err := s.endClaims.do(ctx, endClaim{end: p, next: next})
	if err != nil {
		return nil, nil, fmt.Errorf("set status of job %s: %w", p.ID, err)
	}
	return r.ended, r.next, nil
}

// endClaim is a call of JobEndAndClaim, endClaimed its outcome.
type endClaim struct {
	end  store.JobSetStatusParams
	next store.JobClaimNextParams
}

type endClaimed struct {
	ended, next *store.Job
}

// endClaimBatch does the ends of reqs as setStatusBatch, then the claims of
// the jobs' runners whose end was made as claimBatch, in one transaction.
// It takes the claim lock first, as claims and RunnerInterrupt do: taken
// after the ends, it would close a cycle with an interruption of one of
// the runners, which holds it while it waits for the runner's job.
func (s *Store) endClaimBatch(ctx context.Context, q Querier, reqs []endClaim) ([]outcome[endClaimed], error) {
	if err := s.claimLock(ctx, q); err != nil {
		return nil, err
	}
	ends := make([]store.JobSetStatusParams, len(reqs))
	nexts := make([]store.JobClaimNextParams, len(reqs))
	for i, r := range reqs {
		ends[i], nexts[i] = r.end, r.next
	}
	// The claims' reads go out with the ends, for every claim: those whose
	// end fails are left out after. Where an end queued jobs that waited for
	// it, the candidates read before are not all there are.
	pre := s.prepareClaimReads(q, nexts)
	ended, settled, err := s.setStatusesWith(ctx, q, ends, &pipelined{stmts: pre.stmts, scan: pre.scan})
	if err != nil {
		return nil, err
	}
	if settled {
		pre.first = nil
	}
	outs := make([]outcome[endClaimed], len(reqs))
	var (
		claims []store.JobClaimNextParams
		of     []int
	)
	for i, o := range ended {
		outs[i] = outcome[endClaimed]{res: endClaimed{ended: o.res}, err: o.err}
		if o.err == nil {
			claims = append(claims, reqs[i].next)
			of = append(of, i)
		}
	}
	if len(claims) == 0 {
		return outs, nil
	}
	claimed, err := s.claimLockedRead(ctx, q, claims, pre)
	if err != nil {
		return nil, err
	}
	for k, o := range claimed {
		if o.err == nil {
			outs[of[k]].res.next = o.res
		}
	}
	return outs, nil
}

// setStatusBatch does the status changes reqs, in their order, in one
// transaction.
//
// A job that ends settles the jobs of its run that wait for it (propagate).
// Only runs that still have waiting jobs need that, and only their rows are
// locked (in ID order, before any job's), so that the transactions ending
// jobs of one such run see each other's outcome. A run has no waiting job
// again once it has none, so the many runs without any are never locked.
// The locks go out with the first changes, in one round trip where the
// database pipelines.
func (s *Store) setStatusBatch(ctx context.Context, q Querier, reqs []store.JobSetStatusParams) ([]outcome[*store.Job], error) {
	outs, _, err := s.setStatusesWith(ctx, q, reqs, nil)
	return outs, err
}

// setStatusesWith is setStatusBatch, which sends also, if not nil, with
// its first changes, in the same round trip where the database pipelines.
// settled reports whether an end settled a run's waiting jobs.
func (s *Store) setStatusesWith(ctx context.Context, q Querier, reqs []store.JobSetStatusParams, also *pipelined) (outs []outcome[*store.Job], settled bool, err error) {
	outs = make([]outcome[*store.Job], len(reqs))
	var ending []any
	for _, p := range reqs {
		if p.Status.Finished() {
			ending = appendNew(ending, p.ID)
		}
	}
	var (
		waits          = map[string]bool{} // the runs locked, which have waiting jobs
		missing, later []int
		round          = make([]int, len(reqs))
	)
	for i := range round {
		round[i] = i
	}
	// A job changed twice in the batch (a runner's resend) changes in a
	// later round, after the first change is read.
	for first := true; len(round) > 0; first = false {
		seen := map[string]bool{}
		var now []int
		for _, i := range round {
			if seen[reqs[i].ID] {
				later = append(later, i)
				continue
			}
			seen[reqs[i].ID] = true
			now = append(now, i)
		}
		var before, after *pipelined
		if first {
			if len(ending) > 0 {
				before = s.lockWaitingRuns(ending, waits)
			}
			after = also
		}
		changed, err := s.setStatuses(ctx, q, reqs, now, before, after)
		if err != nil {
			return nil, false, err
		}
		for _, i := range now {
			p := reqs[i]
			j, ok := changed[p.ID]
			if !ok {
				missing = append(missing, i)
				continue
			}
			outs[i].res = j
			if p.Status.Finished() && waits[j.RunID] {
				changed, err := s.propagate(ctx, q, j, p.Now)
				if err != nil {
					return nil, false, err
				}
				settled = true
				j.Unblocks = j.Unblocks || slices.ContainsFunc(changed, func(c *store.Job) bool { return c.Status == api.StatusPending })
			}
		}
		round, later = later, nil
	}
	if err := s.unchanged(ctx, q, reqs, missing, outs); err != nil {
		return nil, false, err
	}
	return outs, settled, nil
}

// unchanged sets the outcome of the status changes reqs[i], for i in idx,
// that changed nothing: ErrLeaseLost for a job that is not its runner's
// under the lease, or not active, ErrNotFound for no job at all.
func (s *Store) unchanged(ctx context.Context, q Querier, reqs []store.JobSetStatusParams, idx []int, outs []outcome[*store.Job]) error {
	if len(idx) == 0 {
		return nil
	}
	var ids []any
	for _, i := range idx {
		ids = appendNew(ids, reqs[i].ID)
	}
	in, args := s.in("id", 1, ids)
	rows, err := q.Query(ctx, `SELECT id FROM jobs WHERE `+in, args...)
	if err != nil {
		return fmt.Errorf("jobs not changed: %w", err)
	}
	defer rows.Close()
	known := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return fmt.Errorf("jobs not changed: %w", err)
		}
		known[id] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("jobs not changed: %w", err)
	}
	for _, i := range idx {
		if known[reqs[i].ID] {
			outs[i].err = store.ErrLeaseLost
		} else {
			outs[i].err = store.ErrNotFound
		}
	}
	return nil
}

// lockWaitingRuns locks, in ID order, the runs of the jobs ids that have
// waiting jobs, and adds their IDs to locked.
func (s *Store) lockWaitingRuns(ids []any, locked map[string]bool) *pipelined {
	in, args := s.in("j.id", 1, ids)
	return &pipelined{
		stmts: []Stmt{{SQL: `SELECT r.id FROM runs r
			WHERE r.id IN (SELECT j.run_id FROM jobs j WHERE ` + in + `)
			AND EXISTS (SELECT 1 FROM jobs w WHERE w.run_id = r.id AND w.status = 'submitted')
			ORDER BY r.id` + s.d.ForUpdate, Args: args}},
		scan: func(_ int, rows Rows) error {
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return fmt.Errorf("lock runs: %w", err)
				}
				locked[id] = true
			}
			return nil
		},
	}
}

// changeStatuses moves each job v.id that its runner v.runner holds under
// the lease v.lease to v.status at v.at. As in assignJobs, no index serves
// the guard on the status: the planner's count of active jobs is stale as
// soon as a batch of claims commits, and it read every active job through
// an index on status when it believed there were none. A job that ends has
// the size of its log in the database recorded (JobSetLogSize), when there
// is one. The last column is the cap on the job's user's active jobs (0:
// none): an end under a cap frees a place (store.Job.Unblocks).
var changeStatuses = newBulk(`UPDATE jobs SET status = v.status, status_reason = v.reason,
	exit_code = COALESCE(v.exit_code, jobs.exit_code),
	started_at = CASE WHEN v.status = 'running' THEN COALESCE(jobs.started_at, v.at) ELSE jobs.started_at END,
	uploading_at = CASE WHEN v.status = 'uploading' THEN COALESCE(jobs.uploading_at, v.at) ELSE jobs.uploading_at END,
	finished_at = CASE WHEN v.status IN ('done', 'failed', 'stopped', 'aborted') THEN v.at ELSE jobs.finished_at END,
	log_end = v.log_end, log_missing = v.log_missing,
	log_size = CASE WHEN v.status IN ('done', 'failed', 'stopped', 'aborted')
		THEN COALESCE((SELECT l.off + l.size FROM job_logs l WHERE l.job_id = jobs.id ORDER BY l.off DESC LIMIT 1), jobs.log_size)
		ELSE jobs.log_size END
	FROM v WHERE jobs.id = v.id AND jobs.runner_id = v.runner AND jobs.lease = v.lease AND COALESCE(jobs.status, '') IN `+activeStatuses+`
	RETURNING `+jobColumns+`, COALESCE((SELECT u.max_running FROM users u WHERE u.id = jobs.user_id), 0)`,
	bulkCol{"id", "text"}, bulkCol{"runner", "text"}, bulkCol{"lease", "bigint"}, bulkCol{"status", "text"},
	bulkCol{"reason", "text"}, bulkCol{"exit_code", "bigint"}, bulkCol{"at", "bigint"},
	bulkCol{"log_end", "bigint"}, bulkCol{"log_missing", "bigint"})

// setStatuses makes the status changes reqs[i] for i in idx, of distinct
// jobs, and returns the jobs it changed by ID: a job that is not its
// runner's under the lease, or not active, is left alone. before and after,
// when not nil, go out before and after the changes, in the same round
// trip where the database pipelines.
func (s *Store) setStatuses(ctx context.Context, q Querier, reqs []store.JobSetStatusParams, idx []int, before, after *pipelined) (map[string]*store.Job, error) {
	argSets := make([][]any, len(idx))
	for k, i := range idx {
		p := reqs[i]
		var exitCode any
		if p.ExitCode != nil {
			exitCode = int64(*p.ExitCode)
		}
		// Only a final state may mark the log incomplete.
		var logEnd, logMissing int64
		if p.Status.Finished() && p.LogMissing > 0 {
			logEnd, logMissing = max(p.LogEnd, p.LogMissing), p.LogMissing
		}
		argSets[k] = []any{p.ID, p.RunnerID, p.Lease, string(p.Status), p.Reason, exitCode, micros(p.Now), logEnd, logMissing}
	}
	var got []*store.Job
	changes := &pipelined{
		stmts: s.bulkStmts(changeStatuses, argSets),
		scan: func(_ int, rows Rows) error {
			for rows.Next() {
				var capped int64
				j, err := scanJob(rows, &capped)
				if err != nil {
					return err
				}
				j.Unblocks = j.Status.Finished() && capped > 0
				got = append(got, j)
			}
			return nil
		},
	}
	if err := queryPipelined(ctx, q, before, changes, after); err != nil {
		return nil, err
	}
	out := make(map[string]*store.Job, len(got))
	for _, j := range got {
		out[j.ID] = j
	}
	return out, nil
}

// JobLogStored lowers the missing count of an incomplete log to what is
// left between p.Size and its end, clearing the mark at 0.
func (s *Store) JobLogStored(ctx context.Context, p store.JobLogStoredParams) (*store.Job, error) {
	got, err := collectJobs(s.write.Query(ctx, `UPDATE jobs SET
		log_missing = CASE WHEN log_end > $3 THEN log_end - $3 ELSE 0 END,
		log_end = CASE WHEN log_end > $3 THEN log_end ELSE 0 END
		WHERE id = $1 AND lease = $2 AND log_missing > 0
		RETURNING `+jobColumns, p.ID, p.Lease, p.Size))
	if err != nil {
		return nil, fmt.Errorf("record the log of job %s: %w", p.ID, err)
	}
	if len(got) == 1 {
		return got[0], nil
	}
	if _, err := s.JobGet(ctx, p.ID); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("record the log of job %s: %w", p.ID, store.ErrLeaseLost)
}

// JobInterrupt requeues (or ends) a job its runner gives back because its
// machine is going away, under the job's lease.
func (s *Store) JobInterrupt(ctx context.Context, p store.JobInterruptParams) ([]*store.Job, error) {
	var changed []*store.Job
	err := s.write.Tx(ctx, func(q Querier) error {
		j, err := scanJob(q.QueryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1`, p.ID))
		if err != nil {
			return err
		}
		if j.RunnerID != p.RunnerID || j.Lease != p.Lease || !j.Status.Active() {
			return store.ErrLeaseLost
		}
		changed, err = s.interrupt(ctx, q, j, p.Cause, p.MaxAttempts, p.Now)
		if err != nil {
			return err
		}
		if len(changed) == 0 {
			return store.ErrLeaseLost // changed meanwhile
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("interrupt job %s: %w", p.ID, err)
	}
	return changed, nil
}

// propagate settles the submitted jobs of ended's run that depend on ended,
// which has just reached a final state. When it is done, each dependent whose
// dependencies are all done becomes pending, at the back of the queue. When it
// is not, each dependent fails, and so on down the graph. The caller holds
// the run's lock. It returns the jobs it changed.
func (s *Store) propagate(ctx context.Context, q Querier, ended *store.Job, now time.Time) ([]*store.Job, error) {
	// Most runs have no waiting job left: settle that with one cheap query
	// before reading any job in full.
	waiting, err := collectJobs(q.Query(ctx, `SELECT `+jobColumns+` FROM jobs
		WHERE run_id = $1 AND status = 'submitted' ORDER BY position`, ended.RunID))
	if err != nil {
		return nil, fmt.Errorf("waiting jobs of run %s: %w", ended.RunID, err)
	}
	if len(waiting) == 0 {
		return nil, nil
	}
	status, err := s.runStatuses(ctx, q, ended.RunID)
	if err != nil {
		return nil, err
	}
	dependents := func(workflow string) []*store.Job {
		var out []*store.Job
		for _, j := range waiting {
			if status[j.Workflow] == api.StatusSubmitted && slices.Contains(j.Spec.DependsOn, workflow) {
				out = append(out, j)
			}
		}
		return out
	}
	var changed []*store.Job
	update := func(query string, args ...any) error {
		got, err := collectJobs(q.Query(ctx, query+` AND status = 'submitted' RETURNING `+jobColumns, args...))
		if err != nil {
			return err
		}
		changed = append(changed, got...)
		return nil
	}

	if ended.Status == api.StatusDone {
		for _, j := range dependents(ended.Workflow) {
			ready := true
			for _, dep := range j.Spec.DependsOn {
				ready = ready && status[dep] == api.StatusDone
			}
			if !ready {
				continue
			}
			if err := update(`UPDATE jobs SET status = 'pending', queue_seq = `+s.d.NextQueueSeq+`,
				queued_at = $2 WHERE id = $1`, j.ID, micros(now)); err != nil {
				return nil, fmt.Errorf("queue job %s: %w", j.ID, err)
			}
		}
		return changed, nil
	}

	type failure struct {
		workflow string
		status   api.JobStatus
	}
	queue := []failure{{ended.Workflow, ended.Status}}
	for len(queue) > 0 {
		f := queue[0]
		queue = queue[1:]
		for _, j := range dependents(f.workflow) {
			reason := fmt.Sprintf("dependency %q %s", f.workflow, f.status)
			if err := update(`UPDATE jobs SET status = 'failed', status_reason = $2, finished_at = $3
				WHERE id = $1`, j.ID, reason, micros(now)); err != nil {
				return nil, fmt.Errorf("fail job %s: %w", j.ID, err)
			}
			status[j.Workflow] = api.StatusFailed
			queue = append(queue, failure{j.Workflow, api.StatusFailed})
		}
	}
	return changed, nil
}

// runStatuses returns the state of each job of a run, by workflow.
func (s *Store) runStatuses(ctx context.Context, q Querier, runID string) (map[string]api.JobStatus, error) {
	rows, err := q.Query(ctx, `SELECT workflow, status FROM jobs WHERE run_id = $1`, runID)
	if err != nil {
		return nil, fmt.Errorf("job states of run %s: %w", runID, err)
	}
	defer rows.Close()
	out := map[string]api.JobStatus{}
	for rows.Next() {
		var wf, st string
		if err := rows.Scan(&wf, &st); err != nil {
			return nil, fmt.Errorf("job states of run %s: %w", runID, err)
		}
		out[wf] = api.JobStatus(st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("job states of run %s: %w", runID, err)
	}
	return out, nil
}

// JobRequestStop ends a run's waiting jobs and flags its active ones.
// "abort" overrides "stop", never the other way round.
func (s *Store) JobRequestStop(ctx context.Context, p store.JobRequestStopParams) ([]*store.Job, error) {
	final := api.StatusStopped
	if p.Abort {
		final = api.StatusAborted
	}
	var jobs []*store.Job
	err := s.write.Tx(ctx, func(q Querier) error {
		if err := s.lockRun(ctx, q, p.RunID); err != nil {
			return err
		}
		_, err := q.Exec(ctx, `UPDATE jobs SET status = $2, finished_at = $3
			WHERE run_id = $1 AND status IN ('submitted', 'pending', 'provisioning', 'interrupted')`,
			p.RunID, string(final), micros(p.Now))
		if err != nil {
			return err
		}
		_, err = q.Exec(ctx, `UPDATE jobs SET stop_requested =
			CASE WHEN $2 OR stop_requested = 'abort' THEN 'abort' ELSE 'stop' END
			WHERE run_id = $1 AND status IN `+activeStatuses, p.RunID, p.Abort)
		if err != nil {
			return err
		}
		jobs, err = s.runJobs(ctx, q, p.RunID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stop run %s: %w", p.RunID, err)
	}
	return jobs, nil
}

// JobCountByStatus counts jobs per state; states without jobs are absent.
func (s *Store) JobCountByStatus(ctx context.Context) (map[api.JobStatus]int, error) {
	rows, err := s.read.Query(ctx, `SELECT status, COUNT(*) FROM jobs GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	defer rows.Close()
	out := map[api.JobStatus]int{}
	for rows.Next() {
		var (
			st string
			n  int
		)
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count jobs: %w", err)
		}
		out[api.JobStatus(st)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	return out, nil
}

// JobListPending reads pending jobs in queue order through the index on
// (status, queue_seq), decoding only their resources, not their specs.
func (s *Store) JobListPending(ctx context.Context, p store.JobListPendingParams) ([]*store.PendingJob, error) {
	q, args := `SELECT id, run_id, run_name, user_id, workflow, resources, image, attempt, submitted_at, queued_at,
		COALESCE(last_interruption, '') FROM jobs WHERE status = 'pending'`, []any{}
	if p.UserID != "" {
		q += ` AND user_id = $1`
		args = append(args, p.UserID)
	}
	rows, err := s.read.Query(ctx, q+` ORDER BY queue_seq`, args...)
	if err != nil {
		return nil, fmt.Errorf("list pending jobs: %w", err)
	}
	defer rows.Close()
	var out []*store.PendingJob
	for rows.Next() {
		var (
			j                 store.PendingJob
			res               string
			submitted, queued int64
		)
		if err := rows.Scan(&j.ID, &j.RunID, &j.RunName, &j.UserID, &j.Workflow, &res, &j.Image, &j.Attempt, &submitted, &queued, &j.LastInterruption); err != nil {
			return nil, fmt.Errorf("list pending jobs: %w", err)
		}
		if err := json.Unmarshal([]byte(res), &j.Resources); err != nil {
			return nil, fmt.Errorf("list pending jobs: job %s: decode resources: %w", j.ID, err)
		}
		j.SubmittedAt, j.QueuedAt = fromMicros(submitted), fromMicros(queued)
		out = append(out, &j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list pending jobs: %w", err)
	}
	return out, nil
}

// JobSetPendingReasons sets the reasons of the jobs still pending, in
// transactions of at most maxReasonBatch jobs each (setReasons). A reason
// already there is not written again.
//
// A transaction holds the rows it writes until it commits, and a claim of
// one of them waits for that: a queue of thousands of jobs written in one
// transaction held claims for most of a second.
func (s *Store) JobSetPendingReasons(ctx context.Context, p store.JobSetPendingReasonsParams) (int, error) {
	ids := make([]string, 0, len(p.Reasons))
	for id := range p.Reasons {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var changed int
	for chunk := range slices.Chunk(ids, maxReasonBatch) {
		argSets := make([][]any, len(chunk))
		for i, id := range chunk {
			argSets[i] = []any{id, p.Reasons[id]}
		}
		var n int
		err := s.write.Tx(ctx, func(q Querier) error {
			n = 0
			return s.bulk(ctx, q, s.setReasons, argSets, func(rows Rows) error {
				for rows.Next() {
					n++
				}
				return nil
			})
		})
		if err != nil {
			return changed, fmt.Errorf("set reasons of pending jobs: %w", err)
		}
		changed += n
	}
	return changed, nil
}

// maxReasonBatch bounds the jobs one transaction of JobSetPendingReasons
// writes.
const maxReasonBatch = 256

// setReasons sets the reason of each job v.id still pending to v.reason,
// unless it has it. A job whose row another transaction holds is left
// alone (d.SkipLocked): claims lock the pending jobs they take in queue
// order, and a statement that waited for them while holding rows of its
// own could close a cycle (a deadlock, which fails one side); a claim
// clears its job's reason anyway, and a job it did not take gets its reason
// at the next pass.
func setReasons(d Dialect) bulk {
	return newBulk(`UPDATE jobs SET status_reason = v.reason FROM v
		WHERE jobs.id = v.id AND jobs.status_reason <> v.reason
		AND jobs.id = (SELECT l.id FROM jobs l WHERE l.id = v.id AND l.status = 'pending'`+d.SkipLocked+`)
		RETURNING jobs.id`,
		bulkCol{"id", "text"}, bulkCol{"reason", "text"})
}
