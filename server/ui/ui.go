// Package ui holds the dstack server's web UI: HTML pages made with
// html/template and the stylesheet and scripts they load, all embedded in
// the server's binary. The pages are shells: their scripts fetch what they
// show from the same HTTP API the CLI uses, signed in by the session cookie,
// and refetch it when GET /api/v1/events says it changed.
//
// The scripts build the page with textContent and createElement only, never
// innerHTML, and the pages forbid inline scripts and styles in their
// Content-Security-Policy (Headers), so that nothing a user typed (a runner's
// name, a log line, an error) can run as code.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Page is what a page shows that the server knows when it renders it.
type Page struct {
	// Name is the page (login, runs, run, runners, usage, settings, audit): its template
	// and its script, static/NAME.js.
	Name  string
	Title string
	// User is the signed-in user's name; empty on the login page.
	User string
	// Admin shows the admins' pages in the menu.
	Admin bool
	// CSRF is the session's CSRF token, which scripts send in the
	// X-CSRF-Token header.
	CSRF string
	// Run is the run the run page shows.
	Run string
	// Token and ServerURL make the settings page's `dstack-runner config`
	// line; Token is the session's own.
	Token     string
	ServerURL string
	// Next is where the login page goes once signed in.
	Next string
}

// Pages are the names of the pages there are templates for.
var Pages = []string{"login", "runs", "run", "runners", "usage", "settings", "users", "audit"}

// asset is an embedded static file with its ETag.
type asset struct {
	data []byte
	etag string
}

var (
	assets    = loadAssets()
	templates = parseTemplates()
)

func loadAssets() map[string]asset {
	out := map[string]asset{}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[strings.TrimPrefix(p, "static/")] = asset{data: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("ui: embedded assets: %v", err))
	}
	return out
}

// assetURL is a static file's URL, with its content's hash in the query so
// that a new release's file is never taken from a cache.
func assetURL(name string) (string, error) {
	a, ok := assets[name]
	if !ok {
		return "", fmt.Errorf("no static file %q", name)
	}
	return "/ui/static/" + name + "?v=" + strings.Trim(a.etag, `"`), nil
}

func parseTemplates() map[string]*template.Template {
	funcs := template.FuncMap{"asset": assetURL}
	out := map[string]*template.Template{}
	for _, name := range Pages {
		t := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
		if _, ok := assets[name+".js"]; !ok {
			panic(fmt.Sprintf("ui: page %s has no static/%s.js", name, name))
		}
		out[name] = t
	}
	return out
}

// Headers sets the security headers of a page: a Content-Security-Policy
// that allows this server's own scripts, styles and connections only, no
// framing, no sniffing, no caching (the settings page holds the token) and
// no referrer to other sites.
func Headers(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// Render writes page p with status, its headers included. The page is
// rendered whole before anything is written, so that a failure answers a
// plain 500 rather than half a page.
func Render(w http.ResponseWriter, status int, p Page) error {
	t, ok := templates[p.Name]
	if !ok {
		return fmt.Errorf("ui: no page %q", p.Name)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, p); err != nil {
		return fmt.Errorf("ui: render %s: %w", p.Name, err)
	}
	Headers(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// Static serves the embedded static files by the request's path value
// "path", revalidated by ETag.
func Static() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("path")
		a, ok := assets[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		ct := mime.TypeByExtension(path.Ext(name))
		if ct == "" {
			ct = "application/octet-stream"
		}
		h.Set("Content-Type", ct)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("ETag", a.etag)
		if r.URL.Query().Get("v") == strings.Trim(a.etag, `"`) {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.data))
	})
}
