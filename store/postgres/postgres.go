// Package postgres is dstack's store for several server replicas: store.Store
// on PostgreSQL through pgx's connection pool.
//
// Transactions run at READ COMMITTED. Claims lock the job they take with FOR
// UPDATE SKIP LOCKED, so concurrent claimers neither wait for each other nor
// take one job twice. A transaction that ends jobs locks their run's row
// first, so that the decisions about dependents see every sibling's outcome.
// InstanceCreate locks its limit's row (FOR UPDATE) before counting the
// limit's instances, so concurrent launches of one limit take turns and never
// exceed its maximum. Locks are always taken in the order limits, instances,
// runners, runs, jobs; a claim holds only a pending job's lock when it reads
// its runner's instance under a share lock, and no transaction that locks
// instances waits for a pending job.
//
// The DSN is pgx's: a URL or key=value string. pgxpool's settings go in it too
// (pool_max_conns=32), as do server settings such as search_path.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/internal/sqlcore"
)

//go:embed migrations/*.up.sql
var migrations embed.FS

// migrateLockKey is the first key of the advisory lock that keeps migrations
// apart; the second is the hash of the schema migrated, so that databases
// with several dstack schemas (the tests) migrate them independently.
const migrateLockKey = 0x64737461 // "dsta"

// Store is store.Store on PostgreSQL; its methods are documented on
// store.Store.
type Store struct {
	*sqlcore.Store
}

var _ store.Store = (*Store)(nil)

// Open connects to the database dsn names. Call Migrate before using it.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	d := sqlcore.Dialect{
		Migrations:   sub,
		MigrateLock:  fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d, hashtext(current_schema()))`, migrateLockKey),
		NextQueueSeq: `nextval('jobs_queue_seq')`,
		Strpos:       "strpos",
		ForUpdate:    " FOR UPDATE",
		SkipLocked:   " FOR UPDATE SKIP LOCKED",
		ForShare:     " FOR SHARE",
	}
	db := poolDB{queries{pool}, pool}
	closeFn := func() error { pool.Close(); return nil }
	return &Store{sqlcore.New(db, db, d, closeFn)}, nil
}

// pgQueryer is what *pgxpool.Pool and pgx.Tx share.
type pgQueryer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// queries adapts pgx to sqlcore.Querier, mapping errors to the store's.
type queries struct{ q pgQueryer }

func (q queries) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := q.q.Exec(ctx, query, args...)
	if err != nil {
		return 0, mapErr(err)
	}
	return tag.RowsAffected(), nil
}

func (q queries) Query(ctx context.Context, query string, args ...any) (sqlcore.Rows, error) {
	rows, err := q.q.Query(ctx, query, args...)
	if err != nil {
		return nil, mapErr(err)
	}
	return pgRows{rows}, nil
}

func (q queries) QueryRow(ctx context.Context, query string, args ...any) sqlcore.Row {
	return pgRow{q.q.QueryRow(ctx, query, args...)}
}

// poolDB adds transactions to the pool's queries.
type poolDB struct {
	queries
	pool *pgxpool.Pool
}

func (p poolDB) Tx(ctx context.Context, fn func(q sqlcore.Querier) error) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", mapErr(err))
	}
	if err := fn(queries{tx}); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", mapErr(err))
	}
	return nil
}

type pgRows struct{ pgx.Rows }

func (r pgRows) Scan(dest ...any) error { return mapErr(r.Rows.Scan(dest...)) }
func (r pgRows) Err() error             { return mapErr(r.Rows.Err()) }

type pgRow struct{ pgx.Row }

func (r pgRow) Scan(dest ...any) error { return mapErr(r.Row.Scan(dest...)) }

// mapErr turns "no rows" and a foreign key violation into store.ErrNotFound
// and a unique violation into store.ErrConflict, keeping the driver's error
// in the chain.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%w: %w", store.ErrConflict, err)
		case "23503": // foreign_key_violation
			return fmt.Errorf("%w: %w", store.ErrNotFound, err)
		}
	}
	return err
}
