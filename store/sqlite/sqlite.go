// Package sqlite is dstack's embedded store: store.Store on a SQLite file,
// through modernc.org/sqlite (pure Go, no cgo).
//
// The file is in WAL mode, so reads never wait for the writer. Writes run
// one at a time under a Go mutex: they queue in Go rather than spin on
// SQLite's busy handler, and each transaction starts with BEGIN IMMEDIATE
// (_txlock=immediate), so it holds the write lock from its first statement
// and never fails to upgrade a read lock half way. Reads use a second pool of
// read-only connections. busy_timeout still covers other processes on the
// same file (a second server, `dstack migrate`, a tool holding a lock).
//
// A write waits at most the busy timeout (DefaultBusyTimeout, see
// WithBusyTimeout) for its turn in Go, and as long again for SQLite's lock;
// past that, and when SQLite answers SQLITE_BUSY or SQLITE_LOCKED, it fails
// with a *store.UnavailableError ("database is busy (locked by another
// writer)"), so that a request never hangs on a database held elsewhere.
//
// synchronous=NORMAL is the usual setting for WAL: a commit survives a crash
// of the process, and the database cannot be corrupted by a power loss, which
// may lose the last transactions only.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/internal/sqlcore"
)

//go:embed migrations/*.up.sql
var migrations embed.FS

// Store is store.Store on SQLite; its methods are documented on store.Store.
type Store struct {
	*sqlcore.Store
}

var _ store.Store = (*Store)(nil)

// DefaultBusyTimeout is how long a write waits for the database's write
// lock, held by another writer, before it fails as busy.
const DefaultBusyTimeout = 5 * time.Second

// Option tunes Open.
type Option func(*options)

type options struct {
	busyTimeout time.Duration
	migrations  fs.FS
}

// WithBusyTimeout sets how long a write waits for its turn and for the
// database's write lock before it fails with store.ErrUnavailable; d <= 0
// keeps DefaultBusyTimeout.
func WithBusyTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.busyTimeout = d
		}
	}
}

// WithMigrations replaces the embedded migrations with the NNN_name.up.sql
// files at the root of fsys: for tests of the migration machinery.
func WithMigrations(fsys fs.FS) Option {
	return func(o *options) { o.migrations = fsys }
}

// Open opens (creating it if needed) the database file at path. Call
// Migrate before using it.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{busyTimeout: DefaultBusyTimeout}
	for _, f := range opts {
		f(&o)
	}
	write, err := openPool(ctx, path, true, o.busyTimeout)
	if err != nil {
		return nil, err
	}
	read, err := openPool(ctx, path, false, o.busyTimeout)
	if err != nil {
		write.Close()
		return nil, err
	}
	sub := o.migrations
	if sub == nil {
		if sub, err = fs.Sub(migrations, "migrations"); err != nil {
			return nil, fmt.Errorf("open sqlite: %w", err)
		}
	}
	d := sqlcore.Dialect{
		Migrations:   sub,
		TableColumns: `SELECT name FROM pragma_table_info($1)`,
		// The write pool's single connection and BEGIN IMMEDIATE already
		// exclude every other writer, here and in other processes.
		NextQueueSeq: `(SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM jobs)`,
		Strpos:       "instr",
		Optimize:     "PRAGMA optimize=0x10002",
		// A commit in WAL mode with synchronous(NORMAL) does not wait for
		// the disk already: LogAsyncCommit has nothing to add.
	}
	rq := queries{read, newStmtCache(read)}
	w := writer{db: write, stmts: newStmtCache(write), turn: make(chan struct{}, 1), wait: o.busyTimeout}
	closeFn := func() error { return errors.Join(rq.stmts.close(), w.stmts.close(), read.Close(), write.Close()) }
	return &Store{sqlcore.New(rq, w, d, closeFn)}, nil
}

// openPool opens the write pool (one connection) or the read pool.
func openPool(ctx context.Context, path string, write bool, busy time.Duration) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(max(busy.Milliseconds(), 1), 10)+")")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "temp_store(MEMORY)")
	if write {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
	} else {
		q.Add("_pragma", "query_only(1)")
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if write {
		db.SetMaxOpenConns(2) // see writer
	} else {
		db.SetMaxOpenConns(max(4, runtime.NumCPU()))
	}
	db.SetMaxIdleConns(max(4, runtime.NumCPU()))
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return db, nil
}

// queryer is what *sql.DB and *sql.Tx share.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// queries adapts database/sql to sqlcore.Querier, mapping errors to the
// store's. Queries go through prepared statements kept in stmts: SQLite
// spends more time parsing the store's statements than running them.
type queries struct {
	q     queryer
	stmts *stmtCache
}

// stmtCache holds a pool's prepared statements by query text. database/sql
// prepares each one again on every connection that runs it, and Tx.Stmt
// reuses the connection's.
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache { return &stmtCache{db: db, m: map[string]*sql.Stmt{}} }

// get returns the statement for query, preparing it on first use.
func (c *stmtCache) get(ctx context.Context, query string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st, nil
	}
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.m[query] = st
	return st, nil
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, st := range c.m {
		errs = append(errs, st.Close())
	}
	c.m = nil
	return errors.Join(errs...)
}

// stmt returns the cached statement for query, bound to the transaction when
// q runs in one.
func (q queries) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	st, err := q.stmts.get(ctx, query)
	if err != nil {
		return nil, err
	}
	if tx, ok := q.q.(*sql.Tx); ok {
		return tx.StmtContext(ctx, st), nil
	}
	return st, nil
}

