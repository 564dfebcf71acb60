package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/secretbox"
	"github.com/dstackai/dstack/store"
)

// Token prefixes tell a user's token from a runner's credential at a glance.
const (
	userTokenPrefix   = "dstu_"
	runnerTokenPrefix = "dstr_"
)

// newToken returns a fresh random token with prefix: 160 bits of entropy.
func newToken(prefix string) string {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// hashToken is how tokens are stored: they are random, so a plain SHA-256
// suffices (no salt or stretching is needed against guessing).
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// newID returns a random 16-hex-digit identifier.
func newID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// ensureAdmin creates the admin user on first start and returns its token;
// later starts return "".
func (s *Server) ensureAdmin(ctx context.Context) (string, error) {
	n, err := s.store.UserCount(ctx)
	if err != nil {
		return "", fmt.Errorf("count users: %w", err)
	}
	if n > 0 {
		return "", nil
	}
	token := newToken(userTokenPrefix)
	_, err = s.store.UserCreate(ctx, store.UserCreateParams{ID: newID(), Name: "admin", TokenHash: hashToken(token), Admin: true, Now: s.cfg.Now()})
	if errors.Is(err, store.ErrConflict) {
		return "", nil // another replica made it first
	}
	if err != nil {
		return "", fmt.Errorf("create admin user: %w", err)
	}
	return token, nil
}

// authenticator checks bearer tokens, and users' session cookies (see
// session.go). Runner credentials are checked on every call a runner makes,
// so they are cached briefly. A revocation or removal takes effect at once:
// the replica that makes it forgets the credential (forgetRunners,
// forgetRunner) and tells the others to (Server.forgetRunner); a replica
// cut off from the others reads every credential afresh when it is back.
type authenticator struct {
	store store.Store
	now   func() time.Time
	// box opens session cookies; nil refuses them.
	box *secretbox.Box
	// origin is the origin of the server's external URL ("" when none),
	// which a browser's request may come from besides the request's own
	// host (session.go).
	origin string

	mu      sync.Mutex
	runners map[string]cachedRunner // by token hash
	// hashes are the keys of runners, by runner ID: a runner's state
	// change forgets its credentials without a walk through every runner's
	// (10,000 runners restarting made 10,000 such walks).
	hashes map[string][]string
	// ttl is how long a cached credential is used: runnerCacheTTL, or the
	// heartbeat timeout when shorter, so that a runner marked offline for
	// its silence is read afresh when it calls again.
	ttl time.Duration
	// gen counts what was forgotten. refreshing holds the credentials to
	// read again in the background, or being read; due those not yet taken;
	// refresher is set while a goroutine reads them (refreshAll).
	gen        uint64
	refreshing map[string]bool
	due        []string
	refresher  bool
}

// refreshBatch is the most credentials one read refreshes; refreshGather is
// how long the refresher waits for more to be due before a read.
const (
	refreshBatch  = 500
	refreshGather = 100 * time.Millisecond
)

// runnerCacheTTL is how long a runner's credential is taken as read. Each
// runner calls every few seconds (heartbeats, claims), so a shorter one
// would read the database for most calls; it is also how long another
// replica may accept a credential revoked or a runner removed through this
// one.
const runnerCacheTTL = 30 * time.Second

type cachedRunner struct {
	r       *store.Runner
	fetched time.Time
}

func newAuthenticator(st store.Store, now func() time.Time) *authenticator {
	return &authenticator{store: st, now: now, runners: map[string]cachedRunner{}, hashes: map[string][]string{}, ttl: runnerCacheTTL, refreshing: map[string]bool{}}
}

// bearer returns the request's bearer token; the scheme's name is
// case-insensitive (RFC 9110, section 11.1).
func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(tok)
	}
	return ""
}

var errNoToken = api.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated,
	"no token given: send `Authorization: Bearer TOKEN` (the CLI reads it from ~/.dstack/config.yaml or DSTACK_TOKEN)")

// user authenticates a user's request: by its bearer token, or without one
// by its session cookie. It returns the token used (the session's).
func (a *authenticator) user(r *http.Request) (*store.User, *store.Token, error) {
	tok := bearer(r)
	if tok == "" {
		if c, err := r.Cookie(sessionCookie); err == nil {
			return a.sessionUser(r, c.Value)
		}
		return nil, nil, errNoToken
	}
	return a.userByToken(r, tok)
}

// touchEvery is how stale a token's last use may get before a request
// records it: most requests only read.
const touchEvery = time.Minute

// userByToken finds the user of a token that is neither revoked, expired,
// nor its user's removed.
func (a *authenticator) userByToken(r *http.Request, tok string) (*store.User, *store.Token, error) {
	if strings.HasPrefix(tok, runnerTokenPrefix) {
		return nil, nil, api.Errorf(http.StatusForbidden, api.CodeForbidden, "a runner credential cannot call user endpoints: use a user token")
	}
	u, t, err := a.store.TokenAuthenticate(r.Context(), store.TokenAuthenticateParams{Hash: hashToken(tok), Now: a.now(), TouchEvery: touchEvery})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil, api.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated,
			"the token was refused (unknown, revoked, or its user removed): check it, or set a valid one with `dstack config --server URL --token TOKEN`")
	case errors.Is(err, store.ErrExpired):
		return nil, nil, api.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated,
			"the token %q expired at %s: sign in with another token and run `dstack tokens create`, or ask an admin for one",
			t.Name, t.ExpiresAt.UTC().Format(time.RFC3339))
	case err != nil:
		return nil, nil, fmt.Errorf("authenticate: %w", err)
	}
	return u, t, nil
}

