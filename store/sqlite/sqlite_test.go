package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/sqlite"
	"github.com/dstackai/dstack/store/storetest"
)

func open(t testing.TB, opts ...sqlite.Option) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "dstack.db"), opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	// With the race detector the SQLite engine runs some twenty times
	// slower, and the suite's concurrent tests queue many writes for the
	// one write turn (four passes of 600 pending reasons ahead of a
	// claim): under load a write could wait longer than the default for
	// those before it. The suite checks what the store does;
	// TestLockedDatabaseIsUnavailable checks that a wait has its limit.
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, sqlite.WithBusyTimeout(time.Minute)) })
}

func BenchmarkJobClaimNext(b *testing.B) {
	storetest.BenchmarkJobClaimNext(b, open(b))
}

func BenchmarkClaimConcurrent(b *testing.B) {
	storetest.BenchmarkClaimConcurrent(b, open(b))
}

func BenchmarkJobListPending(b *testing.B) {
	storetest.BenchmarkJobListPending(b, open(b))
}

func BenchmarkRunCreate(b *testing.B) {
	storetest.BenchmarkRunCreate(b, open(b))
}

// TestLockedDatabaseIsUnavailable: while another connection holds the
// write lock, writes fail with store.ErrUnavailable naming the lock once
// the busy timeout has passed, those queued behind them too, and work
// again once the lock is released.
func TestLockedDatabaseIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dstack.db")
	s, err := sqlite.Open(ctx, path, sqlite.WithBusyTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	create := func(name string) error {
		_, err := s.UserCreate(ctx, store.UserCreateParams{ID: name, Name: name, TokenHash: "hash-" + name, Now: time.Now()})
		return err
	}
	errs := make(chan error, 3)
	for i := range 3 {
		go func() { errs <- create(fmt.Sprint("u", i)) }()
	}
	for range 3 {
		err := <-errs
		var ue *store.UnavailableError
		if !errors.As(err, &ue) || !errors.Is(err, store.ErrUnavailable) || !ue.Busy || !strings.Contains(err.Error(), "database is busy") {
			t.Errorf("a write while the database is locked = %v, want a busy store.UnavailableError", err)
		}
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := create("after"); err != nil {
		t.Errorf("a write after the lock is released: %v", err)
	}
}

// TestFullDiskIsENOSPC: a write SQLite refuses because its disk is full
// fails with an error that matches syscall.ENOSPC, which the server answers
// with 507 and names on /healthz, and writes work again once space returns.
// The disk is a small tmpfs; the test is skipped where mounting is not
// allowed (it needs root or CAP_SYS_ADMIN).
func TestFullDiskIsENOSPC(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs for a small disk (needs root or CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	s, err := sqlite.Open(ctx, filepath.Join(dir, "dstack.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// Fill the disk with a file, leaving SQLite no room for what it writes.
	fill, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := fill.Write(chunk); err != nil {
			break
		}
	}
	_ = fill.Close()
	var full error
	for i := 0; i < 1000 && full == nil; i++ {
		_, full = s.UserCreate(ctx, store.UserCreateParams{ID: fmt.Sprint("u", i), Name: fmt.Sprint("user-", i, strings.Repeat("x", 4000)), TokenHash: fmt.Sprint("hash-", i), Now: time.Now()})
	}
	if !errors.Is(full, syscall.ENOSPC) {
		t.Fatalf("writes to a database on a full disk: %.300v, want an error matching ENOSPC", full)
	}
	if err := os.Remove(filepath.Join(dir, "fill")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UserCreate(ctx, store.UserCreateParams{ID: "after", Name: "after", TokenHash: "hash-after", Now: time.Now()}); err != nil {
		t.Errorf("a write once space returns: %v", err)
	}
}

func TestMigrations(t *testing.T) {
	storetest.RunMigrations(t, migrationDB)
}

// TestUpgradeToStorage: migration 014 keeps the admin and the runs of a
// database from before it.
func TestUpgradeToStorage(t *testing.T) {
	t.Parallel()
	storetest.RunUpgradeToStorage(t, migrationDB(t))
}

// TestUpgradeFrom011: users, their tokens and runs from before tokens had
// their own table keep working.
func TestUpgradeFrom011(t *testing.T) {
	storetest.RunUpgrade(t, migrationDB(t))
}

// migrationDB is a new, empty database for a migration test.
func migrationDB(t *testing.T) storetest.MigrationDB {
	path := filepath.Join(t.TempDir(), "dstack.db")
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	return storetest.MigrationDB{
		Embedded: os.DirFS("migrations"),
		Open: func(t *testing.T, migrations fs.FS) storetest.Migrator {
			s, err := sqlite.Open(t.Context(), path, sqlite.WithMigrations(migrations))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return s
		},
		Exec: func(t *testing.T, query string) {
			if _, err := raw.ExecContext(t.Context(), query); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
		},
		Query: func(t *testing.T, query string) string {
			var v string
			if err := raw.QueryRowContext(t.Context(), query).Scan(&v); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
			return v
		},
	}
}

// TestTeamUpgrade: the limits and on-demand switch of a server from before
// teams become the server's (migration 013).
func TestTeamUpgrade(t *testing.T) {
	storetest.RunTeamUpgrade(t, migrationDB(t))
}

func BenchmarkRunnerHeartbeatBatch(b *testing.B) {
	storetest.BenchmarkRunnerHeartbeatBatch(b, open(b))
}
