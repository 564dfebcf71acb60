package sqlcore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dstackai/dstack/store"
)

// UserCreate records a user and its first token in one transaction. The
// user's token_hash column is no longer read (tokens hold the hashes): it
// gets 'tokens:' || id, as migration 012 left it.
func (s *Store) UserCreate(ctx context.Context, p store.UserCreateParams) (*store.User, error) {
	err := s.write.Tx(ctx, func(q Querier) error {
		if _, err := q.Exec(ctx, `INSERT INTO users (id, name, token_hash, admin, created_at) VALUES ($1, $2, $3, $4, $5)`,
			p.ID, p.Name, "tokens:"+p.ID, p.Admin, micros(p.Now)); err != nil {
			return err
		}
		if p.TokenHash == "" {
			return nil
		}
		tokenID, tokenName := p.TokenID, p.TokenName
		if tokenID == "" {
			tokenID = p.ID
		}
		if tokenName == "" {
			tokenName = "default"
		}
		return insertToken(ctx, q, store.TokenCreateParams{ID: tokenID, UserID: p.ID, Name: tokenName, Hash: p.TokenHash, Now: p.Now})
	})
	if err != nil {
		return nil, fmt.Errorf("create user %q: %w", p.Name, err)
	}
	return &store.User{ID: p.ID, Name: p.Name, Admin: p.Admin, CreatedAt: fromMicros(micros(p.Now))}, nil
}

const userColumns = `users.id, users.name, users.admin, users.created_at, users.last_seen_at, users.deleted_at, users.storage_quota, users.max_running`

// userRow receives a row of userColumns.
type userRow struct {
	u             store.User
	created       int64
	seen, deleted *int64
}

// dest are the destinations of userColumns, in order.
func (r *userRow) dest() []any {
	return []any{&r.u.ID, &r.u.Name, &r.u.Admin, &r.created, &r.seen, &r.deleted, &r.u.StorageQuota, &r.u.MaxRunning}
}

// user is the user scanned.
func (r *userRow) user() *store.User {
	r.u.CreatedAt = fromMicros(r.created)
	r.u.LastSeenAt = fromMicrosPtr(r.seen)
	r.u.DeletedAt = fromMicrosPtr(r.deleted)
	return &r.u
}

func scanUser(row Row, extra ...any) (*store.User, error) {
	var r userRow
	if err := row.Scan(append(r.dest(), extra...)...); err != nil {
		return nil, err
	}
	return r.user(), nil
}

