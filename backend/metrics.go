package backend

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus series of every backend wrapped with
// WithMetrics, labelled by the backend's name and the method called
// ("offers", "launch", "terminate", "list"):
//
//	dstack_backend_calls_total{backend,method}
//	dstack_backend_errors_total{backend,method,kind}
//	dstack_backend_call_duration_seconds{backend,method}
//
// kind is ErrorKind's name of the error. A Metrics is a
// prometheus.Collector: register it once, wrap any number of backends.
type Metrics struct {
	now     func() time.Time
	calls   *prometheus.CounterVec
	errors  *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

var _ prometheus.Collector = (*Metrics)(nil)

// The methods, as the metrics label them (the same words as Error.Op).
const (
	methodOffers    = "offers"
	methodLaunch    = "launch"
	methodTerminate = "terminate"
	methodList      = "list"
)

// NewMetrics returns empty series whose latencies are measured with now
// (time.Now when nil).
func NewMetrics(now func() time.Time) *Metrics {
	if now == nil {
		now = time.Now
	}
	return &Metrics{
		now: now,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dstack_backend_calls_total",
			Help: "Calls to a backend's methods (offers, launch, terminate, list), by backend and method.",
		}, []string{"backend", "method"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dstack_backend_errors_total",
			Help: "Backend calls that failed, by backend, method and kind (no_capacity, quota, unsupported, invalid, throttled, canceled, timeout, unknown).",
		}, []string{"backend", "method", "kind"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dstack_backend_call_duration_seconds",
			Help:    "How long backend calls took, failed ones included, by backend and method.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16), // 5ms .. ~2.7min
		}, []string{"backend", "method"}),
	}
}

// Describe sends the series' descriptions.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.calls.Describe(ch)
	m.errors.Describe(ch)
	m.latency.Describe(ch)
}

// Collect sends the series.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.calls.Collect(ch)
	m.errors.Collect(ch)
	m.latency.Collect(ch)
}

// ErrorKind names err for metrics and logs: "no_capacity", "quota",
// "unsupported", "invalid", "throttled" for the sentinels, "canceled" and
// "timeout" for the context's errors, "unknown" for anything else, and ""
// for nil.
func ErrorKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNoCapacity):
		return "no_capacity"
	case errors.Is(err, ErrQuota):
		return "quota"
	case errors.Is(err, ErrUnsupported):
		return "unsupported"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrThrottled):
		return "throttled"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "unknown"
}

// WithMetrics returns b counting its calls, errors and latency in m. The
// result is a RegionWatcher when b is one; anything else b offers besides
// Backend is reached with As. Wrapping a backend m already wraps returns it as it is,
// so a backend taken out of a set and put back is not counted twice.
func WithMetrics(b Backend, m *Metrics) Backend {
	if b == nil || m == nil {
		return b
	}
	if w, ok := b.(metered); ok && w.inner().m == m {
		return b
	}
	mb := &meteredBackend{b: b, m: m, name: b.Name()}
	for _, method := range []string{methodOffers, methodLaunch, methodTerminate, methodList} {
		m.calls.WithLabelValues(mb.name, method)
		m.latency.WithLabelValues(mb.name, method)
	}
	if w, ok := b.(RegionWatcher); ok {
		return &meteredWatcher{meteredBackend: mb, w: w}
	}
	return mb
}

// As finds the first backend in b's chain of decorators (those with an
// Unwrap() Backend method, as WithMetrics returns) that is a T, as
// errors.As does for errors: how a caller reaches what a backend offers
// besides Backend (an AWS backend's DefaultRegion) through its wrappers.
func As[T any](b Backend) (T, bool) {
	for b != nil {
		if t, ok := b.(T); ok {
			return t, true
		}
		u, ok := b.(interface{ Unwrap() Backend })
		if !ok {
			break
		}
		b = u.Unwrap()
	}
	var zero T
	return zero, false
}

// metered is what WithMetrics returns.
type metered interface {
	Backend
	inner() *meteredBackend
}

// meteredBackend is a Backend counted in m.
type meteredBackend struct {
	b    Backend
	m    *Metrics
	name string
}

// meteredWatcher is a counted Backend that is a RegionWatcher.
type meteredWatcher struct {
	*meteredBackend
	w RegionWatcher
}

// WatchRegions passes the regions on; it makes no call of its own.
func (x *meteredWatcher) WatchRegions(regions ...string) { x.w.WatchRegions(regions...) }

func (x *meteredBackend) inner() *meteredBackend { return x }

// Unwrap is the backend counted.
func (x *meteredBackend) Unwrap() Backend { return x.b }

// observe counts one call of method that started at start and ended with
// err.
func (x *meteredBackend) observe(method string, start time.Time, err error) {
	x.m.latency.WithLabelValues(x.name, method).Observe(x.m.now().Sub(start).Seconds())
	x.m.calls.WithLabelValues(x.name, method).Inc()
	if err != nil {
		x.m.errors.WithLabelValues(x.name, method, ErrorKind(err)).Inc()
	}
}

func (x *meteredBackend) Name() string { return x.name }

func (x *meteredBackend) Offers(ctx context.Context, region string) ([]Offer, error) {
	start := x.m.now()
	out, err := x.b.Offers(ctx, region)
	x.observe(methodOffers, start, err)
	return out, err
}

func (x *meteredBackend) Launch(ctx context.Context, req LaunchRequest) ([]Instance, error) {
	start := x.m.now()
	out, err := x.b.Launch(ctx, req)
	x.observe(methodLaunch, start, err)
	return out, err
}

func (x *meteredBackend) Terminate(ctx context.Context, cloudIDs []string) error {
	start := x.m.now()
	err := x.b.Terminate(ctx, cloudIDs)
	x.observe(methodTerminate, start, err)
	return err
}

func (x *meteredBackend) List(ctx context.Context, serverID string) ([]Instance, error) {
	start := x.m.now()
	out, err := x.b.List(ctx, serverID)
	x.observe(methodList, start, err)
	return out, err
}
