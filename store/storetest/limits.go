package storetest

import (
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/store"
)

// limitParams are the arguments of a new on-demand limit of u, with a key
// no other limit of the test has.
func (f *fixture) limitParams(u *store.User, max int) store.LimitPutParams {
	return store.LimitPutParams{ID: f.id("limit"), UserID: u.ID, Backend: "aws", Region: "eu-west-1",
		InstanceType: f.id("m5.xlarge"), Max: max, Now: f.tick()}
}

// limit creates a limit of u allowing max instances.
func (f *fixture) limit(u *store.User, max int) *store.Limit {
	f.t.Helper()
	res, err := f.s.LimitPut(f.ctx, f.limitParams(u, max))
	if err != nil {
		f.t.Fatalf("LimitPut: %v", err)
	}
	return res.Limit
}

// limits lists every limit by ID.
func (f *fixture) limits(p store.LimitListParams) map[string]*store.Limit {
	f.t.Helper()
	ls, err := f.s.LimitList(f.ctx, p)
	if err != nil {
		f.t.Fatalf("LimitList: %v", err)
	}
	out := map[string]*store.Limit{}
	for _, l := range ls {
		out[l.ID] = l
	}
	return out
}

func limitIDs(ls []*store.Limit) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.ID)
	}
	return out
}

var limitTests = []test{
	{"put creates, then updates by key", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		p := store.LimitPutParams{ID: "l1", UserID: u.ID, Backend: "aws", Region: "eu-west-1", InstanceType: "m5.xlarge",
			Spot: true, Max: 3, Now: f.tick()}
		res, err := f.s.LimitPut(f.ctx, p)
		if err != nil {
			t.Fatalf("LimitPut: %v", err)
		}
		l := res.Limit
		if !res.Created || res.PrevMax != 0 || l.ID != "l1" || l.UserID != u.ID || l.Backend != "aws" ||
			l.Region != "eu-west-1" || l.InstanceType != "m5.xlarge" || !l.Spot || l.Max != 3 ||
			l.Instances != 0 || !l.OnDemandEnabled {
			t.Fatalf("LimitPut created %+v (created %v, prev %d)", l, res.Created, res.PrevMax)
		}
		sameTime(t, "CreatedAt", l.CreatedAt, p.Now)
		sameTime(t, "UpdatedAt", l.UpdatedAt, p.Now)

		// The same key with another ID updates the limit, which keeps its ID.
		first := p.Now
		p.ID, p.Max, p.Now = "l2", 1, f.tick()
		res, err = f.s.LimitPut(f.ctx, p)
		if err != nil {
			t.Fatalf("second LimitPut: %v", err)
		}
		if res.Created || res.PrevMax != 3 || res.Limit.ID != "l1" || res.Limit.Max != 1 {
			t.Fatalf("second LimitPut = %+v (created %v, prev %d); want l1 updated from 3 to 1", res.Limit, res.Created, res.PrevMax)
		}
		sameTime(t, "CreatedAt after update", res.Limit.CreatedAt, first)
		sameTime(t, "UpdatedAt after update", res.Limit.UpdatedAt, p.Now)

		// Another purchase type is another limit.
		p.Spot = false
		if res, err = f.s.LimitPut(f.ctx, p); err != nil || !res.Created || res.Limit.ID != "l2" {
			t.Fatalf("LimitPut on-demand = %+v, %v; want a new limit l2", res, err)
		}
		if got := f.limits(store.LimitListParams{}); len(got) != 2 || got["l1"].Max != 1 || got["l2"].Spot {
			t.Fatalf("LimitList = %v", got)
		}
	}},
	{"put refuses bad arguments", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		p := f.limitParams(u, -1)
		if _, err := f.s.LimitPut(f.ctx, p); err == nil {
			t.Error("LimitPut with a negative maximum succeeded")
		}
		p = f.limitParams(u, 1)
		p.InstanceType = ""
		if _, err := f.s.LimitPut(f.ctx, p); err == nil {
			t.Error("LimitPut without an instance type succeeded")
		}
		p = f.limitParams(u, 1)
		p.UserID = "nobody"
		_, err := f.s.LimitPut(f.ctx, p)
		wantErr(t, "LimitPut of an unknown user", err, store.ErrNotFound)
		p = f.limitParams(u, 1)
		taken := f.limit(u, 1)
		p.ID = taken.ID
		_, err = f.s.LimitPut(f.ctx, p)
		wantErr(t, "LimitPut of a new key with a taken ID", err, store.ErrConflict)
		if got := f.limits(store.LimitListParams{}); len(got) != 1 {
			t.Fatalf("refused puts left limits: %v", got)
		}
	}},
	{"concurrent puts of one key make one limit", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		const n = 10
		results := make([]*store.LimitPutResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			p := f.limitParams(u, i)
			p.InstanceType = "m5.xlarge"
			wg.Go(func() { results[i], errs[i] = f.s.LimitPut(f.ctx, p) })
		}
		wg.Wait()
		created, ids := 0, map[string]bool{}
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("LimitPut %d: %v", i, errs[i])
			}
			if results[i].Created {
				created++
			}
			ids[results[i].Limit.ID] = true
		}
		if created != 1 || len(ids) != 1 {
			t.Fatalf("%d puts created %d limits with IDs %v; want one", n, created, ids)
		}
	}},
	{"list and delete", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		a1, a2, b1 := f.limit(alice, 1), f.limit(alice, 2), f.limit(bob, 3)
		all, err := f.s.LimitList(f.ctx, store.LimitListParams{})
		if err != nil {
			t.Fatalf("LimitList: %v", err)
		}
		// By key, whoever created them: the fixture's instance types grow
		// with the IDs.
		if got, want := limitIDs(all), []string{a1.ID, a2.ID, b1.ID}; !reflect.DeepEqual(got, want) {
			t.Fatalf("LimitList() = %v, want %v", got, want)
		}
		if all[2].UserID != bob.ID {
			t.Errorf("limit %s created by %s, want %s", b1.ID, all[2].UserID, bob.ID)
		}
		// A limit is the server's: putting its key again, as anyone,
		// changes it.
		p := f.limitParams(alice, 5)
		p.InstanceType = b1.InstanceType
		if res, err := f.s.LimitPut(f.ctx, p); err != nil || res.Created || res.Limit.ID != b1.ID || res.PrevMax != 3 {
			t.Fatalf("LimitPut of bob's key by alice = %+v, %v; want b1 updated from 3", res, err)
		}
		_, err = f.s.LimitDelete(f.ctx, store.LimitDeleteParams{ID: "nope"})
		wantErr(t, "LimitDelete of an unknown limit", err, store.ErrNotFound)
		gone, err := f.s.LimitDelete(f.ctx, store.LimitDeleteParams{ID: a1.ID})
		if err != nil || !reflect.DeepEqual(limitIDs(gone), []string{a1.ID}) {
			t.Fatalf("LimitDelete(a1) = %v, %v", limitIDs(gone), err)
		}
		if got := f.limits(store.LimitListParams{}); len(got) != 2 || got[a2.ID] == nil || got[b1.ID] == nil {
			t.Fatalf("after deleting a1: %v", got)
		}
		gone, err = f.s.LimitDelete(f.ctx, store.LimitDeleteParams{})
		if err != nil || len(gone) != 2 {
			t.Fatalf("LimitDelete(all) = %v, %v; want 2", limitIDs(gone), err)
		}
		gone, err = f.s.LimitDelete(f.ctx, store.LimitDeleteParams{})
		if err != nil || len(gone) != 0 {
			t.Fatalf("LimitDelete(all) with no limits = %v, %v", limitIDs(gone), err)
		}
		// The key is free again: a new limit, with a new ID.
		p = f.limitParams(alice, 1)
		p.InstanceType = a1.InstanceType
		if res, err := f.s.LimitPut(f.ctx, p); err != nil || !res.Created || res.Limit.ID == a1.ID {
			t.Fatalf("LimitPut after delete = %+v, %v; want a new limit", res, err)
		}
	}},
	{"counts its instances", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		l := f.limit(u, 5)
		ins := f.instances(l, 4)
		f.setState(ins[1], store.InstanceTerminating)
		f.setState(ins[2], store.InstanceTerminated)
		f.setState(ins[3], store.InstanceGone)
		if got := f.limits(store.LimitListParams{})[l.ID]; got.Instances != 2 {
			t.Fatalf("limit counts %d instances, want 2 (launching and terminating)", got.Instances)
		}
	}},
}

