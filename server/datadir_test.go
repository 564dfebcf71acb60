package server_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// TestDataDirIsPrivate: the server's data directory is 0700 and its
// database (with -wal and -shm) and key file 0600, even when the user made
// the directory beforehand with the usual umask, and when an older server
// left them readable by all.
func TestDataDirIsPrivate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "server")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	files := []string{"dstack.db", "dstack.db-wal", "dstack.db-shm", "encryption.key"}
	check := func(t *testing.T) {
		t.Helper()
		want := map[string]fs.FileMode{dir: 0o700}
		for _, f := range files {
			want[filepath.Join(dir, f)] = 0o600
		}
		for p, m := range want {
			fi, err := os.Stat(p)
			if err != nil {
				t.Errorf("%s: %v", p, err)
				continue
			}
			if fi.Mode().Perm() != m {
				t.Errorf("%s is %v, want %v", p, fi.Mode().Perm(), m)
			}
		}
	}
	srv := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.DataDir = dir }))
	// The first start wrote (the admin user): the WAL files are there
	// while the server runs.
	t.Run("made by the user", check)

	// Files an older server left readable by all, in a directory open to all.
	for _, f := range files {
		if err := os.Chmod(filepath.Join(dir, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)
	t.Run("left open by an older server", check)

	// `dstack server migrate` does the same.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "dstack.db"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := server.Migrate(context.Background(), server.Config{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	t.Run("migrate", check)
}
