package sqlcore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/dstackai/dstack/store"
)

// txDB is a DB whose transactions run fn and fail with fn's error; its
// statements are never run by the group's tests.
type txDB struct{ Querier }

func (txDB) Tx(ctx context.Context, fn func(q Querier) error) error { return fn(nil) }

// recorder runs batches of ints: each request's result is its double; a
// negative request fails its transaction; the batches it ran are kept.
type recorder struct {
	mu      sync.Mutex
	batches [][]int
	// gate, when set, holds each transaction until it is closed.
	gate chan struct{}
	// started gets the first request of each transaction as it starts.
	started chan int
}

func (r *recorder) run(_ context.Context, _ Querier, reqs []int) ([]outcome[int], error) {
	if r.started != nil {
		r.started <- reqs[0]
	}
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	r.batches = append(r.batches, slices.Clone(reqs))
	r.mu.Unlock()
	outs := make([]outcome[int], len(reqs))
	for i, v := range reqs {
		if v < 0 {
			return nil, fmt.Errorf("request %d is bad", v)
		}
		if v == 13 {
			outs[i].err = store.ErrNotFound
		}
		outs[i].res = 2 * v
	}
	return outs, nil
}

func newGroup(r *recorder) *group[int, int] {
	return &group[int, int]{db: txDB{}, max: 100, run: r.run}
}

// TestGroupSharesTransactions: calls made while a transaction runs all go
// into the next one, and each gets its own outcome.
func TestGroupSharesTransactions(t *testing.T) {
	r := &recorder{gate: make(chan struct{}), started: make(chan int, 10)}
	g := newGroup(r)
	results := make([]int, 21)
	errs := make([]error, 21)
	var wg sync.WaitGroup
	wg.Go(func() { results[0], errs[0] = g.do(t.Context(), 0) })
	<-r.started // the first transaction holds the lead
	for i := 1; i <= 20; i++ {
		wg.Go(func() { results[i], errs[i] = g.do(t.Context(), i) })
	}
	waitQueued(t, g, 20)
	close(r.gate)
	wg.Wait()
	for i := range results {
		if i == 13 {
			if !errors.Is(errs[i], store.ErrNotFound) {
				t.Errorf("call 13: %v, want its own ErrNotFound", errs[i])
			}
			continue
		}
		if errs[i] != nil || results[i] != 2*i {
			t.Errorf("call %d = %d, %v; want %d", i, results[i], errs[i], 2*i)
		}
	}
	if len(r.batches) != 2 || len(r.batches[1]) != 20 {
		t.Fatalf("batches %v: want the lone first call, then the 20 that queued behind it in one", r.batches)
	}
}

// TestGroupBadCallFailsAlone: a transaction that fails is done again call
// by call, so only the bad call fails.
func TestGroupBadCallFailsAlone(t *testing.T) {
	r := &recorder{gate: make(chan struct{}), started: make(chan int, 10)}
	g := newGroup(r)
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = g.do(t.Context(), 100) })
	<-r.started
	errs := map[int]error{}
	var mu sync.Mutex
	for _, v := range []int{1, -1, 2} {
		wg.Go(func() {
			_, err := g.do(t.Context(), v)
			mu.Lock()
			errs[v] = err
			mu.Unlock()
		})
	}
	waitQueued(t, g, 3)
	close(r.gate)
	wg.Wait()
	if errs[1] != nil || errs[2] != nil || errs[-1] == nil {
		t.Fatalf("errors %v: want only the bad call (-1) to fail", errs)
	}
}

// TestGroupCancelledWhileQueued: a call whose context ends before a
// transaction takes it returns at once and is never run.
func TestGroupCancelledWhileQueued(t *testing.T) {
	r := &recorder{gate: make(chan struct{}), started: make(chan int, 10)}
	g := newGroup(r)
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = g.do(t.Context(), 1) })
	<-r.started
	cancel, done := queueCall7(t, g)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled queued call: %v, want context.Canceled", err)
	}
	close(r.gate)
	wg.Wait()
	for _, b := range r.batches {
		if slices.Contains(b, 7) {
			t.Fatalf("batches %v: the cancelled call ran", r.batches)
		}
	}
	// The group is free again: a new call runs at once.
	r.started = nil
	if v, err := g.do(t.Context(), 4); v != 8 || err != nil {
		t.Fatalf("call after the cancelled one = %d, %v", v, err)
	}
}

