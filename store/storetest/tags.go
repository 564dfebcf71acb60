package storetest

import (
	"errors"
	"sync"
	"testing"

	"github.com/dstackai/dstack/store"
)

// tag puts the tag name on run for u, failing the test on error.
func (f *fixture) tag(u *store.User, name string, run *store.Run, force bool) *store.TagPutResult {
	f.t.Helper()
	res, err := f.tryTag(u, name, run, force)
	if err != nil {
		f.t.Fatalf("TagPut(%s -> %s): %v", name, run.Name, err)
	}
	return res
}

func (f *fixture) tryTag(u *store.User, name string, run *store.Run, force bool) (*store.TagPutResult, error) {
	return f.s.TagPut(f.ctx, store.TagPutParams{UserID: u.ID, Name: name, RunID: run.ID, Force: force, Now: f.tick()})
}

// wantTag asserts a tag's fields.
func wantTag(t *testing.T, what string, got *store.Tag, u *store.User, name string, run *store.Run) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: no tag", what)
	}
	if got.UserID != u.ID || got.Name != name || got.RunID != run.ID || got.RunName != run.Name || got.Workflow != run.Workflow {
		t.Errorf("%s = %+v, want %s of user %s on run %s (%s, workflow %s)", what, got, name, u.ID, run.ID, run.Name, run.Workflow)
	}
}

var tagTests = []test{
	{"put, get, list, delete", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		run := f.run(u, spec("prepare"), spec("train", "prepare"))
		res := f.tag(u, "data", run, false)
		at := f.now
		if !res.Created || res.Previous != nil {
			t.Errorf("first TagPut: created %v, previous %+v; want created, no previous", res.Created, res.Previous)
		}
		wantTag(t, "TagPut", res.Tag, u, "data", run)
		got, err := f.s.TagGet(f.ctx, store.TagGetParams{UserID: u.ID, Name: "data"})
		if err != nil {
			t.Fatalf("TagGet: %v", err)
		}
		wantTag(t, "TagGet", got, u, "data", run)
		sameTime(t, "CreatedAt", got.CreatedAt, at)
		f.tag(u, "another", run, false)
		list, err := f.s.TagList(f.ctx, store.TagListParams{UserID: u.ID})
		if err != nil {
			t.Fatalf("TagList: %v", err)
		}
		if len(list) != 2 || list[0].Name != "another" || list[1].Name != "data" {
			t.Fatalf("TagList = %+v, want another and data, by name", list)
		}
		del, err := f.s.TagDelete(f.ctx, store.TagDeleteParams{UserID: u.ID, Name: "data"})
		if err != nil {
			t.Fatalf("TagDelete: %v", err)
		}
		wantTag(t, "TagDelete", del, u, "data", run)
		_, err = f.s.TagGet(f.ctx, store.TagGetParams{UserID: u.ID, Name: "data"})
		wantErr(t, "TagGet after TagDelete", err, store.ErrNotFound)
		_, err = f.s.TagDelete(f.ctx, store.TagDeleteParams{UserID: u.ID, Name: "data"})
		wantErr(t, "TagDelete twice", err, store.ErrNotFound)
		if _, err := f.s.RunGet(f.ctx, store.RunGetParams{Name: run.Name}); err != nil {
			t.Errorf("the run is gone with its tag: %v", err)
		}
	}},
	{"same run again changes nothing", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		run := f.run(u, spec("a"))
		first := f.tag(u, "t", run, false)
		again := f.tag(u, "t", run, false)
		if again.Created || again.Previous != nil {
			t.Errorf("TagPut of the same run: created %v, previous %+v; want neither", again.Created, again.Previous)
		}
		sameTime(t, "CreatedAt after the same TagPut", again.Tag.CreatedAt, first.Tag.CreatedAt)
	}},
	{"another run needs force", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		old, newer := f.run(u, spec("a")), f.run(u, spec("a"))
		f.tag(u, "t", old, false)
		_, err := f.tryTag(u, "t", newer, false)
		wantErr(t, "TagPut of another run without force", err, store.ErrConflict)
		got, _ := f.s.TagGet(f.ctx, store.TagGetParams{UserID: u.ID, Name: "t"})
		wantTag(t, "the tag after a refused move", got, u, "t", old)
		res := f.tag(u, "t", newer, true)
		if res.Created {
			t.Error("a moved tag is reported created")
		}
		wantTag(t, "moved tag", res.Tag, u, "t", newer)
		wantTag(t, "previous tag", res.Previous, u, "t", old)
		got, _ = f.s.TagGet(f.ctx, store.TagGetParams{UserID: u.ID, Name: "t"})
		wantTag(t, "TagGet after the move", got, u, "t", newer)
		sameTime(t, "CreatedAt after the move", got.CreatedAt, res.Tag.CreatedAt)
	}},
	{"tags are per user", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		aliceRun, bobRun := f.run(alice, spec("a")), f.run(bob, spec("a"))
		f.tag(alice, "t", aliceRun, false)
		// The same name is another tag for bob.
		f.tag(bob, "t", bobRun, false)
		got, _ := f.s.TagGet(f.ctx, store.TagGetParams{UserID: alice.ID, Name: "t"})
		wantTag(t, "alice's tag", got, alice, "t", aliceRun)
		// Nobody tags another user's run, even by force.
		_, err := f.tryTag(bob, "mine", aliceRun, true)
		wantErr(t, "TagPut of another user's run", err, store.ErrNotFound)
		_, err = f.s.TagGet(f.ctx, store.TagGetParams{UserID: bob.ID, Name: "mine"})
		wantErr(t, "TagGet after a refused TagPut", err, store.ErrNotFound)
		list, err := f.s.TagList(f.ctx, store.TagListParams{UserID: bob.ID})
		if err != nil || len(list) != 1 || list[0].RunID != bobRun.ID {
			t.Errorf("bob's TagList = %+v, %v; want only his t", list, err)
		}
		_, err = f.s.TagDelete(f.ctx, store.TagDeleteParams{UserID: alice.ID, Name: "mine"})
		wantErr(t, "TagDelete of a tag alice does not have", err, store.ErrNotFound)
		if list, err := f.s.TagList(f.ctx, store.TagListParams{UserID: f.user().ID}); err != nil || len(list) != 0 {
			t.Errorf("TagList of a user without tags = %+v, %v; want none", list, err)
		}
	}},
	{"concurrent creators: one wins", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		const n = 6
		runs := make([]*store.Run, n)
		for i := range runs {
			runs[i] = f.run(u, spec("a"))
		}
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			created int
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := f.tryTag(u, "race", runs[i], false)
				switch {
				case errors.Is(err, store.ErrConflict):
				case err != nil:
					t.Errorf("TagPut: %v", err)
				case res.Created:
					mu.Lock()
					created++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if created != 1 {
			t.Fatalf("%d TagPut calls created the tag, want exactly 1", created)
		}
	}},
}
