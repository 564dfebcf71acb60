package executor

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"
)

// firstOutput closes ch at the first output written to it.
type firstOutput struct {
	once sync.Once
	ch   chan struct{}
}

func (w *firstOutput) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.ch) })
	return len(p), nil
}

// benchStart measures a job's start overhead on e: from Start to the first
// line of its output, and from Start to the end of Wait (the container
// removed, for the Docker executor). It reports both as ms figures, with
// the median and the 90th percentile of the first.
func benchStart(b *testing.B, e Executor, spec Spec) {
	b.Helper()
	var first, whole []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := &firstOutput{ch: make(chan struct{})}
		spec.Output = out
		start := time.Now()
		p, err := e.Start(context.Background(), spec)
		if err != nil {
			b.Fatal(err)
		}
		select {
		case <-out.ch:
		case <-time.After(time.Minute):
			b.Fatal("no output in a minute")
		}
		first = append(first, time.Since(start))
		b.StopTimer()
		if res := p.Wait(); !res.Success() {
			b.Fatalf("result %+v", res)
		}
		whole = append(whole, time.Since(start))
		b.StartTimer()
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	mean := func(ds []time.Duration) time.Duration {
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		return sum / time.Duration(len(ds))
	}
	sorted := append([]time.Duration(nil), first...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	b.ReportMetric(ms(mean(first)), "ms/first-line")
	b.ReportMetric(ms(sorted[len(sorted)/2]), "ms/first-line-p50")
	b.ReportMetric(ms(sorted[len(sorted)*9/10]), "ms/first-line-p90")
	b.ReportMetric(ms(mean(whole)), "ms/job")
	b.ReportMetric(0, "ns/op") // the ms figures say it
	b.Logf("%s executor, %d jobs: start to first line %.1f ms mean, %.1f ms p50, %.1f ms p90; start to the end of Wait %.1f ms mean",
		e.Name(), len(first), ms(mean(first)), ms(sorted[len(sorted)/2]), ms(sorted[len(sorted)*9/10]), ms(mean(whole)))
}

// BenchmarkContainerStart is the Docker executor's start overhead: image
// on the host, create, attach, start, first line.
func BenchmarkContainerStart(b *testing.B) {
	d, f := dockerSetup(b, Options{})
	spec := f.dockerSpec("echo ready")
	benchStart(b, d, spec)
}

// BenchmarkShellStart is the same for the shell executor.
func BenchmarkShellStart(b *testing.B) {
	f := setup(b)
	benchStart(b, Shell{}, f.spec("echo ready"))
}
