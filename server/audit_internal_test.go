package server

import (
	"fmt"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/store"
)

// TestAuditActionsAreDocumented: every action is in docs/audit.md and in
// the OpenAPI document's enum, and nothing else is there.
func TestAuditActionsAreDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range auditActions {
		if !strings.Contains(string(doc), "`"+a+"`") {
			t.Errorf("docs/audit.md does not list action %s", a)
		}
	}
	m := regexp.MustCompile(`(?s)enum: \[(session\.create[^\]]*)\]`).FindSubmatch(openAPI)
	if m == nil {
		t.Fatal("openapi.yaml has no enum of audit actions")
	}
	var enum []string
	for _, f := range strings.Split(string(m[1]), ",") {
		enum = append(enum, strings.TrimSpace(f))
	}
	if !slices.Equal(enum, auditActions) {
		t.Errorf("openapi.yaml lists actions %v, the server %v", enum, auditActions)
	}
}

func TestClientIP(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		"192.0.2.7:4711":     "192.0.2.7",
		"[2001:db8::1]:4711": "2001:db8::1",
		"@":                  "@", // a Unix socket's peer: as it is
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = addr
		r.Header.Set("X-Forwarded-For", "203.0.113.9")
		if got := clientIP(r); got != want {
			t.Errorf("clientIP(%q) = %q, want %q (X-Forwarded-For is not trusted)", addr, got, want)
		}
	}
}

func TestAuditDetail(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   any
		want string
	}{
		{nil, "{}"},
		{map[string]any{"max": 2}, `{"max":2}`},
		{struct {
			A string `json:"a"`
		}{"x"}, `{"a":"x"}`},
		{"text", `{"value":"text"}`},
		{[]int{1}, `{"value":[1]}`},
	} {
		got, err := auditDetail(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("auditDetail(%#v) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	if _, err := auditDetail(map[string]any{"f": func() {}}); err == nil {
		t.Error("auditDetail of a function = nil error")
	}
}

// TestAuditPrune: the entries before the cut go, in as many batches as it
// takes; later ones stay.
func TestAuditPrune(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, err := New(ctx, Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	cut := time.Now()
	old := auditPruneBatch + 3
	for i := range old + 2 {
		at := cut.Add(-time.Duration(old-i) * time.Millisecond)
		if i >= old {
			at = cut.Add(time.Duration(i) * time.Millisecond)
		}
		if _, err := s.store.AuditAppend(ctx, store.AuditAppendParams{ID: fmt.Sprint(i), At: at, Action: auditLimitPut}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.auditPrune(ctx, cut)
	if err != nil || n != old {
		t.Fatalf("auditPrune = %d, %v; want %d", n, err, old)
	}
	left, err := s.store.AuditList(ctx, store.AuditListParams{})
	if err != nil || len(left) != 2 {
		t.Errorf("left %d entries (%v), want the 2 after the cut", len(left), err)
	}
}
