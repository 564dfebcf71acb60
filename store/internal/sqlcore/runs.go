package sqlcore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// jobNeeds are the resource columns of a job, which JobClaimNext filters on.
// A GPU name is stored lowercased, for a case-insensitive match.
type jobNeeds struct {
	cpu       int
	memoryMiB int64
	gpuCount  int
	gpuName   string
	gpuMemMiB int64
}

func needsOf(r api.Resources) jobNeeds {
	n := jobNeeds{cpu: r.CPU, memoryMiB: r.MemoryMiB}
	if r.GPU != nil && r.GPU.Count > 0 {
		n.gpuCount = r.GPU.Count
		n.gpuName = strings.ToLower(strings.TrimSpace(r.GPU.Name))
		n.gpuMemMiB = r.GPU.MemoryMiB
	}
	return n
}

// checkRunJobs refuses a run whose jobs share a workflow or depend on a
// workflow the run does not have: such jobs would wait forever.
func checkRunJobs(jobs []store.JobCreate) error {
	have := map[string]bool{}
	for _, j := range jobs {
		if have[j.Spec.Workflow] {
			return fmt.Errorf("two jobs of the run are workflow %q", j.Spec.Workflow)
		}
		have[j.Spec.Workflow] = true
	}
	for _, j := range jobs {
		for _, dep := range j.Spec.DependsOn {
			if !have[dep] {
				return fmt.Errorf("job %q depends on %q, which is not part of the run", j.Spec.Workflow, dep)
			}
		}
	}
	return nil
}

