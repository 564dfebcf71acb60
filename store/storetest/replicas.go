package storetest

import (
	"testing"
	"time"

	"github.com/dstackai/dstack/store"
)

var replicaTests = []test{
	{"put, renew and list the live ones", func(t *testing.T, open Open) {
		f := setup(t, open)
		t0 := f.now
		a := &store.Replica{ID: "a", Host: "h1", URL: "http://10.0.0.1:3000", ExternalURL: "https://dstack.example", Storage: "s3://b/p",
			KeyCheck: "k1", StartedAt: t0, SeenAt: t0}
		b := &store.Replica{ID: "b", Host: "h2", Storage: "dir:x", KeyCheck: "k1", StartedAt: t0, SeenAt: t0.Add(-time.Hour)}
		for _, r := range []*store.Replica{a, b} {
			if err := f.s.ReplicaPut(f.ctx, r); err != nil {
				t.Fatalf("ReplicaPut %s: %v", r.ID, err)
			}
		}
		got, err := f.s.ReplicaList(f.ctx, store.ReplicaListParams{SeenSince: t0.Add(-time.Minute)})
		if err != nil || len(got) != 1 || *got[0] != *a {
			t.Fatalf("ReplicaList = %+v, %v; want only a, as put", got, err)
		}
		b.SeenAt, b.URL = t0, "http://10.0.0.2:3000" // renewed
		if err := f.s.ReplicaPut(f.ctx, b); err != nil {
			t.Fatal(err)
		}
		got, err = f.s.ReplicaList(f.ctx, store.ReplicaListParams{SeenSince: t0.Add(-time.Minute)})
		if err != nil || len(got) != 2 || *got[1] != *b {
			t.Fatalf("ReplicaList = %+v, %v; want a and b renewed", got, err)
		}
	}},
	{"delete one and the stale", func(t *testing.T, open Open) {
		f := setup(t, open)
		t0 := f.now
		for i, id := range []string{"a", "b", "c"} {
			seen := t0.Add(-time.Duration(i) * time.Hour)
			if err := f.s.ReplicaPut(f.ctx, &store.Replica{ID: id, StartedAt: seen, SeenAt: seen}); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := f.s.ReplicaDelete(f.ctx, store.ReplicaDeleteParams{ID: "a"}); err != nil || n != 1 {
			t.Fatalf("ReplicaDelete(a) = %d, %v; want 1", n, err)
		}
		if n, err := f.s.ReplicaDelete(f.ctx, store.ReplicaDeleteParams{SeenBefore: t0.Add(-90 * time.Minute)}); err != nil || n != 1 {
			t.Fatalf("ReplicaDelete(stale) = %d, %v; want c removed", n, err)
		}
		got, err := f.s.ReplicaList(f.ctx, store.ReplicaListParams{})
		if err != nil || len(got) != 1 || got[0].ID != "b" {
			t.Fatalf("ReplicaList = %+v, %v; want b alone", got, err)
		}
	}},
}
