package storetest

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

// Migrator is a store opened on given migrations.
type Migrator interface {
	Migrate(ctx context.Context) error
	Close() error
}

// MigrationDB is one empty database for a test of the migration machinery:
// Open opens a store on it that applies migrations instead of the embedded
// ones, and Exec runs a statement on it outside the store.
type MigrationDB struct {
	Open func(t *testing.T, migrations fs.FS) Migrator
	Exec func(t *testing.T, query string)
	// Query runs a query for one string.
	Query func(t *testing.T, query string) string
}

// testMigrations are two migrations written in the SQL both databases
// speak.
func testMigrations() fstest.MapFS {
	return fstest.MapFS{
		"001_first.up.sql":  {Data: []byte("CREATE TABLE first (id BIGINT PRIMARY KEY, name TEXT NOT NULL);\n")},
		"002_second.up.sql": {Data: []byte("CREATE TABLE second (id BIGINT PRIMARY KEY);\n")},
	}
}

// RunMigrations checks that applied migrations are checksummed: a
// migration edited after it was applied is refused, naming its file, and a
// database from before checksums gets them. newDB returns a new, empty
// database for one test.
func RunMigrations(t *testing.T, newDB func(t *testing.T) MigrationDB) {
	t.Run("EditedMigrationRefused", func(t *testing.T) {
		t.Parallel()
		db := newDB(t)
		migs := testMigrations()
		migrate(t, db, migs)
		// Migrating again with the same files is fine.
		migrate(t, db, migs)

		migs["001_first.up.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE first (id BIGINT PRIMARY KEY, name TEXT);\n")}
		s := db.Open(t, migs)
		defer s.Close()
		err := s.Migrate(t.Context())
		if err == nil {
			t.Fatal("Migrate with an applied migration edited = nil, want an error naming it")
		}
		for _, want := range []string{"001_first.up.sql", "was changed after this database applied it", "restore 001_first.up.sql", "new migration"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Migrate with an applied migration edited = %q, want it to say %q", err, want)
			}
		}
		// A new migration does not get applied past the refusal.
		migs["003_third.up.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE third (id BIGINT PRIMARY KEY);\n")}
		s2 := db.Open(t, migs)
		defer s2.Close()
		if err := s2.Migrate(t.Context()); err == nil {
			t.Fatal("Migrate with an applied migration edited and a new one = nil, want an error")
		}
		if got := db.Query(t, "SELECT CAST(COUNT(*) AS TEXT) FROM schema_migrations"); got != "2" {
			t.Errorf("migrations recorded after the refusal = %s, want 2", got)
		}
	})

	t.Run("UpgradeFromBeforeChecksums", func(t *testing.T) {
		t.Parallel()
		db := newDB(t)
		// A database as the servers before checksums left it.
		db.Exec(t, `CREATE TABLE schema_migrations (
			version BIGINT PRIMARY KEY,
			name TEXT NOT NULL,
			applied_at BIGINT NOT NULL)`)
		db.Exec(t, "CREATE TABLE first (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
		db.Exec(t, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, '001_first', 1)")

		migs := testMigrations()
		migrate(t, db, migs)
		if got := db.Query(t, "SELECT CAST(COUNT(*) AS TEXT) FROM schema_migrations WHERE checksum <> ''"); got != "2" {
			t.Errorf("migrations with a checksum after the upgrade = %s, want 2 (the old one's backfilled)", got)
		}
		migrate(t, db, migs)

		// The backfilled checksum guards the old migration too.
		migs["001_first.up.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE first (id BIGINT PRIMARY KEY);\n")}
		s := db.Open(t, migs)
		defer s.Close()
		if err := s.Migrate(t.Context()); err == nil || !strings.Contains(err.Error(), "001_first.up.sql") {
			t.Errorf("Migrate with the upgraded database's old migration edited = %v, want an error naming 001_first.up.sql", err)
		}
	})
}

// migrate opens db on migs and migrates it.
func migrate(t *testing.T, db MigrationDB, migs fs.FS) {
	t.Helper()
	s := db.Open(t, migs)
	defer s.Close()
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
}
