package logstore_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/logstore"
	"github.com/dstackai/dstack/logstore/logstoretest"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/postgres"
	"github.com/dstackai/dstack/store/sqlite"
	"github.com/dstackai/dstack/store/storetest"
)

func TestFilesConformance(t *testing.T) {
	t.Parallel()
	logstoretest.Run(t, func(t *testing.T) (logstore.Store, func() logstore.Store) {
		dir := t.TempDir()
		open := func() logstore.Store {
			s, err := logstore.Open(dir)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return s
		}
		return open(), open
	})
}

// TestDBConformance runs the suite over the database table, on SQLite and
// on PostgreSQL; a second store over the same database is another replica.
func TestDBConformance(t *testing.T) {
	t.Parallel()
	for _, db := range []struct {
		name string
		open func(t *testing.T) store.Store
	}{
		{"SQLite", openSQLite},
		{"PostgreSQL", openPostgres},
	} {
		t.Run(db.name, func(t *testing.T) {
			t.Parallel()
			logstoretest.Run(t, func(t *testing.T) (logstore.Store, func() logstore.Store) {
				st := db.open(t)
				return logstore.NewDB(st, nil), func() logstore.Store { return logstore.NewDB(st, nil) }
			})
		})
	}
}

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "dstack.db"))
	if err != nil {
		t.Fatalf("open SQLite: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

func openPostgres(t *testing.T) store.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), storetest.PostgresDSN(t))
	if err != nil {
		t.Fatalf("open PostgreSQL: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

// TestDBReadsTheLogFilesOfBefore: a server that kept its logs in files and
// now keeps them in the database reads the old logs, and the runner of a
// job running across the change carries on where its log was.
func TestDBReadsTheLogFilesOfBefore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	files, err := logstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		job  string
		off  int64
		data string
		at   time.Time
	}{{"old", 0, "one\n", t0}, {"old", 4, "two\n", t0.Add(time.Minute)}, {"running", 0, "start\n", t0}} {
		if _, err := files.Append(ctx, a.job, a.off, []byte(a.data), a.at); err != nil {
			t.Fatal(err)
		}
	}
	if err := files.Finish("old"); err != nil {
		t.Fatal(err)
	}
	s := logstore.NewDB(openSQLite(t), files)
	read := func(job string, o logstore.ReadOptions) string {
		t.Helper()
		var b strings.Builder
		if err := s.Copy(ctx, job, &b, o); err != nil {
			t.Fatalf("Copy(%s): %v", job, err)
		}
		return b.String()
	}
	if got := read("old", logstore.ReadOptions{}); got != "one\ntwo\n" {
		t.Errorf("an old log reads %q", got)
	}
	if got := read("old", logstore.ReadOptions{Offset: 5, Since: t0.Add(time.Second)}); got != "wo\n" {
		t.Errorf("an old log from an offset and a time reads %q, want %q", got, "wo\n")
	}
	if n, err := s.Size(ctx, "running"); err != nil || n != 6 {
		t.Fatalf("Size of a log in a file = %d, %v; want 6", n, err)
	}
	// The runner goes on at the size it knew; the file comes along.
	if n, err := s.Append(ctx, "running", 6, []byte("more\n"), t0.Add(time.Hour)); err != nil || n != 11 {
		t.Fatalf("Append after the file = %d, %v; want 11", n, err)
	}
	if got := read("running", logstore.ReadOptions{}); got != "start\nmore\n" {
		t.Errorf("the log continued in the database reads %q", got)
	}
	if got := read("running", logstore.ReadOptions{Since: t0.Add(time.Minute)}); got != "more\n" {
		t.Errorf("since the change, it reads %q: the file's records keep their times", got)
	}
	if n, err := s.Delete(ctx, "old"); err != nil || n == 0 {
		t.Errorf("Delete of an old log = %d, %v; want its file's bytes", n, err)
	}
	if got := read("old", logstore.ReadOptions{}); got != "" {
		t.Errorf("a deleted old log reads %q", got)
	}
}
