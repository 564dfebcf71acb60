package sqlcore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dstackai/dstack/store"
)

// instanceColumns is the select list scanInstance reads, valid both in a
// SELECT from instances and in an UPDATE instances ... RETURNING.
const instanceColumns = `id, user_id, limit_id, backend, region, instance_type, spot, price_per_hour,
	state, launch_key, cloud_id, COALESCE(job_id, ''), COALESCE(runner_id, ''),
	created_at, launched_at, registered_at, idle_since, terminating_at, ended_at, reason,
	COALESCE(launch_user_id, ''), image_bound, image`

// liveStates is the SQL list of the states in which an instance may take a
// job.
const liveStates = `('launching', 'running')`

func scanInstance(row Row) (*store.Instance, error) {
	var (
		in                                             store.Instance
		state                                          string
		created                                        int64
		launched, registered, idle, terminating, ended *int64
	)
	err := row.Scan(&in.ID, &in.UserID, &in.LimitID, &in.Backend, &in.Region, &in.InstanceType, &in.Spot,
		&in.PricePerHour, &state, &in.LaunchKey, &in.CloudID, &in.JobID, &in.RunnerID,
		&created, &launched, &registered, &idle, &terminating, &ended, &in.Reason, &in.LaunchUserID, &in.ImageBound, &in.Image)
	if err != nil {
		return nil, err
	}
	in.State = store.InstanceState(state)
	in.CreatedAt = fromMicros(created)
	in.LaunchedAt = fromMicrosPtr(launched)
	in.RegisteredAt = fromMicrosPtr(registered)
	in.IdleSince = fromMicrosPtr(idle)
	in.TerminatingAt = fromMicrosPtr(terminating)
	in.EndedAt = fromMicrosPtr(ended)
	return &in, nil
}

