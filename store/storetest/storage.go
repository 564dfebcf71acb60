package storetest

import (
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// code records u's upload of the archive codeID of size bytes.
func (f *fixture) code(u *store.User, codeID string, size int64) *store.Code {
	f.t.Helper()
	c, err := f.s.CodePut(f.ctx, store.CodePutParams{UserID: u.ID, CodeID: codeID, Size: size, Now: f.tick()})
	if err != nil {
		f.t.Fatalf("CodePut(%s, %s): %v", u.ID, codeID, err)
	}
	return c
}

// runWithCode submits a run of u with the code u uploaded, as the server does.
func (f *fixture) runWithCode(u *store.User, codeID string, specs ...api.JobSpec) *store.Run {
	f.t.Helper()
	p := f.runParams(u, specs...)
	p.CodeID, p.RequireCode = codeID, true
	r, err := f.s.RunCreate(f.ctx, p)
	if err != nil {
		f.t.Fatalf("RunCreate: %v", err)
	}
	return r
}

// stopRun ends every job of a run (stopped, at the clock's next tick).
func (f *fixture) stopRun(r *store.Run) {
	f.t.Helper()
	if _, err := f.s.JobRequestStop(f.ctx, store.JobRequestStopParams{RunID: r.ID, Now: f.tick()}); err != nil {
		f.t.Fatalf("JobRequestStop(%s): %v", r.Name, err)
	}
}

func (f *fixture) usage(u *store.User) store.StorageUsage {
	f.t.Helper()
	got, err := f.s.UserStorageUsed(f.ctx, u.ID)
	if err != nil {
		f.t.Fatalf("UserStorageUsed: %v", err)
	}
	return *got
}

func (f *fixture) deleteRun(p store.RunDeleteParams) (*store.Deleted, error) {
	p.Now = f.tick()
	p.ClaimUntil = p.Now.Add(time.Minute)
	return f.s.RunDelete(f.ctx, p)
}

// trashKeys writes trash items as sorted "kind:store:key" words.
func trashKeys(items []*store.TrashItem) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, string(it.Kind)+":"+it.Store+":"+it.Key)
	}
	sort.Strings(out)
	return out
}

func wantTrash(t *testing.T, what string, got []*store.TrashItem, want ...string) {
	t.Helper()
	sort.Strings(want)
	if g := trashKeys(got); strings.Join(g, " ") != strings.Join(want, " ") {
		t.Errorf("%s: trash %v, want %v", what, g, want)
	}
}

