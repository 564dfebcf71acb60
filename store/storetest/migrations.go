package storetest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

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
	// Embedded are the store's own migrations.
	Embedded fs.FS
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

// upTo keeps the migrations of fsys up to version last.
func upTo(t *testing.T, fsys fs.FS, last int) fstest.MapFS {
	t.Helper()
	names, err := fs.Glob(fsys, "*.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	out := fstest.MapFS{}
	for _, name := range names {
		var v int
		if _, err := fmt.Sscanf(name, "%d_", &v); err != nil || v > last {
			continue
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = &fstest.MapFile{Data: b}
	}
	return out
}

// RunUpgrade checks that a database made before users had several tokens
// (migration 011) keeps its users, their tokens and runs once migrated.
func RunUpgrade(t *testing.T, db MigrationDB) {
	migrate(t, db, upTo(t, db.Embedded, 11))
	db.Exec(t, `INSERT INTO users (id, name, token_hash, admin, created_at) VALUES ('u-admin', 'admin', 'hash-admin', TRUE, 1000)`)
	db.Exec(t, `INSERT INTO users (id, name, token_hash, admin, created_at) VALUES ('u-bob', 'bob', 'hash-bob', FALSE, 2000)`)
	db.Exec(t, `INSERT INTO runs (id, name, user_id, workflow, code_id, submitted_at) VALUES ('run-1', 'old-run', 'u-admin', 'train', 'code-1', 3000)`)
	db.Exec(t, `INSERT INTO runners (id, user_id, name, hostname, executor, version, resources, token_hash, token_expires_at, online, registered_at, last_heartbeat)
		VALUES ('r-1', 'u-admin', 'box', 'box', 'shell', '1', '{}', 'hash-runner', 9000000000000000, TRUE, 1000, 1000)`)

	m := db.Open(t, db.Embedded)
	defer m.Close()
	if err := m.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate from 011: %v", err)
	}
	s, ok := m.(store.Store)
	if !ok {
		t.Fatalf("%T is no store.Store", m)
	}
	ctx := t.Context()
	now := time.UnixMicro(5000).UTC()
	u, tok, err := s.TokenAuthenticate(ctx, store.TokenAuthenticateParams{Hash: "hash-admin", Now: now, TouchEvery: time.Minute})
	if err != nil || u.Name != "admin" || !u.Admin || tok.Name != "default" || tok.ExpiresAt != nil {
		t.Fatalf("the admin's token after the upgrade = %+v, %+v, %v; want it working, named default", u, tok, err)
	}
	if u, _, err := s.TokenAuthenticate(ctx, store.TokenAuthenticateParams{Hash: "hash-bob", Now: now}); err != nil || u.Name != "bob" || u.Admin {
		t.Fatalf("bob's token after the upgrade = %+v, %v", u, err)
	}
	if _, _, err := s.TokenAuthenticate(ctx, store.TokenAuthenticateParams{Hash: "tokens:u-admin", Now: now}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the placeholder left in users.token_hash authenticates: %v", err)
	}
	run, err := s.RunGet(ctx, store.RunGetParams{Name: "old-run", UserID: "u-admin"})
	if err != nil || run.UserName != "admin" {
		t.Fatalf("the admin's run after the upgrade = %+v, %v", run, err)
	}
	if r, err := s.RunnerGetByTokenHash(ctx, "hash-runner"); err != nil || r.TokenID != "" {
		t.Fatalf("the runner after the upgrade = %+v, %v", r, err)
	}
	us, err := s.UserList(ctx)
	if err != nil || len(us) != 2 {
		t.Fatalf("UserList after the upgrade = %+v, %v", us, err)
	}
	// New users and tokens work beside the old ones.
	if _, err := s.UserCreate(ctx, store.UserCreateParams{ID: "u-carol", Name: "carol", TokenHash: "hash-carol", Now: now}); err != nil {
		t.Fatalf("UserCreate after the upgrade: %v", err)
	}
	if _, err := s.TokenCreate(ctx, store.TokenCreateParams{ID: "t-2", UserID: "u-admin", Name: "laptop", Hash: "hash-laptop", Now: now}); err != nil {
		t.Fatalf("TokenCreate after the upgrade: %v", err)
	}
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

// RunUpgradeToStorage checks migration 014 on a database of the schema
// before it: the admin and their runs keep working, each run's code archive
// becomes its user's (of size 0, uploaded when the run was submitted), and
// the run can be deleted.
func RunUpgradeToStorage(t *testing.T, db MigrationDB) {
	t.Helper()
	migrate(t, db, upTo(t, db.Embedded, 13))
	for _, q := range []string{
		`INSERT INTO users (id, name, token_hash, admin, created_at) VALUES ('u1', 'admin', 'h1', TRUE, 1000)`,
		`INSERT INTO runs (id, name, user_id, workflow, code_id, submitted_at) VALUES ('r1', 'old-run', 'u1', 'w', 'c1', 2000)`,
		`INSERT INTO runs (id, name, user_id, workflow, code_id, submitted_at) VALUES ('r2', 'older-run', 'u1', 'w', 'c1', 1500)`,
		`INSERT INTO jobs (id, run_id, position, run_name, user_id, code_id, workflow, spec, cpu, memory_mib, gpu_count, gpu_name,
			gpu_memory_mib, status, queue_seq, submitted_at, finished_at)
			VALUES ('j1', 'r1', 0, 'old-run', 'u1', 'c1', 'w', '{"workflow":"w"}', 0, 0, 0, '', 0, 'done', 1, 2000, 3000)`,
	} {
		db.Exec(t, q)
	}
	m := db.Open(t, db.Embedded)
	defer m.Close()
	if err := m.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate to the current schema: %v", err)
	}
	s, ok := m.(store.Store)
	if !ok {
		t.Fatalf("%T is not a store.Store", m)
	}
	ctx := t.Context()
	u, err := s.UserGet(ctx, "u1")
	if err != nil || !u.Admin || u.StorageQuota != nil {
		t.Fatalf("the admin after the upgrade: %+v, %v", u, err)
	}
	c, err := s.CodeGet(ctx, store.CodeGetParams{UserID: "u1", CodeID: "c1"})
	if err != nil {
		t.Fatalf("the code of the admin's runs after the upgrade: %v", err)
	}
	if c.Size != 0 || c.LastUsedAt == nil || !c.LastUsedAt.Equal(fromMicrosUTC(2000)) || !c.UploadedAt.Equal(fromMicrosUTC(1500)) {
		t.Errorf("code after the upgrade = %+v, want size 0, uploaded at the first run, used at the last", c)
	}
	if _, err := s.RunGet(ctx, store.RunGetParams{Name: "old-run"}); err != nil {
		t.Fatalf("a run after the upgrade: %v", err)
	}
	d, err := s.RunDelete(ctx, store.RunDeleteParams{Name: "old-run", Now: time.Now(), ClaimUntil: time.Now()})
	if err != nil || len(d.Runs) != 1 || len(d.Codes) != 0 {
		t.Fatalf("deleting a run from before the upgrade: %+v, %v; want it deleted, its code kept for the other run", d, err)
	}
}

func fromMicrosUTC(us int64) time.Time { return time.UnixMicro(us).UTC() }

// RunTeamUpgrade checks migration 013 on a database of a server from
// before teams: the one user's limits and on-demand switch become the
// server's.
func RunTeamUpgrade(t *testing.T, db MigrationDB) {
	t.Helper()
	migrate(t, db, upTo(t, db.Embedded, 12))
	db.Exec(t, `INSERT INTO users (id, name, token_hash, admin, created_at) VALUES ('u-admin', 'admin', 'h-admin', TRUE, 1)`)
	db.Exec(t, `INSERT INTO limits (id, user_id, backend, region, instance_type, spot, max_count, created_at, updated_at)
		VALUES ('l1', 'u-admin', 'aws', 'eu-west-1', 'm5.xlarge', FALSE, 3, 2, 2)`)
	db.Exec(t, `INSERT INTO on_demand_settings (user_id, enabled, updated_at) VALUES ('u-admin', FALSE, 5000000)`)

	m := db.Open(t, db.Embedded)
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
	if u, err := s.UserGet(t.Context(), "u-admin"); err != nil || !u.Admin || u.MaxRunning != 0 {
		t.Fatalf("admin after the upgrade = %+v, %v", u, err)
	}
}