// UserGetByTokenHash finds the user a token belongs to.
func (s *Store) UserGetByTokenHash(ctx context.Context, tokenHash string) (*store.User, error) {
	u, err := scanUser(s.read.QueryRow(ctx, `SELECT `+userColumns+` FROM tokens JOIN users ON users.id = tokens.user_id
		WHERE tokens.hash = $1 AND users.deleted_at IS NULL`, tokenHash))
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

// UserGetByName finds a user that is not removed by name.
func (s *Store) UserGetByName(ctx context.Context, name string) (*store.User, error) {
	u, err := scanUser(s.read.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE name = $1 AND deleted_at IS NULL`, name))
	if err != nil {
		return nil, fmt.Errorf("get user %q: %w", name, err)
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

// UserList lists the users not removed, with their active jobs counted.
func (s *Store) UserList(ctx context.Context) ([]*store.User, error) {
	rows, err := s.read.Query(ctx, `SELECT `+userColumns+`,
		(SELECT COUNT(*) FROM jobs WHERE jobs.user_id = users.id AND jobs.status IN `+activeStatuses+`)
		FROM users WHERE deleted_at IS NULL ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var out []*store.User
	for rows.Next() {
		var running int64
		u, err := scanUser(rows, &running)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		u.RunningJobs = int(running)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// otherAdmins counts the admins other than userID that are not removed,
// locking their rows so that two transactions cannot each demote or remove
// one of the last two.
func (s *Store) otherAdmins(ctx context.Context, q Querier, userID string) (int, error) {
	rows, err := q.Query(ctx, `SELECT id FROM users WHERE admin AND deleted_at IS NULL AND id <> $1`+s.d.ForUpdate, userID)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	return n, rows.Err()
}

// UserSetAdmin makes a user an admin or a member.
func (s *Store) UserSetAdmin(ctx context.Context, p store.UserSetAdminParams) (*store.User, error) {
	var u *store.User
	err := s.write.Tx(ctx, func(q Querier) error {
		var err error
		u, err = scanUser(q.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE name = $1 AND deleted_at IS NULL`+s.d.ForUpdate, p.Name))
		if err != nil {
			return err
		}
		if u.Admin && !p.Admin {
			n, err := s.otherAdmins(ctx, q, u.ID)
			if err != nil {
				return err
			}
			if n == 0 {
				return store.ErrLastAdmin
			}
		}
		if _, err := q.Exec(ctx, `UPDATE users SET admin = $1 WHERE id = $2`, p.Admin, u.ID); err != nil {
			return err
		}
		u.Admin = p.Admin
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("set role of user %q: %w", p.Name, err)
	}
	return u, nil
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

// UserDelete removes a user, its tokens and its runners' credentials.
func (s *Store) UserDelete(ctx context.Context, p store.UserDeleteParams) (*store.User, error) {
	var u *store.User
	err := s.write.Tx(ctx, func(q Querier) error {
		var err error
		u, err = scanUser(q.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE name = $1 AND deleted_at IS NULL`+s.d.ForUpdate, p.Name))
		if err != nil {
			return err
		}
		if u.Admin {
			n, err := s.otherAdmins(ctx, q, u.ID)
			if err != nil {
				return err
			}
			if n == 0 {
				return store.ErrLastAdmin
			}
		}
		now := micros(p.Now)
		if _, err := q.Exec(ctx, `UPDATE users SET deleted_at = $1 WHERE id = $2`, now, u.ID); err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `DELETE FROM tokens WHERE user_id = $1`, u.ID); err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `UPDATE runners SET token_hash = 'revoked:' || id
			WHERE user_id = $1 AND instance_id IS NULL`, u.ID); err != nil {
			return err
		}
		u.DeletedAt = fromMicrosPtr(&now)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("remove user %q: %w", p.Name, err)
	}
	return u, nil
}

const tokenColumns = `tokens.id, tokens.user_id, tokens.name, tokens.created_at, tokens.last_used_at, tokens.expires_at`

func scanToken(row Row, extra ...any) (*store.Token, error) {
	var (
		t             store.Token
		created       int64
		used, expires *int64
	)
	if err := row.Scan(append([]any{&t.ID, &t.UserID, &t.Name, &created, &used, &expires}, extra...)...); err != nil {
		return nil, err
	}
	t.CreatedAt = fromMicros(created)
	t.LastUsedAt = fromMicrosPtr(used)
	t.ExpiresAt = fromMicrosPtr(expires)
	return &t, nil
}

func microsPtr(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	us := micros(*t)
	return &us
}

func insertToken(ctx context.Context, q Querier, p store.TokenCreateParams) error {
	_, err := q.Exec(ctx, `INSERT INTO tokens (id, user_id, name, hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		p.ID, p.UserID, p.Name, p.Hash, micros(p.Now), microsPtr(p.ExpiresAt))
	return err
}

// TokenCreate records a user's new token.
func (s *Store) TokenCreate(ctx context.Context, p store.TokenCreateParams) (*store.Token, error) {
	err := s.write.Tx(ctx, func(q Querier) error {
		var id string
		if err := q.QueryRow(ctx, `SELECT id FROM users WHERE id = $1 AND deleted_at IS NULL`+s.d.ForShare, p.UserID).Scan(&id); err != nil {
			return err
		}
		return insertToken(ctx, q, p)
	})
	if err != nil {
		return nil, fmt.Errorf("create token %q: %w", p.Name, err)
	}
	return &store.Token{ID: p.ID, UserID: p.UserID, Name: p.Name, CreatedAt: fromMicros(micros(p.Now)),
		ExpiresAt: fromMicrosPtr(microsPtr(p.ExpiresAt))}, nil
}

// TokenReplaceAll gives a user a new token and deletes the others.
func (s *Store) TokenReplaceAll(ctx context.Context, p store.TokenCreateParams) ([]*store.Token, error) {
	var old []*store.Token
	err := s.write.Tx(ctx, func(q Querier) error {
		var id string
		if err := q.QueryRow(ctx, `SELECT id FROM users WHERE id = $1 AND deleted_at IS NULL`+s.d.ForUpdate, p.UserID).Scan(&id); err != nil {
			return err
		}
		rows, err := q.Query(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE user_id = $1 ORDER BY name`, p.UserID)
		if err != nil {
			return err
		}
		for rows.Next() {
			t, err := scanToken(rows)
			if err != nil {
				rows.Close()
				return err
			}
			old = append(old, t)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `DELETE FROM tokens WHERE user_id = $1`, p.UserID); err != nil {
			return err
		}
		return insertToken(ctx, q, p)
	})
	if err != nil {
		return nil, fmt.Errorf("replace the tokens of user %s: %w", p.UserID, err)
	}
	return old, nil
}

