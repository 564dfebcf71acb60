package sqlcore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/internal/sqlcore"
	"github.com/dstackai/dstack/store/postgres"
	"github.com/dstackai/dstack/store/storetest"
)

// TestBatchesReadTheirRowsNotTheQueue: on PostgreSQL, the statement that
// gives a batch of 64 claims their jobs, and the one that ends 64 jobs, read
// those jobs only from a large queue (20,000 jobs; a small table is read
// whole where that costs less), however stale the statistics. The planner
// chooses by its statistics, which the database refreshes up to a minute
// after a change: right after a large run was submitted it believed the
// queue nearly empty, read all of a user's pending jobs to choose from for
// each batch of claims and joined the batch to every pending job.
// With many jobs newly claimed it believed none active and read every
// active job for each batch of ends; believing most jobs pending, it read
// every job to learn that a user had none.
func TestBatchesReadTheirRowsNotTheQueue(t *testing.T) {
	ctx := t.Context()
	dsn := storetest.PostgresDSN(t)
	s, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	now := time.Now()
	u, err := s.UserCreate(ctx, store.UserCreateParams{ID: "u", Name: "u", TokenHash: "u", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.RunnerCreate(ctx, store.RunnerCreateParams{ID: "rn", UserID: u.ID, Name: "rn", Hostname: "rn", Executor: "shell",
		Resources: api.HostResources{CPUs: 8, MemoryMiB: 1 << 15}, TokenHash: "rn", TokenExpiresAt: now.Add(time.Hour), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	const queued, claimed, batch = 20000, 1000, 64
	run := store.RunCreateParams{ID: "r", Name: "r", UserID: u.ID, Workflow: "w", CodeID: "c", Now: now}
	for i := range queued {
		run.Jobs = append(run.Jobs, store.JobCreate{ID: fmt.Sprintf("j%05d", i),
			Spec: api.JobSpec{Workflow: fmt.Sprintf("w%d", i), Provider: "bash", Commands: []string{"true"}}})
	}
	if _, err := s.RunCreate(ctx, run); err != nil {
		t.Fatal(err)
	}
	micros := now.UnixMicro()
	runners, at, null, zero := make([]string, batch), make([]*int64, batch), make([]*int64, batch), make([]*int64, batch)
	done, none := make([]string, batch), make([]string, batch)
	for i := range batch {
		runners[i], at[i], zero[i], done[i] = r.ID, &micros, new(int64), string(api.StatusDone)
	}
	pending := func(from int) []string {
		ids := make([]string, batch)
		for i := range ids {
			ids[i] = fmt.Sprintf("j%05d", from+i)
		}
		return ids
	}
	check := func(when, name, query string, args ...any) {
		t.Helper()
		changed, read, plan := jobsRead(ctx, t, conn, query, args)
		if changed != batch {
			t.Errorf("%s: %s changed %d jobs, want %d", when, name, changed, batch)
		}
		if read > 2*batch {
			t.Errorf("%s: %s of %d jobs read %d rows of jobs; want at most %d. Plan:\n%s", when, name, batch, read, 2*batch, plan)
		}
	}
	check("right after a run of 20,000 jobs", "the assignment", sqlcore.AssignJobsSQL, pending(0), runners, at)
	// The jobs a batch of claims chooses from: the first of the user's.
	if _, read, plan := jobsRead(ctx, t, conn, sqlcore.CandidatesJoinedSQL(" AND u.id IN ($1)", 2), []any{u.ID, sqlcore.MaxClaimBatch + 1}); read > 2*(sqlcore.MaxClaimBatch+1) {
		t.Errorf("right after a run of 20,000 jobs: the pending jobs a batch of claims chooses from: read %d rows of jobs; want at most %d. Plan:\n%s",
			read, 2*(sqlcore.MaxClaimBatch+1), plan)
	}

	// 1,000 jobs claimed: the ends of 64 of them.
	var (
		mu   sync.Mutex
		held []*store.Job
		wg   sync.WaitGroup
	)
	for range batch {
		wg.Go(func() {
			for {
				mu.Lock()
				enough := len(held) >= claimed
				mu.Unlock()
				if enough {
					return
				}
				j, err := s.JobClaimNext(ctx, store.JobClaimNextParams{RunnerID: r.ID, UserID: u.ID, Free: r.Resources, Now: now})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				held = append(held, j)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	ids, leases := make([]string, batch), make([]*int64, batch)
	for i, j := range held[:batch] {
		ids[i], leases[i] = j.ID, &j.Lease
	}
	check("with 1,000 jobs claimed", "the ends", sqlcore.ChangeStatusesSQL, ids, runners, leases, done, none, null, at, zero, zero)
	check("with 1,000 jobs claimed", "the assignment", sqlcore.AssignJobsSQL, pending(len(held)+batch), runners, at)

	// The user's pending jobs all stopped, while the statistics still say
	// nearly every job is pending: is she among the users a claim may take
	// from?
	if _, err := conn.Exec(ctx, "UPDATE jobs SET status = 'stopped' WHERE status = 'pending'"); err != nil {
		t.Fatal(err)
	}
	if _, read, plan := jobsRead(ctx, t, conn, sqlcore.UsersWithPendingSQL(" AND u.id IN ($1)"), []any{u.ID}); read > 1 {
		t.Errorf("whether a user without pending jobs has one read %d rows of jobs, want at most 1. Plan:\n%s", read, plan)
	}
}

// jobsRead runs query with args in a transaction it rolls back and
// returns how many rows it changed, how many rows of jobs its plan read, and
// the plan.
func jobsRead(ctx context.Context, t *testing.T, conn *pgx.Conn, query string, args []any) (changed, read int, plan string) {
	t.Helper()
	var out []byte
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // nothing to keep
	rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, FORMAT TEXT) "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan = strings.Join(lines, "\n")
	if _, err := tx.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if tx, err = conn.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+query, args...).Scan(&out); err != nil {
		t.Fatalf("explain %s: %v", query, err)
	}
	var tree []struct{ Plan node }
	if err := json.Unmarshal(out, &tree); err != nil || len(tree) != 1 {
		t.Fatalf("explain: %v: %s", err, out)
	}
	var walk func(n node)
	walk = func(n node) {
		switch {
		case n.NodeType == "ModifyTable" && n.Relation == "jobs":
			changed = n.Rows
		case n.Relation == "jobs":
			read += (n.Rows + n.RemovedByFilter + n.RemovedByRecheck) * n.Loops
		}
		for _, c := range n.Plans {
			walk(c)
		}
	}
	walk(tree[0].Plan)
	return changed, read, plan
}

type node struct {
	NodeType string `json:"Node Type"`
	Relation string `json:"Relation Name"`
	Index    string `json:"Index Name"`
	Rows     int    `json:"Actual Rows"`
	Loops    int    `json:"Actual Loops"`
	// Rows read and then dropped: not matching a filter, or not matching
	// the condition of a lossy bitmap.
	RemovedByFilter  int    `json:"Rows Removed by Filter"`
	RemovedByRecheck int    `json:"Rows Removed by Index Recheck"`
	Plans            []node `json:"Plans"`
}
