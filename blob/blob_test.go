package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/blob"
)

// setup returns a Local store under a fresh directory, and that directory.
func setup(t *testing.T) (*blob.Local, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "blobs")
	l, err := blob.NewLocal(dir)
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	return l, dir
}

func put(t *testing.T, l *blob.Local, key, content string) {
	t.Helper()
	n, err := l.Put(context.Background(), key, strings.NewReader(content))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if n != int64(len(content)) {
		t.Fatalf("Put(%q) = %d bytes, want %d", key, n, len(content))
	}
}

func read(t *testing.T, l *blob.Local, key string, offset int64) (string, int64) {
	t.Helper()
	rc, n, err := l.Open(context.Background(), key, offset)
	if err != nil {
		t.Fatalf("Open(%q, %d): %v", key, offset, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return string(b), n
}

// files lists the regular files under dir, relative and slash-separated.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPutOpenStat(t *testing.T) {
	t.Parallel()
	l, _ := setup(t)
	ctx := context.Background()
	put(t, l, "artifacts/job1/model/weights.bin", "0123456789")

	for _, tc := range []struct {
		offset   int64
		want     string
		wantSize int64
	}{
		{0, "0123456789", 10},
		{4, "456789", 6},
		{10, "", 0},
		{99, "", 0}, // past the end: nothing follows
	} {
		got, n := read(t, l, "artifacts/job1/model/weights.bin", tc.offset)
		if got != tc.want || n != tc.wantSize {
			t.Errorf("Open(offset %d) = %q, %d bytes; want %q, %d", tc.offset, got, n, tc.want, tc.wantSize)
		}
	}

	obj, err := l.Stat(ctx, "artifacts/job1/model/weights.bin")
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if obj.Key != "artifacts/job1/model/weights.bin" || obj.Size != 10 {
		t.Errorf("Stat = %+v, want the key and size 10", obj)
	}

	// Put replaces.
	put(t, l, "artifacts/job1/model/weights.bin", "new")
	if got, _ := read(t, l, "artifacts/job1/model/weights.bin", 0); got != "new" {
		t.Errorf("after a second Put, content = %q, want %q", got, "new")
	}

	// An empty object is an object.
	put(t, l, "empty", "")
	if obj, err := l.Stat(ctx, "empty"); err != nil || obj.Size != 0 {
		t.Errorf("Stat(empty) = %+v, %v; want size 0", obj, err)
	}
}

func TestMissingObjects(t *testing.T) {
	t.Parallel()
	l, _ := setup(t)
	ctx := context.Background()
	put(t, l, "dir/file", "x")
	for _, key := range []string{"nothing", "dir/other", "dir"} { // a directory is not an object
		if _, err := l.Stat(ctx, key); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat(%q) = %v, want ErrNotFound", key, err)
		}
		if rc, _, err := l.Open(ctx, key, 0); !errors.Is(err, blob.ErrNotFound) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("Open(%q) = %v, want ErrNotFound", key, err)
		}
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	l, _ := setup(t)
	ctx := context.Background()
	for _, k := range []string{"artifacts/j1/b.txt", "artifacts/j1/a/deep/c.txt", "artifacts/j10/x", "artifacts/j2/y", "code/abc.tar.gz"} {
		put(t, l, k, k)
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"artifacts/j1/", []string{"artifacts/j1/a/deep/c.txt", "artifacts/j1/b.txt"}},
		{"artifacts/j1", []string{"artifacts/j1/a/deep/c.txt", "artifacts/j1/b.txt", "artifacts/j10/x"}},
		{"artifacts/", []string{"artifacts/j1/a/deep/c.txt", "artifacts/j1/b.txt", "artifacts/j10/x", "artifacts/j2/y"}},
		{"", []string{"artifacts/j1/a/deep/c.txt", "artifacts/j1/b.txt", "artifacts/j10/x", "artifacts/j2/y", "code/abc.tar.gz"}},
		{"artifacts/j3/", nil},
		{"nothing/here/", nil},
	} {
		objs, err := l.List(ctx, tc.prefix)
		if err != nil {
			t.Errorf("List(%q): %v", tc.prefix, err)
			continue
		}
		var got []string
		for _, o := range objs {
			got = append(got, o.Key)
			if o.Size != int64(len(o.Key)) {
				t.Errorf("List(%q): %s has size %d, want %d", tc.prefix, o.Key, o.Size, len(o.Key))
			}
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
	if _, err := l.List(ctx, "../"); err == nil {
		t.Error("List(\"../\") succeeded, want an error")
	}
}

func TestValidKey(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]bool{
		"a":                 true,
		"a/b/c.txt":         true,
		"code/x.tar.gz":     true,
		"..a/b..":           true, // dots inside names are fine
		"":                  false,
		"/etc/passwd":       false,
		"../x":              false,
		"a/../../x":         false,
		"a/..":              false,
		"./a":               false,
		"a/./b":             false,
		".":                 false,
		"..":                false,
		"a//b":              false,
		"a/":                false,
		"a\\..\\b":          false,
		"a\x00b":            false,
		"artifacts/../code": false,
	} {
		if got := blob.ValidKey(key); got != want {
			t.Errorf("ValidKey(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestInvalidKeysRefused(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "store", "blobs")
	l, err := blob.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	abs := filepath.ToSlash(filepath.Join(root, "abs"))
	for _, key := range []string{"../escape", "../../escape", "a/../../escape", abs, "/escape", "", "a//b", "./x", "a/"} {
		if _, err := l.Put(ctx, key, strings.NewReader("pwned")); err == nil {
			t.Errorf("Put(%q) succeeded, want it refused", key)
		}
		if _, err := l.Stat(ctx, key); err == nil || errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat(%q) = %v, want an invalid-key error", key, err)
		}
		if rc, _, err := l.Open(ctx, key, 0); err == nil {
			rc.Close()
			t.Errorf("Open(%q) succeeded, want it refused", key)
		}
	}
	if got := files(t, root); len(got) != 0 {
		t.Errorf("refused Puts left files behind: %q", got)
	}
}

// failingReader yields some bytes, then fails.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestFailedPutLeavesNothing(t *testing.T) {
	t.Parallel()
	l, dir := setup(t)
	ctx := context.Background()
	boom := errors.New("connection reset")

	// A new key: no object appears.
	_, err := l.Put(ctx, "artifacts/j/new.bin", &failingReader{data: bytes.Repeat([]byte("x"), 100_000), err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("Put with a failing reader = %v, want it to wrap %v", err, boom)
	}
	if _, err := l.Stat(ctx, "artifacts/j/new.bin"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("after a failed Put, Stat = %v, want ErrNotFound", err)
	}
	// An existing key: the old object stays whole.
	put(t, l, "artifacts/j/old.bin", "version 1")
	if _, err := l.Put(ctx, "artifacts/j/old.bin", &failingReader{data: []byte("version 2, cut sh"), err: boom}); err == nil {
		t.Fatal("Put with a failing reader succeeded")
	}
	if got, _ := read(t, l, "artifacts/j/old.bin", 0); got != "version 1" {
		t.Errorf("after a failed replacing Put, content = %q, want %q", got, "version 1")
	}
	// A cancelled context fails the Put the same way.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.Put(cctx, "artifacts/j/cancelled.bin", strings.NewReader("data")); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context = %v, want context.Canceled", err)
	}
	objs, err := l.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Key != "artifacts/j/old.bin" {
		t.Errorf("List after failed Puts = %+v, want only artifacts/j/old.bin", objs)
	}
	if got := files(t, dir); len(got) != 1 || got[0] != "artifacts/j/old.bin" {
		t.Errorf("files on disk after failed Puts = %q, want only artifacts/j/old.bin (no temporary files)", got)
	}
}

// gatedReader yields its first part, then blocks until gate is closed.
type gatedReader struct {
	first, rest []byte
	reached     chan struct{}
	gate        chan struct{}
}

func (r *gatedReader) Read(p []byte) (int, error) {
	if len(r.first) > 0 {
		n := copy(p, r.first)
		r.first = r.first[n:]
		return n, nil
	}
	if r.reached != nil {
		close(r.reached)
		r.reached = nil
	}
	<-r.gate
	if len(r.rest) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

func TestPutInProgressIsInvisible(t *testing.T) {
	t.Parallel()
	l, _ := setup(t)
	ctx := context.Background()
	put(t, l, "k", "old")
	r := &gatedReader{first: []byte("half of "), rest: []byte("the new content"), reached: make(chan struct{}), gate: make(chan struct{})}
	reached := r.reached
	done := make(chan error, 1)
	go func() {
		_, err := l.Put(ctx, "k", r)
		done <- err
	}()
	select {
	case <-reached:
	case <-time.After(10 * time.Second):
		t.Fatal("Put did not start reading")
	}
	// Half written: readers still see the old object, and List no partial one.
	if got, _ := read(t, l, "k", 0); got != "old" {
		t.Errorf("during a Put, content = %q, want the old %q", got, "old")
	}
	objs, err := l.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Key != "k" || objs[0].Size != 3 {
		t.Errorf("during a Put, List = %+v, want only k of 3 bytes", objs)
	}
	close(r.gate)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Put did not finish")
	}
	if got, _ := read(t, l, "k", 0); got != "half of the new content" {
		t.Errorf("after the Put, content = %q", got)
	}
}

func TestNewLocalCreatesDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a", "b", "c")
	if _, err := blob.NewLocal(dir); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Errorf("NewLocal did not create %s: %v", dir, err)
	}
}
