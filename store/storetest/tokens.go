package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/store"
)

// auth authenticates a token hash at now, recording uses older than a
// minute.
func (f *fixture) auth(hash string, now time.Time) (*store.User, *store.Token, error) {
	return f.s.TokenAuthenticate(f.ctx, store.TokenAuthenticateParams{Hash: hash, Now: now, TouchEvery: time.Minute})
}

func (f *fixture) admin(name string) *store.User {
	f.t.Helper()
	u, err := f.s.UserCreate(f.ctx, store.UserCreateParams{ID: "id-" + name, Name: name, TokenHash: "hash-" + name, Admin: true, Now: f.tick()})
	if err != nil {
		f.t.Fatalf("UserCreate: %v", err)
	}
	return u
}

func (f *fixture) tokenNames(u *store.User) []string {
	f.t.Helper()
	toks, err := f.s.TokenList(f.ctx, store.TokenListParams{UserID: u.ID})
	if err != nil {
		f.t.Fatalf("TokenList: %v", err)
	}
	var out []string
	for _, t := range toks {
		out = append(out, t.Name)
	}
	return out
}

func sameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var tokenTests = []test{
	{"first token is default", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		toks, err := f.s.TokenList(f.ctx, store.TokenListParams{UserID: u.ID})
		if err != nil || len(toks) != 1 || toks[0].Name != "default" || toks[0].ID != u.ID || toks[0].UserID != u.ID ||
			toks[0].ExpiresAt != nil || toks[0].LastUsedAt != nil {
			t.Fatalf("TokenList of a new user = %+v, %v; want one token named default with the user's ID", toks, err)
		}
		sameTime(t, "default token CreatedAt", toks[0].CreatedAt, u.CreatedAt)
	}},
	{"create list revoke", func(t *testing.T, open Open) {
		f := setup(t, open)
		u, other := f.user(), f.user()
		exp := f.now.Add(time.Hour)
		created, err := f.s.TokenCreate(f.ctx, store.TokenCreateParams{ID: "t1", UserID: u.ID, Name: "ci", Hash: "h-ci", ExpiresAt: &exp, Now: f.tick()})
		if err != nil {
			t.Fatalf("TokenCreate: %v", err)
		}
		if created.ExpiresAt == nil {
			t.Fatal("TokenCreate ExpiresAt = nil")
		}
		sameTime(t, "TokenCreate ExpiresAt", *created.ExpiresAt, exp)
		_, err = f.s.TokenCreate(f.ctx, store.TokenCreateParams{ID: "t2", UserID: u.ID, Name: "ci", Hash: "h-other", Now: f.tick()})
		wantErr(t, "TokenCreate with a taken name", err, store.ErrConflict)
		_, err = f.s.TokenCreate(f.ctx, store.TokenCreateParams{ID: "t3", UserID: u.ID, Name: "laptop", Hash: "h-ci", Now: f.tick()})
		wantErr(t, "TokenCreate with a taken hash", err, store.ErrConflict)
		// Another user may use the name.
		if _, err := f.s.TokenCreate(f.ctx, store.TokenCreateParams{ID: "t4", UserID: other.ID, Name: "ci", Hash: "h-other-ci", Now: f.tick()}); err != nil {
			t.Fatalf("TokenCreate for another user with the same name: %v", err)
		}
		_, err = f.s.TokenCreate(f.ctx, store.TokenCreateParams{ID: "t5", UserID: "nobody", Name: "x", Hash: "h-x", Now: f.tick()})
		wantErr(t, "TokenCreate for an unknown user", err, store.ErrNotFound)
		if got := f.tokenNames(u); !sameNames(got, []string{"ci", "default"}) {
			t.Errorf("tokens = %v, want [ci default]", got)
		}
		// Revoke by ID, and by name.
		_, err = f.s.TokenRevoke(f.ctx, store.TokenRevokeParams{UserID: other.ID, Ref: "t1"})
		wantErr(t, "TokenRevoke of another user's token", err, store.ErrNotFound)
		res, err := f.s.TokenRevoke(f.ctx, store.TokenRevokeParams{UserID: u.ID, Ref: "t1"})
		if err != nil || res.Token.Name != "ci" {
			t.Fatalf("TokenRevoke by ID = %+v, %v", res, err)
		}
		if _, _, err := f.auth("h-ci", f.tick()); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("TokenAuthenticate of a revoked token: %v, want ErrNotFound", err)
		}
		if _, err := f.s.TokenRevoke(f.ctx, store.TokenRevokeParams{UserID: u.ID, Ref: "default"}); err != nil {
			t.Fatalf("TokenRevoke by name: %v", err)
		}
		if got := f.tokenNames(u); len(got) != 0 {
			t.Errorf("tokens after revoking both = %v", got)
		}
		_, err = f.s.TokenRevoke(f.ctx, store.TokenRevokeParams{UserID: u.ID, Ref: "default"})
		wantErr(t, "TokenRevoke twice", err, store.ErrNotFound)
		// The name is free again.
		if _, err := f.s.TokenCreate(f.ctx, store.TokenCreateParams{ID: "t6", UserID: u.ID, Name: "ci", Hash: "h-ci2", Now: f.tick()}); err != nil {
			t.Fatalf("TokenCreate with a revoked token's name: %v", err)
		}
		if got := f.tokenNames(other); !sameNames(got, []string{"ci", "default"}) {
			t.Errorf("other user's tokens = %v, want them untouched", got)
		}
	}},
	{"authenticate expiry and last use", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		t0 := f.tick()
		exp := t0.Add(time.Hour)
		if _, err := f.s.TokenCreate(f.ctx, store.TokenCreateParams{ID: "t1", UserID: u.ID, Name: "short", Hash: "h-short", ExpiresAt: &exp, Now: t0}); err != nil {
			t.Fatal(err)
		}
		gu, tok, err := f.auth("h-short", t0.Add(time.Second))
		if err != nil || gu.ID != u.ID || tok.ID != "t1" || tok.LastUsedAt == nil || gu.LastSeenAt == nil {
			t.Fatalf("TokenAuthenticate = %+v, %+v, %v", gu, tok, err)
		}
		sameTime(t, "LastUsedAt", *tok.LastUsedAt, t0.Add(time.Second))
		// A use within the minute is not recorded.
		_, tok, err = f.auth("h-short", t0.Add(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		sameTime(t, "LastUsedAt after a use within a minute", *tok.LastUsedAt, t0.Add(time.Second))
		// A later one is, and the user's LastSeenAt follows.
		if _, _, err := f.auth("h-short", t0.Add(2*time.Minute)); err != nil {
			t.Fatal(err)
		}
		got, err := f.s.UserGet(f.ctx, u.ID)
		if err != nil || got.LastSeenAt == nil {
			t.Fatalf("UserGet = %+v, %v", got, err)
		}
		sameTime(t, "LastSeenAt", *got.LastSeenAt, t0.Add(2*time.Minute))
		toks, _ := f.s.TokenList(f.ctx, store.TokenListParams{UserID: u.ID})
		for _, tk := range toks {
			if tk.Name == "short" {
				sameTime(t, "listed LastUsedAt", *tk.LastUsedAt, t0.Add(2*time.Minute))
			}
		}
		// At and after the expiry: ErrExpired, with the token for the message.
		gu, tok, err = f.auth("h-short", exp)
		if !errors.Is(err, store.ErrExpired) || tok == nil || tok.Name != "short" || gu == nil {
			t.Fatalf("TokenAuthenticate at expiry = %+v, %+v, %v; want ErrExpired with the token", gu, tok, err)
		}
		_, _, err = f.auth("unknown", exp)
		wantErr(t, "TokenAuthenticate unknown", err, store.ErrNotFound)
	}},
	{"replace all", func(t *testing.T, open Open) {
		f := setup(t, open)
		u, other := f.user(), f.user()
		if _, err := f.s.TokenCreate(f.ctx, store.TokenCreateParams{ID: "t1", UserID: u.ID, Name: "ci", Hash: "h-ci", Now: f.tick()}); err != nil {
			t.Fatal(err)
		}
		old, err := f.s.TokenReplaceAll(f.ctx, store.TokenCreateParams{ID: "t2", UserID: u.ID, Name: "reset", Hash: "h-reset", Now: f.tick()})
		if err != nil || len(old) != 2 || old[0].Name != "ci" || old[1].Name != "default" {
			t.Fatalf("TokenReplaceAll = %+v, %v; want ci and default replaced", old, err)
		}
		if got := f.tokenNames(u); !sameNames(got, []string{"reset"}) {
			t.Errorf("tokens after TokenReplaceAll = %v, want [reset]", got)
		}
		for _, h := range []string{"h-ci", "hash-" + u.ID} {
			_, _, err := f.auth(h, f.tick())
			wantErr(t, "a replaced token", err, store.ErrNotFound)
		}
		if _, _, err := f.auth("h-reset", f.tick()); err != nil {
			t.Errorf("the new token: %v", err)
		}
		// A taken hash changes nothing.
		_, err = f.s.TokenReplaceAll(f.ctx, store.TokenCreateParams{ID: "t3", UserID: u.ID, Name: "again", Hash: "hash-" + other.ID, Now: f.tick()})
		wantErr(t, "TokenReplaceAll with a taken hash", err, store.ErrConflict)
		if got := f.tokenNames(u); !sameNames(got, []string{"reset"}) {
			t.Errorf("tokens after a refused TokenReplaceAll = %v, want [reset]", got)
		}
		_, err = f.s.TokenReplaceAll(f.ctx, store.TokenCreateParams{ID: "t4", UserID: "nobody", Name: "x", Hash: "h-x", Now: f.tick()})
		wantErr(t, "TokenReplaceAll for an unknown user", err, store.ErrNotFound)
	}},
	{"revoke runners with token", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		if _, err := f.s.TokenCreate(f.ctx, store.TokenCreateParams{ID: "t1", UserID: u.ID, Name: "reg", Hash: "h-reg", Now: f.tick()}); err != nil {
			t.Fatal(err)
		}
		mk := func(id, tokenID string) {
			if _, err := f.s.RunnerCreate(f.ctx, store.RunnerCreateParams{ID: id, UserID: u.ID, Name: id, Hostname: "h", Executor: "shell",
				Version: "1", Resources: cpuHost, TokenHash: "rh-" + id, TokenExpiresAt: base.Add(24 * time.Hour), Now: f.tick(), TokenID: tokenID}); err != nil {
				t.Fatal(err)
			}
		}
		mk("r1", "t1")
		mk("r2", "t1")
		mk("r3", u.ID)
		if r, err := f.s.RunnerGet(f.ctx, "r1"); err != nil || r.TokenID != "t1" {
			t.Fatalf("RunnerGet TokenID = %+v, %v", r, err)
		}
		// Without Runners the runners stay.
		if _, err := f.s.TokenRevoke(f.ctx, store.TokenRevokeParams{UserID: u.ID, Ref: "default"}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.s.RunnerGetByTokenHash(f.ctx, "rh-r3"); err != nil {
			t.Errorf("runner of a token revoked without Runners: %v", err)
		}
		res, err := f.s.TokenRevoke(f.ctx, store.TokenRevokeParams{UserID: u.ID, Ref: "reg", Runners: true})
		if err != nil || len(res.Runners) != 2 || res.Runners[0].ID != "r1" || res.Runners[1].ID != "r2" {
			t.Fatalf("TokenRevoke with runners = %+v, %v", res, err)
		}
		for _, id := range []string{"r1", "r2"} {
			_, err := f.s.RunnerGetByTokenHash(f.ctx, "rh-"+id)
			wantErr(t, "revoked runner's credential", err, store.ErrNotFound)
			if _, err := f.s.RunnerGet(f.ctx, id); err != nil {
				t.Errorf("RunnerGet of a revoked runner: %v (it stays listed)", err)
			}
		}
		got, err := f.s.RunnerRevokeByToken(f.ctx, u.ID)
		if err != nil || len(got) != 1 || got[0].ID != "r3" {
			t.Fatalf("RunnerRevokeByToken = %+v, %v", got, err)
		}
		_, err = f.s.RunnerGetByTokenHash(f.ctx, "rh-r3")
		wantErr(t, "runner revoked by token", err, store.ErrNotFound)
	}},
}

