package sqlcore

import (
	"context"
	"errors"
	"fmt"

	"github.com/dstackai/dstack/store"
)

// countedStates is the SQL list of the instance states counted against a
// limit.
const countedStates = `('launching', 'running', 'terminating')`

// onDemandEnabled is the server's on-demand switch as an SQL expression.
const onDemandEnabled = `COALESCE((SELECT enabled FROM on_demand_switch WHERE id = 1), TRUE)`

// limitSelect reads limits with their count of instances and the server's
// on-demand switch.
const limitSelect = `SELECT l.id, l.user_id, l.backend, l.region, l.instance_type, l.spot, l.max_count,
	(SELECT COUNT(*) FROM instances i WHERE i.limit_id = l.id AND i.state IN ` + countedStates + `),
	` + onDemandEnabled + `, l.created_at, l.updated_at
	FROM limits l`

func scanLimit(row Row) (*store.Limit, error) {
	var (
		l                store.Limit
		created, updated int64
	)
	err := row.Scan(&l.ID, &l.UserID, &l.Backend, &l.Region, &l.InstanceType, &l.Spot, &l.Max,
		&l.Instances, &l.OnDemandEnabled, &created, &updated)
	if err != nil {
		return nil, err
	}
	l.CreatedAt = fromMicros(created)
	l.UpdatedAt = fromMicros(updated)
	return &l, nil
}

