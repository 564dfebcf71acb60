package server

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// Sessions let a browser use the API without holding the token: POST
// /api/v1/session checks a user's token and answers with a cookie that holds
// the session sealed under the server key (package secretbox): the user,
// the token, a CSRF token and the expiry. The cookie is HttpOnly (scripts
// cannot read it), SameSite=Strict (other sites' requests do not carry it),
// and Secure when the server serves TLS or its external URL is https (a
// reverse proxy in front of it serves TLS).
//
// A request authenticated by the cookie is checked as one with the token
// (a token that no longer opens the store ends its sessions), and every
// request but GET and HEAD must also carry the session's CSRF token in the
// X-CSRF-Token header and, when the browser sends one, an Origin of this
// server: the request's own host, or the origin of the server's external
// URL (--external-url), which a reverse proxy that rewrites the Host header
// needs. A page of another site can neither read the CSRF token nor set
// the header without the server's leave (no CORS is answered).

const (
	sessionCookie  = "dstack_session"
	sessionPurpose = "session" // the secretbox purpose of the cookie's value
	sessionTTL     = 12 * time.Hour
)

// session is what the cookie holds, sealed.
type session struct {
	UserID  string    `json:"uid"`
	Token   string    `json:"tok"`
	CSRF    string    `json:"csrf"`
	Expires time.Time `json:"exp"`
}

// newCSRFToken returns 256 random bits, base64url.
func newCSRFToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func errSession(reason string) error {
	return api.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated, "%s: sign in again at /login", reason)
}

// openSession opens and checks a session cookie's value: sealed by this
// server's key, not expired, its token still a user's. It does not check
// CSRF (see checkCSRF).
func (a *authenticator) openSession(r *http.Request, value string) (*session, *store.User, error) {
	sess, u, _, err := a.openSessionToken(r, value)
	return sess, u, err
}

// openSessionToken is openSession that also returns the session's token.
// The token is looked up on every request: a revoked token, or a removed
// user, ends the session at once.
func (a *authenticator) openSessionToken(r *http.Request, value string) (*session, *store.User, *store.Token, error) {
	fail := func(err error) (*session, *store.User, *store.Token, error) { return nil, nil, nil, err }
	if a.box == nil {
		return fail(errSession("this server keeps no sessions"))
	}
	plain, err := a.box.Open(value, sessionPurpose)
	if err != nil {
		return fail(errSession("the session cookie is not valid on this server"))
	}
	var sess session
	if err := json.Unmarshal(plain, &sess); err != nil || sess.Token == "" || sess.CSRF == "" {
		return fail(errSession("the session cookie is not valid on this server"))
	}
	if !a.now().Before(sess.Expires) {
		return fail(errSession("your session expired"))
	}
	u, tok, err := a.userByToken(r, sess.Token)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			return fail(errSession("the token of your session is no longer valid"))
		}
		return fail(err)
	}
	if u.ID != sess.UserID {
		return fail(errSession("the token of your session is no longer valid"))
	}
	return &sess, u, tok, nil
}

// sessionUser authenticates a request by its session cookie, CSRF rules
// included.
func (a *authenticator) sessionUser(r *http.Request, value string) (*store.User, *store.Token, error) {
	sess, u, tok, err := a.openSessionToken(r, value)
	if err != nil {
		return nil, nil, err
	}
	if err := checkCSRF(r, sess, a.origin); err != nil {
		return nil, nil, err
	}
	return u, tok, nil
}

// safeMethod reports whether a request changes nothing by its method.
func safeMethod(r *http.Request) bool {
	return r.Method == http.MethodGet || r.Method == http.MethodHead
}

// checkCSRF refuses a request that changes state without the session's
// CSRF token, or from another site; external is the origin of the
// server's external URL, or "".
func checkCSRF(r *http.Request, sess *session, external string) error {
	if safeMethod(r) {
		return nil
	}
	if err := checkSameOrigin(r, external); err != nil {
		return err
	}
	got := r.Header.Get(api.CSRFHeader)
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(sess.CSRF)) != 1 {
		return api.Errorf(http.StatusForbidden, api.CodeForbidden,
			"missing or wrong %s header: a request made with the session cookie must carry the csrf_token of POST %s/session (reload the page)",
			api.CSRFHeader, api.PathPrefix)
	}
	return nil
}

// checkSameOrigin refuses a request a browser says comes from another site:
// an Origin whose host is not the request's and that is not external (the
// origin of the server's external URL, "" when none), or Sec-Fetch-Site
// cross-site.
func checkSameOrigin(r *http.Request, external string) error {
	refused := api.Errorf(http.StatusForbidden, api.CodeForbidden,
		"cross-site request refused: use the web UI at this server's own address (its --external-url behind a reverse proxy), or send a bearer token")
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" {
			return refused
		}
		if !strings.EqualFold(u.Host, r.Host) && (external == "" || originOf(o) != external) {
			return refused
		}
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return refused
	}
	return nil
}

