// Package blobtest is the conformance suite for blob.Store: every
// implementation (blob.Local, s3blob.Store) runs the same tests, so that the
// server may use any of them without knowing which.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/blob"
)

// Run runs the suite. open returns a new, empty store each time it is
// called; each test calls it once and may run in parallel with the others.
func Run(t *testing.T, open func(t *testing.T) blob.Store) {
	t.Helper()
	for _, tc := range []struct {
		name string
		test func(*testing.T, blob.Store)
	}{
		{"PutOpenStat", testPutOpenStat},
		{"MissingObjects", testMissingObjects},
		{"List", testList},
		{"ListOrder", testListOrder},
		{"InvalidKeysRefused", testInvalidKeysRefused},
		{"LongNames", testLongNames},
		{"FailedPutLeavesNothing", testFailedPutLeavesNothing},
		{"PutInProgressIsInvisible", testPutInProgressIsInvisible},
		{"LargeObjectResume", testLargeObjectResume},
		{"ConcurrentPuts", testConcurrentPuts},
		{"Delete", testDelete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.test(t, open(t))
		})
	}
}

// MustPut stores content under key and checks the byte count Put reports.
func MustPut(t testing.TB, s blob.Store, key, content string) {
	t.Helper()
	n, err := s.Put(context.Background(), key, strings.NewReader(content))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if n != int64(len(content)) {
		t.Fatalf("Put(%q) = %d bytes, want %d", key, n, len(content))
	}
}