var onDemandTests = []test{
	{"enabled by default, then switched for the whole server", func(t *testing.T, open Open) {
		f := setup(t, open)
		u, other := f.user(), f.user()
		l, lo := f.limit(u, 2), f.limit(other, 2)
		o, err := f.s.OnDemandGet(f.ctx)
		if err != nil || !o.Enabled || !o.UpdatedAt.IsZero() {
			t.Fatalf("OnDemandGet of a new server = %+v, %v; want enabled, never updated", o, err)
		}
		now := f.tick()
		if err := f.s.OnDemandSetEnabled(f.ctx, store.OnDemandSetEnabledParams{Enabled: false, Now: now}); err != nil {
			t.Fatalf("OnDemandSetEnabled: %v", err)
		}
		o, err = f.s.OnDemandGet(f.ctx)
		if err != nil || o.Enabled {
			t.Fatalf("OnDemandGet after disabling = %+v, %v", o, err)
		}
		sameTime(t, "UpdatedAt", o.UpdatedAt, now)
		if got := f.limits(store.LimitListParams{}); got[l.ID].OnDemandEnabled || got[lo.ID].OnDemandEnabled {
			t.Error("LimitList shows a limit enabled with on-demand runners disabled")
		}
		// Disabled, no limit has room, whoever created it.
		_, err = f.tryInstances(l, 1)
		wantErr(t, "InstanceCreate while disabled", err, store.ErrLimitReached)
		_, err = f.tryInstances(lo, 1)
		wantErr(t, "InstanceCreate while disabled", err, store.ErrLimitReached)
		if err := f.s.OnDemandSetEnabled(f.ctx, store.OnDemandSetEnabledParams{Enabled: true, Now: f.tick()}); err != nil {
			t.Fatalf("OnDemandSetEnabled: %v", err)
		}
		if o, _ := f.s.OnDemandGet(f.ctx); !o.Enabled {
			t.Fatal("enabling again did not take")
		}
		f.instances(l, 1)
	}},
}

// wantLimitReached asserts that err is ErrLimitReached.
func wantLimitReached(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrLimitReached) {
		t.Fatalf("%s: error %v, want ErrLimitReached", what, err)
	}
}

// at is the fixture's clock plus d, without moving it.
func (f *fixture) at(d time.Duration) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now.Add(d)
}