var userAdminTests = []test{
	{"list get by name", func(t *testing.T, open Open) {
		f := setup(t, open)
		f.admin("root")
		alice := f.admin("alice")
		bob := f.user()
		r := f.runner(bob, cpuHost)
		f.run(bob, spec("a"))
		f.run(bob, spec("b"))
		f.claim(r)
		us, err := f.s.UserList(f.ctx)
		if err != nil || len(us) != 3 {
			t.Fatalf("UserList = %+v, %v", us, err)
		}
		want := []struct {
			name    string
			admin   bool
			running int
		}{{"alice", true, 0}, {"root", true, 0}, {bob.Name, false, 1}}
		for i, w := range want {
			if us[i].Name != w.name || us[i].Admin != w.admin || us[i].RunningJobs != w.running {
				t.Errorf("UserList[%d] = %+v, want %+v", i, us[i], w)
			}
		}
		got, err := f.s.UserGetByName(f.ctx, "alice")
		if err != nil || got.ID != alice.ID || !got.Admin {
			t.Errorf("UserGetByName = %+v, %v", got, err)
		}
		_, err = f.s.UserGetByName(f.ctx, "nobody")
		wantErr(t, "UserGetByName unknown", err, store.ErrNotFound)
	}},
	{"last admin", func(t *testing.T, open Open) {
		f := setup(t, open)
		f.admin("root")
		m := f.user()
		_, err := f.s.UserSetAdmin(f.ctx, store.UserSetAdminParams{Name: "root", Admin: false})
		wantErr(t, "demoting the last admin", err, store.ErrLastAdmin)
		_, err = f.s.UserDelete(f.ctx, store.UserDeleteParams{Name: "root", Now: f.tick()})
		wantErr(t, "removing the last admin", err, store.ErrLastAdmin)
		if u, _ := f.s.UserGetByName(f.ctx, "root"); u == nil || !u.Admin || u.DeletedAt != nil {
			t.Fatalf("root after refusals = %+v, want an admin still", u)
		}
		if u, err := f.s.UserSetAdmin(f.ctx, store.UserSetAdminParams{Name: m.Name, Admin: true}); err != nil || !u.Admin {
			t.Fatalf("promote = %+v, %v", u, err)
		}
		if u, err := f.s.UserSetAdmin(f.ctx, store.UserSetAdminParams{Name: "root", Admin: false}); err != nil || u.Admin {
			t.Fatalf("demote with another admin = %+v, %v", u, err)
		}
		_, err = f.s.UserSetAdmin(f.ctx, store.UserSetAdminParams{Name: m.Name, Admin: false})
		wantErr(t, "demoting the new last admin", err, store.ErrLastAdmin)
		_, err = f.s.UserSetAdmin(f.ctx, store.UserSetAdminParams{Name: "nobody", Admin: true})
		wantErr(t, "UserSetAdmin unknown", err, store.ErrNotFound)
	}},
	{"concurrent demotions keep an admin", func(t *testing.T, open Open) {
		f := setup(t, open)
		f.admin("a1")
		f.admin("a2")
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, name := range []string{"a1", "a2"} {
			wg.Go(func() {
				if i == 0 {
					_, errs[i] = f.s.UserSetAdmin(f.ctx, store.UserSetAdminParams{Name: name, Admin: false})
				} else {
					_, errs[i] = f.s.UserDelete(f.ctx, store.UserDeleteParams{Name: name, Now: base})
				}
			})
		}
		wg.Wait()
		us, err := f.s.UserList(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		admins := 0
		for _, u := range us {
			if u.Admin {
				admins++
			}
		}
		if admins != 1 {
			t.Errorf("admins after a concurrent demotion and removal = %d (errors %v), want 1", admins, errs)
		}
	}},
	{"delete", func(t *testing.T, open Open) {
		f := setup(t, open)
		f.admin("root")
		bob := f.user()
		if _, err := f.s.TokenCreate(f.ctx, store.TokenCreateParams{ID: "t1", UserID: bob.ID, Name: "ci", Hash: "h-ci", Now: f.tick()}); err != nil {
			t.Fatal(err)
		}
		r := f.runner(bob, cpuHost)
		run := f.run(bob, spec("a"))
		del, err := f.s.UserDelete(f.ctx, store.UserDeleteParams{Name: bob.Name, Now: f.tick()})
		if err != nil || del.DeletedAt == nil {
			t.Fatalf("UserDelete = %+v, %v", del, err)
		}
		for _, h := range []string{"hash-" + bob.ID, "h-ci"} {
			_, _, err := f.auth(h, f.tick())
			wantErr(t, "TokenAuthenticate of a removed user's token", err, store.ErrNotFound)
			_, err = f.s.UserGetByTokenHash(f.ctx, h)
			wantErr(t, "UserGetByTokenHash of a removed user's token", err, store.ErrNotFound)
		}
		_, err = f.s.RunnerGetByTokenHash(f.ctx, "hash-"+r.ID)
		wantErr(t, "removed user's runner credential", err, store.ErrNotFound)
		_, err = f.s.UserGetByName(f.ctx, bob.Name)
		wantErr(t, "UserGetByName of a removed user", err, store.ErrNotFound)
		if got, err := f.s.UserGet(f.ctx, bob.ID); err != nil || got.DeletedAt == nil {
			t.Errorf("UserGet of a removed user = %+v, %v; want it with DeletedAt", got, err)
		}
		if us, _ := f.s.UserList(f.ctx); len(us) != 1 {
			t.Errorf("UserList after removal = %d users, want 1", len(us))
		}
		if got, err := f.s.RunGet(f.ctx, store.RunGetParams{Name: run.Name}); err != nil || got.UserName != bob.Name {
			t.Errorf("removed user's run = %+v, %v; want it kept with the user's name", got, err)
		}
		_, err = f.s.UserDelete(f.ctx, store.UserDeleteParams{Name: bob.Name, Now: f.tick()})
		wantErr(t, "UserDelete twice", err, store.ErrNotFound)
		_, err = f.s.UserCreate(f.ctx, store.UserCreateParams{ID: "new", Name: bob.Name, TokenHash: "h-new", Now: f.tick()})
		wantErr(t, "UserCreate with a removed user's name", err, store.ErrConflict)
		_, err = f.s.TokenCreate(f.ctx, store.TokenCreateParams{ID: "t2", UserID: bob.ID, Name: "x", Hash: "h-x", Now: f.tick()})
		wantErr(t, "TokenCreate for a removed user", err, store.ErrNotFound)
	}},
}
