// Package sqlite is dstack's embedded store: store.Store on a SQLite file,
// through modernc.org/sqlite (pure Go, no cgo).
//
// The file is in WAL mode, so reads never wait for the writer. Writes go
// through a pool of one connection: they queue in Go rather than spin on
// SQLite's busy handler, and each transaction starts with BEGIN IMMEDIATE
// (_txlock=immediate), so it holds the write lock from its first statement
// and never fails to upgrade a read lock half way. Reads use a second pool of
// read-only connections. busy_timeout still covers other processes on the
// same file (a second server, `dstack migrate`).
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
	"runtime"

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

// Open opens (creating it if needed) the database file at path. Call
// Migrate before using it.
func Open(ctx context.Context, path string) (*Store, error) {
	write, err := openPool(ctx, path, true)
	if err != nil {
		return nil, err
	}
	read, err := openPool(ctx, path, false)
	if err != nil {
		write.Close()
		return nil, err
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	d := sqlcore.Dialect{
		Migrations: sub,
		// The write pool's single connection and BEGIN IMMEDIATE already
		// exclude every other writer, here and in other processes.
		NextQueueSeq: `(SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM jobs)`,
		Strpos:       "instr",
	}
	closeFn := func() error { return errors.Join(read.Close(), write.Close()) }
	return &Store{sqlcore.New(queries{read}, writer{queries{write}, write}, d, closeFn)}, nil
}

// openPool opens the write pool (one connection) or the read pool.
func openPool(ctx context.Context, path string, write bool) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
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
		db.SetMaxOpenConns(1)
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
// store's.
type queries struct{ q queryer }

func (q queries) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.q.ExecContext(ctx, query, args...)
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
	rows, err := q.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, mapErr(err)
	}
	return sqlRows{rows}, nil
}

func (q queries) QueryRow(ctx context.Context, query string, args ...any) sqlcore.Row {
	return sqlRow{q.q.QueryRowContext(ctx, query, args...)}
}

// writer adds transactions to the write pool's queries.
type writer struct {
	queries
	db *sql.DB
}

func (w writer) Tx(ctx context.Context, fn func(q sqlcore.Querier) error) error {
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", mapErr(err))
	}
	if err := fn(queries{tx}); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", mapErr(err))
	}
	return nil
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Scan(dest ...any) error { return mapErr(r.Rows.Scan(dest...)) }
func (r sqlRows) Err() error             { return mapErr(r.Rows.Err()) }
func (r sqlRows) Close()                 { _ = r.Rows.Close() }

type sqlRow struct{ *sql.Row }

func (r sqlRow) Scan(dest ...any) error { return mapErr(r.Row.Scan(dest...)) }

// mapErr turns "no rows" into store.ErrNotFound and a unique violation into
// store.ErrConflict, keeping the driver's error in the chain.
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
		}
	}
	return err
}
