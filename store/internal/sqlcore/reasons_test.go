package sqlcore

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/dstackai/dstack/store"
)

// txSizes is a DB that runs no statement: it records, for each transaction,
// how many rows its bulk statements were given (the length of their first
// array argument), and answers every query with no rows.
type txSizes struct {
	Querier
	txs []int
}

func (d *txSizes) Tx(ctx context.Context, fn func(q Querier) error) error {
	d.txs = append(d.txs, 0)
	return fn(sizeQuerier{d})
}

type sizeQuerier struct{ d *txSizes }

func (q sizeQuerier) Exec(context.Context, string, ...any) (int64, error) { return 0, nil }
func (q sizeQuerier) QueryRow(context.Context, string, ...any) Row        { return nil }
func (q sizeQuerier) Query(_ context.Context, _ string, args ...any) (Rows, error) {
	if len(args) > 0 {
		if ids, ok := args[0].([]string); ok {
			q.d.txs[len(q.d.txs)-1] += len(ids)
		}
	}
	return noRows{}, nil
}

type noRows struct{}

func (noRows) Next() bool        { return false }
func (noRows) Scan(...any) error { return nil }
func (noRows) Err() error        { return nil }
func (noRows) Close()            {}

// TestPendingReasonsShortTransactions: the reasons of a long queue are
// written a bounded number of jobs a transaction, since a claim of a job
// whose row a transaction writes waits for its commit.
func TestPendingReasonsShortTransactions(t *testing.T) {
	db := &txSizes{}
	s := New(nil, db, Dialect{Unnest: true}, nil)
	reasons := map[string]string{}
	for i := range 2*maxReasonBatch + 88 {
		reasons[fmt.Sprintf("job-%04d", i)] = "waiting for a runner"
	}
	if _, err := s.JobSetPendingReasons(context.Background(), store.JobSetPendingReasonsParams{Reasons: reasons}); err != nil {
		t.Fatal(err)
	}
	if want := []int{maxReasonBatch, maxReasonBatch, 88}; !slices.Equal(db.txs, want) {
		t.Fatalf("transactions wrote %v jobs each, want %v", db.txs, want)
	}
}