// originOf is the origin of an absolute http(s) URL as a browser's Origin
// header gives it: scheme://host[:port] in lower case, without the
// scheme's default port; "" for anything else.
func originOf(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" {
		return ""
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return ""
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if host == "" {
		return ""
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if port != "" {
		return scheme + "://" + net.JoinHostPort(host, port)
	}
	if strings.Contains(host, ":") { // an IPv6 address
		host = "[" + host + "]"
	}
	return scheme + "://" + host
}

// isHTTPS reports whether raw is an https URL.
func isHTTPS(raw string) bool {
	u, err := url.Parse(strings.TrimSpace(raw))
	return err == nil && strings.EqualFold(u.Scheme, "https")
}

// sessionCookieFor is the cookie that holds value until expires; an empty
// value is the cookie that clears it.
func (s *Server) sessionCookieFor(value string, expires time.Time) *http.Cookie {
	c := &http.Cookie{ //nolint:gosec // Secure whenever the server is reached over HTTPS; a plain-HTTP server cannot set it
		Name: sessionCookie, Value: value, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.cfg.TLSCert != "" || isHTTPS(s.cfg.ExternalURL),
	}
	if value == "" {
		c.MaxAge = -1
	} else {
		c.Expires = expires.UTC()
		c.MaxAge = int(expires.Sub(s.cfg.Now()).Seconds())
	}
	return c
}

// handleSessionCreate signs in: it checks the token in the body and sets
// the session cookie. The body must be JSON (a page of another site cannot
// send that without the server's leave) and an Origin, if any, this
// server's, so that another site cannot sign a browser into its account.
func (s *Server) handleSessionCreate(w http.ResponseWriter, r *http.Request) {
	if err := s.sessionCreate(w, r); err != nil {
		s.writeError(w, r, err)
	}
}

func (s *Server) sessionCreate(w http.ResponseWriter, r *http.Request) error {
	if err := checkSameOrigin(r, s.auth.origin); err != nil {
		return err
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return invalid("send the token as JSON, with Content-Type: application/json")
	}
	var req api.SessionRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	tok := strings.TrimSpace(req.Token)
	if tok == "" {
		return invalid("token is missing: give your user token (the server printed the admin's at its first start)")
	}
	u, _, err := s.auth.userByToken(r, tok)
	var ae *api.Error
	if errors.As(err, &ae) && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden) {
		// A refused token is recorded, never the token itself; there is
		// no change to refuse when it cannot be (audit.go).
		_ = s.audit(r, nil, auditSessionFail, "", map[string]string{"reason": ae.Message})
		return err
	}
	if err != nil {
		return err
	}
	// Recorded before the session is handed out: a sign-in that cannot
	// be recorded is refused (nothing changed yet).
	if err := s.record(r.Context(), store.AuditAppendParams{UserID: u.ID, UserName: u.Name, Action: auditSessionCreate,
		Target: u.Name, RemoteAddr: clientIP(r)}, nil); err != nil {
		return unavailable(api.CauseDatabase, "the sign-in could not be recorded in the audit log, so it is refused: %s; try again", auditCause(err))
	}
	now := s.cfg.Now()
	sess := session{UserID: u.ID, Token: tok, CSRF: newCSRFToken(), Expires: now.Add(sessionTTL)}
	plain, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	sealed, err := s.box.Seal(plain, sessionPurpose)
	if err != nil {
		return fmt.Errorf("seal session: %w", err)
	}
	http.SetCookie(w, s.sessionCookieFor(sealed, sess.Expires))
	w.Header().Set("Cache-Control", "no-store")
	s.log.Info("signed in", "user", u.Name)
	writeJSON(w, http.StatusOK, api.Session{User: api.User{Name: u.Name, Admin: u.Admin}, CSRFToken: sess.CSRF, ExpiresAt: sess.Expires.UTC()})
	return nil
}

// handleSessionDelete signs out: it clears the cookie. A valid session must
// show its CSRF token to be ended; a cookie that is not valid any more is
// cleared without.
func (s *Server) handleSessionDelete(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		if sess, u, err := s.auth.openSession(r, c.Value); err == nil {
			if err := checkCSRF(r, sess, s.auth.origin); err != nil {
				s.writeError(w, r, err)
				return
			}
			// Signing out changes nothing on the server: a failure to
			// record it is logged and counted, and the browser signed
			// out all the same.
			_ = s.audit(r, u, auditSessionDelete, u.Name, nil)
		}
	}
	http.SetCookie(w, s.sessionCookieFor("", time.Time{}))
	w.WriteHeader(http.StatusNoContent)
}