// TestGroupPanicFreesTheLead: a transaction that panics fails its calls,
// and the calls queued behind it still run.
func TestGroupPanicFreesTheLead(t *testing.T) {
	started := make(chan struct{})
	gate := make(chan struct{})
	var once sync.Once
	g := &group[int, int]{db: txDB{}, max: 1, run: func(_ context.Context, _ Querier, reqs []int) ([]outcome[int], error) {
		if reqs[0] == 0 {
			once.Do(func() { close(started) })
			<-gate
			panic("driver bug")
		}
		return []outcome[int]{{res: reqs[0]}}, nil
	}}
	panicked := make(chan any)
	go func() {
		defer func() { panicked <- recover() }()
		_, _ = g.do(t.Context(), 0)
	}()
	<-started
	got := make(chan int)
	go func() {
		v, _ := g.do(t.Context(), 5)
		got <- v
	}()
	waitQueued(t, g, 1)
	close(gate)
	if p := <-panicked; p == nil {
		t.Fatal("the leader's panic was swallowed")
	}
	if v := <-got; v != 5 {
		t.Fatalf("queued call after a panic = %d, want 5", v)
	}
}

// queueCall7 makes a call of 7 that queues behind the transaction under
// way, and returns what gives it up and where its error comes.
func queueCall7(t *testing.T, g *group[int, int]) (context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := g.do(ctx, 7)
		done <- err
	}()
	waitQueued(t, g, 1)
	return cancel, done
}

// waitQueued waits until n calls wait for the next transaction.
func waitQueued(t testing.TB, g *group[int, int], n int) {
	t.Helper()
	for {
		g.mu.Lock()
		k := len(g.waiting)
		g.mu.Unlock()
		if k >= n {
			return
		}
		if t.Context().Err() != nil {
			t.Fatalf("%d calls queued, want %d", k, n)
		}
		runtime.Gosched()
	}
}

// TestGroupSkipsGivenUpCalls: a call given up while queued neither leads
// nor takes a place in the next transaction.
func TestGroupSkipsGivenUpCalls(t *testing.T) {
	r := &recorder{gate: make(chan struct{}), started: make(chan int, 10)}
	g := newGroup(r)
	g.max = 2
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = g.do(t.Context(), 1) })
	<-r.started
	cancel, gone := queueCall7(t, g)
	for i, v := range []int{2, 3, 4} {
		wg.Go(func() { _, _ = g.do(t.Context(), v) })
		waitQueued(t, g, i+2)
	}
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("given-up call: %v, want context.Canceled", err)
	}
	close(r.gate)
	wg.Wait()
	want := [][]int{{1}, {2, 3}, {4}}
	if !slices.EqualFunc(r.batches, want, slices.Equal) {
		t.Fatalf("batches %v, want %v", r.batches, want)
	}
}

// BenchmarkGroupGivenUpCalls: thousands of queued calls given up at once,
// as the waits of thousands of runners end together.
func BenchmarkGroupGivenUpCalls(b *testing.B) {
	const callers = 10_000
	for b.Loop() {
		r := &recorder{gate: make(chan struct{}), started: make(chan int, callers+1)}
		g := newGroup(r)
		var wg sync.WaitGroup
		wg.Go(func() { _, _ = g.do(context.Background(), 1) })
		<-r.started
		ctx, cancel := context.WithCancel(context.Background())
		for range callers {
			wg.Go(func() { _, _ = g.do(ctx, 2) })
		}
		waitQueued(b, g, callers)
		cancel()
		close(r.gate)
		wg.Wait()
	}
}
