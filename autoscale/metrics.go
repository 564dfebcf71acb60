package autoscale

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dstackai/dstack/store"
)

// metrics are the controller's Prometheus series. The backends' own calls,
// errors by kind and latency are counted around each backend
// (backend.WithMetrics), not here.
type metrics struct {
	instances *prometheus.GaugeVec
	launches  *prometheus.CounterVec
	pending   prometheus.Gauge
	toLaunch  prometheus.Histogram
	toRunning prometheus.Histogram
	garbage   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	buckets := prometheus.ExponentialBuckets(0.005, 2, 18) // 5ms .. ~11min
	m := &metrics{
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dstack_ondemand_instances",
			Help: "On-demand instances counted against their limits, by limit, offer and state (as of the autoscaler's last pass).",
		}, []string{"limit", "offer", "state"}),
		launches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dstack_ondemand_launches_total",
			Help: "Launches the autoscaler planned and asked a backend for, by backend (dstack_backend_calls_total counts every call, repeats included, and dstack_backend_errors_total the failures).",
		}, []string{"backend"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dstack_ondemand_pending_jobs", Help: "Pending jobs as of the autoscaler's last pass.",
		}),
		toLaunch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dstack_ondemand_pending_to_launch_seconds",
			Help:    "Time from a job becoming pending to the launch of an instance for it being requested.",
			Buckets: buckets,
		}),
		toRunning: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dstack_ondemand_pending_to_running_seconds",
			Help:    "Time from a job becoming pending to the runner of the instance launched for it holding a job.",
			Buckets: buckets,
		}),
		garbage: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dstack_ondemand_untracked_terminated_total", Help: "Tagged instances terminated because the server had no live record of them.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.instances, m.launches, m.pending, m.toLaunch, m.toRunning, m.garbage} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				continue
			}
			return nil, err
		}
	}
	return m, nil
}

// observeInstances sets the instance gauge from the pass's records.
func (m *metrics) observeInstances(insts []*store.Instance, limits map[string]*store.Limit) {
	m.instances.Reset()
	for _, l := range limits {
		for _, st := range counted {
			m.instances.WithLabelValues(l.ID, instanceKey(&store.Instance{Backend: l.Backend, Region: l.Region, InstanceType: l.InstanceType, Spot: l.Spot}).String(), string(st))
		}
	}
	for _, in := range insts {
		m.instances.WithLabelValues(in.LimitID, instanceKey(in).String(), string(in.State)).Inc()
	}
}
