package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dstackai/dstack/cost"
	"github.com/dstackai/dstack/store"
)

// costCollector reports, at scrape time from the store, what on-demand
// instances cost and how many run against each limit's maximum, so that
// every replica reports the same.
type costCollector struct{ s *Server }

var (
	offerLabels      = []string{"backend", "region", "type", "purchase"}
	instanceCostDesc = prometheus.NewDesc("dstack_instance_cost_total",
		"What on-demand instances cost since the server began, in USD: list price times the time from launch to termination (docs/cost.md).",
		offerLabels, nil)
	instancesRunningDesc = prometheus.NewDesc("dstack_instances_running",
		"On-demand instances counted against their limit (launching, running, terminating), by the limit's key.", offerLabels, nil)
	limitMaximumDesc = prometheus.NewDesc("dstack_limit_maximum", "Each limit's maximum count of instances.", offerLabels, nil)
)

func (c *costCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- instanceCostDesc
	ch <- instancesRunningDesc
	ch <- limitMaximumDesc
}

type offerLabel struct{ backend, region, typ, purchase string }

func (c *costCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := c.s.cfg.Now()
	ins, err := c.s.store.InstanceList(ctx, store.InstanceListParams{})
	if err != nil {
		return
	}
	costs := map[offerLabel]float64{}
	running := map[offerLabel]float64{}
	for _, in := range ins {
		k := offerLabel{in.Backend, in.Region, in.InstanceType, purchase(in.Spot)}
		v := 0.0 // the series exists from the first record
		if from, to, ok := cost.Charged(in, now); ok {
			v = in.PricePerHour * to.Sub(from).Hours()
		}
		costs[k] += v
		if in.State.Counted() {
			running[k]++
		}
	}
	ls, err := c.s.store.LimitList(ctx, store.LimitListParams{})
	if err != nil {
		return
	}
	maxes := map[offerLabel]float64{}
	for _, l := range ls {
		k := offerLabel{l.Backend, l.Region, l.InstanceType, purchase(l.Spot)}
		maxes[k] = float64(l.Max)
		running[k] += 0 // a limit without instances runs 0
	}
	for k, v := range costs {
		ch <- prometheus.MustNewConstMetric(instanceCostDesc, prometheus.CounterValue, v, k.backend, k.region, k.typ, k.purchase)
	}
	for k, v := range running {
		ch <- prometheus.MustNewConstMetric(instancesRunningDesc, prometheus.GaugeValue, v, k.backend, k.region, k.typ, k.purchase)
	}
	for k, v := range maxes {
		ch <- prometheus.MustNewConstMetric(limitMaximumDesc, prometheus.GaugeValue, v, k.backend, k.region, k.typ, k.purchase)
	}
}
