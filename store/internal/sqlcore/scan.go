package sqlcore

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// Timestamps are BIGINT unix microseconds in both databases.

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func fromMicrosPtr(us *int64) *time.Time {
	if us == nil {
		return nil
	}
	t := fromMicros(*us)
	return &t
}

// jobColumns is the select list scanJob reads, valid both in a SELECT from
// jobs and in an UPDATE jobs ... RETURNING.
const jobColumns = `jobs.id, jobs.run_id, jobs.run_name, jobs.user_id, jobs.code_id, jobs.workflow,
	jobs.spec, jobs.status, jobs.status_reason, COALESCE(jobs.runner_id, ''),
	COALESCE((SELECT runners.name FROM runners WHERE runners.id = jobs.runner_id), jobs.runner_name),
	jobs.lease, jobs.attempt, jobs.exit_code, jobs.stop_requested,
	jobs.submitted_at, jobs.claimed_at, jobs.started_at, jobs.finished_at, jobs.artifact_store,
	jobs.log_end, jobs.log_missing, jobs.last_interruption, jobs.queued_at, jobs.uploading_at`

// activeStatuses is the SQL list of the states in which a runner holds a job.
const activeStatuses = `('downloading', 'running', 'uploading')`

// scanJob reads one row of jobColumns, and then of the columns extra
// scans into, when the query returns more.
func scanJob(row Row, extra ...any) (*store.Job, error) {
	var (
		j                          store.Job
		spec                       string
		status                     string
		exitCode                   *int64
		submitted, queued          int64
		claimed, started, finished *int64
		uploading                  *int64
	)
	err := row.Scan(append([]any{&j.ID, &j.RunID, &j.RunName, &j.UserID, &j.CodeID, &j.Workflow,
		&spec, &status, &j.StatusReason, &j.RunnerID,
		&j.RunnerName,
		&j.Lease, &j.Attempt, &exitCode, &j.StopRequested,
		&submitted, &claimed, &started, &finished, &j.ArtifactStore,
		&j.LogEnd, &j.LogMissing, &j.LastInterruption, &queued, &uploading}, extra...)...)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(spec), &j.Spec); err != nil {
		return nil, fmt.Errorf("job %s: decode spec: %w", j.ID, err)
	}
	j.Status = api.JobStatus(status)
	if exitCode != nil {
		c := int(*exitCode)
		j.ExitCode = &c
	}
	j.SubmittedAt = fromMicros(submitted)
	j.QueuedAt = fromMicros(queued)
	j.ClaimedAt = fromMicrosPtr(claimed)
	j.StartedAt = fromMicrosPtr(started)
	j.UploadingAt = fromMicrosPtr(uploading)
	j.FinishedAt = fromMicrosPtr(finished)
	return &j, nil
}

// collectJobs reads every row of a jobColumns query.
func collectJobs(rows Rows, err error) ([]*store.Job, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*store.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
