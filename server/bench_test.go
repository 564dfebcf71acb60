package server_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store/storetest"
	"github.com/dstackai/dstack/version"
)

// BenchmarkClaimThroughput measures jobs assigned per second with 10,000
// queued jobs and 200 runners claiming over HTTP, on SQLite and PostgreSQL.
func BenchmarkClaimThroughput(b *testing.B) {
	for _, db := range []string{"sqlite", "postgres"} {
		b.Run(db, func(b *testing.B) {
			// The benchmark's runners do not heartbeat.
			opts := []servertest.Option{servertest.WithHeartbeatTimeout(time.Hour)}
			if db == "postgres" {
				opts = append(opts, servertest.WithPostgres(storetest.PostgresDSN(b)))
			}
			srv := servertest.Start(b, opts...)
			ctx := context.Background()
			admin := srv.Client()
			const runners, jobs = 200, 10_000
			rcs := make([]*client.Client, runners)
			for i := range rcs {
				reg, err := admin.RunnerRegister(ctx, api.RunnerRegisterRequest{
					Name: fmt.Sprintf("bench-%d", i), Resources: api.HostResources{CPUs: 8, MemoryMiB: 32 << 10}, Version: version.Version,
				})
				if err != nil {
					b.Fatal(err)
				}
				rcs[i] = admin.WithToken(reg.Token)
			}
			code := uploadCode(b, admin)
			b.ResetTimer()
			var total time.Duration
			for it := 0; it < b.N; it++ {
				b.StopTimer()
				submitIndependentJobs(b, admin, code, jobs)
				b.StartTimer()
				start := time.Now()
				var claimed atomic.Int64
				var wg sync.WaitGroup
				for _, rc := range rcs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						free := api.HostResources{CPUs: 8, MemoryMiB: 32 << 10}
						for {
							a, err := rc.RunnerClaim(ctx, api.ClaimRequest{Free: free})
							if err != nil {
								b.Error(err)
								return
							}
							if a == nil {
								return
							}
							// Finish each job, asking for the next with its
							// end, as dstack-runner does.
							for a != nil {
								claimed.Add(1)
								res, err := rc.JobSetStatus(ctx, a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusDone, Next: &api.ClaimRequest{Free: free}})
								if err != nil {
									b.Error(err)
									return
								}
								a = res.Next
							}
						}
					}()
				}
				wg.Wait()
				total += time.Since(start)
				if claimed.Load() != jobs {
					b.Fatalf("claimed %d jobs, want %d", claimed.Load(), jobs)
				}
			}
			b.ReportMetric(float64(jobs*b.N)/total.Seconds(), "claims/s")
		})
	}
}
