// Package sqlcore is the SQL behind both stores: every store.Store method
// written once, over a small Dialect that says how SQLite and PostgreSQL
// differ (placeholder syntax does not: both accept $1, $2...).
//
// The drivers stay in store/sqlite and store/postgres. They hand the core a
// DB that runs statements and write transactions, and that already turns the
// driver's "no rows" and its foreign key violations (a reference to a row that
// does not exist) into store.ErrNotFound and its unique violations into
// store.ErrConflict, so the core only ever tests for the domain's errors.
package sqlcore

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"sync/atomic"

	"github.com/dstackai/dstack/store"
)

// Querier runs statements, on a pool or inside a transaction. Args are int,
// int64, float64, string, bool, nil or *int64, and []string or []*int64
// where the dialect unnests arrays (bulk.go); timestamps travel as unix
// microseconds.
type Querier interface {
	// Exec runs a statement and returns the number of rows it changed.
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	Query(ctx context.Context, query string, args ...any) (Rows, error)
	// QueryRow runs a query for one row; its Scan returns store.ErrNotFound
	// when there is none.
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// Pipeliner is a Querier that runs several statements in one round trip to
// the database (PostgreSQL's pipeline).
type Pipeliner interface {
	// QueryAll runs stmts in order and gives fn the rows of each; the
	// first error stops them.
	QueryAll(ctx context.Context, stmts []Stmt, fn func(i int, rows Rows) error) error
}

// Stmt is a statement and its arguments.
type Stmt struct {
	SQL  string
	Args []any
}

// Deferrer is a Querier of a transaction that sends a statement whose
// outcome no one reads (a lock) with the statement after it, in one round
// trip. The deferred statement runs first; its error is the next
// statement's.
type Deferrer interface {
	Defer(query string, args ...any)
}

// queryAll runs stmts, in one round trip where q pipelines (Pipeliner), one
// after the other otherwise, and gives fn the rows of each.
func queryAll(ctx context.Context, q Querier, stmts []Stmt, fn func(i int, rows Rows) error) error {
	if len(stmts) == 0 {
		return nil
	}
	if p, ok := q.(Pipeliner); ok {
		return p.QueryAll(ctx, stmts, fn)
	}
	for i, st := range stmts {
		rows, err := q.Query(ctx, st.SQL, st.Args...)
		if err != nil {
			return err
		}
		err = fn(i, rows)
		for err == nil && rows.Next() { // run a statement fn did not read to its end
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// pipelined are statements sent with others (queryPipelined), and what
// reads the rows of each, by its index among them.
type pipelined struct {
	stmts []Stmt
	scan  func(i int, rows Rows) error
}

// queryPipelined runs the statements of each of ps (nil ones left out), in
// order and in one round trip where q pipelines, and gives each the rows of
// its own.
func queryPipelined(ctx context.Context, q Querier, ps ...*pipelined) error {
	type at struct {
		p *pipelined
		i int // the statement's index among p's
	}
	var (
		stmts []Stmt
		ats   []at
	)
	for _, p := range ps {
		if p == nil {
			continue
		}
		for i := range p.stmts {
			ats = append(ats, at{p, i})
		}
		stmts = append(stmts, p.stmts...)
	}
	return queryAll(ctx, q, stmts, func(i int, rows Rows) error {
		return ats[i].p.scan(ats[i].i, rows)
	})
}

// Rows is the result of Query.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// Row is the result of QueryRow.
type Row interface {
	Scan(dest ...any) error
}

// DB is a database that also runs write transactions.
type DB interface {
	Querier
	// Tx runs fn in a transaction that holds the write lock from its start
	// where the database has one (SQLite), and commits it when fn returns
	// nil; fn may run once only.
	Tx(ctx context.Context, fn func(q Querier) error) error
}

// Dialect is what differs between the SQL databases.
type Dialect struct {
	// Migrations holds the dialect's NNN_name.up.sql files at its root.
	Migrations fs.FS
	// MigrateLock, when set, runs first in the migration transaction to keep
	// concurrent migrations apart.
	MigrateLock string
	// TableColumns is a query for the names of the columns of the table
	// named by $1, one a row.
	TableColumns string
	// NextQueueSeq is an SQL expression for the next value of the job queue's
	// order: it must grow with every evaluation.
	NextQueueSeq string
	// Strpos names the function (haystack, needle) returning the 1-based
	// position of needle in haystack, 0 when absent.
	Strpos string
	// ForUpdate is appended to a SELECT to lock the rows read ("" when a
	// write transaction already excludes every other writer).
	ForUpdate string
	// SkipLocked is appended to the claim's inner SELECT so that concurrent
	// claimers pass over each other's rows instead of waiting for them.
	SkipLocked string
	// ForShare is appended to a SELECT to keep the rows read from changing
	// until the transaction ends ("" as for ForUpdate).
	ForShare string
	// ForKeyShare is appended to a SELECT of runners by a claim: it keeps
	// the rows from being deleted until the transaction ends, and lets
	// writes of other columns (heartbeats) through ("" as for ForUpdate).
	// The one column it reads that another write changes, interrupted_at,
	// is written under ClaimLock (RunnerInterrupt).
	ForKeyShare string
	// CodeLock, when set, is a statement that takes a lock on the code
	// archive whose ID is $1 until the transaction ends: CodePut and the
	// deletes that trash an archive's bytes run one at a time per archive
	// ("" when a write transaction already excludes every other writer).
	CodeLock string
	// ClaimLock, when set, runs first in a claim's transaction so that
	// claims see each other's result: whose turn it is, and how many jobs
	// a capped user runs ("" when a write transaction already excludes
	// every other writer).
	ClaimLock string
	// Lateral: the database joins a subquery that reads the row before it
	// (CROSS JOIN LATERAL); without it, a claim reads the pending jobs of
	// each user with a query of its own.
	Lateral bool
	// Unnest: the database takes arrays as statement arguments and reads
	// them as a table (unnest), so that a statement over many rows runs once
	// (bulk.go).
	Unnest bool
	// AnalyzeQueue, when set, refreshes the planner's statistics of the
	// jobs' states and users, and QueueRows reads how many jobs it saw. It
	// runs after a submission once a fifth as many jobs as it saw were
	// submitted since (analyzeQueue): a planner that believes the queue
	// nearly empty after a large run reads every pending job for each batch
	// of claims instead of the batch's own, and the database's own analysis
	// comes up to a minute later.
	AnalyzeQueue, QueueRows string
	// Optimize, when set, runs after the migrations: it refreshes the
	// statistics the planner chooses indexes by, where they are out of date.
	Optimize string
	// LogAsyncCommit, when set, is a condition that is true and makes the
	// transaction of the statement it appears in commit without waiting
	// for the disk: a job's log append (LogAppend). It loses, on a crash
	// of the database's machine, at most the appends of its last moments,
	// as files in the page cache do, and a log's chunks stay contiguous:
	// the runner resends from the size the database answers then.
	LogAsyncCommit string
}

// Store implements store.Store over a DB and a Dialect.
type Store struct {
	read  Querier
	write DB
	d     Dialect
	close func() error

	// submitted counts the jobs submitted since AnalyzeQueue last ran, and
	// analyzedRows the jobs it saw then; analyzing is set while it runs.
	submitted    atomic.Int64
	analyzedRows atomic.Int64
	analyzing    atomic.Bool
	// claimedForAnyone: the last batch of claims had a runner that takes
	// anyone's jobs, so the next reads every user's candidates with its
	// runners (claimRead).
	claimedForAnyone atomic.Bool

	claimSQL     string
	setReasons   bulk
	logAppendSQL string
	insertJobs   bulk
	// claims and statuses commit the claims, and the status changes, made
	// at the same time together (group.go).
	claims   *group[store.JobClaimNextParams, *store.Job]
	statuses *group[store.JobSetStatusParams, *store.Job]
	// endClaims commits the ends of jobs made with their runner's next
	// claim (JobEndAndClaim).
	endClaims *group[endClaim, endClaimed]
}

var _ store.Store = (*Store)(nil)

// New returns a Store that reads with read, writes with write, and calls
// closeFn on Close. read and write may be the same pool.
func New(read Querier, write DB, d Dialect, closeFn func() error) *Store {
	s := &Store{read: read, write: write, d: d, close: closeFn}
	s.claimSQL = claimSQL(d)
	s.setReasons = setReasons(d)
	s.claims = &group[store.JobClaimNextParams, *store.Job]{db: write, max: maxClaimBatch, run: s.claimBatch}
	s.statuses = &group[store.JobSetStatusParams, *store.Job]{db: write, max: maxStatusBatch, run: s.setStatusBatch}
	s.endClaims = &group[endClaim, endClaimed]{db: write, max: maxClaimBatch, run: s.endClaimBatch}
	s.logAppendSQL = logAppendSQL(d)
	s.insertJobs = insertJobsSQL(d)
	return s
}

// Close releases the database.
func (s *Store) Close() error {
	if s.close == nil {
		return nil
	}
	return s.close()
}

// in is the condition that expr is one of the texts vals, given as the
// statement's from-th argument, and that argument: an array where the
// database takes arrays (Dialect.Unnest, PostgreSQL), else a JSON array the
// statement reads with json_each (SQLite). Either way the statement's text
// is the same whatever the count, and is parsed and planned once a
// connection, where a list of placeholders makes a statement of its own for
// each count, prepared again and planned afresh each time; and SQLite binds
// one argument once, where it looks up each of n placeholders in a list of
// n.
func (s *Store) in(expr string, from int, vals []any) (string, []any) {
	texts := make([]string, len(vals))
	for i, v := range vals {
		texts[i] = v.(string)
	}
	if !s.d.Unnest {
		b, err := json.Marshal(texts)
		if err != nil {
			panic(err) // strings always marshal
		}
		return fmt.Sprintf("%s IN (SELECT value FROM json_each($%d))", expr, from), []any{string(b)}
	}
	return fmt.Sprintf("%s = ANY($%d::text[])", expr, from), []any{texts}
}

// placeholders returns "$from, $from+1, ..." for n arguments.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", from+i)
	}
	return b.String()
}
