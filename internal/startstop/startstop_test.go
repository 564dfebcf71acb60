package startstop

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// worker is a service with one goroutine that runs until its context ends.
type worker struct {
	Base
	failStart error
	running   atomic.Bool
	stops     atomic.Int32 // how often the stop hook ran
	order     *[]string
	orderMu   *sync.Mutex
	name      string
}

func (w *worker) Start(ctx context.Context) error {
	return w.Base.Start(ctx, func(ctx context.Context) error {
		w.running.Store(true)
		w.Go(func() {
			<-ctx.Done()
			w.running.Store(false)
		})
		return w.failStart
	}, func() {
		w.stops.Add(1)
		if w.order != nil {
			w.orderMu.Lock()
			*w.order = append(*w.order, w.name)
			w.orderMu.Unlock()
		}
	})
}

func TestStopWaitsForGoroutines(t *testing.T) {
	t.Parallel()
	w := &worker{}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !w.running.Load() {
		t.Fatal("not running after Start")
	}
	w.Stop()
	if w.running.Load() {
		t.Error("a goroutine still runs after Stop returned")
	}
	if n := w.stops.Load(); n != 1 {
		t.Errorf("stop hook ran %d times, want 1", n)
	}
	select {
	case <-w.Stopped():
	default:
		t.Error("Stopped not closed after Stop")
	}
}

func TestCancellingTheStartContextStopsAsStopDoes(t *testing.T) {
	t.Parallel()
	w := &worker{}
	ctx, cancel := context.WithCancel(context.Background())
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-w.Stopped()
	if w.running.Load() {
		t.Error("a goroutine still runs after Stopped")
	}
	w.Stop() // returns at once; the hook does not run again
	if n := w.stops.Load(); n != 1 {
		t.Errorf("stop hook ran %d times, want 1", n)
	}
}

func TestDoubleStartAndStop(t *testing.T) {
	t.Parallel()
	w := &worker{}
	for range 2 {
		if err := w.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	w.Stop()
	w.Stop()
	if n := w.stops.Load(); n != 1 {
		t.Errorf("stop hook ran %d times, want 1", n)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Errorf("Start after a start and Stop returned %v, want the first start's result (nil)", err)
	}
}

func TestStopBeforeStart(t *testing.T) {
	t.Parallel()
	w := &worker{}
	w.Stop()
	w.Stop()
	if err := w.Start(context.Background()); !errors.Is(err, ErrStopped) {
		t.Errorf("Start after Stop returned %v, want ErrStopped", err)
	}
	if w.running.Load() || w.stops.Load() != 0 {
		t.Error("a service stopped before it started ran")
	}
}

func TestFailedStartStopsWhatItStarted(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	w := &worker{failStart: boom}
	if err := w.Start(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("Start returned %v, want %v", err, boom)
	}
	if w.running.Load() {
		t.Error("the goroutine of a failed start still runs")
	}
	if n := w.stops.Load(); n != 1 {
		t.Errorf("stop hook ran %d times, want 1", n)
	}
	if err := w.Start(context.Background()); !errors.Is(err, boom) {
		t.Errorf("second Start returned %v, want the first's error", err)
	}
	w.Stop()
}

func TestStopEndsAStartInProgress(t *testing.T) {
	t.Parallel()
	var b Base
	entered := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- b.Start(context.Background(), func(ctx context.Context) error {
			close(entered)
			<-ctx.Done() // a start that waits, as a runner's registration
			return ctx.Err()
		}, nil)
	}()
	<-entered
	b.Stop()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Start returned %v, want context.Canceled", err)
	}
}

func TestConcurrentStartAndStop(t *testing.T) {
	t.Parallel()
	for range 100 {
		w := &worker{}
		var wg sync.WaitGroup
		for i := range 8 {
			if i%2 == 0 {
				wg.Go(func() { _ = w.Start(context.Background()) })
			} else {
				wg.Go(w.Stop)
			}
		}
		wg.Wait()
		w.Stop()
		if w.running.Load() {
			t.Fatal("a goroutine still runs after Stop")
		}
		if n := w.stops.Load(); n > 1 {
			t.Fatalf("stop hook ran %d times", n)
		}
	}
}

func TestCancelFromWithin(t *testing.T) {
	t.Parallel()
	var b Base
	err := b.Start(context.Background(), func(context.Context) error {
		b.Go(b.Cancel) // a service that ends itself
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-b.Stopped()
	b.Stop()
}

func TestStartAllStopsInReverse(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var order []string
	mk := func(name string, fail error) *worker {
		return &worker{name: name, order: &order, orderMu: &mu, failStart: fail}
	}
	a, b, c := mk("a", nil), mk("b", nil), mk("c", nil)
	if err := StartAll(context.Background(), a, b, c); err != nil {
		t.Fatal(err)
	}
	StopAll(a, b, c)
	if want := []string{"c", "b", "a"}; !slices.Equal(order, want) {
		t.Errorf("stopped in order %v, want %v", order, want)
	}

	order = nil
	boom := errors.New("boom")
	a, b, c = mk("a", nil), mk("b", nil), mk("c", boom)
	d := mk("d", nil)
	if err := StartAll(context.Background(), a, b, c, d); !errors.Is(err, boom) {
		t.Fatalf("StartAll returned %v, want %v", err, boom)
	}
	if want := []string{"c", "b", "a"}; !slices.Equal(order, want) {
		t.Errorf("after a failed start, stopped %v, want %v", order, want)
	}
	if d.running.Load() {
		t.Error("a service after the failed one was started")
	}
}

func TestLoop(t *testing.T) {
	t.Parallel()
	ran := make(chan struct{})
	l := NewLoop(func(ctx context.Context) {
		close(ran)
		<-ctx.Done()
	})
	var s Service = l
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-ran
	s.Stop()
	<-l.Stopped()
}
