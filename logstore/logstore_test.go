package logstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// setup returns a store over a fresh directory.
func setup(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func appendAt(t *testing.T, s *Store, job string, offset int64, data string, now time.Time) int64 {
	t.Helper()
	size, err := s.Append(job, offset, []byte(data), now)
	if err != nil {
		t.Fatalf("Append(%s, %d, %q): %v", job, offset, data, err)
	}
	return size
}

func readAll(t *testing.T, s *Store, job string, o ReadOptions) string {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Copy(context.Background(), job, &buf, o); err != nil {
		t.Fatalf("Copy(%s): %v", job, err)
	}
	return buf.String()
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestAppendAndReadInOrder(t *testing.T) {
	t.Parallel()
	s := setup(t)
	var want strings.Builder
	var off int64
	for i := range 50 {
		line := fmt.Sprintf("line %d\n", i)
		off = appendAt(t, s, "job", off, line, t0.Add(time.Duration(i)*time.Second))
		want.WriteString(line)
	}
	if got := readAll(t, s, "job", ReadOptions{}); got != want.String() {
		t.Errorf("Copy = %q, want %q", got, want.String())
	}
	if size, err := s.Size("job"); err != nil || size != int64(want.Len()) {
		t.Errorf("Size = %d, %v; want %d", size, err, want.Len())
	}
	// Jobs do not mix.
	appendAt(t, s, "other", 0, "other output", t0)
	if got := readAll(t, s, "job", ReadOptions{}); got != want.String() {
		t.Errorf("after another job's append, Copy = %q", got)
	}
}

func TestAppendIsIdempotentByOffset(t *testing.T) {
	t.Parallel()
	s := setup(t)
	for _, step := range []struct {
		offset   int64
		data     string
		wantSize int64
	}{
		{0, "hello", 5},
		{0, "hello", 5},           // the same chunk again: kept once
		{0, "hel", 5},             // a prefix of what is there
		{3, "lo world", 11},       // overlapping: only the new part is kept
		{5, " world", 11},         // the retried second chunk
		{11, "", 11},              // nothing
		{11, "!\n", 13},           // the next chunk
		{0, "hello world!\n", 13}, // a retry of everything
	} {
		size, err := s.Append("job", step.offset, []byte(step.data), t0)
		if err != nil {
			t.Fatalf("Append(%d, %q): %v", step.offset, step.data, err)
		}
		if size != step.wantSize {
			t.Errorf("Append(%d, %q) = size %d, want %d", step.offset, step.data, size, step.wantSize)
		}
	}
	if got := readAll(t, s, "job", ReadOptions{}); got != "hello world!\n" {
		t.Errorf("Copy = %q, want each byte once", got)
	}
}

func TestGapError(t *testing.T) {
	t.Parallel()
	s := setup(t)
	appendAt(t, s, "job", 0, "abc", t0)
	size, err := s.Append("job", 10, []byte("later"), t0)
	var gap *GapError
	if !errors.As(err, &gap) {
		t.Fatalf("Append past the end = %v, want a *GapError", err)
	}
	if gap.Size != 3 || size != 3 {
		t.Errorf("GapError.Size = %d, size = %d; want 3 (where to resend from)", gap.Size, size)
	}
	if !strings.Contains(gap.Error(), "resend from") {
		t.Errorf("GapError says %q; it should say what to do", gap.Error())
	}
	// A gap on an empty log too.
	if _, err := s.Append("empty", 1, []byte("x"), t0); !errors.As(err, &gap) || gap.Size != 0 {
		t.Errorf("Append at 1 of an empty log = %v, want a GapError at 0", err)
	}
	// The log is untouched and the writer can resend.
	appendAt(t, s, "job", 3, "def", t0)
	if got := readAll(t, s, "job", ReadOptions{}); got != "abcdef" {
		t.Errorf("Copy = %q, want %q", got, "abcdef")
	}
}

func TestSinceAndOffset(t *testing.T) {
	t.Parallel()
	s := setup(t)
	var off int64
	for i, chunk := range []string{"one\n", "two\n", "three\n", "four\n"} {
		off = appendAt(t, s, "job", off, chunk, t0.Add(time.Duration(i)*time.Minute))
	}
	for _, tc := range []struct {
		name string
		o    ReadOptions
		want string
	}{
		{"all", ReadOptions{}, "one\ntwo\nthree\nfour\n"},
		{"since the third record", ReadOptions{Since: t0.Add(2 * time.Minute)}, "three\nfour\n"},
		{"since between records", ReadOptions{Since: t0.Add(90 * time.Second)}, "three\nfour\n"},
		{"since before all", ReadOptions{Since: t0.Add(-time.Hour)}, "one\ntwo\nthree\nfour\n"},
		{"since after all", ReadOptions{Since: t0.Add(time.Hour)}, ""},
		{"offset at a record", ReadOptions{Offset: 8}, "three\nfour\n"},
		{"offset inside a record", ReadOptions{Offset: 10}, "ree\nfour\n"},
		{"offset past the end", ReadOptions{Offset: 100}, ""},
		{"offset and since", ReadOptions{Offset: 2, Since: t0.Add(time.Minute)}, "two\nthree\nfour\n"},
	} {
		if got := readAll(t, s, "job", tc.o); got != tc.want {
			t.Errorf("%s: Copy = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestMissingLogIsEmpty(t *testing.T) {
	t.Parallel()
	s := setup(t)
	if got := readAll(t, s, "nothing", ReadOptions{}); got != "" {
		t.Errorf("Copy of a missing log = %q, want empty", got)
	}
	if size, err := s.Size("nothing"); err != nil || size != 0 {
		t.Errorf("Size of a missing log = %d, %v; want 0", size, err)
	}
}

// TestFollowUntilFinish: a follower writes what the log has, then what is
// appended while it follows, and returns once the log is finished.
func TestFollowUntilFinish(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := setup(t)
		appendAt(t, s, "job", 0, "first\n", t0)
		var out syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- s.Copy(context.Background(), "job", &out, ReadOptions{Follow: true, Poll: time.Hour})
		}()
		synctest.Wait()
		if got := out.String(); got != "first\n" {
			t.Fatalf("the follower, waiting, has written %q, want the output written before it started", got)
		}
		appendAt(t, s, "job", 6, "second\n", t0)
		synctest.Wait()
		if got := out.String(); got != "first\nsecond\n" {
			t.Fatalf("the follower, waiting, has written %q, want the output appended while following too", got)
		}
		select {
		case err := <-done:
			t.Fatalf("follower returned before the log was finished: %v", err)
		default:
		}
		appendAt(t, s, "job", 13, "last\n", t0)
		if err := s.Finish("job"); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		synctest.Wait()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Copy: %v", err)
			}
		default:
			t.Fatal("follower did not return after Finish")
		}
		if got := out.String(); got != "first\nsecond\nlast\n" {
			t.Errorf("follower read %q, want all of the log", got)
		}
		// A follower of a finished log returns at once with all of it.
		if got := readAll(t, s, "job", ReadOptions{Follow: true, Poll: time.Hour}); got != "first\nsecond\nlast\n" {
			t.Errorf("follow of a finished log = %q", got)
		}
	})
}

