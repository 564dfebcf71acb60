package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/store"
)

var offerTests = []test{
	{"marks expire", func(t *testing.T, open Open) {
		f := setup(t, open)
		t0 := f.tick()
		mark := func(typ string, spot bool, now time.Time, until time.Duration, reason string) {
			t.Helper()
			err := f.s.OfferMarkUnavailable(f.ctx, store.OfferMarkUnavailableParams{Backend: "aws", Region: "eu-west-1",
				InstanceType: typ, Spot: spot, Until: now.Add(until), Reason: reason, Now: now})
			if err != nil {
				t.Fatalf("OfferMarkUnavailable: %v", err)
			}
		}
		list := func(now time.Time) []*store.OfferUnavailable {
			t.Helper()
			got, err := f.s.OfferUnavailableList(f.ctx, now)
			if err != nil {
				t.Fatalf("OfferUnavailableList: %v", err)
			}
			return got
		}
		mark("p3.2xlarge", true, t0, 10*time.Minute, "InsufficientInstanceCapacity")
		mark("m5.xlarge", false, t0, time.Minute, "InstanceLimitExceeded")
		got := list(t0)
		if len(got) != 2 || got[0].InstanceType != "m5.xlarge" || got[0].Spot || got[1].InstanceType != "p3.2xlarge" ||
			!got[1].Spot || got[1].Reason != "InsufficientInstanceCapacity" || got[1].Backend != "aws" || got[1].Region != "eu-west-1" {
			t.Fatalf("OfferUnavailableList = %+v", got)
		}
		sameTime(t, "Since", got[1].Since, t0)
		sameTime(t, "Until", got[1].Until, t0.Add(10*time.Minute))
		// An expired mark is not listed; one that ends at now is expired.
		if got := list(t0.Add(time.Minute)); len(got) != 1 || got[0].InstanceType != "p3.2xlarge" {
			t.Fatalf("OfferUnavailableList a minute later = %+v", got)
		}
		// A new mark before expiry keeps Since; one after expiry starts over.
		t1 := t0.Add(5 * time.Minute)
		mark("p3.2xlarge", true, t1, 20*time.Minute, "again")
		mark("m5.xlarge", false, t1, time.Minute, "again")
		for _, o := range list(t1) {
			if o.Reason != "again" {
				t.Errorf("%s reason %q, want the new one", o.InstanceType, o.Reason)
			}
			switch o.InstanceType {
			case "p3.2xlarge":
				sameTime(t, "Since of a renewed mark", o.Since, t0)
				sameTime(t, "Until of a renewed mark", o.Until, t1.Add(20*time.Minute))
			case "m5.xlarge":
				sameTime(t, "Since of a mark after expiry", o.Since, t1)
			}
		}
		if got := list(t1.Add(time.Hour)); len(got) != 0 {
			t.Fatalf("OfferUnavailableList after every mark expired = %+v", got)
		}
	}},
}

var leaseTests = []test{
	{"exclusive, renewed, taken over after expiry", func(t *testing.T, open Open) {
		f := setup(t, open)
		const ttl = 30 * time.Second
		t0 := f.tick()
		acquire := func(holder string, now time.Time) bool {
			t.Helper()
			ok, err := f.s.LeaseAcquire(f.ctx, store.LeaseAcquireParams{Name: "autoscaler", Holder: holder, TTL: ttl, Now: now})
			if err != nil {
				t.Fatalf("LeaseAcquire(%s): %v", holder, err)
			}
			return ok
		}
		steps := []struct {
			holder string
			at     time.Duration
			want   bool
		}{
			{"a", 0, true},
			{"b", time.Second, false},
			{"a", 20 * time.Second, true}, // renewed until 50s
			{"b", 40 * time.Second, false},
			{"b", 50 * time.Second, true}, // a's lease expired at 50s
			{"a", 51 * time.Second, false},
		}
		for _, s := range steps {
			if got := acquire(s.holder, t0.Add(s.at)); got != s.want {
				t.Fatalf("LeaseAcquire(%s) at +%v = %v, want %v", s.holder, s.at, got, s.want)
			}
		}
		// Another name is another lease.
		if ok, err := f.s.LeaseAcquire(f.ctx, store.LeaseAcquireParams{Name: "gc", Holder: "a", TTL: ttl, Now: t0}); err != nil || !ok {
			t.Fatalf("LeaseAcquire of another name = %v, %v", ok, err)
		}
		// Releasing a lease one does not hold does nothing.
		if err := f.s.LeaseRelease(f.ctx, store.LeaseReleaseParams{Name: "autoscaler", Holder: "a"}); err != nil {
			t.Fatalf("LeaseRelease: %v", err)
		}
		if acquire("a", t0.Add(52*time.Second)) {
			t.Fatal("a took the lease after releasing b's")
		}
		if err := f.s.LeaseRelease(f.ctx, store.LeaseReleaseParams{Name: "autoscaler", Holder: "b"}); err != nil {
			t.Fatalf("LeaseRelease: %v", err)
		}
		if !acquire("a", t0.Add(53*time.Second)) {
			t.Fatal("a could not take a released lease")
		}
		if _, err := f.s.LeaseAcquire(f.ctx, store.LeaseAcquireParams{Name: "x", Holder: "a", Now: t0}); err == nil {
			t.Fatal("LeaseAcquire without a TTL succeeded")
		}
	}},
	{"concurrent acquirers", func(t *testing.T, open Open) {
		f := setup(t, open)
		now := f.tick()
		// Expired, then contended.
		if ok, err := f.s.LeaseAcquire(f.ctx, store.LeaseAcquireParams{Name: "l", Holder: "old", TTL: time.Second, Now: now}); err != nil || !ok {
			t.Fatalf("LeaseAcquire = %v, %v", ok, err)
		}
		const racers = 10
		got := make([]bool, racers)
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() {
				var err error
				got[i], err = f.s.LeaseAcquire(f.ctx, store.LeaseAcquireParams{Name: "l", Holder: f.id("holder"),
					TTL: time.Minute, Now: now.Add(time.Hour)})
				if err != nil {
					t.Errorf("LeaseAcquire: %v", err)
				}
			})
		}
		wg.Wait()
		n := 0
		for _, ok := range got {
			if ok {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d of %d holders acquired the lease, want 1", n, racers)
		}
	}},
}
