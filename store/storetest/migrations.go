package storetest

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/dstackai/dstack/store"
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

// RunTeamUpgrade checks migration 013 on a database of a server from
// before teams: the one user's limits and on-demand switch become the
// server's. migrations are the store's own; newDB returns a new, empty
// database, whose Open gives a store.Store.
func RunTeamUpgrade(t *testing.T, newDB func(t *testing.T) MigrationDB, migrations fs.FS) {
	t.Helper()
	db := newDB(t)
	before := fstest.MapFS{}
	names, err := fs.Glob(migrations, "*.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n >= "013" {
			continue
		}
		b, err := fs.ReadFile(migrations, n)
		if err != nil {
			t.Fatal(err)
		}
		before[n] = &fstest.MapFile{Data: b}
	}
	old := db.Open(t, before)
	if err := old.Migrate(t.Context()); err != nil {
		t.Fatalf("migrate to before teams: %v", err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, `INSERT INTO users (id, name, token_hash, admin, created_at) VALUES ('u-admin', 'admin', 'h-admin', TRUE, 1)`)
	db.Exec(t, `INSERT INTO limits (id, user_id, backend, region, instance_type, spot, max_count, created_at, updated_at)
		VALUES ('l1', 'u-admin', 'aws', 'eu-west-1', 'm5.xlarge', FALSE, 3, 2, 2)`)
	db.Exec(t, `INSERT INTO on_demand_settings (user_id, enabled, updated_at) VALUES ('u-admin', FALSE, 5000000)`)

	m := db.Open(t, migrations)
	defer m.Close()
	if err := m.Migrate(t.Context()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	s, ok := m.(store.Store)
	if !ok {
		t.Fatalf("%T is not a store.Store", m)
	}
	if o, err := s.OnDemandGet(t.Context()); err != nil || o.Enabled || o.UpdatedAt.Unix() != 5 {
		t.Fatalf("OnDemandGet after the upgrade = %+v, %v; want the admin's switch (disabled at 5s)", o, err)
	}
	ls, err := s.LimitList(t.Context(), store.LimitListParams{})
	if err != nil || len(ls) != 1 || ls[0].ID != "l1" || ls[0].Max != 3 || ls[0].UserID != "u-admin" || ls[0].OnDemandEnabled {
		t.Fatalf("LimitList after the upgrade = %v, %v; want the admin's limit, disabled", ls, err)
	}
	if u, err := s.UserGetByTokenHash(t.Context(), "h-admin"); err != nil || !u.Admin || u.MaxRunning != 0 {
		t.Fatalf("admin after the upgrade = %+v, %v", u, err)
	}
}
