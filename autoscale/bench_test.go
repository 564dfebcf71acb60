package autoscale_test

import (
	"context"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/dstackai/dstack/autoscale"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/fake"
)

// BenchmarkPendingToLaunch measures the time from a job becoming pending
// (its run recorded, the controller woken as the server wakes it) to the
// backend's Launch call for it, with the controller's Run loop on SQLite.
// The target is at most 250 ms.
func BenchmarkPendingToLaunch(b *testing.B) {
	st := openSQLiteB(b)
	e := &env{ctx: context.Background(), st: st}
	if err := st.Migrate(e.ctx); err != nil {
		b.Fatal(err)
	}
	e.cloud = fake.New(time.Now)
	launched := make(chan struct{}, 1)
	e.cloud.NotifyLaunch(launched)
	id, err := autoscale.ServerID(e.ctx, st)
	if err != nil {
		b.Fatal(err)
	}
	user := mustUser(b, st)
	mustLimit(b, st, user.ID, b.N+1)
	wake := make(chan struct{}, 1)
	c, err := autoscale.New(autoscale.Config{
		Store: st, Backends: []backend.Backend{e.cloud}, ServerID: id, ServerURL: "http://server:3000",
		Interval: time.Hour, Wake: wake, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(e.ctx); err != nil {
		b.Fatal(err)
	}
	defer c.Stop()

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		submitB(b, st, user.ID, i)
		select {
		case wake <- struct{}{}:
		default:
		}
		select {
		case <-launched:
		case <-time.After(10 * time.Second):
			b.Fatal("no launch within 10s")
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(0, "ns/op")
}
