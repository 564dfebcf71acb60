package sqlcore

import (
	"context"
	"fmt"
	"slices"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// RunResume requeues the jobs of a finished run that are not done.
func (s *Store) RunResume(ctx context.Context, p store.RunResumeParams) (*store.Run, error) {
	var run *store.Run
	err := s.write.Tx(ctx, func(q Querier) error {
		query, args := runSelect+` WHERE r.name = $1`, []any{p.Name}
		if p.UserID != "" {
			query += ` AND r.user_id = $2`
			args = append(args, p.UserID)
		}
		var err error
		if run, err = scanRun(q.QueryRow(ctx, query, args...)); err != nil {
			return err
		}
		if err := s.lockRun(ctx, q, run.ID); err != nil {
			return err
		}
		jobs, err := s.runJobs(ctx, q, run.ID)
		if err != nil {
			return err
		}
		status := map[string]api.JobStatus{}
		resume := 0
		for _, j := range jobs {
			if !j.Status.Finished() {
				return store.ErrRunUnfinished
			}
			if j.Status != api.StatusDone {
				resume++
			}
			status[j.Workflow] = j.Status
		}
		if resume == 0 {
			return store.ErrRunDone
		}
		// Jobs are in dependency order: a job's dependencies are settled
		// before it is.
		for _, j := range jobs {
			if j.Status == api.StatusDone {
				continue
			}
			ready := !slices.ContainsFunc(j.Spec.DependsOn, func(d string) bool { return status[d] != api.StatusDone })
			cause := fmt.Sprintf("resumed by the user after the job was %s", j.Status)
			set := `status = 'submitted', queued_at = $4`
			if ready {
				set = `status = 'pending', queue_seq = ` + s.d.NextQueueSeq + `, queued_at = $4`
			}
			n, err := q.Exec(ctx, `UPDATE jobs SET `+set+`, attempt = attempt + 1, lease = lease + 1,
				runner_id = NULL, claimed_at = NULL, started_at = NULL, uploading_at = NULL, finished_at = NULL, exit_code = NULL,
				stop_requested = '', status_reason = $2, last_interruption = $3
				WHERE id = $1 AND status = $5`, j.ID, cause, cause, micros(p.Now), string(j.Status))
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("job %s changed meanwhile: %w", j.ID, store.ErrConflict)
			}
			status[j.Workflow] = api.StatusSubmitted
		}
		run.Jobs, err = s.runJobs(ctx, q, run.ID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("resume run %q: %w", p.Name, err)
	}
	return run, nil
}
