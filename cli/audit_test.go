package cli_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// TestAudit: `dstack audit` lists a limit set with who, what and from
// where, as a table and as JSON; --since takes durations in days and
// times, and refuses anything else; a member is refused, saying who may.
func TestAudit(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serveOnDemand()
	if r := h.run("on-demand", "limit", "-i", "local.small", "-m", "2"); r.code != 0 {
		t.Fatalf("limit: %+v", r)
	}

	r := h.run("audit")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "TIME USER ACTION TARGET FROM DETAIL" {
		t.Fatalf("audit: %+v", r)
	}
	for _, want := range []string{"admin", "limit.put", "local/local/local.small (on-demand)", "127.0.0.1", "created=true", "max=2"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("the entry %q does not show %q", lines[1], want)
		}
	}

	r = h.run("audit", "--since", "7d", "--json")
	var es []api.AuditEntry
	if err := json.Unmarshal([]byte(r.stdout), &es); r.code != 0 || err != nil || len(es) != 1 ||
		es[0].Action != "limit.put" || es[0].User != "admin" || es[0].RemoteAddr != "127.0.0.1" {
		t.Fatalf("audit --json: %+v (%v)", r, err)
	}

	// A time after the entry: nothing.
	r = h.run("audit", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "Nothing recorded since") {
		t.Errorf("audit since a later time: %+v", r)
	}
	r = h.run("audit", "--since", "last week")
	if r.code != 2 || !strings.Contains(r.stderr, `--since "last week"`) || !strings.Contains(r.stderr, "7d") {
		t.Errorf("audit --since 'last week': %+v", r)
	}

	token := "dstu_membertoken"
	sum := sha256.Sum256([]byte(token))
	if _, err := srv.Store().UserCreate(context.Background(), store.UserCreateParams{
		ID: "member1", Name: "alice", TokenHash: hex.EncodeToString(sum[:]), Now: time.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	h.vars["DSTACK_TOKEN"] = token
	r = h.run("audit")
	if r.code != 1 || !strings.Contains(r.stderr, "only an admin can read the audit log: ask an admin of this server") {
		t.Errorf("audit as a member: %+v", r)
	}
}
