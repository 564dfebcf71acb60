package autoscale_test

import (
	"context"
	"sync"
	"testing"

	"github.com/dstackai/dstack/store"
)

// TestTwoControllersNeverDoubleLaunch runs two controllers, as two server
// replicas would, on one database and one cloud: only the lease holder
// launches, so the jobs get exactly one instance each; when the holder
// stops renewing, the other takes over.
func TestTwoControllersNeverDoubleLaunch(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(*testing.T) store.Store{"sqlite": openSQLite, "postgres": openPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := setupWith(t, open(t))
			e.limit("f.small", false, 10)
			a, b := e.c, e.controller(nil)
			for round := range 5 {
				e.submit(small)
				e.submit(small)
				var wg sync.WaitGroup
				for _, c := range []interface {
					Step(context.Context) error
				}{a, b} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := c.Step(e.ctx); err != nil {
							t.Errorf("Step: %v", err)
						}
					}()
				}
				wg.Wait()
				e.checkLimits()
				if a.Leader() == b.Leader() {
					t.Fatalf("round %d: leaders a=%v b=%v, want exactly one", round, a.Leader(), b.Leader())
				}
			}
			launched := 0
			for _, c := range e.cloud.LaunchCalls() {
				launched += len(c.Instances)
			}
			if launched != 10 || len(e.cloud.Live()) != 10 {
				t.Fatalf("%d instances launched (%d live) for 10 jobs", launched, len(e.cloud.Live()))
			}
			// The holder stops; after the lease's TTL the other takes over.
			standby := b
			if b.Leader() {
				standby = a
			}
			e.clock.Advance(leaseTTL)
			e.stepWith(standby)
			if !standby.Leader() {
				t.Fatal("the standby did not take the expired lease")
			}
		})
	}
}
