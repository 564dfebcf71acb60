package sqlcore

import (
	"context"
	"errors"
	"fmt"

	"github.com/dstackai/dstack/store"
)

const tagSelect = `SELECT t.user_id, t.name, t.run_id, r.name, r.workflow, t.created_at
	FROM tags t JOIN runs r ON r.id = t.run_id`

func scanTag(row Row) (*store.Tag, error) {
	var (
		t       store.Tag
		created int64
	)
	if err := row.Scan(&t.UserID, &t.Name, &t.RunID, &t.RunName, &t.Workflow, &created); err != nil {
		return nil, err
	}
	t.CreatedAt = fromMicros(created)
	return &t, nil
}

// TagPut reads the run and the tag's current row (locked on PostgreSQL; the
// write transaction excludes other writers on SQLite), then inserts, moves
// or leaves the tag in the same transaction.
func (s *Store) TagPut(ctx context.Context, p store.TagPutParams) (*store.TagPutResult, error) {
	if p.UserID == "" || p.Name == "" || p.RunID == "" {
		return nil, fmt.Errorf("put tag %q: a user, a name and a run are required", p.Name)
	}
	now := micros(p.Now)
	var res *store.TagPutResult
	err := s.write.Tx(ctx, func(q Querier) error {
		var runName, workflow string
		if err := q.QueryRow(ctx, `SELECT name, workflow FROM runs WHERE id = $1 AND user_id = $2`, p.RunID, p.UserID).
			Scan(&runName, &workflow); err != nil {
			return fmt.Errorf("run %s: %w", p.RunID, err)
		}
		tag := &store.Tag{UserID: p.UserID, Name: p.Name, RunID: p.RunID, RunName: runName, Workflow: workflow, CreatedAt: fromMicros(now)}
		var (
			oldRunID string
			created  int64
		)
		err := q.QueryRow(ctx, `SELECT run_id, created_at FROM tags WHERE user_id = $1 AND name = $2`+s.d.ForUpdate,
			p.UserID, p.Name).Scan(&oldRunID, &created)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if _, err := q.Exec(ctx, `INSERT INTO tags (user_id, name, run_id, created_at) VALUES ($1, $2, $3, $4)`,
				p.UserID, p.Name, p.RunID, now); err != nil {
				return err
			}
			res = &store.TagPutResult{Tag: tag, Created: true}
			return nil
		case err != nil:
			return err
		case oldRunID == p.RunID:
			tag.CreatedAt = fromMicros(created)
			res = &store.TagPutResult{Tag: tag}
			return nil
		case !p.Force:
			return fmt.Errorf("tag names run %s: %w", oldRunID, store.ErrConflict)
		}
		prev, err := scanTag(q.QueryRow(ctx, tagSelect+` WHERE t.user_id = $1 AND t.name = $2`, p.UserID, p.Name))
		if err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `UPDATE tags SET run_id = $3, created_at = $4 WHERE user_id = $1 AND name = $2`,
			p.UserID, p.Name, p.RunID, now); err != nil {
			return err
		}
		res = &store.TagPutResult{Tag: tag, Previous: prev}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("put tag %q: %w", p.Name, err)
	}
	return res, nil
}

// TagGet finds a user's tag.
func (s *Store) TagGet(ctx context.Context, p store.TagGetParams) (*store.Tag, error) {
	t, err := scanTag(s.read.QueryRow(ctx, tagSelect+` WHERE t.user_id = $1 AND t.name = $2`, p.UserID, p.Name))
	if err != nil {
		return nil, fmt.Errorf("get tag %q: %w", p.Name, err)
	}
	return t, nil
}

// TagDelete reads and deletes a tag in one transaction.
func (s *Store) TagDelete(ctx context.Context, p store.TagDeleteParams) (*store.Tag, error) {
	var t *store.Tag
	err := s.write.Tx(ctx, func(q Querier) error {
		var err error
		if t, err = scanTag(q.QueryRow(ctx, tagSelect+` WHERE t.user_id = $1 AND t.name = $2`, p.UserID, p.Name)); err != nil {
			return err
		}
		n, err := q.Exec(ctx, `DELETE FROM tags WHERE user_id = $1 AND name = $2`, p.UserID, p.Name)
		if err == nil && n == 0 {
			err = store.ErrNotFound // deleted meanwhile
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("delete tag %q: %w", p.Name, err)
	}
	return t, nil
}

// TagList lists a user's tags by name.
func (s *Store) TagList(ctx context.Context, p store.TagListParams) ([]*store.Tag, error) {
	rows, err := s.read.Query(ctx, tagSelect+` WHERE t.user_id = $1 ORDER BY t.name`, p.UserID)
	if err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	defer rows.Close()
	var out []*store.Tag
	for rows.Next() {
		t, err := scanTag(rows)
		if err != nil {
			return nil, fmt.Errorf("list tags: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	return out, nil
}