func TestFollowEndsWhenFinishedElsewhere(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := setup(t)
		appendAt(t, s, "job", 0, "output\n", t0)
		var mu sync.Mutex
		ended := false
		finished := func() bool {
			mu.Lock()
			defer mu.Unlock()
			return ended
		}
		var out syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- s.Copy(context.Background(), "job", &out, ReadOptions{Follow: true, Finished: finished, Poll: time.Millisecond})
		}()
		synctest.Wait()
		if got := out.String(); got != "output\n" {
			t.Fatalf("the follower, waiting, has written %q, want the output", got)
		}
		// Another writer (another replica) adds the last output and ends the job
		// without this store's Finish.
		other, err := Open(s.dir)
		if err != nil {
			t.Fatal(err)
		}
		appendAt(t, other, "job", 7, "more\n", t0)
		mu.Lock()
		ended = true
		mu.Unlock()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Copy: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("follower did not return once Finished said so")
		}
		if got := out.String(); got != "output\nmore\n" {
			t.Errorf("follower read %q, want the output written before the end", got)
		}
	})
}

func TestFollowEndsWithContext(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Copy(ctx, "job", &syncBuffer{}, ReadOptions{Follow: true, Poll: time.Hour}) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Copy after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follower did not return when its context ended")
	}
}