// RunCreate records a run and its jobs in one transaction.
func (s *Store) RunCreate(ctx context.Context, p store.RunCreateParams) (*store.Run, error) {
	if err := checkRunJobs(p.Jobs); err != nil {
		return nil, fmt.Errorf("create run %q: %w", p.Name, err)
	}
	now := micros(p.Now)
	var run *store.Run
	err := s.write.Tx(ctx, func(q Querier) error {
		var userName string
		if err := q.QueryRow(ctx, `SELECT name FROM users WHERE id = $1`, p.UserID).Scan(&userName); err != nil {
			return fmt.Errorf("user %s: %w", p.UserID, err)
		}
		// The code's row is locked by this update (on PostgreSQL) until the
		// run is in: a delete of unused code waits, then sees it used.
		used, err := q.Exec(ctx, `UPDATE code SET last_used_at = $1 WHERE user_id = $2 AND code_id = $3`, now, p.UserID, p.CodeID)
		if err != nil {
			return err
		}
		if used == 0 && p.RequireCode {
			return fmt.Errorf("code archive %s of user %s: %w", p.CodeID, p.UserID, store.ErrNotFound)
		}
		_, err = q.Exec(ctx, `INSERT INTO runs (id, name, user_id, workflow, code_id, submitted_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, p.ID, p.Name, p.UserID, p.Workflow, p.CodeID, now)
		if err != nil {
			return err
		}
		// The jobs come back as a read would give them, built from what
		// is written rather than read again: the columns written are
		// all a new job sets, and the others hold their defaults.
		rows := make([][]any, len(p.Jobs))
		jobs := make([]*store.Job, len(p.Jobs))
		for i, jc := range p.Jobs {
			spec, err := json.Marshal(jc.Spec)
			if err != nil {
				return fmt.Errorf("job %s: encode spec: %w", jc.ID, err)
			}
			status := api.StatusPending
			if len(jc.Spec.DependsOn) > 0 {
				status = api.StatusSubmitted
			}
			j := &store.Job{ID: jc.ID, RunID: p.ID, RunName: p.Name, UserID: p.UserID, CodeID: p.CodeID,
				Workflow: jc.Spec.Workflow, Status: status, SubmittedAt: fromMicros(now), QueuedAt: fromMicros(now),
				ArtifactStore: p.ArtifactStore}
			if err := json.Unmarshal(spec, &j.Spec); err != nil { // as scanJob decodes it
				return fmt.Errorf("job %s: decode spec: %w", jc.ID, err)
			}
			jobs[i] = j
			res, err := json.Marshal(jc.Spec.Resources)
			if err != nil {
				return fmt.Errorf("job %s: encode resources: %w", jc.ID, err)
			}
			n := needsOf(jc.Spec.Resources)
			rows[i] = []any{jc.ID, p.ID, int64(i), p.Name, p.UserID, p.CodeID, jc.Spec.Workflow, string(spec),
				int64(n.cpu), n.memoryMiB, int64(n.gpuCount), n.gpuName, n.gpuMemMiB, string(status), now, string(res), p.ArtifactStore, jc.Spec.RunImage()}
		}
		if err := s.bulk(ctx, q, s.insertJobs, rows, func(Rows) error { return nil }); err != nil {
			return fmt.Errorf("jobs: %w", err)
		}
		run = &store.Run{ID: p.ID, Name: p.Name, UserID: p.UserID, UserName: userName, Workflow: p.Workflow,
			CodeID: p.CodeID, SubmittedAt: fromMicros(now), Jobs: jobs}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create run %q: %w", p.Name, err)
	}
	s.analyzeQueue(ctx, len(p.Jobs))
	return run, nil
}

// Dialect.AnalyzeQueue runs once analyzeAfter jobs were submitted since it
// last ran, or 1/analyzeScale of the jobs it saw then, whichever is more.
const (
	analyzeAfter = 1000
	analyzeScale = 5
)

// analyzeQueue counts n jobs submitted and, once enough were (analyzeAfter),
// runs Dialect.AnalyzeQueue before it returns, so that the claims that
// follow are planned knowing the new jobs. It only informs the
// planner: a failure (the database busy, ctx ended) is left for the next
// submission or the database's own analysis.
func (s *Store) analyzeQueue(ctx context.Context, n int) {
	if s.d.AnalyzeQueue == "" || s.submitted.Add(int64(n)) < max(analyzeAfter, s.analyzedRows.Load()/analyzeScale) ||
		!s.analyzing.CompareAndSwap(false, true) {
		return
	}
	defer s.analyzing.Store(false)
	s.submitted.Store(0)
	if _, err := s.write.Exec(ctx, s.d.AnalyzeQueue); err != nil {
		return
	}
	var rows int64
	if err := s.write.QueryRow(ctx, s.d.QueueRows).Scan(&rows); err == nil {
		s.analyzedRows.Store(rows)
	}
}

// insertJobsSQL adds a run's jobs, in their order in the queue.
func insertJobsSQL(d Dialect) bulk {
	return newBulk(`INSERT INTO jobs (id, run_id, position, run_name, user_id, code_id, workflow, spec,
		cpu, memory_mib, gpu_count, gpu_name, gpu_memory_mib, status, queue_seq, submitted_at, queued_at, resources, artifact_store, image)
		SELECT v.id, v.run_id, v.position, v.run_name, v.user_id, v.code_id, v.workflow, v.spec,
		v.cpu, v.memory_mib, v.gpu_count, v.gpu_name, v.gpu_memory_mib, v.status, `+d.NextQueueSeq+`, v.submitted, v.submitted,
		v.resources, v.artifact_store, v.image
		FROM v ORDER BY v.position`,
		bulkCol{"id", "text"}, bulkCol{"run_id", "text"}, bulkCol{"position", "bigint"}, bulkCol{"run_name", "text"},
		bulkCol{"user_id", "text"}, bulkCol{"code_id", "text"}, bulkCol{"workflow", "text"}, bulkCol{"spec", "text"},
		bulkCol{"cpu", "bigint"}, bulkCol{"memory_mib", "bigint"}, bulkCol{"gpu_count", "bigint"}, bulkCol{"gpu_name", "text"},
		bulkCol{"gpu_memory_mib", "bigint"}, bulkCol{"status", "text"}, bulkCol{"submitted", "bigint"},
		bulkCol{"resources", "text"}, bulkCol{"artifact_store", "text"}, bulkCol{"image", "text"})
}

// runJobs reads a run's jobs in their RunCreate order.
func (s *Store) runJobs(ctx context.Context, q Querier, runID string) ([]*store.Job, error) {
	jobs, err := collectJobs(q.Query(ctx, `SELECT `+jobColumns+` FROM jobs WHERE run_id = $1 ORDER BY position`, runID))
	if err != nil {
		return nil, fmt.Errorf("jobs of run %s: %w", runID, err)
	}
	return jobs, nil
}

const runSelect = `SELECT r.id, r.name, r.user_id, u.name, r.workflow, r.code_id, r.submitted_at
	FROM runs r JOIN users u ON u.id = r.user_id`

func scanRun(row Row) (*store.Run, error) {
	var (
		r         store.Run
		submitted int64
	)
	if err := row.Scan(&r.ID, &r.Name, &r.UserID, &r.UserName, &r.Workflow, &r.CodeID, &submitted); err != nil {
		return nil, err
	}
	r.SubmittedAt = fromMicros(submitted)
	return &r, nil
}

// RunGet finds a run by name, with its jobs.
func (s *Store) RunGet(ctx context.Context, p store.RunGetParams) (*store.Run, error) {
	q, args := runSelect+` WHERE r.name = $1`, []any{p.Name}
	if p.UserID != "" {
		q += ` AND r.user_id = $2`
		args = append(args, p.UserID)
	}
	run, err := scanRun(s.read.QueryRow(ctx, q, args...))
	if err != nil {
		return nil, fmt.Errorf("get run %q: %w", p.Name, err)
	}
	if run.Jobs, err = s.runJobs(ctx, s.read, run.ID); err != nil {
		return nil, fmt.Errorf("get run %q: %w", p.Name, err)
	}
	return run, nil
}

// jobBatch is how many runs' jobs RunList asks for in one query, well under
// both databases' limits on bound parameters.
const jobBatch = 500

// RunList lists runs newest first, from after p.After on, then reads their
// jobs in batches of jobBatch runs: two queries for a page of runs, not one
// per run. A run's jobs are all written with it, so the two reads cannot
// disagree.
func (s *Store) RunList(ctx context.Context, p store.RunListParams) ([]*store.Run, error) {
	var (
		where []string
		args  []any
	)
	if p.UserID != "" {
		args = append(args, p.UserID)
		where = append(where, fmt.Sprintf("r.user_id = $%d", len(args)))
	}
	if !p.FinishedAfter.IsZero() {
		args = append(args, micros(p.FinishedAfter))
		where = append(where, fmt.Sprintf(`EXISTS (SELECT 1 FROM jobs j WHERE j.run_id = r.id
			AND (j.finished_at IS NULL OR j.finished_at > $%d))`, len(args)))
	}
	if p.After != nil {
		args = append(args, micros(p.After.SubmittedAt), p.After.ID)
		where = append(where, fmt.Sprintf("(r.submitted_at < $%d OR (r.submitted_at = $%d AND r.id < $%d))",
			len(args)-1, len(args)-1, len(args)))
	}
	q := runSelect
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY r.submitted_at DESC, r.id DESC"
	if p.Limit > 0 {
		args = append(args, p.Limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	rows, err := s.read.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var runs []*store.Run
	byID := map[string]*store.Run{}
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list runs: %w", err)
		}
		runs = append(runs, r)
		byID[r.ID] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	rows.Close()
	for start := 0; start < len(runs); start += jobBatch {
		batch := runs[start:min(start+jobBatch, len(runs))]
		ids := make([]any, len(batch))
		for i, r := range batch {
			ids[i] = r.ID
		}
		jobs, err := collectJobs(s.read.Query(ctx, `SELECT `+jobColumns+` FROM jobs
			WHERE run_id IN (`+placeholders(1, len(ids))+`) ORDER BY run_id, position`, ids...))
		if err != nil {
			return nil, fmt.Errorf("list runs: jobs: %w", err)
		}
		for _, j := range jobs {
			if r := byID[j.RunID]; r != nil {
				r.Jobs = append(r.Jobs, j)
			}
		}
	}
	return runs, nil
}