// MustRead reads key from offset on; it returns the bytes and the count
// Open announced.
func MustRead(t testing.TB, s blob.Store, key string, offset int64) (string, int64) {
	t.Helper()
	rc, n, err := s.Open(context.Background(), key, offset)
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

// Keys returns the keys List reports under prefix.
func Keys(t testing.TB, s blob.Store, prefix string) []string {
	t.Helper()
	objs, err := s.List(context.Background(), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

func testPutOpenStat(t *testing.T, s blob.Store) {
	ctx := context.Background()
	const key = "artifacts/job1/model/weights.bin"
	MustPut(t, s, key, "0123456789")
	for _, tc := range []struct {
		offset   int64
		want     string
		wantSize int64
	}{
		{0, "0123456789", 10},
		{4, "456789", 6},
		{9, "9", 1},
		{10, "", 0},
		{99, "", 0}, // past the end: nothing follows
	} {
		got, n := MustRead(t, s, key, tc.offset)
		if got != tc.want || n != tc.wantSize {
			t.Errorf("Open(offset %d) = %q, %d bytes; want %q, %d", tc.offset, got, n, tc.want, tc.wantSize)
		}
	}
	obj, err := s.Stat(ctx, key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if obj.Key != key || obj.Size != 10 {
		t.Errorf("Stat = %+v, want the key and size 10", obj)
	}

	// Put replaces.
	MustPut(t, s, key, "new")
	if got, _ := MustRead(t, s, key, 0); got != "new" {
		t.Errorf("after a second Put, content = %q, want %q", got, "new")
	}
	// An empty object is an object, and reading past its end yields nothing.
	MustPut(t, s, "empty", "")
	if obj, err := s.Stat(ctx, "empty"); err != nil || obj.Size != 0 {
		t.Errorf("Stat(empty) = %+v, %v; want size 0", obj, err)
	}
	for _, off := range []int64{0, 1} {
		if got, n := MustRead(t, s, "empty", off); got != "" || n != 0 {
			t.Errorf("Open(empty, %d) = %q, %d; want nothing", off, got, n)
		}
	}
}

func testMissingObjects(t *testing.T, s blob.Store) {
	ctx := context.Background()
	MustPut(t, s, "dir/file", "x")
	for _, key := range []string{"nothing", "dir/other", "dir"} { // a directory is not an object
		if _, err := s.Stat(ctx, key); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat(%q) = %v, want ErrNotFound", key, err)
		}
		for _, off := range []int64{0, 5} {
			if rc, _, err := s.Open(ctx, key, off); !errors.Is(err, blob.ErrNotFound) {
				if rc != nil {
					rc.Close()
				}
				t.Errorf("Open(%q, %d) = %v, want ErrNotFound", key, off, err)
			}
		}
	}
}

func testList(t *testing.T, s blob.Store) {
	ctx := context.Background()
	for _, k := range []string{"artifacts/j1/b.txt", "artifacts/j1/a/deep/c.txt", "artifacts/j10/x", "artifacts/j2/y", "code/abc.tar.gz"} {
		MustPut(t, s, k, k)
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
		objs, err := s.List(ctx, tc.prefix)
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
	if _, err := s.List(ctx, "../"); err == nil {
		t.Error(`List("../") succeeded, want an error`)
	}
}

// testListOrder checks byte order ("-" < "/" < "0") over more keys than
// fit one small page.
func testListOrder(t *testing.T, s blob.Store) {
	var want []string
	for i := range 40 {
		want = append(want, fmt.Sprintf("k/%03d", i))
	}
	// Not "k/a" as well: Local cannot keep an object where another's
	// directory is, so the suite does not ask for it.
	want = append(want, "k/a-b", "k/a/b", "k/a0")
	for i := len(want) - 1; i >= 0; i-- {
		MustPut(t, s, want[i], "v")
	}
	if got := Keys(t, s, "k/"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("List(k/) = %q, want %q", got, want)
	}
}

func testInvalidKeysRefused(t *testing.T, s blob.Store) {
	ctx := context.Background()
	for _, key := range []string{"../escape", "../../escape", "a/../../escape", "/escape", "", "a//b", "./x", "a/", "a\\b", "a\x00b"} {
		if _, err := s.Put(ctx, key, strings.NewReader("pwned")); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want blob.ErrInvalidKey", key, err)
		}
		if _, err := s.Stat(ctx, key); err == nil || errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat(%q) = %v, want an invalid-key error", key, err)
		}
		if rc, _, err := s.Open(ctx, key, 0); err == nil {
			rc.Close()
			t.Errorf("Open(%q) succeeded, want it refused", key)
		}
	}
	if got := Keys(t, s, ""); len(got) != 0 {
		t.Errorf("refused Puts left objects behind: %q", got)
	}
}

// testLongNames: a key whose elements are as long as file systems allow
// (255 bytes) is stored, listed and read like any other.
func testLongNames(t *testing.T, s blob.Store) {
	long := strings.Repeat("n", 255)
	key := "k/" + long + "/" + strings.Repeat("é", 127) + "x"
	MustPut(t, s, key, "long")
	if got, _ := MustRead(t, s, key, 0); got != "long" {
		t.Errorf("Open(long key) = %q, want %q", got, "long")
	}
	if got := Keys(t, s, "k/"); len(got) != 1 || got[0] != key {
		t.Errorf("List(k/) = %q, want the long key alone", got)
	}
}

// FailingReader yields Data, then fails with Err.
type FailingReader struct {
	Data []byte
	Err  error
}

func (r *FailingReader) Read(p []byte) (int, error) {
	if len(r.Data) == 0 {
		return 0, r.Err
	}
	n := copy(p, r.Data)
	r.Data = r.Data[n:]
	return n, nil
}

func testFailedPutLeavesNothing(t *testing.T, s blob.Store) {
	ctx := context.Background()
	boom := errors.New("connection reset")

	// A new key: no object appears.
	_, err := s.Put(ctx, "artifacts/j/new.bin", &FailingReader{Data: bytes.Repeat([]byte("x"), 100_000), Err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("Put with a failing reader = %v, want it to wrap %v", err, boom)
	}
	if _, err := s.Stat(ctx, "artifacts/j/new.bin"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("after a failed Put, Stat = %v, want ErrNotFound", err)
	}
	// An existing key: the old object stays whole.
	MustPut(t, s, "artifacts/j/old.bin", "version 1")
	if _, err := s.Put(ctx, "artifacts/j/old.bin", &FailingReader{Data: []byte("version 2, cut sh"), Err: boom}); err == nil {
		t.Fatal("Put with a failing reader succeeded")
	}
	if got, _ := MustRead(t, s, "artifacts/j/old.bin", 0); got != "version 1" {
		t.Errorf("after a failed replacing Put, content = %q, want %q", got, "version 1")
	}
	// A cancelled context fails the Put the same way.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Put(cctx, "artifacts/j/cancelled.bin", strings.NewReader("data")); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context = %v, want context.Canceled", err)
	}
	if got := Keys(t, s, ""); len(got) != 1 || got[0] != "artifacts/j/old.bin" {
		t.Errorf("List after failed Puts = %q, want only artifacts/j/old.bin", got)
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

func testPutInProgressIsInvisible(t *testing.T, s blob.Store) {
	ctx := context.Background()
	MustPut(t, s, "k", "old")
	r := &gatedReader{first: []byte("half of "), rest: []byte("the new content"), reached: make(chan struct{}), gate: make(chan struct{})}
	reached := r.reached
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, "k", r)
		done <- err
	}()
	select {
	case <-reached:
	case <-time.After(10 * time.Second):
		t.Fatal("Put did not start reading")
	}
	// Half written: readers still see the old object, and List no partial one.
	if got, _ := MustRead(t, s, "k", 0); got != "old" {
		t.Errorf("during a Put, content = %q, want the old %q", got, "old")
	}
	objs, err := s.List(ctx, "")
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
	if got, _ := MustRead(t, s, "k", 0); got != "half of the new content" {
		t.Errorf("after the Put, content = %q", got)
	}
}

func testLargeObjectResume(t *testing.T, s blob.Store) {
	data := make([]byte, 3<<20+17)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	MustPut(t, s, "big/blob.bin", string(data))
	for _, off := range []int64{0, 1, 1 << 20, int64(len(data)) - 1} {
		got, n := MustRead(t, s, "big/blob.bin", off)
		if n != int64(len(data))-off || !bytes.Equal([]byte(got), data[off:]) {
			t.Errorf("Open(offset %d): %d bytes announced, %d read, content equal: %v; want %d", off, n, len(got), bytes.Equal([]byte(got), data[off:]), len(data)-int(off))
		}
	}
}

// testConcurrentPuts: racing writers of one key leave one whole version.
func testConcurrentPuts(t *testing.T, s blob.Store) {
	const writers = 6
	versions := make([]string, writers)
	var wg sync.WaitGroup
	for i := range writers {
		versions[i] = strings.Repeat(string(rune('a'+i)), 64<<10)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Put(context.Background(), "shared", strings.NewReader(versions[i])); err != nil {
				t.Errorf("Put #%d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	got, _ := MustRead(t, s, "shared", 0)
	for _, v := range versions {
		if got == v {
			return
		}
	}
	t.Errorf("after racing Puts, content is %d bytes and none of the versions written", len(got))
}

func testDelete(t *testing.T, s blob.Store) {
	ctx := context.Background()
	for _, k := range []string{"artifacts/j1/a/deep/c.txt", "artifacts/j1/b.txt", "artifacts/j10/x", "code/abc.tar.gz"} {
		MustPut(t, s, k, k)
	}
	if err := s.Delete(ctx, "code/abc.tar.gz"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Stat(ctx, "code/abc.tar.gz"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat of a deleted object = %v, want ErrNotFound", err)
	}
	for _, k := range []string{"code/abc.tar.gz", "nothing/here", "artifacts/j1"} {
		if err := s.Delete(ctx, k); err != nil {
			t.Errorf("Delete(%q) of no object = %v, want nil", k, err)
		}
	}
	if err := s.Delete(ctx, "../x"); !errors.Is(err, blob.ErrInvalidKey) {
		t.Errorf("Delete(../x) = %v, want ErrInvalidKey", err)
	}
	n, err := blob.DeletePrefix(ctx, s, "artifacts/j1/")
	if err != nil {
		t.Fatalf("DeletePrefix: %v", err)
	}
	if want := int64(len("artifacts/j1/a/deep/c.txt") + len("artifacts/j1/b.txt")); n != want {
		t.Errorf("DeletePrefix freed %d bytes, want %d", n, want)
	}
	if got := Keys(t, s, ""); len(got) != 1 || got[0] != "artifacts/j10/x" {
		t.Errorf("left after deletes: %v, want artifacts/j10/x", got)
	}
	// A key deleted can be written again, where its directories were.
	MustPut(t, s, "artifacts/j1/a/deep/c.txt", "again")
	if got, _ := MustRead(t, s, "artifacts/j1/a/deep/c.txt", 0); got != "again" {
		t.Errorf("read after a new Put = %q", got)
	}
}