func TestConcurrentReaders(t *testing.T) {
	t.Parallel()
	s := setup(t)
	const readers, chunks = 8, 200
	var want strings.Builder
	for i := range chunks {
		fmt.Fprintf(&want, "chunk %03d\n", i)
	}
	outs := make([]*syncBuffer, readers)
	errs := make(chan error, readers)
	var wg sync.WaitGroup
	for i := range outs {
		outs[i] = &syncBuffer{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Copy(context.Background(), "job", outs[i], ReadOptions{Follow: true, Poll: 5 * time.Millisecond})
		}()
	}
	var off int64
	for i := range chunks {
		var err error
		off, err = s.Append("job", off, fmt.Appendf(nil, "chunk %03d\n", i), t0)
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Finish("job"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("reader: %v", err)
		}
	}
	for i, o := range outs {
		if got := o.String(); got != want.String() {
			t.Errorf("reader %d read %d bytes, want all %d in order", i, len(got), want.Len())
		}
	}
}

func TestLargeAppendIsSplitAndReadWhole(t *testing.T) {
	t.Parallel()
	s := setup(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), (maxRecord+100)/16)
	size, err := s.Append("job", 0, data, t0)
	if err != nil || size != int64(len(data)) {
		t.Fatalf("Append of %d bytes = %d, %v", len(data), size, err)
	}
	var buf bytes.Buffer
	if err := s.Copy(context.Background(), "job", &buf, ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Errorf("Copy returned %d bytes, want the %d appended", buf.Len(), len(data))
	}
	// A retry of the same large chunk adds nothing.
	if size, err := s.Append("job", 0, data, t0); err != nil || size != int64(len(data)) {
		t.Errorf("retried large Append = %d, %v", size, err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	appendAt(t, s, "job", 0, "before restart\n", t0)
	appendAt(t, s, "running", 0, "still going\n", t0)
	if err := s.Finish("job"); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s2, "job", ReadOptions{}); got != "before restart\n" {
		t.Errorf("after reopen, Copy = %q", got)
	}
	if size, err := s2.Size("running"); err != nil || size != 12 {
		t.Errorf("after reopen, Size = %d, %v; want 12", size, err)
	}
	// The writer carries on where it was, and retries are still idempotent.
	appendAt(t, s2, "running", 0, "still going\n", t0)
	if size := appendAt(t, s2, "running", 12, "and on\n", t0); size != 19 {
		t.Errorf("size after reopen and append = %d, want 19", size)
	}
	if _, err := s2.Append("running", 50, []byte("x"), t0); !errors.As(err, new(*GapError)) {
		t.Errorf("gap after reopen = %v, want a GapError", err)
	}
	if got := readAll(t, s2, "running", ReadOptions{}); got != "still going\nand on\n" {
		t.Errorf("after reopen and append, Copy = %q", got)
	}
}

