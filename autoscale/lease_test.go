package autoscale_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dstackai/dstack/autoscale"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/postgres"
	"github.com/dstackai/dstack/store/storetest"
)

// TestARestartedReplicaFindsItsLeaseItsOwn: a replica killed while it held
// the lease comes back under the same identity and leads again at once;
// another replica waits for the lease to expire.
func TestARestartedReplicaFindsItsLeaseItsOwn(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(*testing.T) store.Store{"sqlite": openSQLite, "postgres": openPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := setupWith(t, open(t))
			replica := func(id string) *autoscale.Controller {
				return e.controller(func(c *autoscale.Config) { c.ReplicaID = id })
			}
			e.stepWith(replica("r1")) // leads, then dies without giving the lease up
			other := replica("r2")
			e.stepWith(other)
			if other.Leader() {
				t.Fatal("another replica took the lease of a holder that died a moment ago")
			}
			restarted := replica("r1")
			e.stepWith(restarted)
			if !restarted.Leader() {
				t.Fatal("the restarted replica does not lead: it waits for its own lease to expire")
			}
		})
	}
}

// TestADeadLeadersLeaseMovesWithinTenSeconds: under the default TTL, a
// leader that stops renewing (kill -9) leaves the lease to another replica
// once it expires, and that is within 10 seconds of its death counting the
// other's wait for its next pass and for its next look at the store.
func TestADeadLeadersLeaseMovesWithinTenSeconds(t *testing.T) {
	t.Parallel()
	if d := autoscale.Defaults.LeaseTTL*7/6 + autoscale.Defaults.Interval; d > 10*time.Second {
		t.Fatalf("the default lease TTL and pass interval add up to %s: a dead leader's lease would move after more than 10s", d)
	}
	e := setup(t)
	defaults := func(c *autoscale.Config) { c.LeaseTTL = 0 }
	leader, standby := e.controller(defaults), e.controller(defaults)
	e.stepWith(leader)
	e.clock.Advance(autoscale.Defaults.LeaseTTL - time.Millisecond)
	e.stepWith(standby)
	if standby.Leader() {
		t.Fatal("the standby took the lease before it expired")
	}
	e.clock.Advance(autoscale.Defaults.LeaseTTL / 6) // the standby asks the store no more often
	e.stepWith(standby)
	if !standby.Leader() {
		t.Fatal("the standby did not take the expired lease")
	}
}

// TestTheLeaderRenewsItsLeaseBetweenPasses: a leader whose next pass is
// far off (or whose pass takes minutes, launching) renews its lease every
// LeaseTTL/3 all the same.
func TestTheLeaderRenewsItsLeaseBetweenPasses(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	st, err := postgres.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := setupWith(t, st)
	const ttl = 300 * time.Millisecond
	c := e.controller(func(c *autoscale.Config) { c.LeaseTTL, c.Interval = ttl, time.Hour })
	if err := c.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	testutil.Eventually(t, "the first pass to take the lease", c.Leader)
	// Time moves on with no pass: the lease must be renewed from the new
	// time.
	e.clock.Advance(time.Minute)
	want := e.clock.Now().Add(ttl).UnixMicro()
	conn, err := pgx.Connect(e.ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(e.ctx) }()
	testutil.Eventually(t, "the lease renewed without a pass", func() bool {
		var exp int64
		err := conn.QueryRow(e.ctx, `SELECT expires_at FROM leases WHERE name = $1`, autoscale.LeaseName).Scan(&exp)
		return err == nil && exp == want
	})
	c.Stop()
	var n int
	if err := conn.QueryRow(e.ctx, `SELECT count(*) FROM leases WHERE name = $1`, autoscale.LeaseName).Scan(&n); err != nil || n != 0 {
		t.Fatalf("after Stop %d leases are held (%v), want the lease given up", n, err)
	}
}

// BenchmarkLeaseRenewal measures one renewal of the lease: the leader
// makes one every LeaseTTL/3 (2s by default), whatever the load.
func BenchmarkLeaseRenewal(b *testing.B) {
	for name, open := range map[string]func(testing.TB) store.Store{
		"sqlite": func(tb testing.TB) store.Store { return openSQLiteB(tb.(*testing.B)) },
		"postgres": func(tb testing.TB) store.Store {
			st, err := postgres.Open(context.Background(), storetest.PostgresDSN(tb))
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { st.Close() })
			return st
		},
	} {
		b.Run(name, func(b *testing.B) {
			st := open(b)
			ctx := context.Background()
			if err := st.Migrate(ctx); err != nil {
				b.Fatal(err)
			}
			p := store.LeaseAcquireParams{Name: autoscale.LeaseName, Holder: "bench", TTL: 6 * time.Second}
			for b.Loop() {
				p.Now = time.Now()
				if ok, err := st.LeaseAcquire(ctx, p); err != nil || !ok {
					b.Fatalf("renew: %v %v", ok, err)
				}
			}
		})
	}
}
