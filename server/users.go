package server

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// Users (admins manage them) and tokens (every user manages their own).
// A user signs in with any of its tokens; revoking one, or removing the
// user, ends every session made with it on the next request, and the
// runners registered with a token can be revoked with it.

func (s *Server) userRoutes(rt *router) {
	p := api.PathPrefix
	rt.admin("GET "+p+"/users", "list users", s.handleUserList)
	rt.admin("POST "+p+"/users", "add users", s.handleUserCreate)
	rt.admin("PATCH "+p+"/users/{name}", "change users", s.handleUserPatch)
	rt.admin("DELETE "+p+"/users/{name}", "remove users", s.handleUserDelete)
	rt.member("GET "+p+"/tokens", s.handleTokenList)
	rt.member("POST "+p+"/tokens", s.handleTokenCreate)
	rt.member("DELETE "+p+"/tokens/{ref}", s.handleTokenRevoke)
}

func toAPIUser(u *store.User) api.UserInfo {
	out := api.UserInfo{Name: u.Name, Admin: u.Admin, CreatedAt: u.CreatedAt.UTC(), RunningJobs: u.RunningJobs}
	if u.LastSeenAt != nil {
		t := u.LastSeenAt.UTC()
		out.LastSeenAt = &t
	}
	return out
}

func toAPIToken(t *store.Token, current *store.Token) api.TokenInfo {
	out := api.TokenInfo{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt.UTC(), Current: current != nil && current.ID == t.ID}
	if t.LastUsedAt != nil {
		v := t.LastUsedAt.UTC()
		out.LastUsedAt = &v
	}
	if t.ExpiresAt != nil {
		v := t.ExpiresAt.UTC()
		out.ExpiresAt = &v
	}
	return out
}

// pathUserName is the user named by the path, checked.
func pathUserName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if err := api.CheckAccountName("user", name); err != nil {
		return "", invalid("%v", err)
	}
	return name, nil
}

func errNoUser(name string) error {
	return notFound("no user named %q: `dstack users list` lists them", name)
}

func errLastAdmin(name string) error {
	return api.Errorf(http.StatusConflict, api.CodeConflict,
		"%s is the last admin of this server: make another user an admin first (`dstack users set NAME --admin`)", name)
}

func (s *Server) handleUserList(w http.ResponseWriter, r *http.Request, _ *store.User) error {
	us, err := s.store.UserList(r.Context())
	if err != nil {
		return fmt.Errorf("list users: %w", err)
	}
	used, err := s.store.UserStorageUsedAll(r.Context())
	if err != nil {
		return fmt.Errorf("list users: %w", err)
	}
	out := make([]api.UserInfo, 0, len(us))
	for _, u := range us {
		out = append(out, s.userInfo(u, used[u.ID]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// userInfo is u as an admin sees it, with its storage used.
func (s *Server) userInfo(u *store.User, used *store.StorageUsage) api.UserInfo {
	out := toAPIUser(u)
	out.MaxRunning = u.MaxRunning
	out.StorageQuota = u.StorageQuota
	out.StorageQuotaDefault = s.cfg.StorageQuota
	if used != nil {
		out.StorageUsed = used.Total()
	}
	return out
}

func (s *Server) handleUserCreate(w http.ResponseWriter, r *http.Request, by *store.User) error {
	var req api.UserCreateRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := api.CheckAccountName("user", req.Name); err != nil {
		return invalid("%v", err)
	}
	token := newToken(userTokenPrefix)
	u, err := s.store.UserCreate(r.Context(), store.UserCreateParams{
		ID: newID(), Name: req.Name, TokenHash: hashToken(token), TokenID: newID(), Admin: req.Admin, Now: s.cfg.Now(),
	})
	if errors.Is(err, store.ErrConflict) {
		return api.Errorf(http.StatusConflict, api.CodeConflict,
			"a user named %q exists, or existed (a removed user keeps its name for its runs): choose another name", req.Name)
	}
	if err != nil {
		return fmt.Errorf("add user: %w", err)
	}
	s.log.Info("user added", "user", u.Name, "admin", u.Admin, "by", by.Name)
	if err := s.audit(r, by, auditUserAdd, u.Name, map[string]any{"admin": u.Admin}); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, api.UserCreated{User: toAPIUser(u), Token: token})
	return nil
}

func (s *Server) handleUserPatch(w http.ResponseWriter, r *http.Request, by *store.User) error {
	name, err := pathUserName(r)
	if err != nil {
		return err
	}
	var req api.UserPatchRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Admin == nil && req.MaxRunning == nil && req.StorageQuota == nil && !req.StorageQuotaDefault {
		return invalid("nothing to change: give admin (true for an admin, false for a member), max_running, storage_quota or storage_quota_default")
	}
	if req.StorageQuota != nil && req.StorageQuotaDefault {
		return invalid("give storage_quota or storage_quota_default, not both")
	}
	if req.StorageQuota != nil && *req.StorageQuota < 0 {
		return invalid("storage_quota %d: give a size in bytes, or 0 for no quota", *req.StorageQuota)
	}
	if req.MaxRunning != nil && (*req.MaxRunning < 0 || *req.MaxRunning > maxRunningCap) {
		return invalid("max_running %d is out of range: give 0 (no cap) to %d running jobs", *req.MaxRunning, maxRunningCap)
	}
	ctx := r.Context()
	u, err := s.store.UserGetByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return errNoUser(name)
	}
	if err != nil {
		return fmt.Errorf("change user: %w", err)
	}
	detail := map[string]any{}
	// The role goes first: it is the change that can be refused (the last
	// admin), and then nothing is changed.
	if req.Admin != nil {
		u, err = s.store.UserSetAdmin(ctx, store.UserSetAdminParams{Name: name, Admin: *req.Admin})
		switch {
		case errors.Is(err, store.ErrNotFound):
			return errNoUser(name)
		case errors.Is(err, store.ErrLastAdmin):
			return errLastAdmin(name)
		case err != nil:
			return fmt.Errorf("change user: %w", err)
		}
		detail["admin"] = u.Admin
	}
	if req.MaxRunning != nil {
		if u, err = s.setUserMaxRunning(ctx, u, *req.MaxRunning); err != nil {
			return err
		}
		detail["max_running"] = u.MaxRunning
	}
	if req.StorageQuota != nil || req.StorageQuotaDefault {
		if err := s.SetUserStorageQuota(ctx, u.ID, req.StorageQuota); err != nil {
			return fmt.Errorf("set the storage quota of %s: %w", u.Name, err)
		}
		u.StorageQuota = req.StorageQuota
		if req.StorageQuotaDefault {
			detail["storage_quota"] = "default"
		} else {
			detail["storage_quota"] = *req.StorageQuota
		}
	}
	s.log.Info("user changed", "user", u.Name, "change", detail, "by", by.Name)
	if err := s.audit(r, by, auditUserSet, u.Name, detail); err != nil {
		return err
	}
	used, err := s.store.UserStorageUsed(ctx, u.ID)
	if err != nil {
		return fmt.Errorf("change user: %w", err)
	}
	writeJSON(w, http.StatusOK, s.userInfo(u, used))
	return nil
}

func (s *Server) handleUserDelete(w http.ResponseWriter, r *http.Request, by *store.User) error {
	name, err := pathUserName(r)
	if err != nil {
		return err
	}
	u, err := s.store.UserDelete(r.Context(), store.UserDeleteParams{Name: name, Now: s.cfg.Now()})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errNoUser(name)
	case errors.Is(err, store.ErrLastAdmin):
		return errLastAdmin(name)
	case err != nil:
		return fmt.Errorf("remove user: %w", err)
	}
	s.forgetRunner("")
	s.log.Info("user removed", "user", u.Name, "by", by.Name)
	s.events.publish(u.ID, api.EventRunners)
	if err := s.audit(r, by, auditUserRm, u.Name, nil); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toAPIUser(u))
	return nil
}

