package sqlcore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/dstackai/dstack/store"
)

// AuditAppend inserts one entry.
func (s *Store) AuditAppend(ctx context.Context, p store.AuditAppendParams) (*store.AuditEntry, error) {
	if p.ID == "" || p.Action == "" {
		return nil, errors.New("append audit entry: an ID and an action are required")
	}
	detail := strings.TrimSpace(p.Detail)
	if detail == "" {
		detail = "{}"
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(detail), &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("append audit entry %s: detail is not a JSON object: %q", p.Action, p.Detail)
	}
	var userID any
	if p.UserID != "" {
		userID = p.UserID
	}
	at := micros(p.At)
	_, err := s.write.Exec(ctx, `INSERT INTO audit (id, at, user_id, user_name, action, target, detail, remote_addr)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, p.ID, at, userID, p.UserName, p.Action, p.Target, detail, p.RemoteAddr)
	if err != nil {
		return nil, fmt.Errorf("append audit entry %s: %w", p.Action, err)
	}
	return &store.AuditEntry{ID: p.ID, At: fromMicros(at), UserID: p.UserID, UserName: p.UserName, Action: p.Action,
		Target: p.Target, Detail: detail, RemoteAddr: p.RemoteAddr}, nil
}

// AuditList reads a page newest first by (at, id), which the index
// audit_at_id serves whole.
func (s *Store) AuditList(ctx context.Context, p store.AuditListParams) ([]*store.AuditEntry, error) {
	var (
		where []string
		args  []any
	)
	if !p.Since.IsZero() {
		args = append(args, micros(p.Since))
		where = append(where, fmt.Sprintf("at >= $%d", len(args)))
	}
	if p.After != nil {
		args = append(args, micros(p.After.At), p.After.ID)
		where = append(where, fmt.Sprintf("(at < $%d OR (at = $%d AND id < $%d))", len(args)-1, len(args)-1, len(args)))
	}
	q := `SELECT id, at, COALESCE(user_id, ''), user_name, action, target, detail, remote_addr FROM audit`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY at DESC, id DESC"
	if p.Limit > 0 {
		args = append(args, p.Limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	rows, err := s.read.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit entries: %w", err)
	}
	defer rows.Close()
	var out []*store.AuditEntry
	for rows.Next() {
		var (
			e  store.AuditEntry
			at int64
		)
		if err := rows.Scan(&e.ID, &at, &e.UserID, &e.UserName, &e.Action, &e.Target, &e.Detail, &e.RemoteAddr); err != nil {
			return nil, fmt.Errorf("list audit entries: %w", err)
		}
		e.At = fromMicros(at)
		out = append(out, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit entries: %w", err)
	}
	return out, nil
}

// AuditDeleteBefore deletes one batch of the oldest entries, in one
// statement.
func (s *Store) AuditDeleteBefore(ctx context.Context, p store.AuditDeleteBeforeParams) (int, error) {
	if p.Limit < 1 {
		return 0, fmt.Errorf("delete audit entries: limit %d: give at least 1", p.Limit)
	}
	n, err := s.write.Exec(ctx, `DELETE FROM audit WHERE id IN
		(SELECT id FROM audit WHERE at < $1 ORDER BY at, id LIMIT $2)`, micros(p.Before), p.Limit)
	if err != nil {
		return 0, fmt.Errorf("delete audit entries before %s: %w", p.Before.UTC().Format("2006-01-02T15:04:05Z"), err)
	}
	return int(n), nil
}
