package server_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/dstackai/dstack/api"
)

// TestRunListPages: GET /runs answers pages of ?limit runs with the cursor
// of the next page in X-Dstack-Next-Cursor; following the cursors lists
// every run once, newest first, even when runs are submitted between pages.
func TestRunListPages(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var want []string
	for range 5 {
		want = append([]string{e.submit(t, e.admin, bashJob("w")).Name}, want...)
	}
	page := func(q string) ([]string, string) {
		t.Helper()
		rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/runs?" + q, token: e.srv.AdminToken})
		if rp.status != http.StatusOK {
			t.Fatalf("GET /runs?%s: %d %s", q, rp.status, rp.body)
		}
		var runs []api.Run
		if err := json.Unmarshal(rp.body, &runs); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range runs {
			names = append(names, r.Name)
		}
		return names, rp.header.Get(api.NextCursorHeader)
	}
	var got []string
	names, next := page("limit=2")
	got = append(got, names...)
	newer := e.submit(t, e.admin, bashJob("w")) // after the first page: not in the later ones
	for next != "" && len(got) < 10 {
		names, next = page("limit=2&after=" + url.QueryEscape(next))
		got = append(got, names...)
	}
	if len(got) != len(want) {
		t.Fatalf("paged listing %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("paged listing %v, want %v", got, want)
		}
	}
	if all, next := page(""); len(all) != 6 || all[0] != newer.Name || next != "" {
		t.Errorf("GET /runs: %v (next %q), want the 6 runs and no next page", all, next)
	}
	if _, next := page("limit=6"); next != "" {
		t.Errorf("a page with every run has a next cursor %q", next)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=ten", "after=bogus", "after=" + url.QueryEscape("x y")} {
		rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/runs?" + q, token: e.srv.AdminToken})
		wantError(t, q, rp, http.StatusBadRequest, api.CodeInvalid)
	}
}
