package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/postgres"
	"github.com/dstackai/dstack/store/storetest"
)

func open(t testing.TB) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), storetest.PostgresDSN(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
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

// TestUnavailable: a pool with no connection free within the acquire
// timeout, and a database that cannot be reached, fail with
// store.ErrUnavailable and say which, instead of waiting on.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := storetest.PostgresDSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", "1")
	u.RawQuery = q.Encode()
	s, err := postgres.Open(ctx, u.String(), postgres.WithAcquireTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}

	// Another session locks users: a count waits on it, holding the pool's
	// one connection.
	other, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	held := make(chan error, 1)
	go func() { _, err := s.UserCount(ctx); held <- err }()
	testutil.Eventually(t, "the count to wait for the lock", func() bool {
		var waiting int
		if err := other.QueryRow(ctx, `SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
			WHERE NOT l.granted AND c.relname = 'users'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting > 0
	})
	_, err = s.UserCount(ctx)
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "no connection of the pool free within 200ms; pool_max_conns is 1") {
		t.Errorf("UserCount with the pool's connection held = %v, want store.ErrUnavailable saying the pool is busy", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-held; err != nil {
		t.Errorf("the count that waited for the lock: %v", err)
	}

	// No database where the DSN points: Open says so.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	u.Host = closed
	if _, err := postgres.Open(ctx, u.String()); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "database unreachable") {
		t.Errorf("Open on a closed port = %v, want store.ErrUnavailable saying the database is unreachable", err)
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
	dsn := storetest.PostgresDSN(t)
	raw, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close(context.Background()) })
	return storetest.MigrationDB{
		Embedded: os.DirFS("migrations"),
		Open: func(t *testing.T, migrations fs.FS) storetest.Migrator {
			s, err := postgres.Open(t.Context(), dsn, postgres.WithMigrations(migrations))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return s
		},
		Exec: func(t *testing.T, query string) {
			if _, err := raw.Exec(t.Context(), query); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
		},
		Query: func(t *testing.T, query string) string {
			var v string
			if err := raw.QueryRow(t.Context(), query).Scan(&v); err != nil {
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

// migrated opens a store on a schema of its own, migrated, and returns it
// with the schema's DSN.
func migrated(t *testing.T) (*postgres.Store, string) {
	t.Helper()
	dsn := storetest.PostgresDSN(t)
	s, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, dsn
}

// TestClaimsPassHeartbeats: a claim does not wait for a transaction that
// writes its runner's row without changing what a claim reads, as a flush
// of heartbeats does for thousands of runners until its commit: claims
// that waited for it held the claim lock, and every claim of the replica
// stalled behind them.
func TestClaimsPassHeartbeats(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, dsn := migrated(t)
	now := time.Now()
	u, err := s.UserCreate(ctx, store.UserCreateParams{ID: "u", Name: "u", TokenHash: "h-u", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	host := api.HostResources{CPUs: 4, MemoryMiB: 8 << 10}
	r, err := s.RunnerCreate(ctx, store.RunnerCreateParams{ID: "r", UserID: u.ID, Name: "r", Hostname: "r", Executor: "shell",
		Version: "1", Resources: host, TokenHash: "h-r", TokenExpiresAt: now.Add(time.Hour), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	run := store.RunCreateParams{ID: "run", Name: "run", UserID: u.ID, Workflow: "w", CodeID: "c", Now: now}
	for _, id := range []string{"j1", "j2"} {
		run.Jobs = append(run.Jobs, store.JobCreate{ID: id, Spec: api.JobSpec{Workflow: "w" + id, Provider: "bash", Commands: []string{"true"}}})
	}
	if _, err := s.RunCreate(ctx, run); err != nil {
		t.Fatal(err)
	}

	raw, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close(context.Background()) })
	tx, err := raw.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // the test ends
	if _, err := tx.Exec(ctx, `UPDATE runners SET last_heartbeat = $2, online = TRUE WHERE id = $1`, r.ID, now.UnixMicro()); err != nil {
		t.Fatal(err)
	}
	// The write is held open until the claims are done or given up on: a
	// claim taken into a transaction waits for its outcome whatever its
	// context, so the test ends the write itself when they wait too long.
	done := make(chan error, 1)
	go func() { done <- claimTwice(ctx, s, r, u, host, now) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		_ = tx.Rollback(context.Background())
		t.Fatalf("claims waited 10s for a heartbeat's write of the runner's row (then: %v); want them done at once", <-done)
	}
}

// claimTwice claims a job for r, ends it with JobEndAndClaim and checks
// that the end brought the next job.
func claimTwice(ctx context.Context, s *postgres.Store, r *store.Runner, u *store.User, host api.HostResources, now time.Time) error {
	j, err := s.JobClaimNext(ctx, store.JobClaimNextParams{RunnerID: r.ID, UserID: u.ID, Free: host, Now: now})
	if err != nil {
		return err
	}
	j, err = s.JobSetStatus(ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease, Status: api.StatusRunning, Now: now})
	if err != nil {
		return err
	}
	_, next, err := s.JobEndAndClaim(ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease, Status: api.StatusDone, Now: now},
		store.JobClaimNextParams{RunnerID: r.ID, UserID: u.ID, Free: host, Now: now})
	if err == nil && next == nil {
		err = errors.New("no next job with the end, want the second job")
	}
	return err
}

// TestRunnerRemovalWaitsForClaims: removing a runner, by hand or past
// retention, waits for the claim under way to commit before it reads
// whether the runner holds a job. No foreign key stops a claim from giving
// a job to a runner being removed (migration 029): without the wait, the
// removal would clear the job's runner and leave it downloading for no one.
func TestRunnerRemovalWaitsForClaims(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, dsn := migrated(t)
	now := time.Now()
	u, err := s.UserCreate(ctx, store.UserCreateParams{ID: "u", Name: "u", TokenHash: "u", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	offlineRunner := func(id string) {
		t.Helper()
		if _, err := s.RunnerCreate(ctx, store.RunnerCreateParams{ID: id, UserID: u.ID, Name: id, Hostname: id, Executor: "shell",
			Version: "test", TokenHash: "token-" + id, TokenExpiresAt: now.Add(time.Hour), Now: now}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RunnerMarkOffline(ctx, store.RunnerMarkOfflineParams{HeartbeatBefore: now, RunnerID: id, MaxAttempts: 3, Now: now}); err != nil {
			t.Fatal(err)
		}
	}
	claimer, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer claimer.Close(ctx)

	for _, tc := range []struct {
		name   string
		remove func(id string) error
	}{
		{"RunnerDelete", func(id string) error { return s.RunnerDelete(ctx, store.RunnerDeleteParams{ID: id}) }},
		{"RunnerDeleteOffline", func(id string) error {
			gone, err := s.RunnerDeleteOffline(ctx, store.RunnerDeleteOfflineParams{HeartbeatBefore: now.Add(time.Hour)})
			if err == nil && (len(gone) != 1 || gone[0].ID != id) {
				return fmt.Errorf("removed %d runners, want runner %s alone", len(gone), id)
			}
			return err
		}},
	} {
		id := "r-" + tc.name
		offlineRunner(id)
		tx, err := claimer.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, postgres.ClaimLock); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- tc.remove(id) }()
		testutil.Eventually(t, tc.name+" to wait for the claim lock", func() bool {
			select {
			case err := <-done:
				t.Fatalf("%s returned (%v) while a claim held the claim lock; want it to wait for the claim to commit", tc.name, err)
			default:
			}
			var waiting int
			if err := claimer.QueryRow(ctx, `SELECT count(*) FROM pg_locks
				WHERE locktype = 'advisory' AND NOT granted AND objid = hashtext(current_schema())::oid AND pid <> pg_backend_pid()`).Scan(&waiting); err != nil {
				t.Fatal(err)
			}
			return waiting > 0
		})
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("%s once the claim committed: %v", tc.name, err)
		}
		if _, err := s.RunnerGet(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("RunnerGet after %s = %v, want store.ErrNotFound", tc.name, err)
		}
	}
}

func BenchmarkRunnerHeartbeatBatch(b *testing.B) {
	storetest.BenchmarkRunnerHeartbeatBatch(b, open(b))
}