// Exec runs a statement prepared once; a script of several statements (a
// migration) runs unprepared, since a prepared statement is only its first.
func (q queries) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	var (
		res sql.Result
		err error
	)
	if strings.Contains(query, ";") {
		res, err = q.q.ExecContext(ctx, query, args...)
	} else if st, perr := q.stmt(ctx, query); perr == nil {
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = q.q.ExecContext(ctx, query, args...) // as in Query
	}
	if err != nil {
		return 0, mapErr(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, mapErr(err)
	}
	return n, nil
}

func (q queries) Query(ctx context.Context, query string, args ...any) (sqlcore.Rows, error) {
	var rows *sql.Rows
	st, err := q.stmt(ctx, query)
	if err != nil {
		// Not preparable outside the transaction, say on a table it
		// creates: run it unprepared.
		rows, err = q.q.QueryContext(ctx, query, args...)
	} else {
		rows, err = st.QueryContext(ctx, args...)
	}
	if err != nil {
		return nil, mapErr(err)
	}
	return sqlRows{rows}, nil
}

func (q queries) QueryRow(ctx context.Context, query string, args ...any) sqlcore.Row {
	st, err := q.stmt(ctx, query)
	if err != nil {
		return sqlRow{q.q.QueryRowContext(ctx, query, args...)} // as in Query
	}
	return sqlRow{st.QueryRowContext(ctx, args...)}
}

// writer runs every write, transaction or single statement, one at a time:
// each holds turn (a one-slot semaphore) while it runs. Its pool has two
// connections: one for the write in progress, the other free to prepare
// statements meanwhile. A write waits for its turn until its context ends
// or for wait at most, then fails as busy.
type writer struct {
	db    *sql.DB
	stmts *stmtCache
	turn  chan struct{}
	wait  time.Duration
}

// lock takes the writer's turn; unlock gives it back.
func (w writer) lock(ctx context.Context) error {
	select {
	case w.turn <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(w.wait)
	defer t.Stop()
	select {
	case w.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return &store.UnavailableError{Busy: true,
			Reason: fmt.Sprintf("database is busy (a write has waited %s for the one before it)", w.wait)}
	}
}

func (w writer) unlock() { <-w.turn }

func (w writer) Tx(ctx context.Context, fn func(q sqlcore.Querier) error) error {
	if err := w.lock(ctx); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer w.unlock()
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", mapErr(err))
	}
	if err := fn(queries{tx, w.stmts}); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", mapErr(err))
	}
	return nil
}

func (w writer) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := w.Tx(ctx, func(q sqlcore.Querier) error {
		var err error
		n, err = q.Exec(ctx, query, args...)
		return err
	})
	return n, err
}

// Query runs a writing query whose rows the caller reads; the write lock is
// held until the rows are closed.
func (w writer) Query(ctx context.Context, query string, args ...any) (sqlcore.Rows, error) {
	if err := w.lock(ctx); err != nil {
		return nil, err
	}
	rows, err := queries{w.db, w.stmts}.Query(ctx, query, args...)
	if err != nil {
		w.unlock()
		return nil, err
	}
	return &unlockRows{Rows: rows, unlock: sync.OnceFunc(w.unlock)}, nil
}

func (w writer) QueryRow(ctx context.Context, query string, args ...any) sqlcore.Row {
	return writeRow{w: w, ctx: ctx, query: query, args: args}
}

// writeRow runs its query when scanned, in a transaction of its own.
type writeRow struct {
	w     writer
	ctx   context.Context
	query string
	args  []any
}

func (r writeRow) Scan(dest ...any) error {
	return r.w.Tx(r.ctx, func(q sqlcore.Querier) error { return q.QueryRow(r.ctx, r.query, r.args...).Scan(dest...) })
}

type unlockRows struct {
	sqlcore.Rows
	unlock func()
}

func (r *unlockRows) Close() {
	r.Rows.Close()
	r.unlock()
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Scan(dest ...any) error { return mapErr(r.Rows.Scan(dest...)) }
func (r sqlRows) Err() error             { return mapErr(r.Rows.Err()) }
func (r sqlRows) Close()                 { _ = r.Rows.Close() }

type sqlRow struct{ *sql.Row }

func (r sqlRow) Scan(dest ...any) error { return mapErr(r.Row.Scan(dest...)) }

// mapErr turns "no rows" and a foreign key violation into store.ErrNotFound,
// a unique violation into store.ErrConflict, and a busy or locked database
// into a *store.UnavailableError, and a full disk into an error that
// matches syscall.ENOSPC (a storage failure the server answers with 507),
// keeping the driver's error in the chain.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %w", store.ErrConflict, err)
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("%w: %w", store.ErrNotFound, err)
		}
		switch se.Code() & 0xff { // the primary code of an extended one
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return &store.UnavailableError{Busy: true, Reason: "database is busy (locked by another writer)", Err: err}
		case sqlite3.SQLITE_FULL:
			return fmt.Errorf("%w (%w)", err, syscall.ENOSPC)
		}
	}
	return err
}

// Backup writes a consistent copy of the database at path to out, while
// servers may be using it: VACUUM INTO reads the database in one read
// transaction, which writers do not block (WAL), and writes a compact copy.
// The copy goes to a temporary file beside out, made private (0600: it
// holds credentials), and is renamed to out once complete, so that out is
// never a partial copy. An existing out is refused.
func Backup(ctx context.Context, path, out string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("backup: no database: %w", err)
	}
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("backup: %s exists: give a new file, or remove it first", out)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	tmpPath := tmp.Name()
	tmp.Close()
	// VACUUM INTO wants a file that does not exist, or is empty: it is
	// empty, and private from the start.
	defer os.Remove(tmpPath)
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return fmt.Errorf("backup: open %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", tmpPath); err != nil {
		return fmt.Errorf("backup of %s: %w", path, err)
	}
	if err := os.Rename(tmpPath, out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}