func (s *Server) handleTokenList(w http.ResponseWriter, r *http.Request, u *store.User) error {
	ts, err := s.store.TokenList(r.Context(), store.TokenListParams{UserID: u.ID})
	if err != nil {
		return fmt.Errorf("list tokens: %w", err)
	}
	cur := requestToken(r)
	out := make([]api.TokenInfo, 0, len(ts))
	for _, t := range ts {
		out = append(out, toAPIToken(t, cur))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleTokenCreate(w http.ResponseWriter, r *http.Request, u *store.User) error {
	var req api.TokenCreateRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	now := s.cfg.Now()
	if req.Name == "" {
		req.Name = "token-" + now.UTC().Format("20060102-150405")
	}
	if err := api.CheckAccountName("token", req.Name); err != nil {
		return invalid("%v", err)
	}
	var expires *time.Time
	if req.ExpiresIn != "" {
		d, err := api.ParseExpiry(req.ExpiresIn)
		if err != nil {
			return invalid("%v", err)
		}
		t := now.Add(d)
		expires = &t
	}
	token := newToken(userTokenPrefix)
	t, err := s.store.TokenCreate(r.Context(), store.TokenCreateParams{
		ID: newID(), UserID: u.ID, Name: req.Name, Hash: hashToken(token), ExpiresAt: expires, Now: now,
	})
	if errors.Is(err, store.ErrConflict) {
		return api.Errorf(http.StatusConflict, api.CodeConflict,
			"you have a token named %q: choose another name, or revoke it first (`dstack tokens revoke %s`)", req.Name, req.Name)
	}
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	s.log.Info("token created", "user", u.Name, "token", t.Name, "id", t.ID)
	if err := s.audit(r, u, auditTokenCreate, t.Name, map[string]any{"id": t.ID, "expires_at": t.ExpiresAt}); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, api.TokenCreated{TokenInfo: toAPIToken(t, nil), Token: token})
	return nil
}

func (s *Server) handleTokenRevoke(w http.ResponseWriter, r *http.Request, u *store.User) error {
	ref := r.PathValue("ref")
	if ref == "" || api.HasControl(ref) || len(ref) > api.MaxAccountName {
		return invalid("token %q: give the name or the ID of one of your tokens (`dstack tokens list`)", ref)
	}
	runners := false
	if v := r.URL.Query().Get("runners"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return invalid("runners=%q: give true or false", v)
		}
		runners = b
	}
	res, err := s.store.TokenRevoke(r.Context(), store.TokenRevokeParams{UserID: u.ID, Ref: ref, Runners: runners})
	if errors.Is(err, store.ErrNotFound) {
		return notFound("you have no token named %q or with that ID: `dstack tokens list` lists them", ref)
	}
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	out := api.TokenRevoked{Token: toAPIToken(res.Token, nil), Runners: []string{}}
	for _, rn := range res.Runners {
		out.Runners = append(out.Runners, rn.Name)
	}
	if len(res.Runners) > 0 {
		s.forgetRunner("")
		s.events.publish(u.ID, api.EventRunners)
	}
	s.log.Info("token revoked", "user", u.Name, "token", res.Token.Name, "id", res.Token.ID, "runners", len(res.Runners))
	if err := s.audit(r, u, auditTokenRevoke, res.Token.Name, map[string]any{"id": res.Token.ID, "runners": out.Runners}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
