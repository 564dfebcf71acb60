package servercmd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store/sqlite"
)

// runBackup runs `dstack server backup` with args and no environment.
func runBackup(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := Command(func(string) string { return "" })
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"backup"}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestBackupWhileTheServerWrites copies the state of a running server
// while users are being added: the copy is a database the store opens,
// holding what was there before the backup began.
func TestBackupWhileTheServerWrites(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	admin := srv.Client()
	ctx := context.Background()
	if _, err := admin.UserCreate(ctx, api.UserCreateRequest{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	// Writes go on during the backup.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := admin.UserCreate(ctx, api.UserCreateRequest{Name: fmt.Sprintf("during-%d", i)}); err != nil {
				t.Errorf("add a user during the backup: %v", err)
				return
			}
		}
	}()
	out := filepath.Join(t.TempDir(), "backup.db")
	msg, err := runBackup(t, "--data-dir", srv.DataDir, "--out", out)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, msg)
	}
	if !strings.Contains(msg, "Backed up the server's state to "+out) {
		t.Errorf("backup said %q", msg)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("the backup's mode is %o, want 600: it holds credentials", mode)
	}
	// Nothing but the copy is left beside it.
	entries, _ := os.ReadDir(filepath.Dir(out))
	if len(entries) != 1 {
		t.Errorf("the backup's directory holds %d entries, want the copy alone", len(entries))
	}
	st, err := sqlite.Open(ctx, out)
	if err != nil {
		t.Fatalf("open the backup: %v", err)
	}
	defer st.Close()
	users, err := st.UserList(ctx)
	if err != nil {
		t.Fatalf("the backup's users: %v", err)
	}
	var names []string
	for _, u := range users {
		names = append(names, u.Name)
	}
	if !strings.Contains(" "+strings.Join(names, " ")+" ", " before ") {
		t.Errorf("the backup holds the users %v, without the one added before it", names)
	}

	// A second backup to the same file is refused; the copy is kept.
	if msg, err := runBackup(t, "--data-dir", srv.DataDir, "--out", out); err == nil || !strings.Contains(err.Error(), out+" exists") {
		t.Errorf("a backup over an existing file: %v\n%s", err, msg)
	}
}

func TestBackupSaysWhatToDo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := runBackup(t, "--data-dir", dir, "--out", filepath.Join(dir, "b.db")); err == nil || !strings.Contains(err.Error(), "no server state at "+filepath.Join(dir, "dstack.db")) {
		t.Errorf("backup of an empty directory: %v", err)
	}
	if _, err := runBackup(t, "--data-dir", dir); err == nil || !strings.Contains(err.Error(), "no --out") {
		t.Errorf("backup without --out: %v", err)
	}
	cmd := Command(func(k string) string {
		if k == "DSTACK_SERVER_DB" {
			return "postgres://db/dstack"
		}
		return ""
	})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"backup", "--out", filepath.Join(dir, "b.db")})
	if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "pg_dump") {
		t.Errorf("backup of a server on PostgreSQL: %v, want it to point at pg_dump", err)
	}
}
