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

// RunnerCreate records a new runner, online, heard from at p.Now. A runner
// of an instance is read back, with the instance's fields.
func (s *Store) RunnerCreate(ctx context.Context, p store.RunnerCreateParams) (*store.Runner, error) {
	if p.InstanceID == "" {
		if err := insertRunner(ctx, s.write, p); err != nil {
			return nil, fmt.Errorf("create runner %q: %w", p.Name, err)
		}
		now := fromMicros(micros(p.Now))
		return &store.Runner{
			ID: p.ID, UserID: p.UserID, Name: p.Name, Hostname: p.Hostname, Executor: p.Executor,
			Version: p.Version, Resources: p.Resources, Online: true, Shared: p.Shared,
			RegisteredAt: now, LastHeartbeat: now,
			TokenExpiresAt: fromMicros(micros(p.TokenExpiresAt)),
			TokenID:        p.TokenID,
		}, nil
	}
	var r *store.Runner
	err := s.write.Tx(ctx, func(q Querier) error {
		if err := insertRunner(ctx, q, p); err != nil {
			return err
		}
		var err error
		r, err = scanRunner(q.QueryRow(ctx, runnerSelect+` WHERE r.id = $1`, p.ID))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create runner %q: %w", p.Name, err)
	}
	return r, nil
}

// insertRunner writes a runner's row.
func insertRunner(ctx context.Context, q Querier, p store.RunnerCreateParams) error {
	res, err := json.Marshal(p.Resources)
	if err != nil {
		return fmt.Errorf("encode resources: %w", err)
	}
	var instanceID, tokenID any
	if p.InstanceID != "" {
		instanceID = p.InstanceID
	}
	if p.TokenID != "" {
		tokenID = p.TokenID
	}
	_, err = q.Exec(ctx, `INSERT INTO runners (id, user_id, name, hostname, executor, version, resources,
		token_hash, token_expires_at, online, registered_at, last_heartbeat, instance_id, token_id, shared)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, TRUE, $10, $10, $11, $12, $13)`,
		p.ID, p.UserID, p.Name, p.Hostname, p.Executor, p.Version, string(res),
		p.TokenHash, micros(p.TokenExpiresAt), micros(p.Now), instanceID, tokenID, p.Shared && p.InstanceID == "")
	return err
}

// runnerSelect reads runners with the job each holds, the active job with
// that runner_id, and the instance each runs on, if any. The store does not
// stop a runner from claiming a second job while it holds one (the server
// hands out one at a time); should it happen, the one claimed last is shown.
const runnerSelect = `SELECT r.id, r.user_id, r.name, r.hostname, r.executor, r.version, r.resources,
	r.online, r.registered_at, r.last_heartbeat, r.token_expires_at,
	COALESCE(j.id, ''), COALESCE(j.run_name, ''),
	COALESCE(i.id, ''), COALESCE(i.backend, ''), COALESCE(i.region, ''), COALESCE(i.instance_type, ''),
	COALESCE(i.spot, FALSE), COALESCE(i.state, ''),
	r.interrupted_at, r.interruption_reason, COALESCE(r.token_id, ''), r.shared
	FROM runners r
	LEFT JOIN jobs j ON j.id = (SELECT h.id FROM jobs h
		WHERE h.runner_id = r.id AND h.status IN ` + activeStatuses + `
		ORDER BY h.claimed_at DESC LIMIT 1)
	LEFT JOIN instances i ON i.id = r.instance_id`

func scanRunner(row Row) (*store.Runner, error) {
	var (
		r                            store.Runner
		res                          string
		registered, heard, expiresAt int64
		instanceState                string
		interrupted                  *int64
	)
	err := row.Scan(&r.ID, &r.UserID, &r.Name, &r.Hostname, &r.Executor, &r.Version, &res,
		&r.Online, &registered, &heard, &expiresAt, &r.JobID, &r.RunName,
		&r.InstanceID, &r.Backend, &r.Region, &r.InstanceType, &r.Spot, &instanceState,
		&interrupted, &r.InterruptionReason, &r.TokenID, &r.Shared)
	if err != nil {
		return nil, err
	}
	r.InterruptedAt = fromMicrosPtr(interrupted)
	r.InstanceState = store.InstanceState(instanceState)
	if err := json.Unmarshal([]byte(res), &r.Resources); err != nil {
		return nil, fmt.Errorf("runner %s: decode resources: %w", r.ID, err)
	}
	r.RegisteredAt = fromMicros(registered)
	r.LastHeartbeat = fromMicros(heard)
	r.TokenExpiresAt = fromMicros(expiresAt)
	return &r, nil
}

// RunnerGetByTokenHash finds the runner a credential belongs to.
func (s *Store) RunnerGetByTokenHash(ctx context.Context, tokenHash string) (*store.Runner, error) {
	r, err := scanRunner(s.read.QueryRow(ctx, runnerSelect+` WHERE r.token_hash = $1`, tokenHash))
	if err != nil {
		return nil, fmt.Errorf("get runner by token: %w", err)
	}
	return r, nil
}

// RunnersByTokenHash finds the runners of many credentials in one read.
func (s *Store) RunnersByTokenHash(ctx context.Context, tokenHashes []string) (map[string]*store.Runner, error) {
	out := make(map[string]*store.Runner, len(tokenHashes))
	if len(tokenHashes) == 0 {
		return out, nil
	}
	args := make([]any, len(tokenHashes))
	for i, h := range tokenHashes {
		args[i] = h
	}
	in, args := s.in("r.token_hash", 1, args)
	rows, err := s.read.Query(ctx, `SELECT r.token_hash, `+strings.TrimPrefix(runnerSelect, "SELECT ")+
		` WHERE `+in, args...)
	if err != nil {
		return nil, fmt.Errorf("runners by token: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var h string
		r, err := scanRunner(withFirst{rows, &h})
		if err != nil {
			return nil, fmt.Errorf("runners by token: %w", err)
		}
		out[h] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("runners by token: %w", err)
	}
	return out, nil
}

// withFirst scans a row whose first column goes to first, the rest as its
// caller asks.
type withFirst struct {
	row   Row
	first any
}

func (w withFirst) Scan(dest ...any) error { return w.row.Scan(append([]any{w.first}, dest...)...) }

// RunnerGet finds a runner by ID.
func (s *Store) RunnerGet(ctx context.Context, id string) (*store.Runner, error) {
	r, err := scanRunner(s.read.QueryRow(ctx, runnerSelect+` WHERE r.id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("get runner %s: %w", id, err)
	}
	return r, nil
}

// RunnerList lists runners by name.
func (s *Store) RunnerList(ctx context.Context, p store.RunnerListParams) ([]*store.Runner, error) {
	q, args := runnerSelect, []any{}
	if p.UserID != "" {
		q += ` WHERE r.user_id = $1`
		args = append(args, p.UserID)
	}
	rows, err := s.read.Query(ctx, q+` ORDER BY r.name, r.id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list runners: %w", err)
	}
	defer rows.Close()
	var out []*store.Runner
	for rows.Next() {
		r, err := scanRunner(rows)
		if err != nil {
			return nil, fmt.Errorf("list runners: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list runners: %w", err)
	}
	return out, nil
}

// RunnerTally counts the runners by kind, in one read that groups them
// where they lie: the autoscaler's pass with no backend, which says why
// jobs wait, asks it for every runner as often as every half second.
func (s *Store) RunnerTally(ctx context.Context) ([]*store.RunnerKind, error) {
	rows, err := s.read.Query(ctx, `SELECT r.user_id, r.shared, COALESCE(r.instance_id, '') <> '', r.resources,
		r.online, r.interrupted_at IS NOT NULL,
		EXISTS (SELECT 1 FROM jobs h WHERE h.runner_id = r.id AND h.status IN `+activeStatuses+`),
		COUNT(*)
		FROM runners r GROUP BY 1, 2, 3, 4, 5, 6, 7`)
	if err != nil {
		return nil, fmt.Errorf("tally runners: %w", err)
	}
	defer rows.Close()
	var out []*store.RunnerKind
	for rows.Next() {
		var (
			k   store.RunnerKind
			res string
		)
		if err := rows.Scan(&k.UserID, &k.Shared, &k.OnDemand, &res, &k.Online, &k.Interrupted, &k.Busy, &k.Count); err != nil {
			return nil, fmt.Errorf("tally runners: %w", err)
		}
		if err := json.Unmarshal([]byte(res), &k.Resources); err != nil {
			return nil, fmt.Errorf("tally runners: resources of user %s's runners: %w", k.UserID, err)
		}
		out = append(out, &k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tally runners: %w", err)
	}
	return out, nil
}

// RunnerHeartbeat marks a runner online and heard from at p.Now.
func (s *Store) RunnerHeartbeat(ctx context.Context, p store.RunnerHeartbeatParams) error {
	q := `UPDATE runners SET online = TRUE, last_heartbeat = $2 WHERE id = $1`
	args := []any{p.ID, micros(p.Now)}
	if p.Resources != nil {
		res, err := json.Marshal(p.Resources)
		if err != nil {
			return fmt.Errorf("heartbeat of runner %s: encode resources: %w", p.ID, err)
		}
		q = `UPDATE runners SET online = TRUE, last_heartbeat = $2, resources = $3 WHERE id = $1`
		args = append(args, string(res))
	}
	n, err := s.write.Exec(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("heartbeat of runner %s: %w", p.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("heartbeat of runner %s: %w", p.ID, store.ErrNotFound)
	}
	return nil
}

// heartbeatsJSON is RunnerHeartbeatBatch where statements take no arrays
// (SQLite): the beats go as one argument, a JSON array of [id, at] pairs
// that the statements read with json_each, in one transaction that holds
// the write lock for two statements whatever their number: one that brings
// back the runners found offline (usually none), and one for the runners
// online. Their text is the same for any number of beats, so they stay
// prepared; and one argument costs its binding once, where SQLite looks up
// each of n placeholders in a list of n (n² work, most of a flush of
// thousands of beats when they were placeholders).
func (s *Store) heartbeatsJSON(ctx context.Context, p store.RunnerHeartbeatBatchParams) ([]string, error) {
	pairs := make([][2]any, len(p.Beats))
	for i, b := range p.Beats {
		pairs[i] = [2]any{b.ID, micros(b.At)}
	}
	arg, err := json.Marshal(pairs)
	if err != nil {
		return nil, err
	}
	const with = `WITH beats(id, at) AS MATERIALIZED (SELECT value ->> 0, value ->> 1 FROM json_each($1)) `
	var revived []string
	err = s.write.Tx(ctx, func(q Querier) error {
		rows, err := q.Query(ctx, with+`UPDATE runners SET online = TRUE,
			last_heartbeat = CASE WHEN beats.at > runners.last_heartbeat THEN beats.at ELSE runners.last_heartbeat END
			FROM beats WHERE runners.id = beats.id AND runners.online = FALSE RETURNING runners.id`, string(arg))
		if err != nil {
			return err
		}
		if revived, err = collectStrings(rows); err != nil {
			return err
		}
		_, err = q.Exec(ctx, with+`UPDATE runners SET last_heartbeat = beats.at
			FROM beats WHERE runners.id = beats.id AND runners.online = TRUE AND runners.last_heartbeat < beats.at`, string(arg))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record %d runner heartbeats: %w", len(p.Beats), err)
	}
	slices.Sort(revived)
	return slices.Compact(revived), nil
}

// reviveRunners brings back online each runner v.id found offline, heard
// from at v.at, and returns their IDs.
var reviveRunners = newBulk(`UPDATE runners SET online = TRUE,
	last_heartbeat = CASE WHEN v.at > runners.last_heartbeat THEN v.at ELSE runners.last_heartbeat END
	FROM v WHERE runners.id = v.id AND runners.online = FALSE RETURNING runners.id`,
	bulkCol{"id", "text"}, bulkCol{"at", "bigint"})

// noteBeats records that each runner v.id, online, was heard from at v.at.
var noteBeats = newBulk(`UPDATE runners SET last_heartbeat = v.at
	FROM v WHERE runners.id = v.id AND runners.online = TRUE AND runners.last_heartbeat < v.at`,
	bulkCol{"id", "text"}, bulkCol{"at", "bigint"})

// RunnerHeartbeatBatch writes beats in one transaction: a statement that
// brings back the runners found offline (usually none), and one for the
// runners online, each over all the beats at once: as arrays where the
// database takes them (bulk.go), else as JSON (heartbeatsJSON).
func (s *Store) RunnerHeartbeatBatch(ctx context.Context, p store.RunnerHeartbeatBatchParams) ([]string, error) {
	if !s.d.Unnest {
		return s.heartbeatsJSON(ctx, p)
	}
	rows := make([][]any, len(p.Beats))
	for i, b := range p.Beats {
		rows[i] = []any{b.ID, micros(b.At)}
	}
	var revived []string
	err := s.write.Tx(ctx, func(q Querier) error {
		revived = nil
		err := s.bulk(ctx, q, reviveRunners, rows, func(r Rows) error {
			for r.Next() {
				var id string
				if err := r.Scan(&id); err != nil {
					return err
				}
				revived = append(revived, id)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return s.bulk(ctx, q, noteBeats, rows, func(Rows) error { return nil })
	})
	if err != nil {
		return nil, fmt.Errorf("record %d runner heartbeats: %w", len(p.Beats), err)
	}
	slices.Sort(revived)
	return slices.Compact(revived), nil
}

// RunnerMarkOffline marks stale runners offline and interrupts their jobs.
// A job whose stop was requested ends stopped (or aborted) instead of being
// requeued: the user no longer wants it. A job that ends (failed, stopped or
// aborted) fails its dependents as JobSetStatus does; they are returned too.
func (s *Store) RunnerMarkOffline(ctx context.Context, p store.RunnerMarkOfflineParams) ([]*store.Job, error) {
	var changed []*store.Job
	err := s.write.Tx(ctx, func(q Querier) error {
		changed = nil
		rows, err := q.Query(ctx, `UPDATE runners SET online = FALSE
			WHERE online = TRUE AND (last_heartbeat < $1 OR id = $2) RETURNING id, name, interruption_reason`,
			micros(p.HeartbeatBefore), p.RunnerID)
		if err != nil {
			return err
		}
		causes := map[string]string{}
		var ids []any
		for rows.Next() {
			var id, name, interruption string
			if err := rows.Scan(&id, &name, &interruption); err != nil {
				rows.Close()
				return err
			}
			causes[id] = interruption
			if interruption == "" {
				causes[id] = fmt.Sprintf("runner %s stopped responding", name)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		held, err := collectJobs(q.Query(ctx, `SELECT `+jobColumns+` FROM jobs
			WHERE status IN `+activeStatuses+` AND runner_id IN (`+placeholders(1, len(ids))+`)
			ORDER BY queue_seq`, ids...))
		if err != nil {
			return err
		}
		for _, j := range held {
			jobs, err := s.interrupt(ctx, q, j, causes[j.RunnerID], p.MaxAttempts, p.Now)
			if err != nil {
				return fmt.Errorf("job %s: %w", j.ID, err)
			}
			changed = append(changed, jobs...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mark runners offline: %w", err)
	}
	return changed, nil
}

// interrupt requeues, fails or ends a job whose runner went away for cause,
// under the job's lease so that a concurrent change wins. It returns the jobs
// changed.
func (s *Store) interrupt(ctx context.Context, q Querier, j *store.Job, cause string, maxAttempts int, now time.Time) ([]*store.Job, error) {
	// Lock the run before the job, as every transaction that ends jobs does.
	if err := s.lockRun(ctx, q, j.RunID); err != nil {
		return nil, err
	}
	const guard = ` WHERE id = $1 AND lease = $2 AND status IN ` + activeStatuses + ` RETURNING ` + jobColumns
	if j.StopRequested == "" && j.Attempt+1 < maxAttempts {
		reason := fmt.Sprintf("interrupted: %s; requeued for attempt %d of %d", cause, j.Attempt+2, maxAttempts)
		if err := saveHold(ctx, q, `j.id = $1 AND j.lease = $2`, micros(now), j.ID, j.Lease); err != nil {
			return nil, err
		}
		return collectJobs(q.Query(ctx, `UPDATE jobs SET status = 'pending', attempt = attempt + 1,
			lease = lease + 1, runner_id = NULL, claimed_at = NULL, started_at = NULL, uploading_at = NULL, exit_code = NULL,
			status_reason = $3, last_interruption = $4`+guard, j.ID, j.Lease, reason, cause))
	}
	status := api.StatusFailed
	reason := fmt.Sprintf("%s; interrupted %d times, giving up", cause, j.Attempt+1)
	if j.StopRequested != "" {
		status = api.StatusStopped
		if j.StopRequested == "abort" {
			status = api.StatusAborted
		}
		reason = cause
	}
	got, err := collectJobs(q.Query(ctx, `UPDATE jobs SET status = $3, status_reason = $4, finished_at = $5`+guard,
		j.ID, j.Lease, string(status), reason, micros(now)))
	if err != nil || len(got) == 0 {
		return got, err
	}
	deps, err := s.propagate(ctx, q, got[0], now)
	if err != nil {
		return nil, err
	}
	return append(got, deps...), nil
}

// lockRun serialises, on PostgreSQL, the transactions that end jobs of one
// run, so that each sees the others' outcome when it decides the dependents.
func (s *Store) lockRun(ctx context.Context, q Querier, runID string) error {
	var id string
	err := q.QueryRow(ctx, `SELECT id FROM runs WHERE id = $1`+s.d.ForUpdate, runID).Scan(&id)
	if err != nil {
		return fmt.Errorf("lock run %s: %w", runID, err)
	}
	return nil
}

// RunnerInterrupt marks a runner interrupted, keeping the first report, and
// gives the jobs it holds the runner's interruption reason. It takes the
// claim lock first (Dialect.ClaimLock), which claims hold until they commit:
// a claim for the runner either commits before, and its job is among those
// read here, or waits and then claims nothing.
func (s *Store) RunnerInterrupt(ctx context.Context, p store.RunnerInterruptParams) (*store.Runner, []*store.Job, error) {
	var (
		r       *store.Runner
		changed []*store.Job
	)
	err := s.write.Tx(ctx, func(q Querier) error {
		changed = nil
		if err := s.claimLock(ctx, q); err != nil {
			return err
		}
		n, err := q.Exec(ctx, `UPDATE runners SET interrupted_at = COALESCE(interrupted_at, $2),
			interruption_reason = CASE WHEN interrupted_at IS NULL THEN $3 ELSE interruption_reason END
			WHERE id = $1`, p.ID, micros(p.Now), p.Reason)
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		r, err = scanRunner(q.QueryRow(ctx, runnerSelect+` WHERE r.id = $1`, p.ID))
		if err != nil {
			return err
		}
		changed, err = collectJobs(q.Query(ctx, `UPDATE jobs SET status_reason = $2
			WHERE runner_id = $1 AND status IN `+activeStatuses+` RETURNING `+jobColumns,
			p.ID, r.InterruptionReason))
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("interrupt runner %s: %w", p.ID, err)
	}
	return r, changed, nil
}

// RunnerDelete removes an offline self-hosted runner that holds no job. It
// takes the claim lock first, as deleteRunners requires.
func (s *Store) RunnerDelete(ctx context.Context, p store.RunnerDeleteParams) error {
	err := s.write.Tx(ctx, func(q Querier) error {
		if err := s.claimLock(ctx, q); err != nil {
			return err
		}
		r, err := scanRunner(q.QueryRow(ctx, runnerSelect+` WHERE r.id = $1`, p.ID))
		if err != nil {
			return err
		}
		switch {
		case r.InstanceID != "":
			return fmt.Errorf("it runs on on-demand instance %s: %w", r.InstanceID, store.ErrConflict)
		case r.Online:
			return fmt.Errorf("it is online: %w", store.ErrConflict)
		case r.JobID != "":
			return fmt.Errorf("it holds job %s: %w", r.JobID, store.ErrConflict)
		}
		return deleteRunners(ctx, q, []any{r.ID})
	})
	if err != nil {
		return fmt.Errorf("delete runner %s: %w", p.ID, err)
	}
	return nil
}

// RunnerDeleteOffline removes the offline self-hosted runners that hold no
// job and were last heard from before p.HeartbeatBefore. It takes the claim
// lock first, as deleteRunners requires.
func (s *Store) RunnerDeleteOffline(ctx context.Context, p store.RunnerDeleteOfflineParams) ([]*store.Runner, error) {
	var out []*store.Runner
	err := s.write.Tx(ctx, func(q Querier) error {
		out = nil
		if err := s.claimLock(ctx, q); err != nil {
			return err
		}
		rows, err := q.Query(ctx, runnerSelect+` WHERE r.online = FALSE AND r.instance_id IS NULL AND r.last_heartbeat < $1
			AND NOT EXISTS (SELECT 1 FROM jobs h WHERE h.runner_id = r.id AND h.status IN `+activeStatuses+`)
			ORDER BY r.id`, micros(p.HeartbeatBefore))
		if err != nil {
			return err
		}
		var ids []any
		for rows.Next() {
			r, err := scanRunner(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, r)
			ids = append(ids, r.ID)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// In batches, within every database's limit on parameters.
		for len(ids) > 0 {
			n := min(len(ids), 500)
			if err := deleteRunners(ctx, q, ids[:n]); err != nil {
				return err
			}
			ids = ids[n:]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("delete offline runners: %w", err)
	}
	return out, nil
}

// deleteRunners removes the runners ids; their jobs keep the runner's name.
// The caller holds the claim lock (Dialect.ClaimLock), taken before it read
// that the runners hold no job: no claim can then give one of them a job
// between that read and the removal. On PostgreSQL nothing else keeps a
// job's runner_id from naming a removed runner (migration 029).
func deleteRunners(ctx context.Context, q Querier, ids []any) error {
	in := placeholders(1, len(ids))
	if _, err := q.Exec(ctx, `UPDATE jobs SET runner_name = COALESCE((SELECT runners.name FROM runners WHERE runners.id = jobs.runner_id), runner_name),
		runner_id = NULL WHERE runner_id IN (`+in+`)`, ids...); err != nil {
		return fmt.Errorf("keep the runner's name on its jobs: %w", err)
	}
	if _, err := q.Exec(ctx, `DELETE FROM runners WHERE id IN (`+in+`)`, ids...); err != nil {
		return err
	}
	return nil
}