var storageTests = []test{
	{"code belongs to the users who uploaded it", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		c := f.code(alice, "c1", 100)
		if c.UserID != alice.ID || c.CodeID != "c1" || c.Size != 100 || c.LastUsedAt != nil {
			t.Errorf("CodePut = %+v", c)
		}
		sameTime(t, "CreatedAt", c.CreatedAt, f.now)
		_, err := f.s.CodeGet(f.ctx, store.CodeGetParams{UserID: bob.ID, CodeID: "c1"})
		wantErr(t, "CodeGet of another user's code", err, store.ErrNotFound)
		// Bob's run with Alice's code is refused, and nothing is written.
		p := f.runParams(bob, spec("train"))
		p.CodeID, p.RequireCode = "c1", true
		_, err = f.s.RunCreate(f.ctx, p)
		wantErr(t, "RunCreate with another user's code", err, store.ErrNotFound)
		_, err = f.s.RunGet(f.ctx, store.RunGetParams{Name: p.Name})
		wantErr(t, "RunGet of the refused run", err, store.ErrNotFound)

		// An upload again refreshes the record; a run marks it used.
		created := c.CreatedAt
		c = f.code(alice, "c1", 120)
		sameTime(t, "CreatedAt after a second upload", c.CreatedAt, created)
		sameTime(t, "UploadedAt after a second upload", c.UploadedAt, f.now)
		run := f.runWithCode(alice, "c1", spec("train"))
		got, err := f.s.CodeGet(f.ctx, store.CodeGetParams{UserID: alice.ID, CodeID: "c1"})
		if err != nil {
			t.Fatalf("CodeGet: %v", err)
		}
		if got.Size != 120 || got.LastUsedAt == nil {
			t.Fatalf("CodeGet = %+v, want size 120 and used", got)
		}
		sameTime(t, "LastUsedAt", *got.LastUsedAt, run.SubmittedAt)
		// Bob uploading the same bytes gets his own record.
		f.code(bob, "c1", 120)
		f.runWithCode(bob, "c1", spec("train"))
	}},
	{"a job's end records the size of its log in the database", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		r := f.runner(u, cpuHost)
		f.run(u, spec("a"), spec("b"))
		a, b := f.claim(r), f.claim(r)
		if _, err := f.s.LogAppend(f.ctx, store.LogAppendParams{JobID: a.ID, Data: []byte("eleven byte"), At: f.tick()}); err != nil {
			t.Fatalf("LogAppend: %v", err)
		}
		// b's log lives elsewhere (files): its recorded size stays.
		if err := f.s.JobSetLogSize(f.ctx, store.JobSetLogSizeParams{ID: b.ID, Size: 500}); err != nil {
			t.Fatalf("JobSetLogSize: %v", err)
		}
		for _, j := range []*store.Job{a, b} {
			if _, err := f.s.JobSetStatus(f.ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease, Status: api.StatusDone, Now: f.tick()}); err != nil {
				t.Fatalf("JobSetStatus done: %v", err)
			}
		}
		if got := f.usage(u).Logs; got != 511 {
			t.Errorf("logs used = %d bytes, want 511: the 11 in the database and the 500 recorded", got)
		}
	}},
	{"storage used and quota", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		if u := f.usage(alice); u.Total() != 0 {
			t.Fatalf("usage of a new user = %+v", u)
		}
		f.code(alice, "c1", 100)
		f.code(bob, "c1", 100)
		f.code(bob, "c2", 5)
		run := f.runWithCode(alice, "c1", spec("a"), spec("b"))
		for i, j := range run.Jobs {
			if err := f.s.JobSetLogSize(f.ctx, store.JobSetLogSizeParams{ID: j.ID, Size: int64(1000 * (i + 1))}); err != nil {
				t.Fatalf("JobSetLogSize: %v", err)
			}
			if err := f.s.ArtifactPut(f.ctx, store.ArtifactPutParams{JobID: j.ID, Path: "out/x", Size: 7, SHA256: "00"}); err != nil {
				t.Fatalf("ArtifactPut: %v", err)
			}
		}
		err := f.s.JobSetLogSize(f.ctx, store.JobSetLogSizeParams{ID: "no-such-job", Size: 1})
		wantErr(t, "JobSetLogSize of an unknown job", err, store.ErrNotFound)
		want := store.StorageUsage{Code: 100, Logs: 3000, Artifacts: 14}
		if u := f.usage(alice); u != want {
			t.Errorf("usage of alice = %+v, want %+v", u, want)
		}
		if u := f.usage(bob); u != (store.StorageUsage{Code: 105}) {
			t.Errorf("usage of bob = %+v, want 105 bytes of code", u)
		}
		all, err := f.s.UserStorageUsedAll(f.ctx)
		if err != nil {
			t.Fatalf("UserStorageUsedAll: %v", err)
		}
		if len(all) != 2 || *all[alice.ID] != want || all[bob.ID].Total() != 105 {
			t.Errorf("UserStorageUsedAll = %v", all)
		}

		if alice.StorageQuota != nil {
			t.Errorf("a new user's quota = %d, want none (the server's default)", *alice.StorageQuota)
		}
		q := int64(50 << 30)
		if err := f.s.UserSetStorageQuota(f.ctx, store.UserSetStorageQuotaParams{UserID: alice.ID, Quota: &q}); err != nil {
			t.Fatalf("UserSetStorageQuota: %v", err)
		}
		got, err := f.s.UserGet(f.ctx, alice.ID)
		if err != nil || got.StorageQuota == nil || *got.StorageQuota != q {
			t.Fatalf("UserGet after UserSetStorageQuota = %+v, %v", got, err)
		}
		if err := f.s.UserSetStorageQuota(f.ctx, store.UserSetStorageQuotaParams{UserID: alice.ID}); err != nil {
			t.Fatalf("UserSetStorageQuota(nil): %v", err)
		}
		if got, _ := f.s.UserGet(f.ctx, alice.ID); got.StorageQuota != nil {
			t.Errorf("quota after clearing = %d, want none", *got.StorageQuota)
		}
		err = f.s.UserSetStorageQuota(f.ctx, store.UserSetStorageQuotaParams{UserID: "nobody", Quota: &q})
		wantErr(t, "UserSetStorageQuota of an unknown user", err, store.ErrNotFound)
		neg := int64(-1)
		if err := f.s.UserSetStorageQuota(f.ctx, store.UserSetStorageQuotaParams{UserID: alice.ID, Quota: &neg}); err == nil {
			t.Error("a negative quota was accepted")
		}
	}},
	{"delete a run", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		f.code(alice, "c1", 100)
		f.code(bob, "c1", 100)
		run := f.runWithCode(alice, "c1", spec("a"), spec("b", "a"))
		for _, j := range run.Jobs {
			if err := f.s.ArtifactPut(f.ctx, store.ArtifactPutParams{JobID: j.ID, Path: "x", Size: 7, SHA256: "00"}); err != nil {
				t.Fatal(err)
			}
		}
		_, err := f.deleteRun(store.RunDeleteParams{Name: run.Name, UserID: alice.ID})
		wantErr(t, "RunDelete of a pending run", err, store.ErrRunUnfinished)
		wantErr(t, "RunDelete of a pending run", err, store.ErrConflict)
		f.stopRun(run)
		_, err = f.deleteRun(store.RunDeleteParams{Name: run.Name, UserID: bob.ID})
		wantErr(t, "RunDelete of another user's run", err, store.ErrNotFound)
		f.tag(alice, "keep", run, false)
		_, err = f.deleteRun(store.RunDeleteParams{Name: run.Name, UserID: alice.ID})
		wantErr(t, "RunDelete of a tagged run", err, store.ErrRunTagged)
		if _, err := f.s.RunGet(f.ctx, store.RunGetParams{Name: run.Name}); err != nil {
			t.Fatalf("the refused run is gone: %v", err)
		}

		d, err := f.deleteRun(store.RunDeleteParams{Name: run.Name, UserID: alice.ID, Force: true})
		if err != nil {
			t.Fatalf("RunDelete -f: %v", err)
		}
		if len(d.Runs) != 1 || d.Runs[0].Name != run.Name || len(d.Runs[0].Jobs) != 2 {
			t.Errorf("deleted runs = %+v", d.Runs)
		}
		if len(d.Codes) != 1 || d.Codes[0].UserID != alice.ID {
			t.Errorf("deleted code = %+v, want alice's c1", d.Codes)
		}
		// Bob still has c1: its bytes stay.
		a, b := run.Jobs[0].ID, run.Jobs[1].ID
		wantTrash(t, "RunDelete", d.Trash, "log::"+a, "log::"+b, "artifacts::"+a, "artifacts::"+b)
		_, err = f.s.RunGet(f.ctx, store.RunGetParams{Name: run.Name})
		wantErr(t, "RunGet of a deleted run", err, store.ErrNotFound)
		_, err = f.s.JobGet(f.ctx, a)
		wantErr(t, "JobGet of a deleted run's job", err, store.ErrNotFound)
		_, err = f.s.TagGet(f.ctx, store.TagGetParams{UserID: alice.ID, Name: "keep"})
		wantErr(t, "TagGet of a deleted run's tag", err, store.ErrNotFound)
		if u := f.usage(alice); u.Total() != 0 {
			t.Errorf("alice's usage after the delete = %+v, want none", u)
		}
		_, err = f.deleteRun(store.RunDeleteParams{Name: run.Name})
		wantErr(t, "RunDelete again", err, store.ErrNotFound)

		// Bob's runs: the code goes with the last run using it, and its
		// bytes with the last user holding it.
		r1 := f.runWithCode(bob, "c1", spec("a"))
		r2 := f.runWithCode(bob, "c1", spec("a"))
		f.stopRun(r1)
		f.stopRun(r2)
		d, err = f.deleteRun(store.RunDeleteParams{Name: r1.Name})
		if err != nil {
			t.Fatalf("RunDelete by an admin: %v", err)
		}
		if len(d.Codes) != 0 {
			t.Errorf("code deleted while another run uses it: %+v", d.Codes)
		}
		d, err = f.deleteRun(store.RunDeleteParams{Name: r2.Name, UserID: bob.ID})
		if err != nil {
			t.Fatal(err)
		}
		wantTrash(t, "RunDelete of the last run", d.Trash, "log::"+r2.Jobs[0].ID, "artifacts::"+r2.Jobs[0].ID, "code::c1")
		_, err = f.s.CodeGet(f.ctx, store.CodeGetParams{UserID: bob.ID, CodeID: "c1"})
		wantErr(t, "CodeGet of deleted code", err, store.ErrNotFound)
	}},
	{"delete keeps code uploaded again", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		f.code(u, "c1", 10)
		run := f.runWithCode(u, "c1", spec("a"))
		f.stopRun(run)
		f.code(u, "c1", 10) // for the next run, not yet submitted
		d, err := f.deleteRun(store.RunDeleteParams{Name: run.Name})
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Codes) != 0 {
			t.Errorf("deleted code uploaded since: %+v", d.Codes)
		}
		f.runWithCode(u, "c1", spec("a"))
	}},
	{"retention deletes old finished untagged runs in batches", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		f.code(u, "c1", 10)
		var old []*store.Run
		for range 3 {
			r := f.runWithCode(u, "c1", spec("a"))
			f.stopRun(r)
			old = append(old, r)
		}
		tagged := f.runWithCode(u, "c1", spec("a"))
		f.stopRun(tagged)
		f.tag(u, "keep", tagged, false)
		pending := f.runWithCode(u, "c1", spec("a"))
		cutoff := f.tick()
		recent := f.runWithCode(u, "c1", spec("a"))
		f.stopRun(recent)
		del := func(limit int) *store.Deleted {
			t.Helper()
			now := f.tick()
			d, err := f.s.RunDeleteFinishedBefore(f.ctx, store.RunDeleteFinishedBeforeParams{
				FinishedBefore: cutoff, Limit: limit, Now: now, ClaimUntil: now.Add(time.Minute)})
			if err != nil {
				t.Fatalf("RunDeleteFinishedBefore: %v", err)
			}
			return d
		}
		d := del(2)
		if len(d.Runs) != 2 || d.Runs[0].ID != old[0].ID || d.Runs[1].ID != old[1].ID {
			t.Fatalf("first batch = %d runs, want the 2 oldest", len(d.Runs))
		}
		d = del(2)
		if len(d.Runs) != 1 || d.Runs[0].ID != old[2].ID {
			t.Fatalf("second batch = %d runs, want the third old one", len(d.Runs))
		}
		if d = del(2); len(d.Runs) != 0 {
			t.Fatalf("third batch deleted %s: tagged, unfinished and recent runs stay", d.Runs[0].Name)
		}
		for _, r := range []*store.Run{tagged, pending, recent} {
			if _, err := f.s.RunGet(f.ctx, store.RunGetParams{Name: r.Name}); err != nil {
				t.Errorf("run %s: %v", r.Name, err)
			}
		}
		_, err := f.s.RunDeleteFinishedBefore(f.ctx, store.RunDeleteFinishedBeforeParams{FinishedBefore: cutoff})
		if err == nil {
			t.Error("RunDeleteFinishedBefore without a limit was accepted")
		}
	}},
	{"unused code is deleted", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		f.code(alice, "old", 10)
		f.code(bob, "old", 10)
		f.code(alice, "used", 10)
		f.runWithCode(alice, "used", spec("a"))
		cutoff := f.tick()
		f.code(alice, "new", 10)
		del := func() *store.Deleted {
			t.Helper()
			now := f.tick()
			d, err := f.s.CodeDeleteUnused(f.ctx, store.CodeDeleteUnusedParams{UploadedBefore: cutoff, Limit: 100, Now: now, ClaimUntil: now.Add(time.Minute)})
			if err != nil {
				t.Fatalf("CodeDeleteUnused: %v", err)
			}
			return d
		}
		d := del()
		if len(d.Codes) != 2 {
			t.Fatalf("deleted %d code records, want alice's and bob's old", len(d.Codes))
		}
		wantTrash(t, "CodeDeleteUnused", d.Trash, "code::old")
		for _, c := range []struct {
			u    *store.User
			id   string
			gone bool
		}{{alice, "old", true}, {bob, "old", true}, {alice, "used", false}, {alice, "new", false}} {
			_, err := f.s.CodeGet(f.ctx, store.CodeGetParams{UserID: c.u.ID, CodeID: c.id})
			if gone := errors.Is(err, store.ErrNotFound); gone != c.gone {
				t.Errorf("code %s of %s: gone %v, want %v (%v)", c.id, c.u.ID, gone, c.gone, err)
			}
		}
		if d = del(); len(d.Codes) != 0 {
			t.Errorf("second pass deleted %+v", d.Codes)
		}
	}},
	{"trash", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		f.code(u, "c1", 10)
		run := f.runWithCode(u, "c1", spec("a"))
		f.stopRun(run)
		d, err := f.deleteRun(store.RunDeleteParams{Name: run.Name})
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Trash) != 3 {
			t.Fatalf("trash = %v", trashKeys(d.Trash))
		}
		// While its bytes are in the trash, the archive cannot be recorded again.
		_, err = f.s.CodePut(f.ctx, store.CodePutParams{UserID: u.ID, CodeID: "c1", Size: 10, Now: f.tick()})
		wantErr(t, "CodePut of trashed code", err, store.ErrConflict)
		claim := func(now time.Time) []*store.TrashItem {
			t.Helper()
			items, err := f.s.TrashClaim(f.ctx, store.TrashClaimParams{Now: now, Until: now.Add(time.Minute), Limit: 10})
			if err != nil {
				t.Fatalf("TrashClaim: %v", err)
			}
			return items
		}
		// The deleter's claim holds for a minute; then another may take them.
		if items := claim(f.tick()); len(items) != 0 {
			t.Fatalf("claimed %v while the deleter's claim holds", trashKeys(items))
		}
		later := f.now.Add(2 * time.Minute)
		items := claim(later)
		wantTrash(t, "TrashClaim", items, trashKeys(d.Trash)...)
		if again := claim(later); len(again) != 0 {
			t.Fatalf("claimed twice: %v", trashKeys(again))
		}
		if err := f.s.TrashDelete(f.ctx, items); err != nil {
			t.Fatalf("TrashDelete: %v", err)
		}
		if left := claim(later.Add(time.Hour)); len(left) != 0 {
			t.Fatalf("trash left after TrashDelete: %v", trashKeys(left))
		}
		if _, err := f.s.CodePut(f.ctx, store.CodePutParams{UserID: u.ID, CodeID: "c1", Size: 10, Now: f.tick()}); err != nil {
			t.Fatalf("CodePut after its bytes are removed: %v", err)
		}
	}},
}
