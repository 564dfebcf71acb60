package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/server/servercmd"
)

// serverCmd is `dstack server` as cmd/dstack adds it.
func serverCmd(e *Env) *cobra.Command { return servercmd.Command(e.Getenv) }

// runServerCmd runs a dstack command line with `dstack server` in an Env
// whose environment is vars only.
func runServerCmd(t *testing.T, vars map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return vars[k] }}
	code = e.Run(t.Context(), args, serverCmd)
	return code, out.String(), errOut.String()
}

// TestServerReadsEnvThroughEnv: `dstack server` reads its DSTACK_SERVER_*
// variables through the CLI's Env, and its help lists them.
func TestServerReadsEnvThroughEnv(t *testing.T) {
	t.Parallel()
	t.Run("Help", func(t *testing.T) {
		t.Parallel()
		code, out, _ := runServerCmd(t, nil, "server", "--help")
		if code != 0 {
			t.Fatalf("server --help: exit %d", code)
		}
		for _, v := range []string{"DSTACK_SERVER_DB", "DSTACK_SERVER_DATA_DIR", "DSTACK_SERVER_ARTIFACTS", "DSTACK_SERVER_S3_ENDPOINT",
			"DSTACK_SERVER_S3_REGION", "DSTACK_SERVER_ENCRYPTION_KEY", "DSTACK_AWS_ENDPOINT_URL", "DSTACK_CONFIG",
			"DSTACK_SERVER_STORAGE_QUOTA", "DSTACK_SERVER_RETENTION"} {
			if !strings.Contains(out, "\n  "+v+" ") {
				t.Errorf("server --help does not list %s:\n%s", v, out)
			}
		}
	})
	t.Run("BadRetention", func(t *testing.T) {
		t.Parallel()
		code, _, errOut := runServerCmd(t, map[string]string{"DSTACK_SERVER_DATA_DIR": t.TempDir(), "DSTACK_SERVER_RETENTION": "a month"}, "server", "migrate")
		if code == 0 || !strings.Contains(errOut, "DSTACK_SERVER_RETENTION") || !strings.Contains(errOut, "such as 30d") {
			t.Fatalf("server migrate with DSTACK_SERVER_RETENTION=\"a month\": exit %d, stderr %q; want an error naming the variable", code, errOut)
		}
	})
	t.Run("DataDir", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "state")
		code, out, errOut := runServerCmd(t, map[string]string{"DSTACK_SERVER_DATA_DIR": dir}, "server", "migrate")
		if code != 0 || !strings.Contains(out, "The database is up to date.") {
			t.Fatalf("server migrate: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		if _, err := os.Stat(filepath.Join(dir, "dstack.db")); err != nil {
			t.Errorf("server migrate with DSTACK_SERVER_DATA_DIR=%s did not migrate the database there: %v", dir, err)
		}
	})
	t.Run("DataDirFlag", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "state")
		code, out, errOut := runServerCmd(t, nil, "server", "migrate", "--data-dir", dir)
		if code != 0 || !strings.Contains(out, "The database is up to date.") {
			t.Fatalf("server migrate --data-dir %s: exit %d, stdout %q, stderr %q", dir, code, out, errOut)
		}
		if _, err := os.Stat(filepath.Join(dir, "dstack.db")); err != nil {
			t.Errorf("server migrate --data-dir %s did not migrate the database there: %v", dir, err)
		}
	})
	t.Run("EncryptionKey", func(t *testing.T) {
		t.Parallel()
		vars := map[string]string{
			"DSTACK_SERVER_DATA_DIR":       t.TempDir(),
			"DSTACK_SERVER_ENCRYPTION_KEY": "not a key",
		}
		code, _, errOut := runServerCmd(t, vars, "server", "--port", "0", "--local-backend", "off", "--no-cli-config", "--log-level", "error")
		if code != ExitError || !strings.Contains(errOut, "DSTACK_SERVER_ENCRYPTION_KEY is not base64") {
			t.Errorf("server with a bad DSTACK_SERVER_ENCRYPTION_KEY in its Env: exit %d, stderr %q; want it refused", code, errOut)
		}
	})
}