// forgetRunners drops every cached runner credential, after credentials
// were revoked, so that they are refused from the next call.
func (a *authenticator) forgetRunners() {
	a.mu.Lock()
	clear(a.runners)
	clear(a.hashes)
	a.gen++
	a.mu.Unlock()
}

// runner authenticates a runner's request. A cached credential past 2/3 of
// its ttl is read again in the background while it is still used, so that
// runners' calls seldom wait on the database; one past its ttl is never
// used.
func (a *authenticator) runner(r *http.Request) (*store.Runner, error) {
	tok := bearer(r)
	if tok == "" {
		return nil, errNoToken
	}
	if strings.HasPrefix(tok, userTokenPrefix) {
		return nil, api.Errorf(http.StatusForbidden, api.CodeForbidden,
			"a user token cannot call runner endpoints: a runner uses the credential it gets when it registers (`dstack-runner config --token TOKEN`, then `dstack-runner start`)")
	}
	h := hashToken(tok)
	now := a.now()
	a.mu.Lock()
	c, ok := a.runners[h]
	gen := a.gen
	if ok && !a.refreshing[h] && now.Sub(c.fetched) > a.ttl*2/3 && now.Sub(c.fetched) <= a.ttl {
		a.refreshing[h] = true
		a.due = append(a.due, h)
		if !a.refresher {
			a.refresher = true
			go a.refreshAll()
		}
	}
	a.mu.Unlock()
	if !ok || now.Sub(c.fetched) > a.ttl {
		var rn *store.Runner
		var err error
		onFreshStack(func() { rn, err = a.store.RunnerGetByTokenHash(r.Context(), h) }) // runners' connections wait long
		if errors.Is(err, store.ErrNotFound) {
			a.forget(h)
			return nil, api.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated,
				"runner credential refused: the runner is not registered (re-register with `dstack-runner start`)")
		}
		if err != nil {
			return nil, fmt.Errorf("authenticate runner: %w", err)
		}
		c = cachedRunner{r: rn, fetched: now}
		a.keep(h, c, gen)
	}
	if !now.Before(c.r.TokenExpiresAt) {
		return nil, api.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated,
			"runner credential expired at %s: the runner must register again", c.r.TokenExpiresAt.UTC().Format(time.RFC3339))
	}
	return c.r, nil
}

// keep caches c unless credentials were forgotten since gen: a read that
// began before a revocation must not bring the credential back.
func (a *authenticator) keep(h string, c cachedRunner, gen uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gen != gen {
		return
	}
	a.put(h, c)
}

// put caches c; the caller holds a.mu.
func (a *authenticator) put(h string, c cachedRunner) {
	if len(a.runners) > 100_000 {
		clear(a.runners)
		clear(a.hashes)
	}
	if _, ok := a.runners[h]; !ok {
		a.hashes[c.r.ID] = append(a.hashes[c.r.ID], h)
	}
	a.runners[h] = c
}

// drop forgets the credential h; the caller holds a.mu.
func (a *authenticator) drop(h string) {
	c, ok := a.runners[h]
	if !ok {
		return
	}
	delete(a.runners, h)
	hs := slices.DeleteFunc(a.hashes[c.r.ID], func(x string) bool { return x == h })
	if len(hs) == 0 {
		delete(a.hashes, c.r.ID)
	} else {
		a.hashes[c.r.ID] = hs
	}
}

// refreshAll reads the credentials due again, up to refreshBatch in one
// read, until none is due: with thousands of runners, each credential
// read on its own made hundreds of reads a second. A credential the read
// does not find is forgotten; one whose read failed stays cached until its
// ttl and is due again at its next call.
func (a *authenticator) refreshAll() {
	for {
		time.Sleep(refreshGather)
		a.mu.Lock()
		if len(a.due) == 0 {
			a.refresher = false
			a.mu.Unlock()
			return
		}
		n := min(len(a.due), refreshBatch)
		batch := slices.Clone(a.due[:n])
		a.due = slices.Delete(a.due, 0, n)
		gen := a.gen
		a.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		now := a.now()
		found, err := a.store.RunnersByTokenHash(ctx, batch)
		cancel()
		a.mu.Lock()
		// A read that began before credentials were forgotten must not
		// bring them back (what this batch forgets is not among them).
		fresh := a.gen == gen
		for _, h := range batch {
			delete(a.refreshing, h)
			switch {
			case err != nil:
			case found[h] == nil:
				a.drop(h)
				a.gen++
			case fresh:
				a.put(h, cachedRunner{r: found[h], fetched: now})
			}
		}
		a.mu.Unlock()
	}
}

// forgetRunner drops the cached credential of runner id, whose state
// changed: the next call reads it afresh.
func (a *authenticator) forgetRunner(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	for _, h := range a.hashes[id] {
		delete(a.runners, h)
	}
	delete(a.hashes, id)
}

func (a *authenticator) forget(hash string) {
	a.mu.Lock()
	a.drop(hash)
	a.gen++
	a.mu.Unlock()
}
