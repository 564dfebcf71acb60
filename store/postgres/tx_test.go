package postgres

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/internal/sqlcore"
	"github.com/dstackai/dstack/store/storetest"
)

// txDB is a pool of one connection on a schema of its own with a table t,
// so that each transaction reuses the connection the one before left.
func txDB(t *testing.T) poolDB {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(storetest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := poolDB{pool: pool, acquireTimeout: 10 * time.Second}
	if _, err := db.Exec(t.Context(), `CREATE TABLE t (id TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	return db
}

func rowsOf(t *testing.T, db poolDB) []string {
	t.Helper()
	rows, err := db.Query(t.Context(), `SELECT id FROM t ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// A transaction's BEGIN, and what it defers, go out with its first
// statement: each way a transaction can start, commit or fail must keep
// the meaning of one.
func TestTx(t *testing.T) {
	ctx := t.Context()
	db := txDB(t)
	insert := func(q sqlcore.Querier, id string) error {
		_, err := q.Exec(ctx, `INSERT INTO t (id) VALUES ($1)`, id)
		return err
	}

	t.Run("statements of every kind first, then committed together", func(t *testing.T) {
		// A query first, read to its end, then a write.
		err := db.Tx(ctx, func(q sqlcore.Querier) error {
			rows, err := q.Query(ctx, `SELECT id FROM t`)
			if err != nil {
				return err
			}
			for rows.Next() {
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			return insert(q, "a")
		})
		if err != nil {
			t.Fatalf("query, then insert: %v", err)
		}
		// One row first, none found.
		err = db.Tx(ctx, func(q sqlcore.Querier) error {
			var id string
			if err := q.QueryRow(ctx, `SELECT id FROM t WHERE id = $1`, "none").Scan(&id); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("QueryRow of no row first: %v, want store.ErrNotFound", err)
			}
			return insert(q, "b")
		})
		if err != nil {
			t.Fatalf("query a row, then insert: %v", err)
		}
		// Several statements in one text first, as a migration runs.
		err = db.Tx(ctx, func(q sqlcore.Querier) error {
			_, err := q.Exec(ctx, `INSERT INTO t (id) VALUES ('c'); INSERT INTO t (id) VALUES ('d')`)
			return err
		})
		if err != nil {
			t.Fatalf("several statements: %v", err)
		}
		// A deferred statement, then several statements in one round
		// trip, each read in turn.
		err = db.Tx(ctx, func(q sqlcore.Querier) error {
			q.(sqlcore.Deferrer).Defer(`SELECT pg_advisory_xact_lock($1)`, int64(7))
			var got []string
			err := q.(sqlcore.Pipeliner).QueryAll(ctx, []sqlcore.Stmt{
				{SQL: `INSERT INTO t (id) VALUES ($1) RETURNING id`, Args: []any{"e"}},
				{SQL: `INSERT INTO t (id) VALUES ($1), ($2) RETURNING id`, Args: []any{"f", "g"}},
				{SQL: `SELECT count(*)::text FROM t`},
			}, func(_ int, rows sqlcore.Rows) error {
				for rows.Next() {
					var v string
					if err := rows.Scan(&v); err != nil {
						return err
					}
					got = append(got, v)
				}
				return nil
			})
			if err == nil && !slices.Equal(got, []string{"e", "f", "g", "7"}) {
				err = fmt.Errorf("the pipeline read %v, want e, f, g and a count of 7", got)
			}
			return err
		})
		if err != nil {
			t.Fatalf("deferred lock, then a pipeline: %v", err)
		}
		if got, want := rowsOf(t, db), []string{"a", "b", "c", "d", "e", "f", "g"}; !slices.Equal(got, want) {
			t.Fatalf("rows = %v, want %v", got, want)
		}
	})

	t.Run("a deferred statement's error is the next one's, and nothing commits", func(t *testing.T) {
		before := rowsOf(t, db)
		err := db.Tx(ctx, func(q sqlcore.Querier) error {
			q.(sqlcore.Deferrer).Defer(`SELECT 1 / $1::int`, 0)
			return insert(q, "g")
		})
		if err == nil {
			t.Fatal("a transaction whose deferred statement failed committed")
		}
		if got := rowsOf(t, db); !slices.Equal(got, before) {
			t.Fatalf("rows = %v after a failed transaction, want %v", got, before)
		}
	})

	t.Run("a failure the caller ignores still fails the commit", func(t *testing.T) {
		before := rowsOf(t, db)
		err := db.Tx(ctx, func(q sqlcore.Querier) error {
			if err := insert(q, "h"); err != nil {
				return err
			}
			if err := insert(q, "h"); !errors.Is(err, store.ErrConflict) {
				t.Errorf("second insert of h: %v, want store.ErrConflict", err)
			}
			return nil // the transaction is aborted: its commit must say so
		})
		if !errors.Is(err, pgx.ErrTxCommitRollback) {
			t.Fatalf("commit of an aborted transaction: %v, want %v", err, pgx.ErrTxCommitRollback)
		}
		if got := rowsOf(t, db); !slices.Equal(got, before) {
			t.Fatalf("rows = %v after a rolled back transaction, want %v", got, before)
		}
	})

	t.Run("a transaction that sends nothing", func(t *testing.T) {
		if err := db.Tx(ctx, func(sqlcore.Querier) error { return nil }); err != nil {
			t.Fatalf("empty transaction: %v", err)
		}
		if err := db.Tx(ctx, func(sqlcore.Querier) error { return errors.New("no") }); err == nil {
			t.Fatal("a transaction whose function failed succeeded")
		}
		// The connection is still fit for a transaction.
		if err := db.Tx(ctx, func(q sqlcore.Querier) error { return insert(q, "i") }); err != nil {
			t.Fatalf("transaction after empty ones: %v", err)
		}
	})
}
