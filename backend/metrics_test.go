package backend_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/backendtest"
	"github.com/dstackai/dstack/backend/fake"
	"github.com/dstackai/dstack/internal/testutil"
)

func launchRequest(key string, n int) backend.LaunchRequest {
	req := backend.LaunchRequest{Offer: fake.Catalogue[0], IdempotencyKey: key, ServerID: "srv", LimitID: "lim", ServerURL: "http://server:3000"}
	for i := range n {
		req.Instances = append(req.Instances, backend.InstanceSpec{RecordID: fmt.Sprintf("%s-%d", key, i), JoinToken: fmt.Sprintf("jt-%s-%d", key, i)})
	}
	return req
}

// TestMetrics: every call is counted by backend and method, every error
// by its kind too, and every call's time is observed.
func TestMetrics(t *testing.T) {
	t.Parallel()
	clk := testutil.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	f := fake.New(clk.Now)
	m := backend.NewMetrics(clk.Now)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	b := backend.WithMetrics(f, m)
	ctx := context.Background()

	// Each launch takes 3 seconds of the fake clock.
	f.SetBeforeLaunch(func(ctx context.Context, req backend.LaunchRequest) error {
		clk.Advance(3 * time.Second)
		if req.IdempotencyKey == "cancelled" {
			return context.Canceled
		}
		if req.IdempotencyKey == "slow" {
			return fmt.Errorf("launch: %w", context.DeadlineExceeded)
		}
		if req.IdempotencyKey == "reset" {
			return errors.New("connection reset")
		}
		return nil
	})
	insts, err := b.Launch(ctx, launchRequest("ok", 2))
	if err != nil || len(insts) != 2 {
		t.Fatalf("Launch = %v, %v", insts, err)
	}
	for _, key := range []string{"cancelled", "slow", "reset"} {
		if _, err := b.Launch(ctx, launchRequest(key, 1)); err == nil {
			t.Fatalf("Launch %s: no error", key)
		}
	}
	if _, err := b.Launch(ctx, launchRequest("bad", 0)); !errors.Is(err, backend.ErrInvalid) {
		t.Fatalf("Launch of nothing = %v", err)
	}
	f.Refuse(fake.Catalogue[0].Key(), backend.Errorf(backend.ErrNoCapacity, "launch", "InsufficientInstanceCapacity", "none"))
	if _, err := b.Launch(ctx, launchRequest("full", 1)); !errors.Is(err, backend.ErrNoCapacity) {
		t.Fatalf("refused Launch = %v", err)
	}
	if _, err := b.Offers(ctx, fake.Region); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Offers(ctx, "elsewhere"); !errors.Is(err, backend.ErrInvalid) {
		t.Fatalf("Offers(elsewhere) = %v", err)
	}
	if _, err := b.List(ctx, "srv"); err != nil {
		t.Fatal(err)
	}
	if err := b.Terminate(ctx, []string{insts[0].CloudID, insts[1].CloudID}); err != nil {
		t.Fatal(err)
	}

	const want = `
# HELP dstack_backend_calls_total Calls to a backend's methods (offers, launch, terminate, list), by backend and method.
# TYPE dstack_backend_calls_total counter
dstack_backend_calls_total{backend="fake",method="launch"} 6
dstack_backend_calls_total{backend="fake",method="list"} 1
dstack_backend_calls_total{backend="fake",method="offers"} 2
dstack_backend_calls_total{backend="fake",method="terminate"} 1
# HELP dstack_backend_errors_total Backend calls that failed, by backend, method and kind (no_capacity, quota, unsupported, invalid, throttled, canceled, timeout, unknown).
# TYPE dstack_backend_errors_total counter
dstack_backend_errors_total{backend="fake",kind="canceled",method="launch"} 1
dstack_backend_errors_total{backend="fake",kind="invalid",method="launch"} 1
dstack_backend_errors_total{backend="fake",kind="invalid",method="offers"} 1
dstack_backend_errors_total{backend="fake",kind="no_capacity",method="launch"} 1
dstack_backend_errors_total{backend="fake",kind="timeout",method="launch"} 1
dstack_backend_errors_total{backend="fake",kind="unknown",method="launch"} 1
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want), "dstack_backend_calls_total", "dstack_backend_errors_total"); err != nil {
		t.Error(err)
	}

	// Launches that reached the hook took 3s each (all but the invalid
	// one, refused before it); the other calls took no time.
	for method, w := range map[string]struct {
		count uint64
		sum   float64
	}{"launch": {6, 5 * 3}, "offers": {2, 0}, "list": {1, 0}, "terminate": {1, 0}} {
		h := histogram(t, reg, "dstack_backend_call_duration_seconds", map[string]string{"backend": "fake", "method": method})
		if h.GetSampleCount() != w.count || h.GetSampleSum() != w.sum {
			t.Errorf("%s latency: %d samples summing %vs, want %d summing %vs", method, h.GetSampleCount(), h.GetSampleSum(), w.count, w.sum)
		}
	}
	if n, err := promtest.GatherAndLint(reg); err != nil || len(n) != 0 {
		t.Errorf("lint: %v %v", n, err)
	}
}

// histogram is the histogram of name with labels in reg.
func histogram(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return mt.GetHistogram()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return nil
}

// watcher is a backend that is a RegionWatcher.
type watcher struct {
	*fake.Backend
	mu      sync.Mutex
	regions []string
}

func (w *watcher) WatchRegions(regions ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.regions = append(w.regions, regions...)
}

func TestWithMetricsWraps(t *testing.T) {
	t.Parallel()
	m := backend.NewMetrics(nil)
	f := fake.New(nil)
	b := backend.WithMetrics(f, m)
	if _, ok := b.(backend.RegionWatcher); ok {
		t.Error("a backend that watches no regions became a RegionWatcher")
	}
	if again := backend.WithMetrics(b, m); again != b {
		t.Error("wrapping a wrapped backend again wrapped it twice")
	}
	if other := backend.WithMetrics(b, backend.NewMetrics(nil)); other == b {
		t.Error("wrapping for other metrics returned the backend as it was")
	}
	if u, ok := b.(interface{ Unwrap() backend.Backend }); !ok || u.Unwrap() != f {
		t.Error("Unwrap does not give the backend wrapped")
	}
	if got, ok := backend.As[*fake.Backend](b); !ok || got != f {
		t.Error("As does not find the backend wrapped")
	}
	if _, ok := backend.As[backend.RegionWatcher](b); ok {
		t.Error("As finds a RegionWatcher where there is none")
	}
	w := &watcher{Backend: fake.New(nil)}
	rw, ok := backend.WithMetrics(w, m).(backend.RegionWatcher)
	if !ok {
		t.Fatal("a RegionWatcher wrapped is no RegionWatcher")
	}
	rw.WatchRegions("r1", "r2")
	if strings.Join(w.regions, ",") != "r1,r2" {
		t.Errorf("WatchRegions passed on %v", w.regions)
	}
	if backend.WithMetrics(nil, m) != nil || backend.WithMetrics(f, nil) != backend.Backend(f) {
		t.Error("WithMetrics of nothing, or without metrics, is not what it was given")
	}
}

func TestErrorKind(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]string{
		nil: "",
		backend.Errorf(backend.ErrNoCapacity, "launch", "X", "x"):         "no_capacity",
		fmt.Errorf("w: %w", backend.Errorf(backend.ErrQuota, "", "", "")): "quota",
		backend.ErrUnsupported: "unsupported",
		backend.ErrInvalid:     "invalid",
		backend.ErrThrottled:   "throttled",
		context.Canceled:       "canceled",
		fmt.Errorf("call: %w", context.DeadlineExceeded): "timeout",
		errors.New("connection reset"):                   "unknown",
	} {
		if got := backend.ErrorKind(err); got != want {
			t.Errorf("ErrorKind(%v) = %q, want %q", err, got, want)
		}
	}
}

// TestMetricsContract: a backend wrapped with metrics is still a backend
// by the contract (the fake's, whose own test runs the suite too).
func TestMetricsContract(t *testing.T) {
	t.Parallel()
	m := backend.NewMetrics(nil)
	backendtest.Run(t, func(t *testing.T, o backendtest.Options) *backendtest.Harness {
		f := fake.New(nil)
		if o.Capacity > 0 {
			f.SetCapacity(fake.Catalogue[0].Key(), o.Capacity)
		}
		return &backendtest.Harness{
			Backend: backend.WithMetrics(f, m),
			Restart: func(*testing.T) backend.Backend { return backend.WithMetrics(f.Restarted(), m) },
			Offer:   fake.Catalogue[0],
		}
	})
}