func collectInstances(rows Rows, err error) ([]*store.Instance, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*store.Instance
	for rows.Next() {
		in, err := scanInstance(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// nullIfEmpty is s as an argument, NULL when empty.
func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// InstanceCreate checks the limit's room under its lock, then records the
// instances, in one transaction. The lock is the limit's row (FOR UPDATE on
// PostgreSQL; SQLite's single writer): LimitPut, LimitDelete and every other
// InstanceCreate of the limit wait for it, so the count read under it stays
// true until the new instances are committed.
func (s *Store) InstanceCreate(ctx context.Context, p store.InstanceCreateParams) ([]*store.Instance, error) {
	if len(p.Instances) == 0 {
		return nil, fmt.Errorf("create instances of limit %s: no instances", p.LimitID)
	}
	var out []*store.Instance
	err := s.write.Tx(ctx, func(q Querier) error {
		out = nil
		l, err := s.lockLimit(ctx, q, p.LimitID, len(p.Instances))
		if err != nil {
			return err
		}
		for _, ic := range p.Instances {
			if ic.JobID != "" {
				if err := jobExists(ctx, q, ic.JobID); err != nil {
					return fmt.Errorf("instance %s: %w", ic.ID, err)
				}
			}
			in, err := scanInstance(q.QueryRow(ctx, `INSERT INTO instances (id, user_id, limit_id, backend, region,
				instance_type, spot, price_per_hour, state, launch_key, job_id, join_token_hash, created_at,
				launch_user_id, image_bound, image)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'launching', $9, $10, $11, $12,
					(SELECT j.user_id FROM jobs j WHERE j.id = $10), $13, $14)
				RETURNING `+instanceColumns,
				ic.ID, l.UserID, l.ID, l.Backend, l.Region, l.InstanceType, l.Spot, p.PricePerHour, p.LaunchKey,
				nullIfEmpty(ic.JobID), nullIfEmpty(ic.JoinTokenHash), micros(p.Now), p.ImageBound, p.Image))
			if err != nil {
				return fmt.Errorf("instance %s: %w", ic.ID, err)
			}
			out = append(out, in)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create %d instances of limit %s: %w", len(p.Instances), p.LimitID, err)
	}
	return out, nil
}

// InstanceSetLaunched records cloud IDs, in the order of the instance IDs so
// that concurrent calls lock rows in one order.
func (s *Store) InstanceSetLaunched(ctx context.Context, p store.InstanceSetLaunchedParams) ([]*store.Instance, error) {
	ids := make([]string, 0, len(p.CloudIDs))
	for id := range p.CloudIDs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var out []*store.Instance
	err := s.write.Tx(ctx, func(q Querier) error {
		out = nil
		for _, id := range ids {
			cloudID := p.CloudIDs[id]
			if cloudID == "" {
				return fmt.Errorf("instance %s: empty cloud ID", id)
			}
			got, err := collectInstances(q.Query(ctx, `UPDATE instances SET cloud_id = $2,
				launched_at = COALESCE(launched_at, $3)
				WHERE id = $1 AND (cloud_id = '' OR cloud_id = $2) RETURNING `+instanceColumns,
				id, cloudID, micros(p.Now)))
			if err != nil {
				return fmt.Errorf("instance %s: %w", id, err)
			}
			if len(got) == 0 {
				in, err := s.instanceGet(ctx, q, id)
				if err != nil {
					return err
				}
				return fmt.Errorf("instance %s has cloud ID %s, not %s: %w", id, in.CloudID, cloudID, store.ErrConflict)
			}
			out = append(out, got[0])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record launched instances: %w", err)
	}
	return out, nil
}

// InstanceRegister consumes a join token and creates the instance's runner.
// On PostgreSQL the instance row is locked first, so of two registrations
// with one token the second finds the token gone.
func (s *Store) InstanceRegister(ctx context.Context, p store.InstanceRegisterParams) (*store.Instance, *store.Runner, error) {
	if p.JoinTokenHash == "" {
		return nil, nil, fmt.Errorf("register instance: %w", store.ErrNotFound)
	}
	var (
		in *store.Instance
		rn *store.Runner
	)
	err := s.write.Tx(ctx, func(q Querier) error {
		var id, userID, state string
		err := q.QueryRow(ctx, `SELECT id, user_id, state FROM instances WHERE join_token_hash = $1`+s.d.ForUpdate,
			p.JoinTokenHash).Scan(&id, &userID, &state)
		if err != nil {
			return fmt.Errorf("join token: %w", err)
		}
		if state != string(store.InstanceLaunching) {
			return fmt.Errorf("instance %s is %s: %w", id, state, store.ErrNotFound)
		}
		rp := p.Runner
		rp.UserID, rp.InstanceID = userID, id
		if err := insertRunner(ctx, q, rp); err != nil {
			return fmt.Errorf("runner %q: %w", rp.Name, err)
		}
		now := micros(rp.Now)
		in, err = scanInstance(q.QueryRow(ctx, `UPDATE instances SET join_token_hash = NULL, runner_id = $2,
			state = 'running', registered_at = $3, idle_since = CASE WHEN job_id IS NULL THEN CAST($3 AS BIGINT) END
			WHERE id = $1 RETURNING `+instanceColumns, id, rp.ID, now))
		if err != nil {
			return fmt.Errorf("instance %s: %w", id, err)
		}
		rn, err = scanRunner(q.QueryRow(ctx, runnerSelect+` WHERE r.id = $1`, rp.ID))
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("register instance: %w", err)
	}
	return in, rn, nil
}

// InstanceBindJob binds a live instance to a job.
func (s *Store) InstanceBindJob(ctx context.Context, p store.InstanceBindJobParams) (*store.Instance, error) {
	if p.JobID == "" {
		return nil, fmt.Errorf("bind instance %s: no job; InstanceSetIdle unbinds", p.ID)
	}
	var in *store.Instance
	err := s.write.Tx(ctx, func(q Querier) error {
		if err := jobExists(ctx, q, p.JobID); err != nil {
			return err
		}
		var err error
		in, err = updateLive(ctx, q, `UPDATE instances SET job_id = $2, idle_since = NULL`, p.ID, p.JobID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bind instance %s to job %s: %w", p.ID, p.JobID, err)
	}
	return in, nil
}

// InstanceSetIdle unbinds a live instance's job.
func (s *Store) InstanceSetIdle(ctx context.Context, p store.InstanceSetIdleParams) (*store.Instance, error) {
	in, err := updateLive(ctx, s.write, `UPDATE instances SET job_id = NULL,
		idle_since = CASE WHEN job_id IS NULL AND idle_since IS NOT NULL THEN idle_since ELSE $2 END`,
		p.ID, micros(p.Now))
	if err != nil {
		return nil, fmt.Errorf("set instance %s idle: %w", p.ID, err)
	}
	return in, nil
}

// updateLive runs update (an UPDATE ... SET with $1 the instance ID and $2
// arg) on a launching or running instance; ErrNotFound when there is none.
func updateLive(ctx context.Context, q Querier, update, id string, arg any) (*store.Instance, error) {
	got, err := collectInstances(q.Query(ctx, update+` WHERE id = $1 AND state IN `+liveStates+`
		RETURNING `+instanceColumns, id, arg))
	if err != nil {
		return nil, err
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("no launching or running instance %s: %w", id, store.ErrNotFound)
	}
	return got[0], nil
}

// jobExists is ErrNotFound when there is no job id. It reads without a lock:
// jobs are never deleted.
func jobExists(ctx context.Context, q Querier, id string) error {
	var got string
	if err := q.QueryRow(ctx, `SELECT id FROM jobs WHERE id = $1`, id).Scan(&got); err != nil {
		return fmt.Errorf("job %s: %w", id, err)
	}
	return nil
}

// earlierStates are, for each state InstanceSetState moves to, the SQL list
// of the states it moves from.
var earlierStates = map[store.InstanceState]string{
	store.InstanceTerminating: `('launching', 'running')`,
	store.InstanceTerminated:  `('launching', 'running', 'terminating')`,
	store.InstanceGone:        `('launching', 'running', 'terminating')`,
}

// InstanceSetState moves an instance forward and interrupts its runner's
// jobs. Locks are taken in the order instance, runner, run, job.
func (s *Store) InstanceSetState(ctx context.Context, p store.InstanceSetStateParams) (*store.Instance, []*store.Job, error) {
	from, ok := earlierStates[p.State]
	if !ok {
		return nil, nil, fmt.Errorf("set state of instance %s: cannot move an instance to %q", p.ID, p.State)
	}
	var terminatingAt, endedAt any = micros(p.Now), nil
	if p.State.Ended() {
		terminatingAt, endedAt = nil, micros(p.Now)
	}
	var (
		in      *store.Instance
		changed []*store.Job
	)
	err := s.write.Tx(ctx, func(q Querier) error {
		changed = nil
		got, err := collectInstances(q.Query(ctx, `UPDATE instances SET state = $2, reason = $3,
			join_token_hash = NULL, terminating_at = COALESCE($4, terminating_at), ended_at = COALESCE($5, ended_at)
			WHERE id = $1 AND state IN `+from+` RETURNING `+instanceColumns,
			p.ID, string(p.State), p.Reason, terminatingAt, endedAt))
		if err != nil {
			return err
		}
		if len(got) == 0 {
			// Unknown, or already there or beyond: nothing to do.
			in, err = s.instanceGet(ctx, q, p.ID)
			return err
		}
		in = got[0]
		if in.RunnerID == "" {
			return nil
		}
		if in.State.Ended() {
			if _, err := q.Exec(ctx, `UPDATE runners SET online = FALSE WHERE id = $1`, in.RunnerID); err != nil {
				return fmt.Errorf("runner %s: %w", in.RunnerID, err)
			}
		}
		held, err := collectJobs(q.Query(ctx, `SELECT `+jobColumns+` FROM jobs
			WHERE runner_id = $1 AND status IN `+activeStatuses+` ORDER BY queue_seq`, in.RunnerID))
		if err != nil {
			return err
		}
		cause := fmt.Sprintf("instance %s %s", in.ID, in.State)
		if in.Reason != "" {
			cause += " (" + in.Reason + ")"
		}
		for _, j := range held {
			jobs, err := s.interrupt(ctx, q, j, cause, p.MaxAttempts, p.Now)
			if err != nil {
				return fmt.Errorf("job %s: %w", j.ID, err)
			}
			changed = append(changed, jobs...)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("set state of instance %s to %s: %w", p.ID, p.State, err)
	}
	return in, changed, nil
}

// InstanceList lists instances oldest first.
func (s *Store) InstanceList(ctx context.Context, p store.InstanceListParams) ([]*store.Instance, error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if p.UserID != "" {
		add("user_id = $%d", p.UserID)
	}
	if p.LimitID != "" {
		add("limit_id = $%d", p.LimitID)
	}
	if p.Backend != "" {
		add("backend = $%d", p.Backend)
	}
	if len(p.States) > 0 {
		for _, st := range p.States {
			args = append(args, string(st))
		}
		where = append(where, "state IN ("+placeholders(len(args)-len(p.States)+1, len(p.States))+")")
	}
	q := `SELECT ` + instanceColumns + ` FROM instances`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	out, err := collectInstances(s.read.Query(ctx, q+` ORDER BY created_at, id`, args...))
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	return out, nil
}

// InstanceGet finds an instance by ID.
func (s *Store) InstanceGet(ctx context.Context, id string) (*store.Instance, error) {
	in, err := s.instanceGet(ctx, s.read, id)
	if err != nil {
		return nil, fmt.Errorf("get instance %s: %w", id, err)
	}
	return in, nil
}

func (s *Store) instanceGet(ctx context.Context, q Querier, id string) (*store.Instance, error) {
	in, err := scanInstance(q.QueryRow(ctx, `SELECT `+instanceColumns+` FROM instances WHERE id = $1`, id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("instance %s: %w", id, err)
	}
	return in, err
}
