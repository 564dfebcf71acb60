package runner

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store/storetest"
)

// BenchmarkPickupLatency measures, on an idle runner, the time from the
// submission of a run to the start of its job's process. The process opens
// a FIFO the benchmark waits on, so the moment is exact.
func BenchmarkPickupLatency(b *testing.B) {
	f := setup(b)
	code := f.uploadCode(b, nil)
	dir := b.TempDir()
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		fifo := filepath.Join(dir, "started-"+strconv.Itoa(i))
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			b.Fatal(err)
		}
		opened := make(chan time.Time, 1)
		go func() {
			// Blocks until the job's process opens the FIFO for writing.
			fh, err := os.Open(fifo)
			opened <- time.Now()
			if err == nil {
				_, _ = io.Copy(io.Discard, fh)
				fh.Close()
			}
		}()
		b.StartTimer()
		start := time.Now()
		run := f.submit(b, code, api.JobSpec{Workflow: "w", Commands: []string{"echo > " + fifo}})
		at := <-opened
		b.StopTimer()
		lat = append(lat, at.Sub(start))
		// The next iteration starts on an idle runner.
		f.waitStatus(b, run.Name, "w", finished)
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkLogThroughput measures how fast a job's output reaches a reader
// following the job's log: 200 MB of 64-byte lines, from the submission to
// the last byte read; with the server's logs in files, and in the database
// (SQLite's, and PostgreSQL's when DSTACK_TEST_POSTGRES_DSN is set).
func BenchmarkLogThroughput(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts func(b *testing.B) []servertest.Option
	}{
		{"files", func(*testing.B) []servertest.Option { return nil }},
		{"db-sqlite", func(*testing.B) []servertest.Option {
			return []servertest.Option{servertest.WithConfig(func(c *server.Config) { c.LogStore = server.LogStoreDatabase })}
		}},
		{"db-postgres", func(b *testing.B) []servertest.Option {
			return []servertest.Option{servertest.WithPostgres(storetest.PostgresDSN(b))}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) { benchLogThroughput(b, tc.opts(b)) })
	}
}

func benchLogThroughput(b *testing.B, opts []servertest.Option) {
	const size = 200_000_000
	f := setupOn(b, opts)
	code := f.uploadCode(b, nil)
	b.SetBytes(size)
	for b.Loop() {
		start := time.Now()
		run := f.submit(b, code, api.JobSpec{Workflow: "w", Commands: []string{
			"yes 'a log line of sixty-four bytes, give or take: 0123456789abcdef' | head -c " + strconv.Itoa(size),
		}})
		j := run.Jobs[0]
		rc, err := f.admin.JobLogs(context.Background(), j.ID, client.LogOptions{Follow: true})
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		if n != size {
			b.Fatalf("read %d bytes, want %d", n, size)
		}
		b.ReportMetric(float64(size)/1e6/elapsed.Seconds(), "MB/s-end-to-end")
		if j := f.waitStatus(b, run.Name, "w", finished); j.Status != api.StatusDone {
			b.Fatalf("job %s: %s", j.Status, j.StatusReason)
		}
	}
}
