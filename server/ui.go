package server

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/server/ui"
	"github.com/dstackai/dstack/store"
)

// The web UI's pages (package ui). A page is served only to a browser with a
// session (session.go): without one it redirects to /login, naming the page
// to come back to (its path, never a credential). What a page shows it
// fetches from the API with the session cookie.

func (s *Server) uiRoutes(rt *router) {
	rt.page("GET /{$}", s.handleUIRoot)
	rt.public("GET /login", s.handleUILogin)
	rt.page("GET /runs", s.uiPage("runs", func(r *http.Request, _ *session, p *ui.Page) { p.Title = "Runs" }))
	rt.page("GET /runs/{name}", s.uiPage("run", func(r *http.Request, _ *session, p *ui.Page) {
		p.Run = r.PathValue("name")
		p.Title = "Run " + p.Run
	}))
	rt.page("GET /runners", s.uiPage("runners", func(r *http.Request, _ *session, p *ui.Page) { p.Title = "Runners" }))
	rt.page("GET /settings", s.uiPage("settings", func(r *http.Request, sess *session, p *ui.Page) {
		p.Title = "Settings"
		p.Token, p.ServerURL = sess.Token, cmpOr(strings.TrimRight(s.cfg.ExternalURL, "/"), requestURL(r))
	}))
	rt.adminPage("GET /users", s.uiAdminPage("users", "manage users", func(r *http.Request, _ *session, p *ui.Page) { p.Title = "Users" }))
	rt.adminPage("GET /audit", s.uiAdminPage("audit", "read the audit log", func(r *http.Request, _ *session, p *ui.Page) { p.Title = "Audit" }))
	rt.public("GET /ui/static/{path...}", ui.Static().ServeHTTP)
	s.usageUIRoutes(rt)
}

// pageSession is the session of a page request, or nil when it has none
// (or one no longer valid, whose cookie it clears). The error is one of
// the server's own, such as a database that does not answer.
func (s *Server) pageSession(w http.ResponseWriter, r *http.Request) (*session, *store.User, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, nil, nil //nolint:nilerr // no cookie: no session
	}
	sess, u, err := s.auth.openSession(r, c.Value)
	var ae *api.Error
	switch {
	case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
		http.SetCookie(w, s.sessionCookieFor("", s.cfg.Now()))
		return nil, nil, nil
	case err != nil:
		return nil, nil, err
	}
	return sess, u, nil
}

// toLogin redirects to the login page, which comes back to this page.
func toLogin(w http.ResponseWriter, r *http.Request) {
	ui.Headers(w.Header())
	http.Redirect(w, r, "/login?"+url.Values{"next": {r.URL.Path}}.Encode(), http.StatusSeeOther)
}

// uiPage serves page name to a signed-in browser; fill adds what the page
// shows besides the user.
func (s *Server) uiPage(name string, fill func(*http.Request, *session, *ui.Page)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, u, ok := s.signedIn(w, r)
		if !ok {
			return
		}
		p := ui.Page{Name: name, User: u.Name, Admin: u.Admin, CSRF: sess.CSRF}
		fill(r, sess, &p)
		if err := ui.Render(w, http.StatusOK, p); err != nil {
			s.writeError(w, r, err)
		}
	}
}

// uiAdminPage serves page name to a signed-in admin; a member gets 403
// "only an admin can WHAT".
func (s *Server) uiAdminPage(name, what string, fill func(*http.Request, *session, *ui.Page)) http.HandlerFunc {
	page := s.uiPage(name, fill)
	return func(w http.ResponseWriter, r *http.Request) {
		_, u, err := s.pageSession(w, r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if u != nil && !u.Admin {
			s.writeError(w, r, errAdminOnly(what))
			return
		}
		page(w, r)
	}
}

// signedIn is the browser's session and user; without one it has answered
// (an error, or a redirect to sign in) and reports false.
func (s *Server) signedIn(w http.ResponseWriter, r *http.Request) (*session, *store.User, bool) {
	sess, u, err := s.pageSession(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return nil, nil, false
	}
	if sess == nil {
		toLogin(w, r)
		return nil, nil, false
	}
	return sess, u, true
}

func (s *Server) handleUIRoot(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.signedIn(w, r); !ok {
		return
	}
	ui.Headers(w.Header())
	http.Redirect(w, r, "/runs", http.StatusSeeOther)
}

func (s *Server) handleUILogin(w http.ResponseWriter, r *http.Request) {
	next := localPath(r.URL.Query().Get("next"))
	sess, _, err := s.pageSession(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if sess != nil {
		ui.Headers(w.Header())
		http.Redirect(w, r, next, http.StatusSeeOther) //nolint:gosec // localPath keeps next on this server
		return
	}
	if err := ui.Render(w, http.StatusOK, ui.Page{Name: "login", Title: "Sign in", Next: next}); err != nil {
		s.writeError(w, r, err)
	}
}

// localPath is next when it is a path of this server's UI, else /runs: the
// login page must not send a browser to another site, nor back to itself.
func localPath(next string) string {
	u, err := url.Parse(next)
	if err != nil || next == "" || u.Scheme != "" || u.Host != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" ||
		!strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\x00\r\n") ||
		strings.HasPrefix(next, "/api/") || next == "/login" {
		return "/runs"
	}
	return next
}

// requestURL is the server's URL as the browser reached it.
func requestURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
