package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstackai/dstack/blob"
	"github.com/dstackai/dstack/blob/blobtest"
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

func TestLocalConformance(t *testing.T) {
	t.Parallel()
	blobtest.Run(t, func(t *testing.T) blob.Store {
		l, _ := setup(t)
		return l
	})
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

func TestValidPrefix(t *testing.T) {
	t.Parallel()
	for prefix, want := range map[string]bool{
		"":              true,
		"a":             true,
		"artifacts/":    true,
		"artifacts/j1":  true,
		"artifacts/j1/": true,
		"/":             true, // matches nothing, harmlessly
		"../":           false,
		"a/../b/":       false,
		"a//":           false,
		"./x":           false,
	} {
		if got := blob.ValidPrefix(prefix); got != want {
			t.Errorf("ValidPrefix(%q) = %v, want %v", prefix, got, want)
		}
	}
}

// TestInvalidKeysStayInside: refused keys write nothing, in the store's
// directory or outside it.
func TestInvalidKeysStayInside(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "store", "blobs")
	l, err := blob.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	abs := filepath.ToSlash(filepath.Join(root, "abs"))
	for _, key := range []string{"../escape", "../../escape", "a/../../escape", abs, "/escape"} {
		if _, err := l.Put(ctx, key, strings.NewReader("pwned")); err == nil {
			t.Errorf("Put(%q) succeeded, want it refused", key)
		}
	}
	if got := files(t, root); len(got) != 0 {
		t.Errorf("refused Puts left files behind: %q", got)
	}
}

// TestFailedPutLeavesNoTempFiles: failed Puts clean up their temporary files.
func TestFailedPutLeavesNoTempFiles(t *testing.T) {
	t.Parallel()
	l, dir := setup(t)
	ctx := context.Background()
	boom := errors.New("connection reset")
	blobtest.MustPut(t, l, "artifacts/j/old.bin", "version 1")
	for _, key := range []string{"artifacts/j/new.bin", "artifacts/j/old.bin"} {
		if _, err := l.Put(ctx, key, &blobtest.FailingReader{Data: bytes.Repeat([]byte("x"), 100_000), Err: boom}); !errors.Is(err, boom) {
			t.Fatalf("Put(%q) with a failing reader = %v, want %v", key, err, boom)
		}
	}
	if got := files(t, dir); len(got) != 1 || got[0] != "artifacts/j/old.bin" {
		t.Errorf("files on disk after failed Puts = %q, want only artifacts/j/old.bin (no temporary files)", got)
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

// TestLocalConflictingKeys: a key through an existing object, or over a
// directory of objects, fails with ErrConflict and keeps what was there; a
// name longer than the file system allows fails with ErrInvalidKey.
func TestLocalConflictingKeys(t *testing.T) {
	t.Parallel()
	l, _ := setup(t)
	ctx := context.Background()
	blobtest.MustPut(t, l, "a", "file a")
	blobtest.MustPut(t, l, "d/b", "file d/b")
	for _, key := range []string{"a/b", "a/b/c", "d"} {
		if _, err := l.Put(ctx, key, strings.NewReader("x")); !errors.Is(err, blob.ErrConflict) {
			t.Errorf("Put(%q) = %v, want blob.ErrConflict", key, err)
		}
	}
	if _, err := l.Put(ctx, strings.Repeat("n", 256), strings.NewReader("x")); !errors.Is(err, blob.ErrInvalidKey) {
		t.Errorf("Put(256-byte name) = %v, want blob.ErrInvalidKey", err)
	}
	if got := blobtest.Keys(t, l, ""); strings.Join(got, ",") != "a,d/b" {
		t.Errorf("after refused Puts, keys = %q, want a and d/b", got)
	}
	if got, _ := blobtest.MustRead(t, l, "a", 0); got != "file a" {
		t.Errorf("a = %q after refused Puts", got)
	}
}

// TestLocalDeleteRemovesEmptyDirectories: deleting a job's artifacts
// leaves no directory behind, but keeps the store's own and those that
// still hold objects.
func TestLocalDeleteRemovesEmptyDirectories(t *testing.T) {
	t.Parallel()
	l, dir := setup(t)
	ctx := context.Background()
	blobtest.MustPut(t, l, "artifacts/j1/a/deep/c.txt", "c")
	blobtest.MustPut(t, l, "artifacts/j2/x", "x")
	if _, err := blob.DeletePrefix(ctx, l, "artifacts/j1/"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "artifacts", "j1")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("artifacts/j1 after its last object went: %v, want gone", err)
	}
	if err := l.Delete(ctx, "artifacts/j2/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "artifacts")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("artifacts after its last object went: %v, want gone", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("the store's directory: %v, want kept", err)
	}
}
