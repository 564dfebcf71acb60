package runner

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A sync sends only what changed, leaves a file being written for a later
// sync (keeping the version an earlier one took), and a restore places the
// latest complete checkpoint back.
func TestCheckpointSync(t *testing.T) {
	t.Parallel()
	_, j := checkpointJobFixture(t)
	ctx := context.Background()
	dir := filepath.Join(j.dir.Path(), "ckpt")
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	write("epoch-01", "one")
	write("state", "state 1")
	res, err := j.ckpt.sync(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.checkpoint == nil || res.checkpoint.Seq != 1 || res.files != 2 || res.sent != 10 {
		t.Fatalf("first sync %+v", res)
	}
	// Nothing changed: no checkpoint, nothing sent.
	if res, err = j.ckpt.sync(ctx, false); err != nil || !res.unchanged || res.sent != 0 {
		t.Fatalf("unchanged sync %+v, %v", res, err)
	}
	// A new file is sent alone; one being written between the two looks
	// is left for later, its earlier version listed.
	write("epoch-02", "two")
	j.ckpt.mu.Lock()
	j.ckpt.betweenLooks = func() { write("state", "state 2 half-") }
	j.ckpt.mu.Unlock()
	res, err = j.ckpt.sync(ctx, false)
	j.ckpt.mu.Lock()
	j.ckpt.betweenLooks = nil
	j.ckpt.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if res.checkpoint == nil || res.checkpoint.Seq != 2 || res.sent != 3 || res.deferred != 1 || res.files != 3 {
		t.Fatalf("sync with a file being written %+v", res)
	}
	j.ckpt.mu.Lock()
	got := j.ckpt.listed["ckpt/state"].Size
	j.ckpt.mu.Unlock()
	if got != 7 {
		t.Fatalf("the file being written is listed with %d bytes, want its earlier 7", got)
	}
	// Once stable, it is taken.
	if res, err = j.ckpt.sync(ctx, false); err != nil || res.sent != int64(len("state 2 half-")) || res.deferred != 0 {
		t.Fatalf("sync once stable %+v, %v", res, err)
	}
	// A fresh attempt's directory gets the checkpoint back, modes too.
	for _, n := range []string{"epoch-01", "epoch-02", "state"} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	j.ckpt.forget()
	cp, err := j.ckpt.restore(ctx)
	if err != nil || cp == nil || cp.Seq != 3 {
		t.Fatalf("restore = %+v, %v", cp, err)
	}
	for n, want := range map[string]string{"epoch-01": "one", "epoch-02": "two", "state": "state 2 half-"} {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || string(b) != want {
			t.Fatalf("restored %s = %q, %v; want %q", n, b, err, want)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "state")); err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("restored mode %v, %v", st.Mode(), err)
	}
	// What was restored is not sent again.
	if res, err = j.ckpt.sync(ctx, false); err != nil || !res.unchanged || res.sent != 0 {
		t.Fatalf("sync after restore %+v, %v", res, err)
	}
}
