package cli

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/server/servertest"
)

// TestServerAdminTokenReset: `dstack server admin-token --reset` on the
// server's data directory, while the server runs, prints a token that
// works and revokes the admin's old ones.
func TestServerAdminTokenReset(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	code, out, errOut := runServerCmd(t, nil, "server", "admin-token")
	if code == 0 || !strings.Contains(errOut, "--reset") || out != "" {
		t.Errorf("admin-token without --reset: %d %q %q", code, out, errOut)
	}
	code, _, errOut = runServerCmd(t, nil, "server", "admin-token", "--reset", "--data-dir", filepath.Join(t.TempDir(), "nothing"))
	if code == 0 || !strings.Contains(errOut, "no server state") {
		t.Errorf("admin-token on an empty directory: %d %q", code, errOut)
	}
	code, out, errOut = runServerCmd(t, nil, "server", "admin-token", "--reset", "--data-dir", srv.DataDir)
	if code != 0 || !strings.HasPrefix(out, "dstu_") || !strings.Contains(errOut, "admin admin") {
		t.Fatalf("admin-token --reset: %d %q %q", code, out, errOut)
	}
	token := strings.TrimSpace(out)
	me, err := srv.Client().WithToken(token).Me(t.Context())
	if err != nil || me.Name != "admin" || !me.Admin {
		t.Fatalf("the new token: %+v, %v", me, err)
	}
	if _, err := srv.Client().Me(t.Context()); err == nil {
		t.Error("the old admin token still works after the reset")
	}
	entries, err := srv.Client().WithToken(token).AuditList(t.Context(), time.Time{})
	if err != nil || len(entries) == 0 || entries[0].Action != "user.admin_token_reset" || entries[0].Target != "admin" {
		t.Errorf("the audit log after the reset: %+v, %v; want the reset first", entries, err)
	}
}
