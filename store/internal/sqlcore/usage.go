package sqlcore

import (
	"context"
	"fmt"
	"slices"

	"github.com/dstackai/dstack/store"
)

// holdColumns reads a hold of a job's current attempt from jobs j and the
// runner r of its instance; saveHolds and the live half of UsageList share
// it.
const holdColumns = `r.instance_id, j.id, j.run_id, j.run_name, j.workflow, j.user_id, j.attempt,
	j.claimed_at, j.finished_at`

// holdRecorded reads a row of instance_holds.
const holdRecorded = `instance_id, job_id, run_id, run_name, workflow, user_id, attempt, started_at, ended_at`

func collectHolds(rows Rows, err error) ([]*store.Hold, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*store.Hold
	for rows.Next() {
		var (
			h    store.Hold
			from int64
			to   *int64
		)
		if err := rows.Scan(&h.InstanceID, &h.JobID, &h.RunID, &h.RunName, &h.Workflow, &h.UserID, &h.Attempt,
			&from, &to); err != nil {
			return nil, err
		}
		h.From = fromMicros(from)
		h.To = fromMicrosPtr(to)
		out = append(out, &h)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// saveHold records in instance_holds the current attempt of job id, when it
// holds the runner of an on-demand instance, as ended at end (its
// finished_at when it has one): before the attempt is requeued (which
// forgets its claim) or its run deleted.
func saveHold(ctx context.Context, q Querier, where string, end int64, args ...any) error {
	_, err := q.Exec(ctx, `INSERT INTO instance_holds (`+holdRecorded+`)
		SELECT r.instance_id, j.id, j.run_id, j.run_name, j.workflow, j.user_id, j.attempt, j.claimed_at,
			COALESCE(j.finished_at, `+fmt.Sprint(end)+`)
		FROM jobs j JOIN runners r ON r.id = j.runner_id
		WHERE r.instance_id IS NOT NULL AND j.claimed_at IS NOT NULL AND `+where+`
		ON CONFLICT (job_id, attempt) DO NOTHING`, args...)
	if err != nil {
		return fmt.Errorf("record the job's time on its instance: %w", err)
	}
	return nil
}

// UsageList reads the instances up in the window and their holds, or the
// holds of runs and their instances, in one read transaction's worth of
// statements (a change between them moves a hold from jobs to
// instance_holds, which the live half then no longer shows: the hold is
// read from one or the other, and a duplicate is dropped).
func (s *Store) UsageList(ctx context.Context, p store.UsageListParams) (*store.Usage, error) {
	var (
		out store.Usage
		err error
	)
	if len(p.RunIDs) > 0 {
		args := make([]any, len(p.RunIDs))
		for i, id := range p.RunIDs {
			args[i] = id
		}
		in := placeholders(1, len(args))
		live, err := collectHolds(s.read.Query(ctx, `SELECT `+holdColumns+`
			FROM jobs j JOIN runners r ON r.id = j.runner_id
			WHERE j.run_id IN (`+in+`) AND r.instance_id IS NOT NULL AND j.claimed_at IS NOT NULL`, args...))
		if err != nil {
			return nil, fmt.Errorf("list usage of runs: %w", err)
		}
		past, err := collectHolds(s.read.Query(ctx, `SELECT `+holdRecorded+` FROM instance_holds
			WHERE run_id IN (`+in+`)`, args...))
		if err != nil {
			return nil, fmt.Errorf("list usage of runs: %w", err)
		}
		out.Holds = mergeHolds(past, live)
		var ids []any
		seen := map[string]bool{}
		for _, h := range out.Holds {
			if !seen[h.InstanceID] {
				seen[h.InstanceID] = true
				ids = append(ids, h.InstanceID)
			}
		}
		if len(ids) > 0 {
			out.Instances, err = collectInstances(s.read.Query(ctx, `SELECT `+instanceColumns+` FROM instances
				WHERE id IN (`+placeholders(1, len(ids))+`) ORDER BY created_at, id`, ids...))
			if err != nil {
				return nil, fmt.Errorf("list usage of runs: %w", err)
			}
		}
		return &out, nil
	}
	const window = `SELECT id FROM instances WHERE created_at < $2 AND (ended_at IS NULL OR ended_at >= $1)`
	from, to := micros(p.From), micros(p.To)
	out.Instances, err = collectInstances(s.read.Query(ctx, `SELECT `+instanceColumns+` FROM instances
		WHERE id IN (`+window+`) ORDER BY created_at, id`, from, to))
	if err != nil {
		return nil, fmt.Errorf("list usage: instances: %w", err)
	}
	live, err := collectHolds(s.read.Query(ctx, `SELECT `+holdColumns+`
		FROM runners r JOIN jobs j ON j.runner_id = r.id
		WHERE r.instance_id IN (`+window+`) AND j.claimed_at IS NOT NULL`, from, to))
	if err != nil {
		return nil, fmt.Errorf("list usage: holds: %w", err)
	}
	past, err := collectHolds(s.read.Query(ctx, `SELECT `+holdRecorded+` FROM instance_holds
		WHERE instance_id IN (`+window+`)`, from, to))
	if err != nil {
		return nil, fmt.Errorf("list usage: recorded holds: %w", err)
	}
	out.Holds = mergeHolds(past, live)
	return &out, nil
}

// mergeHolds joins recorded and live holds, dropping a live one recorded
// too, in order of instance and start.
func mergeHolds(past, live []*store.Hold) []*store.Hold {
	type key struct {
		job     string
		attempt int
	}
	seen := make(map[key]bool, len(past))
	out := slices.Clone(past)
	for _, h := range past {
		seen[key{h.JobID, h.Attempt}] = true
	}
	for _, h := range live {
		if !seen[key{h.JobID, h.Attempt}] {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b *store.Hold) int {
		if a.InstanceID != b.InstanceID {
			if a.InstanceID < b.InstanceID {
				return -1
			}
			return 1
		}
		return a.From.Compare(b.From)
	})
	return out
}

// recordLimit appends a limit's maximum from now on to limit_history.
func recordLimit(ctx context.Context, q Querier, id string, maxCount int, now int64) error {
	_, err := q.Exec(ctx, `INSERT INTO limit_history (limit_id, backend, region, instance_type, spot, max_count, at)
		SELECT id, backend, region, instance_type, spot, $2, $3 FROM limits WHERE id = $1`, id, maxCount, now)
	if err != nil {
		return fmt.Errorf("record the limit's history: %w", err)
	}
	return nil
}

// LimitHistoryList reads the changes of limits' maximums up to p.To.
func (s *Store) LimitHistoryList(ctx context.Context, p store.LimitHistoryListParams) ([]*store.LimitChange, error) {
	rows, err := s.read.Query(ctx, `SELECT limit_id, backend, region, instance_type, spot, max_count, at
		FROM limit_history h WHERE h.at < $2 AND (h.at >= $1
			OR h.at = (SELECT MAX(o.at) FROM limit_history o WHERE o.limit_id = h.limit_id AND o.at < $1))
		ORDER BY at, limit_id`, micros(p.From), micros(p.To))
	if err != nil {
		return nil, fmt.Errorf("list limit history: %w", err)
	}
	defer rows.Close()
	var out []*store.LimitChange
	for rows.Next() {
		var (
			c  store.LimitChange
			at int64
		)
		if err := rows.Scan(&c.LimitID, &c.Backend, &c.Region, &c.InstanceType, &c.Spot, &c.Max, &at); err != nil {
			return nil, fmt.Errorf("list limit history: %w", err)
		}
		c.At = fromMicros(at)
		out = append(out, &c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list limit history: %w", err)
	}
	return out, nil
}
