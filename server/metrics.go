package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dstackai/dstack/store"
)

// metrics are what /metrics exports, on a registry of the server's own.
type metrics struct {
	reg         *prometheus.Registry
	pickup      prometheus.Histogram
	finished    *prometheus.CounterVec
	interrupted prometheus.Counter
	logBytes    prometheus.Counter
	requests    *prometheus.CounterVec
	// looks counts the claims' looks at the queue, by what they found
	// (lookClaimed, lookNone).
	looks *prometheus.CounterVec
	// auditFailures counts audit entries that could not be recorded
	// (audit.go).
	auditFailures prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		pickup: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dstack_job_pickup_seconds",
			Help:    "Time from a job's submission to a runner claiming it (first attempts of jobs without dependencies).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dstack_jobs_finished_total", Help: "Jobs that reached a final state, by state.",
		}, []string{"status"}),
		interrupted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dstack_jobs_interrupted_total", Help: "Jobs interrupted: their runner stopped responding, or gave them back as the cloud reclaimed its machine.",
		}),
		logBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dstack_log_bytes_total", Help: "Bytes of job output received.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dstack_http_requests_total", Help: "API requests by method and status code.",
		}, []string{"method", "code"}),
		looks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dstack_queue_looks_total",
			Help: "Looks at the queue for a runner's next job (a claim, or the claim made with the report of a job's end), by result: claimed, or none (no pending job fit). Looks that find none are the database's cost of idle runners.",
		}, []string{"result"}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dstack_audit_failures_total", Help: "Audit entries that could not be recorded (the server's log has each at ERROR).",
		}),
	}
	m.reg.MustRegister(m.pickup, m.finished, m.interrupted, m.logBytes, m.requests, m.looks, m.auditFailures, s.backendMetrics,
		&stateCollector{s: s}, &costCollector{s: s}, &storageCollector{m: s.storage}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) instrument(h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerCounter(m.requests, h)
}

func (m *metrics) observeClaim(j *store.Job, now time.Time) {
	if j.Attempt == 0 && len(j.Spec.DependsOn) == 0 {
		m.pickup.Observe(now.Sub(j.SubmittedAt).Seconds())
	}
}

// The results of dstack_queue_looks_total.
const (
	lookClaimed = "claimed"
	lookNone    = "none"
)

// looked counts a look at the queue that ended with err (nil: it claimed a
// job; store.ErrNotFound: none fit); a look that failed is not counted.
func (m *metrics) looked(err error) {
	switch {
	case err == nil:
		m.looks.WithLabelValues(lookClaimed).Inc()
	case errors.Is(err, store.ErrNotFound):
		m.looks.WithLabelValues(lookNone).Inc()
	}
}

func (m *metrics) jobFinished(j *store.Job) { m.finished.WithLabelValues(string(j.Status)).Inc() }

// stateCollector reads queue and runner gauges from the store at scrape time,
// so they are right whichever replica changed them.
type stateCollector struct{ s *Server }

var (
	jobsDesc    = prometheus.NewDesc("dstack_jobs", "Jobs by state (queued jobs are pending).", []string{"status"}, nil)
	runnersDesc = prometheus.NewDesc("dstack_runners", "Runners by state.", []string{"status"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- runnersDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if counts, err := c.s.store.JobCountByStatus(ctx); err == nil {
		for st, n := range counts {
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(n), string(st))
		}
	}
	if kinds, err := c.s.store.RunnerTally(ctx); err == nil {
		var on, off, busy float64
		for _, k := range kinds {
			switch {
			case !k.Online:
				off += float64(k.Count)
			case k.Busy:
				busy += float64(k.Count)
			default:
				on += float64(k.Count)
			}
		}
		ch <- prometheus.MustNewConstMetric(runnersDesc, prometheus.GaugeValue, on, "idle")
		ch <- prometheus.MustNewConstMetric(runnersDesc, prometheus.GaugeValue, busy, "busy")
		ch <- prometheus.MustNewConstMetric(runnersDesc, prometheus.GaugeValue, off, "offline")
	}
}

// storageCollector reports the storage's condition at scrape time
// (storage.go).
type storageCollector struct{ m *storageMonitor }

var (
	storageDegradedDesc = prometheus.NewDesc("dstack_storage_degraded",
		"1 while the server's storage is degraded, by cause: disk_full (writes fail for lack of space), io_error (writes fail otherwise), low_space (under --min-free-space: new runs refused).",
		[]string{"cause"}, nil)
	storageFreeDesc = prometheus.NewDesc("dstack_storage_free_bytes", "Free bytes in the file system of each directory the server writes to.", []string{"dir"}, nil)
)

func (c *storageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- storageDegradedDesc
	ch <- storageFreeDesc
}

func (c *storageCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.state()
	for _, cause := range []string{"disk_full", "io_error", "low_space"} {
		v := 0.0
		if st.cause == cause {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(storageDegradedDesc, prometheus.GaugeValue, v, cause)
	}
	for dir, free := range st.free {
		ch <- prometheus.MustNewConstMetric(storageFreeDesc, prometheus.GaugeValue, float64(free), dir)
	}
}
