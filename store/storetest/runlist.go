package storetest

import (
	"reflect"
	"testing"

	"github.com/dstackai/dstack/store"
)

// testRunListPages: following RunList's pages with After lists every run
// once, in the order of a listing without pages, also among runs submitted
// in the same microsecond and under the filters.
func testRunListPages(t *testing.T, open Open) {
	f := setup(t, open)
	alice, bob := f.user(), f.user()
	same := f.tick()
	for i := range 9 {
		p := f.runParams([]*store.User{alice, bob}[i%2], spec("a"))
		if i >= 3 && i < 7 {
			p.Now = same // four runs submitted at once
		}
		if _, err := f.s.RunCreate(f.ctx, p); err != nil {
			t.Fatalf("RunCreate: %v", err)
		}
	}
	ids := func(runs []*store.Run) []string {
		var out []string
		for _, r := range runs {
			out = append(out, r.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		p    store.RunListParams
	}{
		{"all", store.RunListParams{}},
		{"user", store.RunListParams{UserID: alice.ID}},
		{"finished after", store.RunListParams{FinishedAfter: same}},
	} {
		whole, err := f.s.RunList(f.ctx, tc.p)
		if err != nil {
			t.Fatalf("%s: RunList: %v", tc.name, err)
		}
		for _, limit := range []int{1, 2, 3, 100} {
			var paged []*store.Run
			p := tc.p
			p.Limit = limit
			for range len(whole) + 2 {
				page, err := f.s.RunList(f.ctx, p)
				if err != nil {
					t.Fatalf("%s, limit %d: RunList: %v", tc.name, limit, err)
				}
				if len(page) > limit {
					t.Fatalf("%s, limit %d: a page of %d runs", tc.name, limit, len(page))
				}
				paged = append(paged, page...)
				if len(page) < limit {
					break
				}
				p.After = store.CursorOf(page[len(page)-1])
			}
			if got, want := ids(paged), ids(whole); !reflect.DeepEqual(got, want) {
				t.Errorf("%s, pages of %d: %v, want %v", tc.name, limit, got, want)
			}
		}
	}
}