// TokenList lists a user's tokens by name.
func (s *Store) TokenList(ctx context.Context, p store.TokenListParams) ([]*store.Token, error) {
	rows, err := s.read.Query(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE user_id = $1 ORDER BY name`, p.UserID)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	out := []*store.Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// TokenRevoke deletes a user's token, and maybe revokes its runners.
func (s *Store) TokenRevoke(ctx context.Context, p store.TokenRevokeParams) (*store.TokenRevokeResult, error) {
	res := &store.TokenRevokeResult{}
	err := s.write.Tx(ctx, func(q Querier) error {
		var err error
		res.Token, err = scanToken(q.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE user_id = $1 AND name = $2`, p.UserID, p.Ref))
		if errors.Is(err, store.ErrNotFound) {
			res.Token, err = scanToken(q.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE user_id = $1 AND id = $2`, p.UserID, p.Ref))
		}
		if err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `DELETE FROM tokens WHERE id = $1`, res.Token.ID); err != nil {
			return err
		}
		if p.Runners {
			res.Runners, err = revokeRunners(ctx, q, res.Token.ID)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoke token %q: %w", p.Ref, err)
	}
	return res, nil
}

// revokeRunners revokes the credentials of the runners registered with a
// token and returns the runners.
func revokeRunners(ctx context.Context, q Querier, tokenID string) ([]*store.Runner, error) {
	rows, err := q.Query(ctx, runnerSelect+` WHERE r.token_id = $1 ORDER BY r.name, r.id`, tokenID)
	if err != nil {
		return nil, err
	}
	var out []*store.Runner
	for rows.Next() {
		r, err := scanRunner(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if _, err := q.Exec(ctx, `UPDATE runners SET token_hash = 'revoked:' || id WHERE token_id = $1`, tokenID); err != nil {
		return nil, err
	}
	return out, nil
}

// RunnerRevokeByToken revokes the runners registered with a token.
func (s *Store) RunnerRevokeByToken(ctx context.Context, tokenID string) ([]*store.Runner, error) {
	var out []*store.Runner
	err := s.write.Tx(ctx, func(q Querier) error {
		var err error
		out, err = revokeRunners(ctx, q, tokenID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoke runners of token %s: %w", tokenID, err)
	}
	return out, nil
}

// TokenAuthenticate finds a token and its user, recording the use at most
// once per p.TouchEvery.
func (s *Store) TokenAuthenticate(ctx context.Context, p store.TokenAuthenticateParams) (*store.User, *store.Token, error) {
	var r userRow
	tok, err := scanToken(s.read.QueryRow(ctx, `SELECT `+tokenColumns+`, `+userColumns+`
		FROM tokens JOIN users ON users.id = tokens.user_id
		WHERE tokens.hash = $1 AND users.deleted_at IS NULL`, p.Hash),
		r.dest()...)
	if err != nil {
		return nil, nil, fmt.Errorf("authenticate token: %w", err)
	}
	u := r.user()
	if tok.ExpiresAt != nil && !p.Now.Before(*tok.ExpiresAt) {
		return u, tok, fmt.Errorf("authenticate token %q: %w", tok.Name, store.ErrExpired)
	}
	if tok.LastUsedAt == nil || tok.LastUsedAt.Before(p.Now.Add(-p.TouchEvery)) {
		now := micros(p.Now)
		err := s.write.Tx(ctx, func(q Querier) error {
			if _, err := q.Exec(ctx, `UPDATE tokens SET last_used_at = $1 WHERE id = $2`, now, tok.ID); err != nil {
				return err
			}
			_, err := q.Exec(ctx, `UPDATE users SET last_seen_at = $1 WHERE id = $2 AND (last_seen_at IS NULL OR last_seen_at < $1)`, now, u.ID)
			return err
		})
		if err != nil {
			return nil, nil, fmt.Errorf("record use of token %q: %w", tok.Name, err)
		}
		tok.LastUsedAt = fromMicrosPtr(&now)
		if u.LastSeenAt == nil || u.LastSeenAt.Before(*tok.LastUsedAt) {
			u.LastSeenAt = tok.LastUsedAt
		}
	}
	return u, tok, nil
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
