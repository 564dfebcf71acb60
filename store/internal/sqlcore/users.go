package sqlcore

import (
	"context"
	"fmt"

	"github.com/dstackai/dstack/store"
)

// UserCreate records a user; its name and token hash are unique.
func (s *Store) UserCreate(ctx context.Context, p store.UserCreateParams) (*store.User, error) {
	_, err := s.write.Exec(ctx, `INSERT INTO users (id, name, token_hash, admin, created_at) VALUES ($1, $2, $3, $4, $5)`,
		p.ID, p.Name, p.TokenHash, p.Admin, micros(p.Now))
	if err != nil {
		return nil, fmt.Errorf("create user %q: %w", p.Name, err)
	}
	return &store.User{ID: p.ID, Name: p.Name, Admin: p.Admin, CreatedAt: fromMicros(micros(p.Now))}, nil
}

const userColumns = `id, name, admin, created_at, max_running`

func scanUser(row Row) (*store.User, error) {
	var (
		u       store.User
		created int64
	)
	if err := row.Scan(&u.ID, &u.Name, &u.Admin, &created, &u.MaxRunning); err != nil {
		return nil, err
	}
	u.CreatedAt = fromMicros(created)
	return &u, nil
}

// UserGetByTokenHash finds the user a token belongs to.
func (s *Store) UserGetByTokenHash(ctx context.Context, tokenHash string) (*store.User, error) {
	u, err := scanUser(s.read.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE token_hash = $1`, tokenHash))
	if err != nil {
		return nil, fmt.Errorf("get user by token: %w", err)
	}
	return u, nil
}

// UserGet finds a user by ID.
func (s *Store) UserGet(ctx context.Context, id string) (*store.User, error) {
	u, err := scanUser(s.read.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("get user %s: %w", id, err)
	}
	return u, nil
}

// UserCount counts the users.
func (s *Store) UserCount(ctx context.Context) (int, error) {
	var n int
	if err := s.read.QueryRow(ctx, `SELECT COUNT(*) FROM users`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count users: %w", err)
	}
	return n, nil
}

// UserSetMaxRunning sets a user's cap of active jobs.
func (s *Store) UserSetMaxRunning(ctx context.Context, p store.UserSetMaxRunningParams) (*store.User, error) {
	if p.MaxRunning < 0 {
		return nil, fmt.Errorf("set the running jobs cap of user %s: %d is negative", p.UserID, p.MaxRunning)
	}
	u, err := scanUser(s.write.QueryRow(ctx, `UPDATE users SET max_running = $2 WHERE id = $1 RETURNING `+userColumns,
		p.UserID, p.MaxRunning))
	if err != nil {
		return nil, fmt.Errorf("set the running jobs cap of user %s: %w", p.UserID, err)
	}
	return u, nil
}

// UserCapList lists the capped users with their counts of active jobs.
func (s *Store) UserCapList(ctx context.Context) ([]*store.UserCap, error) {
	rows, err := s.read.Query(ctx, `SELECT u.id, u.max_running,
		(SELECT COUNT(*) FROM jobs j WHERE j.user_id = u.id AND j.status IN `+activeStatuses+`)
		FROM users u WHERE u.max_running > 0 ORDER BY u.id`)
	if err != nil {
		return nil, fmt.Errorf("list capped users: %w", err)
	}
	defer rows.Close()
	var out []*store.UserCap
	for rows.Next() {
		var c store.UserCap
		if err := rows.Scan(&c.UserID, &c.MaxRunning, &c.Running); err != nil {
			return nil, fmt.Errorf("list capped users: %w", err)
		}
		out = append(out, &c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list capped users: %w", err)
	}
	return out, nil
}
