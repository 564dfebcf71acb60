package sqlcore

import (
	"context"
	"errors"
	"fmt"

	"github.com/dstackai/dstack/store"
)

// finishedStatuses is the SQL list of the final job states.
const finishedStatuses = `('done', 'failed', 'stopped', 'aborted')`

const codeColumns = `user_id, code_id, size, created_at, uploaded_at, last_used_at`

func scanCode(row Row) (*store.Code, error) {
	var (
		c                 store.Code
		created, uploaded int64
		used              *int64
	)
	if err := row.Scan(&c.UserID, &c.CodeID, &c.Size, &created, &uploaded, &used); err != nil {
		return nil, err
	}
	c.CreatedAt, c.UploadedAt, c.LastUsedAt = fromMicros(created), fromMicros(uploaded), fromMicrosPtr(used)
	return &c, nil
}

// lockCode takes the dialect's lock on a code archive, if it has one.
func (s *Store) lockCode(ctx context.Context, q Querier, codeID string) error {
	if s.d.CodeLock == "" {
		return nil
	}
	if _, err := q.Exec(ctx, s.d.CodeLock, codeID); err != nil {
		return fmt.Errorf("lock code archive %s: %w", codeID, err)
	}
	return nil
}

// CodePut inserts or refreshes a user's record of a code archive, unless
// the archive's bytes are in the trash.
func (s *Store) CodePut(ctx context.Context, p store.CodePutParams) (*store.Code, error) {
	if p.UserID == "" || p.CodeID == "" || p.Size < 0 {
		return nil, fmt.Errorf("record code archive %q: a user, an ID and a size are required", p.CodeID)
	}
	var c *store.Code
	err := s.write.Tx(ctx, func(q Querier) error {
		if err := s.lockCode(ctx, q, p.CodeID); err != nil {
			return err
		}
		var n int
		if err := q.QueryRow(ctx, `SELECT COUNT(*) FROM trash WHERE kind = $1 AND store = '' AND key = $2`,
			string(store.TrashCode), p.CodeID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: its bytes are being removed", store.ErrConflict)
		}
		var err error
		c, err = scanCode(q.QueryRow(ctx, `INSERT INTO code (user_id, code_id, size, created_at, uploaded_at) VALUES ($1, $2, $3, $4, $4)
			ON CONFLICT (user_id, code_id) DO UPDATE SET size = excluded.size, uploaded_at = excluded.uploaded_at
			RETURNING `+codeColumns, p.UserID, p.CodeID, p.Size, micros(p.Now)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record code archive %s of user %s: %w", p.CodeID, p.UserID, err)
	}
	return c, nil
}

// CodeGet reads a user's record of a code archive.
func (s *Store) CodeGet(ctx context.Context, p store.CodeGetParams) (*store.Code, error) {
	c, err := scanCode(s.read.QueryRow(ctx, `SELECT `+codeColumns+` FROM code WHERE user_id = $1 AND code_id = $2`, p.UserID, p.CodeID))
	if err != nil {
		return nil, fmt.Errorf("get code archive %s of user %s: %w", p.CodeID, p.UserID, err)
	}
	return c, nil
}

// CodeDeleteUnused deletes a batch of unused code records. Each record is
// locked first: on PostgreSQL that waits for a concurrent RunCreate using
// it (which updates the row) to commit, and the delete, a later statement,
// sees its run.
func (s *Store) CodeDeleteUnused(ctx context.Context, p store.CodeDeleteUnusedParams) (*store.Deleted, error) {
	if p.Limit <= 0 {
		return nil, errors.New("delete unused code: a limit above zero is required")
	}
	before := micros(p.UploadedBefore)
	out := &store.Deleted{}
	err := s.write.Tx(ctx, func(q Querier) error {
		*out = store.Deleted{}
		cands, err := collectCodes(q.Query(ctx, `SELECT `+codeColumns+` FROM code c WHERE c.uploaded_at < $1
			AND (c.last_used_at IS NULL OR c.last_used_at < $1)
			AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.user_id = c.user_id AND r.code_id = c.code_id)
			ORDER BY c.uploaded_at LIMIT $2`, before, p.Limit))
		if err != nil {
			return err
		}
		for _, c := range cands {
			if err := s.lockCode(ctx, q, c.CodeID); err != nil {
				return err
			}
			var ignored string
			err := q.QueryRow(ctx, `SELECT code_id FROM code WHERE user_id = $1 AND code_id = $2`+s.d.ForUpdate, c.UserID, c.CodeID).Scan(&ignored)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			n, err := q.Exec(ctx, `DELETE FROM code WHERE user_id = $1 AND code_id = $2 AND uploaded_at < $3
				AND (last_used_at IS NULL OR last_used_at < $3)
				AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.user_id = $1 AND r.code_id = $2)`, c.UserID, c.CodeID, before)
			if err != nil {
				return err
			}
			if n == 0 {
				continue
			}
			out.Codes = append(out.Codes, c)
			if err := s.trashCode(ctx, q, c.CodeID, micros(p.Now), micros(p.ClaimUntil), out); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("delete unused code: %w", err)
	}
	return out, nil
}

func collectCodes(rows Rows, err error) ([]*store.Code, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*store.Code
	for rows.Next() {
		c, err := scanCode(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// trashCode puts a code archive's bytes in the trash when no user has a
// record of it any more; the caller holds the archive's lock.
func (s *Store) trashCode(ctx context.Context, q Querier, codeID string, now, until int64, out *store.Deleted) error {
	var left int
	if err := q.QueryRow(ctx, `SELECT COUNT(*) FROM code WHERE code_id = $1`, codeID).Scan(&left); err != nil {
		return err
	}
	if left > 0 {
		return nil
	}
	return s.trash(ctx, q, store.TrashCode, "", codeID, now, until, out)
}

// trash records bytes to remove, claimed by the caller until until. An
// item already there is left as it is.
func (s *Store) trash(ctx context.Context, q Querier, kind store.TrashKind, st, key string, now, until int64, out *store.Deleted) error {
	n, err := q.Exec(ctx, `INSERT INTO trash (kind, store, key, created_at, claimed_until) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (kind, store, key) DO NOTHING`, string(kind), st, key, now, until)
	if err != nil {
		return fmt.Errorf("trash %s %s: %w", kind, key, err)
	}
	if n > 0 {
		out.Trash = append(out.Trash, &store.TrashItem{Kind: kind, Store: st, Key: key, CreatedAt: fromMicros(now)})
	}
	return nil
}

// RunDelete deletes one run.
func (s *Store) RunDelete(ctx context.Context, p store.RunDeleteParams) (*store.Deleted, error) {
	out := &store.Deleted{}
	err := s.write.Tx(ctx, func(q Querier) error {
		*out = store.Deleted{}
		query, args := `SELECT id FROM runs WHERE name = $1`, []any{p.Name}
		if p.UserID != "" {
			query += ` AND user_id = $2`
			args = append(args, p.UserID)
		}
		var id string
		if err := q.QueryRow(ctx, query+s.d.ForUpdate, args...).Scan(&id); err != nil {
			return err
		}
		return s.deleteRun(ctx, q, id, p.Force, micros(p.Now), micros(p.ClaimUntil), out)
	})
	if err != nil {
		return nil, fmt.Errorf("delete run %q: %w", p.Name, err)
	}
	return out, nil
}

// RunDeleteFinishedBefore deletes a batch of old finished untagged runs.
func (s *Store) RunDeleteFinishedBefore(ctx context.Context, p store.RunDeleteFinishedBeforeParams) (*store.Deleted, error) {
	if p.Limit <= 0 {
		return nil, errors.New("delete finished runs: a limit above zero is required")
	}
	before := micros(p.FinishedBefore)
	out := &store.Deleted{}
	err := s.write.Tx(ctx, func(q Querier) error {
		*out = store.Deleted{}
		rows, err := q.Query(ctx, `SELECT r.id FROM runs r WHERE r.submitted_at < $1
			AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.run_id = r.id)
			AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.run_id = r.id
				AND (j.status NOT IN `+finishedStatuses+` OR COALESCE(j.finished_at, j.submitted_at) >= $1))
			ORDER BY r.submitted_at, r.id LIMIT $2`+s.d.ForUpdate, before, p.Limit)
		if err != nil {
			return err
		}
		ids, err := collectStrings(rows)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if err := s.deleteRun(ctx, q, id, false, micros(p.Now), micros(p.ClaimUntil), out); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("delete finished runs: %w", err)
	}
	return out, nil
}

// collectStrings reads a column of strings and closes rows.
func collectStrings(rows Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// deleteRun deletes the run id, locked by the caller, into out.
func (s *Store) deleteRun(ctx context.Context, q Querier, id string, force bool, now, until int64, out *store.Deleted) error {
	run, err := scanRun(q.QueryRow(ctx, runSelect+` WHERE r.id = $1`, id))
	if err != nil {
		return err
	}
	if run.Jobs, err = s.runJobs(ctx, q, id); err != nil {
		return err
	}
	for _, j := range run.Jobs {
		if !j.Status.Finished() {
			return store.ErrRunUnfinished
		}
	}
	var tags int
	if err := q.QueryRow(ctx, `SELECT COUNT(*) FROM tags WHERE run_id = $1`, id).Scan(&tags); err != nil {
		return err
	}
	if tags > 0 && !force {
		return store.ErrRunTagged
	}
	if err := saveHold(ctx, q, `j.run_id = $1`, now, id); err != nil {
		return err
	}
	for _, stmt := range []string{
		`DELETE FROM tags WHERE run_id = $1`,
		`DELETE FROM artifacts WHERE job_id IN (SELECT id FROM jobs WHERE run_id = $1)`,
		`DELETE FROM checkpoints WHERE job_id IN (SELECT id FROM jobs WHERE run_id = $1)`,
		`DELETE FROM jobs WHERE run_id = $1`,
		`DELETE FROM runs WHERE id = $1`,
	} {
		if _, err := q.Exec(ctx, stmt, id); err != nil {
			return err
		}
	}
	for _, j := range run.Jobs {
		if err := s.trash(ctx, q, store.TrashLog, "", j.ID, now, until, out); err != nil {
			return err
		}
		if err := s.trash(ctx, q, store.TrashArtifacts, j.ArtifactStore, j.ID, now, until, out); err != nil {
			return err
		}
	}
	out.Runs = append(out.Runs, run)
	// The user's code goes when no other run of theirs uses it and it was
	// not uploaded again since this run (for a run about to be submitted);
	// a run submitted meanwhile moved last_used_at past this one's.
	if err := s.lockCode(ctx, q, run.CodeID); err != nil {
		return err
	}
	// The row lock waits for a RunCreate using the code to commit; the
	// delete, a statement after it, then sees that run.
	var ignored string
	err = q.QueryRow(ctx, `SELECT code_id FROM code WHERE user_id = $1 AND code_id = $2`+s.d.ForUpdate, run.UserID, run.CodeID).Scan(&ignored)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	c, err := scanCode(q.QueryRow(ctx, `DELETE FROM code WHERE user_id = $1 AND code_id = $2
		AND (last_used_at IS NULL OR uploaded_at <= last_used_at)
		AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.user_id = $1 AND r.code_id = $2)
		RETURNING `+codeColumns, run.UserID, run.CodeID))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	out.Codes = append(out.Codes, c)
	return s.trashCode(ctx, q, run.CodeID, now, until, out)
}

// TrashClaim claims a batch of trash items.
func (s *Store) TrashClaim(ctx context.Context, p store.TrashClaimParams) ([]*store.TrashItem, error) {
	if p.Limit <= 0 {
		return nil, errors.New("claim trash: a limit above zero is required")
	}
	var out []*store.TrashItem
	err := s.write.Tx(ctx, func(q Querier) error {
		out = nil
		rows, err := q.Query(ctx, `SELECT kind, store, key, created_at FROM trash WHERE claimed_until < $1
			ORDER BY created_at, kind, store, key LIMIT $2`+s.d.SkipLocked, micros(p.Now), p.Limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				it      store.TrashItem
				kind    string
				created int64
			)
			if err := rows.Scan(&kind, &it.Store, &it.Key, &created); err != nil {
				return err
			}
			it.Kind, it.CreatedAt = store.TrashKind(kind), fromMicros(created)
			out = append(out, &it)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		for _, it := range out {
			if _, err := q.Exec(ctx, `UPDATE trash SET claimed_until = $1 WHERE kind = $2 AND store = $3 AND key = $4`,
				micros(p.Until), string(it.Kind), it.Store, it.Key); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim trash: %w", err)
	}
	return out, nil
}

// TrashDelete forgets trash items.
func (s *Store) TrashDelete(ctx context.Context, items []*store.TrashItem) error {
	if len(items) == 0 {
		return nil
	}
	err := s.write.Tx(ctx, func(q Querier) error {
		for _, it := range items {
			if _, err := q.Exec(ctx, `DELETE FROM trash WHERE kind = $1 AND store = $2 AND key = $3`,
				string(it.Kind), it.Store, it.Key); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("forget trash: %w", err)
	}
	return nil
}

// JobSetLogSize records a job's log size.
func (s *Store) JobSetLogSize(ctx context.Context, p store.JobSetLogSizeParams) error {
	n, err := s.write.Exec(ctx, `UPDATE jobs SET log_size = $1 WHERE id = $2`, p.Size, p.ID)
	if err == nil && n == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("record the log size of job %s: %w", p.ID, err)
	}
	return nil
}

// usageSQL sums the recorded sizes per user; $1, when the filter is used,
// is the user.
func usageSQL(filter string) string {
	return `SELECT user_id, CAST(SUM(code) AS BIGINT), CAST(SUM(logs) AS BIGINT), CAST(SUM(artifacts) AS BIGINT),
		CAST(SUM(checkpoints) AS BIGINT) FROM (
		SELECT user_id, size AS code, CAST(0 AS BIGINT) AS logs, CAST(0 AS BIGINT) AS artifacts, CAST(0 AS BIGINT) AS checkpoints FROM code` + filter + `
		UNION ALL SELECT user_id, 0, log_size, 0, 0 FROM jobs` + filter + ` AND log_size > 0
		UNION ALL SELECT j.user_id, 0, 0, a.size, 0 FROM artifacts a JOIN jobs j ON j.id = a.job_id` + filter + `
		UNION ALL SELECT j.user_id, 0, 0, 0, c.size FROM checkpoints c JOIN jobs j ON j.id = c.job_id` + filter + `
	) u GROUP BY user_id`
}

// UserStorageUsed sums one user's recorded sizes.
func (s *Store) UserStorageUsed(ctx context.Context, userID string) (*store.StorageUsage, error) {
	m, err := s.storageUsed(ctx, usageSQL(" WHERE user_id = $1"), userID)
	if err != nil {
		return nil, fmt.Errorf("storage used by user %s: %w", userID, err)
	}
	if u := m[userID]; u != nil {
		return u, nil
	}
	return &store.StorageUsage{}, nil
}

// UserStorageUsedAll sums every user's recorded sizes.
func (s *Store) UserStorageUsedAll(ctx context.Context) (map[string]*store.StorageUsage, error) {
	m, err := s.storageUsed(ctx, usageSQL(" WHERE TRUE"))
	if err != nil {
		return nil, fmt.Errorf("storage used by users: %w", err)
	}
	return m, nil
}

func (s *Store) storageUsed(ctx context.Context, query string, args ...any) (map[string]*store.StorageUsage, error) {
	rows, err := s.read.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]*store.StorageUsage{}
	for rows.Next() {
		var (
			id string
			u  store.StorageUsage
		)
		if err := rows.Scan(&id, &u.Code, &u.Logs, &u.Artifacts, &u.Checkpoints); err != nil {
			return nil, err
		}
		out[id] = &u
	}
	return out, rows.Err()
}

// UserSetStorageQuota sets or clears a user's own quota.
func (s *Store) UserSetStorageQuota(ctx context.Context, p store.UserSetStorageQuotaParams) error {
	if p.Quota != nil && *p.Quota < 0 {
		return fmt.Errorf("set the storage quota of user %s: the quota cannot be negative", p.UserID)
	}
	n, err := s.write.Exec(ctx, `UPDATE users SET storage_quota = $1 WHERE id = $2`, p.Quota, p.UserID)
	if err == nil && n == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("set the storage quota of user %s: %w", p.UserID, err)
	}
	return nil
}
