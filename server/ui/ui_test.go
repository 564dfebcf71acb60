package ui

import (
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestEveryPageRendersAndEscapes(t *testing.T) {
	t.Parallel()
	const evil = `"><script>alert(1)</script>`
	for _, name := range Pages {
		w := httptest.NewRecorder()
		p := Page{Name: name, Title: evil, User: evil, CSRF: evil, Run: evil, Token: evil, ServerURL: evil, Next: evil}
		if err := Render(w, 200, p); err != nil {
			t.Fatalf("render %s: %v", name, err)
		}
		body := w.Body.String()
		if strings.Contains(body, "<script>alert(1)") || strings.Contains(body, `"><script>`) {
			t.Errorf("page %s does not escape what it is given:\n%s", name, body)
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("page %s: Content-Security-Policy %q", name, csp)
		}
		if !strings.Contains(body, `src="/ui/static/`+name+`.js?v=`) {
			t.Errorf("page %s does not load its script", name)
		}
		// No inline script or style: the policy would block it.
		for _, re := range []*regexp.Regexp{regexp.MustCompile(`<script>`), regexp.MustCompile(`<script[^>]*>[^<]`), regexp.MustCompile(`\sstyle=`), regexp.MustCompile(`\son[a-z]+=`)} {
			if m := re.FindString(body); m != "" {
				t.Errorf("page %s has inline code or style: %q", name, m)
			}
		}
	}
}

// TestScriptsBuildTheDOMWithText keeps the scripts from parsing markup, so
// that nothing a user typed can become a tag.
func TestScriptsBuildTheDOMWithText(t *testing.T) {
	t.Parallel()
	banned := regexp.MustCompile(`\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write|\beval\(|new Function\(`)
	n := 0
	for name, a := range assets {
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		n++
		for i, line := range strings.Split(string(a.data), "\n") {
			if banned.MatchString(line) {
				t.Errorf("static/%s:%d: %s", name, i+1, strings.TrimSpace(line))
			}
		}
	}
	if n < len(Pages)+1 {
		t.Errorf("found %d scripts, want one per page and app.js", n)
	}
}

func TestStaticRevalidates(t *testing.T) {
	t.Parallel()
	url, err := assetURL("app.js")
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", url, nil)
	r.SetPathValue("path", "app.js")
	w := httptest.NewRecorder()
	Static().ServeHTTP(w, r)
	if w.Code != 200 || !strings.Contains(w.Header().Get("Cache-Control"), "immutable") || w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("GET %s: %d, headers %v", url, w.Code, w.Header())
	}
}
