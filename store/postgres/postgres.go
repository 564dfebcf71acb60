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
//
// A lost database is an answer, not a hang: a connection attempt gives up
// after DefaultConnectTimeout unless the DSN sets connect_timeout, and a
// refused or dropped connection, a server shutting down (SQLSTATE class 08,
// 57P01-57P03) or out of connections (53300) fails with a
// *store.UnavailableError that says which.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strings"
	"sync"
	"time"

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

// codeLockKey is the first key of the advisory locks taken per code archive
// (sqlcore.Dialect.CodeLock).
const codeLockKey = 0x636f6465 // "code"

// claimLockKey is the first key of the advisory lock that serialises claims
// (the second as for migrateLockKey); claimLock takes it.
const claimLockKey = 0x636c6169 // "clai"

var claimLock = fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d, hashtext(current_schema()))`, claimLockKey)

// Store is store.Store on PostgreSQL; its methods are documented on
// store.Store.
type Store struct {
	*sqlcore.Store
}

var _ store.Store = (*Store)(nil)

// DefaultConnectTimeout bounds a connection attempt when the DSN does not
// set connect_timeout.
const DefaultConnectTimeout = 5 * time.Second

// DefaultAcquireTimeout bounds the wait for a connection of the pool (all
// busy, or a new one connecting); longer than DefaultConnectTimeout, so
// that a failed connection attempt is what a lost database reports.
const DefaultAcquireTimeout = 10 * time.Second

// Option tunes Open.
type Option func(*options)

type options struct {
	acquireTimeout time.Duration
	migrations     fs.FS
}

// WithAcquireTimeout sets how long a call waits for a connection of the
// pool before it fails with store.ErrUnavailable; d <= 0 keeps
// DefaultAcquireTimeout.
func WithAcquireTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.acquireTimeout = d
		}
	}
}

// WithMigrations replaces the embedded migrations with the NNN_name.up.sql
// files at the root of fsys: for tests of the migration machinery.
func WithMigrations(fsys fs.FS) Option {
	return func(o *options) { o.migrations = fsys }
}

// DefaultMaxConns is the size of the connection pool when the URL does not
// say (pool_max_conns=N).
const DefaultMaxConns = 16

// Open connects to the database dsn names. Call Migrate before using it.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		// Claims and status changes each hold one connection for their
		// shared transactions; the rest serve reads (authentication above
		// all) while they run.
		cfg.MaxConns = DefaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", mapErr(err))
	}
	o := options{acquireTimeout: DefaultAcquireTimeout}
	for _, f := range opts {
		f(&o)
	}
	sub := o.migrations
	if sub == nil {
		if sub, err = fs.Sub(migrations, "migrations"); err != nil {
			pool.Close()
			return nil, fmt.Errorf("open postgres: %w", err)
		}
	}
	d := sqlcore.Dialect{
		Migrations:   sub,
		TableColumns: `SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1`,
		MigrateLock:  fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d, hashtext(current_schema()))`, migrateLockKey),
		ClaimLock:    claimLock,
		NextQueueSeq: `nextval('jobs_queue_seq')`,
		Strpos:       "strpos",
		ForUpdate:    " FOR UPDATE",
		SkipLocked:   " FOR UPDATE SKIP LOCKED",
		ForShare:     " FOR SHARE",
		ForKeyShare:  " FOR KEY SHARE",
		Lateral:      true,
		Unnest:       true,
		AnalyzeQueue: `ANALYZE jobs (status, user_id)`,
		QueueRows:    `SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = 'jobs'::regclass`,
		CodeLock:     fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d, hashtext($1))`, codeLockKey),
		// A log append's commit does not wait for the WAL's flush (about
		// ten times faster on a busy disk); see Dialect.LogAsyncCommit.
		LogAsyncCommit: `set_config('synchronous_commit', 'off', true) IS NOT NULL`,
	}
	db := poolDB{pool: pool, acquireTimeout: o.acquireTimeout}
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

// poolDB runs queries and transactions on connections of the pool, each
// waited for acquireTimeout at most.
type poolDB struct {
	pool           *pgxpool.Pool
	acquireTimeout time.Duration
}

// acquire takes a connection of the pool; the caller releases it. A pool
// that has none to give within acquireTimeout is a busy database.
func (p poolDB) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, p.acquireTimeout)
	defer cancel()
	c, err := p.pool.Acquire(actx)
	if err == nil {
		return c, nil
	}
	if ctx.Err() == nil && actx.Err() != nil {
		if reason := lostConnection(err); reason != "" {
			return nil, &store.UnavailableError{Reason: "database unreachable: " + reason, Err: err}
		}
		return nil, &store.UnavailableError{Busy: true, Err: err, Reason: fmt.Sprintf(
			"database is busy (no connection of the pool free within %s; pool_max_conns is %d)", p.acquireTimeout, p.pool.Config().MaxConns)}
	}
	return nil, mapErr(err)
}

func (p poolDB) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	c, err := p.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	return queries{c}.Exec(ctx, query, args...)
}

func (p poolDB) Query(ctx context.Context, query string, args ...any) (sqlcore.Rows, error) {
	c, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := queries{c}.Query(ctx, query, args...)
	if err != nil {
		c.Release()
		return nil, err
	}
	return &releaseRows{Rows: rows, release: sync.OnceFunc(c.Release)}, nil
}

func (p poolDB) QueryRow(ctx context.Context, query string, args ...any) sqlcore.Row {
	return poolRow{p: p, ctx: ctx, query: query, args: args}
}

func (p poolDB) Tx(ctx context.Context, fn func(q sqlcore.Querier) error) error {
	c, err := p.acquire(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer c.Release()
	tx := &txQueries{conn: c.Conn(), pending: []deferred{{sql: "BEGIN"}}}
	if err := fn(tx); err != nil {
		tx.rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := tx.commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// txQueries runs the statements of a transaction on its connection. Its
// BEGIN, and the statements given to Defer, go out with the statement after
// them, in one round trip (a pipeline): a transaction's first statement
// costs no round trip of its own, and neither does a lock that a claim
// takes before it reads (sqlcore.Deferrer).
type txQueries struct {
	conn    *pgx.Conn
	pending []deferred
	// begun: BEGIN was sent.
	begun bool
}

type deferred struct {
	sql  string
	args []any
}

// Defer queues a statement whose outcome no one reads but its error, which
// the next statement reports (sqlcore.Deferrer).
func (t *txQueries) Defer(query string, args ...any) {
	t.pending = append(t.pending, deferred{sql: query, args: args})
}

// send sends the pending statements and then queries, in one round trip,
// and returns the results at the first of queries.
func (t *txQueries) send(ctx context.Context, queries ...deferred) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	for _, d := range append(t.pending, queries...) {
		b.Queue(d.sql, d.args...)
	}
	n := len(t.pending)
	t.pending, t.begun = nil, true
	br := t.conn.SendBatch(ctx, b)
	for range n {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return nil, mapErr(err)
		}
	}
	return br, nil
}

// flush sends the pending statements alone.
func (t *txQueries) flush(ctx context.Context) error {
	br, err := t.send(ctx)
	if err != nil {
		return err
	}
	return mapErr(br.Close())
}

func (t *txQueries) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	if len(t.pending) > 0 && len(args) == 0 {
		// Perhaps several statements (a migration), which only the simple
		// protocol runs, outside a pipeline.
		if err := t.flush(ctx); err != nil {
			return 0, err
		}
	}
	if len(t.pending) == 0 {
		return queries{t.conn}.Exec(ctx, query, args...)
	}
	tag, err := t.exec(ctx, deferred{sql: query, args: args})
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// exec sends the pending statements and then d, in one round trip, and
// returns d's outcome.
func (t *txQueries) exec(ctx context.Context, d deferred) (pgconn.CommandTag, error) {
	br, err := t.send(ctx, d)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, mapErr(err)
}

func (t *txQueries) Query(ctx context.Context, query string, args ...any) (sqlcore.Rows, error) {
	if len(t.pending) == 0 {
		return queries{t.conn}.Query(ctx, query, args...)
	}
	br, err := t.send(ctx, deferred{sql: query, args: args})
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, mapErr(err)
	}
	return &batchRows{pgRows: pgRows{rows}, br: br}, nil
}

func (t *txQueries) QueryRow(ctx context.Context, query string, args ...any) sqlcore.Row {
	if len(t.pending) == 0 {
		return queries{t.conn}.QueryRow(ctx, query, args...)
	}
	br, err := t.send(ctx, deferred{sql: query, args: args})
	if err != nil {
		return errRow{err}
	}
	return batchRow{row: br.QueryRow(), br: br}
}

// QueryAll sends the statements in one round trip (sqlcore.Pipeliner).
func (t *txQueries) QueryAll(ctx context.Context, stmts []sqlcore.Stmt, fn func(i int, rows sqlcore.Rows) error) error {
	qs := make([]deferred, len(stmts))
	for i, st := range stmts {
		qs[i] = deferred{sql: st.SQL, args: st.Args}
	}
	br, err := t.send(ctx, qs...)
	if err != nil {
		return err
	}
	for i := range stmts {
		rows, err := br.Query()
		if err != nil {
			_ = br.Close()
			return mapErr(err)
		}
		err = fn(i, pgRows{rows})
		rows.Close()
		if err == nil {
			err = mapErr(rows.Err())
		}
		if err != nil {
			_ = br.Close()
			return err
		}
	}
	return mapErr(br.Close())
}

// commit sends what is pending with COMMIT. A transaction that sent
// nothing has nothing to commit.
func (t *txQueries) commit(ctx context.Context) error {
	if !t.begun && len(t.pending) <= 1 {
		return nil
	}
	tag, err := t.exec(ctx, deferred{sql: "COMMIT"})
	if err != nil {
		return err
	}
	if tag.String() == "ROLLBACK" { // the transaction had failed
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// rollback ends a transaction that failed. A connection that cannot roll
// back is closed, so that the pool does not hand it out again.
func (t *txQueries) rollback(ctx context.Context) {
	if !t.begun {
		return
	}
	if _, err := t.conn.Exec(ctx, "ROLLBACK"); err != nil {
		_ = t.conn.Close(ctx)
	}
}

// batchRows ends its batch once read to the end or closed.
type batchRows struct {
	pgRows
	br       pgx.BatchResults
	closeErr error
}

func (r *batchRows) Next() bool {
	if r.pgRows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Close() {
	r.pgRows.Close()
	if err := r.br.Close(); err != nil && r.closeErr == nil {
		r.closeErr = mapErr(err)
	}
}

func (r *batchRows) Err() error {
	if err := r.pgRows.Err(); err != nil {
		return err
	}
	return r.closeErr
}

type batchRow struct {
	row pgx.Row
	br  pgx.BatchResults
}

func (r batchRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return mapErr(err)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// releaseRows gives its connection back to the pool once read to the end
// or closed.
type releaseRows struct {
	sqlcore.Rows
	release func()
}

func (r *releaseRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Rows.Close()
	r.release()
	return false
}

func (r *releaseRows) Close() {
	r.Rows.Close()
	r.release()
}

// poolRow runs its query when scanned, on a connection it holds meanwhile.
type poolRow struct {
	p     poolDB
	ctx   context.Context
	query string
	args  []any
}

func (r poolRow) Scan(dest ...any) error {
	c, err := r.p.acquire(r.ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return queries{c}.QueryRow(r.ctx, r.query, r.args...).Scan(dest...)
}

type pgRows struct{ pgx.Rows }

func (r pgRows) Scan(dest ...any) error { return mapErr(r.Rows.Scan(dest...)) }
func (r pgRows) Err() error             { return mapErr(r.Rows.Err()) }

type pgRow struct{ pgx.Row }

func (r pgRow) Scan(dest ...any) error { return mapErr(r.Row.Scan(dest...)) }

// mapErr turns "no rows" and a foreign key violation into store.ErrNotFound,
// a unique violation into store.ErrConflict, and a database that cannot be
// reached or is out of connections into a *store.UnavailableError, keeping
// the driver's error in the chain.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return fmt.Errorf("%w: %w", store.ErrConflict, err)
		case pe.Code == "23503": // foreign_key_violation
			return fmt.Errorf("%w: %w", store.ErrNotFound, err)
		case pe.Code == "53300": // too_many_connections
			return &store.UnavailableError{Busy: true, Reason: "database is busy (it has too many connections)", Err: err}
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03": // admin, crash shutdown; cannot connect now
			return &store.UnavailableError{Reason: "database unreachable: " + pe.Message, Err: err}
		}
		return err
	}
	if reason := lostConnection(err); reason != "" {
		return &store.UnavailableError{Reason: "database unreachable: " + reason, Err: err}
	}
	return err
}

// lostConnection says how err is a failure to reach the database, or is ""
// when it is not one.
func lostConnection(err error) string {
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
			return "no connection within the connect timeout"
		}
		if errors.As(err, &ne) {
			return ne.Error()
		}
		return "cannot connect"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "" // the caller's context ended: not the database's doing
	case errors.Is(err, pgconn.ErrConnClosed), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "the connection was closed"
	case errors.As(err, &ne):
		return ne.Error()
	}
	return ""
}
