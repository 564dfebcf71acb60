package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/dstackai/dstack/store"
)

// AdminReset is what ResetAdminToken did.
type AdminReset struct {
	// User is the admin the token is for; Created is true when the admin
	// was made anew (no admin was left).
	User    string
	Created bool
	// Token is the new token, to be shown once.
	Token string
	// Revoked counts the admin's tokens revoked.
	Revoked int
}

// ResetAdminToken recovers a lost admin token, on the server's machine:
// it opens cfg's state directly (SQLite in cfg.DataDir, or cfg.DB), which
// works while the server runs, gives the first admin (or, when no admin is
// left, a user `admin`, made an admin or made anew) a new token, and then
// revokes the admin's other tokens, ending their sessions, in the same
// transaction.
func ResetAdminToken(ctx context.Context, cfg Config) (*AdminReset, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	if cfg.DB == "" {
		path := filepath.Join(cfg.DataDir, "dstack.db")
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no server state at %s (%w): give the server's --data-dir, or --db for PostgreSQL", path, err)
		}
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return nil, fmt.Errorf("migrate database: %w", err)
	}
	now := cfg.Now()
	users, err := st.UserList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	sort.SliceStable(users, func(i, j int) bool { return users[i].CreatedAt.Before(users[j].CreatedAt) })
	out := &AdminReset{}
	var admin *store.User
	for _, u := range users {
		if u.Admin {
			admin = u
			break
		}
	}
	if admin == nil {
		admin, out.Created, err = recreateAdmin(ctx, st, cfg)
		if err != nil {
			return nil, err
		}
	}
	out.User = admin.Name
	out.Token = newToken(userTokenPrefix)
	name := "reset-" + now.UTC().Format("20060102-150405")
	old, err := st.TokenReplaceAll(ctx, store.TokenCreateParams{ID: newID(), UserID: admin.ID, Name: name, Hash: hashToken(out.Token), Now: now})
	if err != nil {
		return nil, fmt.Errorf("replace the admin's tokens: %w", err)
	}
	out.Revoked = len(old)
	// The reset is recorded like any change of tokens; it is made on the
	// server's machine, with no request to say where from.
	detail, err := auditDetail(map[string]any{"user": admin.Name, "revoked": out.Revoked, "created": out.Created, "token": name})
	if err == nil {
		_, err = st.AuditAppend(ctx, store.AuditAppendParams{ID: newID(), At: now, UserName: auditServerUser,
			Action: auditAdminTokenReset, Target: admin.Name, Detail: detail, RemoteAddr: "local"})
	}
	if err != nil {
		return out, fmt.Errorf("the admin token was reset, but the reset could not be recorded in the audit log: %w", err)
	}
	return out, nil
}

// recreateAdmin makes the user `admin` an admin again, or adds it.
func recreateAdmin(ctx context.Context, st store.Store, cfg Config) (*store.User, bool, error) {
	u, err := st.UserSetAdmin(ctx, store.UserSetAdminParams{Name: "admin", Admin: true})
	if err == nil {
		return u, false, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, false, fmt.Errorf("make admin an admin: %w", err)
	}
	name := "admin"
	for range 2 {
		u, err = st.UserCreate(ctx, store.UserCreateParams{ID: newID(), Name: name, Admin: true, Now: cfg.Now()})
		if !errors.Is(err, store.ErrConflict) {
			break
		}
		name = "admin-" + newID()[:6] // a removed user keeps the name admin
	}
	if err != nil {
		return nil, false, fmt.Errorf("add an admin: %w", err)
	}
	return u, true, nil
}