func collectLimits(rows Rows, err error) ([]*store.Limit, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*store.Limit
	for rows.Next() {
		l, err := scanLimit(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// LimitPut inserts the limit unless its key has one, then updates the one
// found under a row lock: a concurrent LimitPut of the same key waits for the
// insert to commit instead of failing on the unique key, and InstanceCreate,
// which locks the same row, sees either the old maximum or the new one.
func (s *Store) LimitPut(ctx context.Context, p store.LimitPutParams) (*store.LimitPutResult, error) {
	what := fmt.Sprintf("put limit %s/%s/%s (spot %v)", p.Backend, p.Region, p.InstanceType, p.Spot)
	if p.Max < 0 {
		return nil, fmt.Errorf("%s: maximum %d is negative", what, p.Max)
	}
	if p.UserID == "" || p.Backend == "" || p.Region == "" || p.InstanceType == "" {
		return nil, fmt.Errorf("%s: user, backend, region and instance type are all required", what)
	}
	var res store.LimitPutResult
	err := s.write.Tx(ctx, func(q Querier) error {
		now := micros(p.Now)
		n, err := q.Exec(ctx, `INSERT INTO limits (id, user_id, backend, region, instance_type, spot, max_count,
			created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
			ON CONFLICT (backend, region, instance_type, spot) DO NOTHING`,
			p.ID, p.UserID, p.Backend, p.Region, p.InstanceType, p.Spot, p.Max, now)
		if err != nil {
			return err
		}
		res.Created = n == 1
		if !res.Created {
			var id string
			err := q.QueryRow(ctx, `SELECT id, max_count FROM limits
				WHERE backend = $1 AND region = $2 AND instance_type = $3 AND spot = $4`+s.d.ForUpdate,
				p.Backend, p.Region, p.InstanceType, p.Spot).Scan(&id, &res.PrevMax)
			if err != nil {
				return err
			}
			if _, err := q.Exec(ctx, `UPDATE limits SET max_count = $2, updated_at = $3 WHERE id = $1`,
				id, p.Max, now); err != nil {
				return err
			}
			p.ID = id
		}
		if res.Created || res.PrevMax != p.Max {
			if err := recordLimit(ctx, q, p.ID, p.Max, now); err != nil {
				return err
			}
		}
		res.Limit, err = scanLimit(q.QueryRow(ctx, limitSelect+` WHERE l.id = $1`, p.ID))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &res, nil
}

// LimitDelete deletes one limit or all of them.
func (s *Store) LimitDelete(ctx context.Context, p store.LimitDeleteParams) ([]*store.Limit, error) {
	where, args := `TRUE`, []any{}
	if p.ID != "" {
		where, args = `id = $1`, append(args, p.ID)
	}
	var out []*store.Limit
	err := s.write.Tx(ctx, func(q Querier) error {
		var err error
		out, err = collectLimits(q.Query(ctx, limitSelect+` WHERE l.id IN (SELECT id FROM limits WHERE `+where+`)
			ORDER BY l.backend, l.region, l.instance_type, l.spot`, args...))
		if err != nil {
			return err
		}
		if p.ID != "" && len(out) == 0 {
			return store.ErrNotFound
		}
		for _, l := range out {
			if err := recordLimit(ctx, q, l.ID, 0, micros(p.Now)); err != nil {
				return err
			}
		}
		_, err = q.Exec(ctx, `DELETE FROM limits WHERE `+where, args...)
		return err
	})
	if err != nil {
		if p.ID != "" {
			return nil, fmt.Errorf("delete limit %s: %w", p.ID, err)
		}
		return nil, fmt.Errorf("delete limits: %w", err)
	}
	return out, nil
}

// LimitList lists the limits by key.
func (s *Store) LimitList(ctx context.Context, _ store.LimitListParams) ([]*store.Limit, error) {
	out, err := collectLimits(s.read.Query(ctx, limitSelect+` ORDER BY l.backend, l.region, l.instance_type, l.spot`))
	if err != nil {
		return nil, fmt.Errorf("list limits: %w", err)
	}
	return out, nil
}

// OnDemandSetEnabled records the server's on-demand switch.
func (s *Store) OnDemandSetEnabled(ctx context.Context, p store.OnDemandSetEnabledParams) error {
	_, err := s.write.Exec(ctx, `INSERT INTO on_demand_switch (id, enabled, updated_at) VALUES (1, $1, $2)
		ON CONFLICT (id) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at`,
		p.Enabled, micros(p.Now))
	if err != nil {
		return fmt.Errorf("set on-demand runners: %w", err)
	}
	return nil
}

// OnDemandGet reads the server's on-demand switch.
func (s *Store) OnDemandGet(ctx context.Context) (*store.OnDemand, error) {
	var (
		o       = store.OnDemand{Enabled: true}
		updated int64
	)
	err := s.read.QueryRow(ctx, `SELECT enabled, updated_at FROM on_demand_switch WHERE id = 1`).Scan(&o.Enabled, &updated)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &o, nil
	case err != nil:
		return nil, fmt.Errorf("get on-demand runners: %w", err)
	}
	o.UpdatedAt = fromMicros(updated)
	return &o, nil
}

// errLimitGone is InstanceCreate's error for a limit that no longer exists.
var errLimitGone = fmt.Errorf("%w: %w", store.ErrLimitReached, store.ErrNotFound)

// lockLimit reads a limit under a row lock (the write lock on SQLite) and
// checks it has room for n more instances.
func (s *Store) lockLimit(ctx context.Context, q Querier, limitID string, n int) (*store.Limit, error) {
	l, err := scanLimit(q.QueryRow(ctx, `SELECT l.id, l.user_id, l.backend, l.region, l.instance_type, l.spot,
		l.max_count, 0, TRUE, l.created_at, l.updated_at FROM limits l WHERE l.id = $1`+s.d.ForUpdate, limitID))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("limit %s: %w", limitID, errLimitGone)
	}
	if err != nil {
		return nil, err
	}
	// The counts are read after the lock is held, so on PostgreSQL they see
	// every instance that the previous holder's transaction committed.
	err = q.QueryRow(ctx, `SELECT COUNT(*) FROM instances WHERE limit_id = $1 AND state IN `+countedStates, limitID).
		Scan(&l.Instances)
	if err != nil {
		return nil, err
	}
	err = q.QueryRow(ctx, `SELECT `+onDemandEnabled).Scan(&l.OnDemandEnabled)
	if err != nil {
		return nil, err
	}
	if !l.OnDemandEnabled {
		return nil, fmt.Errorf("limit %s: on-demand runners are disabled: %w", limitID, store.ErrLimitReached)
	}
	if l.Instances+n > l.Max {
		return nil, fmt.Errorf("limit %s has %d of %d instances, no room for %d more: %w",
			limitID, l.Instances, l.Max, n, store.ErrLimitReached)
	}
	return l, nil
}