func TestTornTrailingRecord(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cut  int64 // bytes cut off the end of the file
	}{
		{"torn body", 3},
		{"torn header", headerSize + int64(len("second\n")) - 5},
		{"header only", int64(len("second\n"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			appendAt(t, s, "job", 0, "first\n", t0)
			appendAt(t, s, "job", 6, "second\n", t0)
			if err := s.Finish("job"); err != nil {
				t.Fatal(err)
			}
			// A crash mid-write leaves part of the last record.
			path := s.path("job")
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, st.Size()-tc.cut); err != nil {
				t.Fatal(err)
			}

			s2, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			// Readers see the whole records only.
			if got := readAll(t, s2, "job", ReadOptions{}); got != "first\n" {
				t.Errorf("Copy of a torn log = %q, want the whole records %q", got, "first\n")
			}
			// The writer learns the size of what was kept and resends the rest.
			size, err := s2.Size("job")
			if err != nil || size != 6 {
				t.Fatalf("Size of a torn log = %d, %v; want 6", size, err)
			}
			if _, err := s2.Append("job", 13, []byte("third\n"), t0); !errors.As(err, new(*GapError)) {
				t.Errorf("Append after the lost record = %v, want a GapError", err)
			}
			appendAt(t, s2, "job", 6, "second\nthird\n", t0)
			if got := readAll(t, s2, "job", ReadOptions{}); got != "first\nsecond\nthird\n" {
				t.Errorf("after the resend, Copy = %q", got)
			}
			// The torn bytes are gone from the file: another store reads the same.
			s3, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, s3, "job", ReadOptions{}); got != "first\nsecond\nthird\n" {
				t.Errorf("reopened after repair, Copy = %q", got)
			}
		})
	}
}

func TestReaderSkipsRecordBeingWritten(t *testing.T) {
	t.Parallel()
	s := setup(t)
	appendAt(t, s, "job", 0, "whole\n", t0)
	// Half of a record, as a reader may see while the writer is mid-write.
	fh, err := os.OpenFile(s.path("job"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 100, 'p', 'a', 'r'}); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	if got := readAll(t, s, "job", ReadOptions{}); got != "whole\n" {
		t.Errorf("Copy = %q, want only the whole record", got)
	}
}

// TestAppendOnAFullDiskFailsAndRecovers: a write the disk refuses (ENOSPC,
// from /dev/full) is an error that says so, leaves the log as it was, and
// the next append once the disk has room goes through.
func TestAppendOnAFullDiskFailsAndRecovers(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full on this system")
	}
	s := setup(t)
	if err := os.Symlink("/dev/full", s.path("j")); err != nil {
		t.Fatal(err)
	}
	if size, err := s.Size("j"); err != nil || size != 0 {
		t.Fatalf("Size of an empty log on a full disk = %d, %v", size, err)
	}
	size, err := s.Append("j", 0, []byte("lost?\n"), t0)
	if !errors.Is(err, syscall.ENOSPC) || size != 0 {
		t.Fatalf("Append to a full disk = %d, %v; want 0, ENOSPC", size, err)
	}
	// Room again: the file is replaced by a real one.
	if err := os.Remove(s.path("j")); err != nil {
		t.Fatal(err)
	}
	if size := appendAt(t, s, "j", 0, "kept\n", t0); size != 5 {
		t.Fatalf("Append after the disk has room = %d, want 5", size)
	}
	if got := readAll(t, s, "j", ReadOptions{}); got != "kept\n" {
		t.Errorf("log = %q", got)
	}
}

// TestDelete: a deleted log's file is gone, a follower returns, and the job
// reads as empty (as a missing log does).
func TestDelete(t *testing.T) {
	t.Parallel()
	s := setup(t)
	appendAt(t, s, "j1", 0, "hello\n", t0)
	appendAt(t, s, "j2", 0, "other\n", t0)
	done := make(chan error, 1)
	go func() {
		done <- s.Copy(context.Background(), "j1", &bytes.Buffer{}, ReadOptions{Follow: true, Poll: time.Hour})
	}()
	n, err := s.Delete("j1")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if n != int64(headerSize+len("hello\n")) {
		t.Errorf("Delete freed %d bytes, want %d", n, headerSize+len("hello\n"))
	}
	if err := <-done; err != nil {
		t.Errorf("follower of a deleted log: %v", err)
	}
	if _, err := os.Stat(s.path("j1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log file after Delete: %v, want gone", err)
	}
	if got := readAll(t, s, "j1", ReadOptions{}); got != "" {
		t.Errorf("deleted log reads %q, want nothing", got)
	}
	if got := readAll(t, s, "j2", ReadOptions{}); got != "other\n" {
		t.Errorf("another job's log reads %q", got)
	}
	if n, err := s.Delete("never"); err != nil || n != 0 {
		t.Errorf("Delete of a missing log = %d, %v; want 0, nil", n, err)
	}
}
