package storetest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/dstackai/dstack/store"
)

var auditTests = []test{
	{"AppendList", testAuditAppendList},
	{"Pages", testAuditPages},
	{"Since", testAuditSince},
	{"DeleteBefore", testAuditDeleteBefore},
	{"BadInput", testAuditBadInput},
}

func (f *fixture) audit(p store.AuditAppendParams) *store.AuditEntry {
	f.t.Helper()
	if p.ID == "" {
		p.ID = f.id("audit")
	}
	if p.Action == "" {
		p.Action = "limit.put"
	}
	if p.At.IsZero() {
		p.At = f.tick()
	}
	e, err := f.s.AuditAppend(f.ctx, p)
	if err != nil {
		f.t.Fatalf("AuditAppend: %v", err)
	}
	return e
}

func auditIDs(es []*store.AuditEntry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

// testAuditAppendList: an entry reads back as written, a user's and one
// without a user alike, and the list is newest first.
func testAuditAppendList(t *testing.T, open Open) {
	f := setup(t, open)
	u := f.user()
	e1 := f.audit(store.AuditAppendParams{UserID: u.ID, UserName: u.Name, Action: "limit.put", Target: "local/local/local.small (on-demand)",
		Detail: `{"max": 2, "previous_max": 1}`, RemoteAddr: "192.0.2.7"})
	e2 := f.audit(store.AuditAppendParams{UserName: "", Action: "session.fail", RemoteAddr: "2001:db8::1"})
	got, err := f.s.AuditList(f.ctx, store.AuditListParams{})
	if err != nil {
		t.Fatalf("AuditList: %v", err)
	}
	if ids := auditIDs(got); !reflect.DeepEqual(ids, []string{e2.ID, e1.ID}) {
		t.Fatalf("AuditList = %v, want newest first [%s %s]", ids, e2.ID, e1.ID)
	}
	g1 := got[1]
	sameTime(t, "At", g1.At, e1.At)
	if g1.UserID != u.ID || g1.UserName != u.Name || g1.Action != "limit.put" || g1.Target != "local/local/local.small (on-demand)" || g1.RemoteAddr != "192.0.2.7" {
		t.Errorf("entry read back as %+v", g1)
	}
	var detail map[string]int
	if err := json.Unmarshal([]byte(g1.Detail), &detail); err != nil || detail["max"] != 2 || detail["previous_max"] != 1 {
		t.Errorf("detail read back as %q (%v)", g1.Detail, err)
	}
	if g2 := got[0]; g2.UserID != "" || g2.Detail != "{}" || g2.RemoteAddr != "2001:db8::1" {
		t.Errorf("an entry without a user or detail read back as %+v, want no user and detail {}", g2)
	}
	if !reflect.DeepEqual(got[1], e1) {
		t.Errorf("AuditList gives %+v, AuditAppend returned %+v", got[1], e1)
	}
}

// testAuditPages: following AuditList's pages lists every entry once, in
// the order of a listing without pages, also among entries made in the
// same microsecond and with Since.
func testAuditPages(t *testing.T, open Open) {
	f := setup(t, open)
	same := f.tick()
	for i := range 9 {
		p := store.AuditAppendParams{Target: fmt.Sprint(i)}
		if i >= 3 && i < 7 {
			p.At = same
		}
		f.audit(p)
	}
	for _, tc := range []struct {
		name string
		p    store.AuditListParams
	}{
		{"all", store.AuditListParams{}},
		{"since", store.AuditListParams{Since: same}},
	} {
		whole, err := f.s.AuditList(f.ctx, tc.p)
		if err != nil {
			t.Fatalf("%s: AuditList: %v", tc.name, err)
		}
		for _, limit := range []int{1, 2, 3, 100} {
			var paged []*store.AuditEntry
			p := tc.p
			p.Limit = limit
			for range len(whole) + 2 {
				page, err := f.s.AuditList(f.ctx, p)
				if err != nil {
					t.Fatalf("%s, limit %d: AuditList: %v", tc.name, limit, err)
				}
				if len(page) > limit {
					t.Fatalf("%s, limit %d: a page of %d entries", tc.name, limit, len(page))
				}
				paged = append(paged, page...)
				if len(page) < limit {
					break
				}
				p.After = store.AuditCursorOf(page[len(page)-1])
			}
			if got, want := auditIDs(paged), auditIDs(whole); !reflect.DeepEqual(got, want) {
				t.Errorf("%s, pages of %d: %v, want %v", tc.name, limit, got, want)
			}
		}
	}
}

// testAuditSince: Since keeps the entries made at or after it.
func testAuditSince(t *testing.T, open Open) {
	f := setup(t, open)
	old := f.audit(store.AuditAppendParams{})
	mid := f.audit(store.AuditAppendParams{})
	late := f.audit(store.AuditAppendParams{})
	got, err := f.s.AuditList(f.ctx, store.AuditListParams{Since: mid.At})
	if err != nil {
		t.Fatalf("AuditList: %v", err)
	}
	if ids := auditIDs(got); !reflect.DeepEqual(ids, []string{late.ID, mid.ID}) {
		t.Errorf("AuditList since the middle entry = %v, want [%s %s] (not %s)", ids, late.ID, mid.ID, old.ID)
	}
}

// testAuditDeleteBefore: entries made before the time go, oldest first,
// a bounded batch at a time; later ones stay.
func testAuditDeleteBefore(t *testing.T, open Open) {
	f := setup(t, open)
	var olds []*store.AuditEntry
	for range 5 {
		olds = append(olds, f.audit(store.AuditAppendParams{}))
	}
	cut := f.tick()
	keep := f.audit(store.AuditAppendParams{At: cut}) // at the cut: kept
	n, err := f.s.AuditDeleteBefore(f.ctx, store.AuditDeleteBeforeParams{Before: cut, Limit: 2})
	if err != nil || n != 2 {
		t.Fatalf("AuditDeleteBefore(limit 2) = %d, %v; want 2", n, err)
	}
	got, err := f.s.AuditList(f.ctx, store.AuditListParams{})
	if err != nil {
		t.Fatalf("AuditList: %v", err)
	}
	want := []string{keep.ID, olds[4].ID, olds[3].ID, olds[2].ID}
	if ids := auditIDs(got); !reflect.DeepEqual(ids, want) {
		t.Fatalf("after deleting a batch of 2: %v, want the two oldest gone: %v", ids, want)
	}
	n, err = f.s.AuditDeleteBefore(f.ctx, store.AuditDeleteBeforeParams{Before: cut, Limit: 100})
	if err != nil || n != 3 {
		t.Fatalf("AuditDeleteBefore(limit 100) = %d, %v; want the 3 left before the cut", n, err)
	}
	n, err = f.s.AuditDeleteBefore(f.ctx, store.AuditDeleteBeforeParams{Before: cut, Limit: 100})
	if err != nil || n != 0 {
		t.Fatalf("AuditDeleteBefore with nothing left = %d, %v; want 0", n, err)
	}
	got, err = f.s.AuditList(f.ctx, store.AuditListParams{})
	if err != nil || !reflect.DeepEqual(auditIDs(got), []string{keep.ID}) {
		t.Errorf("after deleting: %v (%v), want only %s", auditIDs(got), err, keep.ID)
	}
}

// testAuditBadInput: an entry without an action, with a detail that is
// not a JSON object or with an ID taken is refused and nothing is written;
// a delete batch of no entries is refused.
func testAuditBadInput(t *testing.T, open Open) {
	f := setup(t, open)
	e := f.audit(store.AuditAppendParams{})
	now := f.tick()
	for _, p := range []store.AuditAppendParams{
		{ID: "a1", At: now},
		{ID: "a2", At: now, Action: "limit.put", Detail: `[1, 2]`},
		{ID: "a3", At: now, Action: "limit.put", Detail: `{"max":`},
		{ID: "a4", At: now, Action: "limit.put", Detail: `null`},
	} {
		if _, err := f.s.AuditAppend(f.ctx, p); err == nil {
			t.Errorf("AuditAppend(%+v) = nil error, want a refusal", p)
		}
	}
	_, err := f.s.AuditAppend(f.ctx, store.AuditAppendParams{ID: e.ID, At: now, Action: "limit.put"})
	wantErr(t, "AuditAppend with an ID taken", err, store.ErrConflict)
	got, err := f.s.AuditList(f.ctx, store.AuditListParams{})
	if err != nil || !reflect.DeepEqual(auditIDs(got), []string{e.ID}) {
		t.Errorf("after refusals: %v (%v), want only %s", auditIDs(got), err, e.ID)
	}
	if _, err := f.s.AuditDeleteBefore(f.ctx, store.AuditDeleteBeforeParams{Before: time.Now(), Limit: 0}); err == nil {
		t.Error("AuditDeleteBefore(limit 0) = nil error, want a refusal")
	}
}
