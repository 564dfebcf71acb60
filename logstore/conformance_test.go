package logstore_test

import (
	"path/filepath"
	"testing"

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
				return logstore.NewDB(st), func() logstore.Store { return logstore.NewDB(st) }
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
