package logstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// setup returns a store over a fresh directory.
func setup(t *testing.T) *Files {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func appendAt(t *testing.T, s *Files, job string, offset int64, data string, now time.Time) int64 {
	t.Helper()
	size, err := s.Append(t.Context(), job, offset, []byte(data), now)
	if err != nil {
		t.Fatalf("Append(%s, %d, %q): %v", job, offset, data, err)
	}
	return size
}

func readAll(t *testing.T, s *Files, job string, o ReadOptions) string {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Copy(t.Context(), job, &buf, o); err != nil {
		t.Fatalf("Copy(%s): %v", job, err)
	}
	return buf.String()
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
			size, err := s2.Size(t.Context(), "job")
			if err != nil || size != 6 {
				t.Fatalf("Size of a torn log = %d, %v; want 6", size, err)
			}
			if _, err := s2.Append(t.Context(), "job", 13, []byte("third\n"), t0); !errors.As(err, new(*GapError)) {
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
	if size, err := s.Size(t.Context(), "j"); err != nil || size != 0 {
		t.Fatalf("Size of an empty log on a full disk = %d, %v", size, err)
	}
	size, err := s.Append(t.Context(), "j", 0, []byte("lost?\n"), t0)
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

// TestDeleteRemovesTheFile: Delete removes the file and counts its
// records' headers among the bytes freed.
func TestDeleteRemovesTheFile(t *testing.T) {
	t.Parallel()
	s := setup(t)
	appendAt(t, s, "j1", 0, "hello\n", t0)
	n, err := s.Delete(t.Context(), "j1")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if n != int64(headerSize+len("hello\n")) {
		t.Errorf("Delete freed %d bytes, want %d", n, headerSize+len("hello\n"))
	}
	if _, err := os.Stat(s.path("j1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log file after Delete: %v, want gone", err)
	}
}

// TestFinishedLogsAreForgotten: a long-lived server writes the logs of
// many jobs; once a log is finished or deleted, and its followers are gone,
// the store keeps nothing of it in memory (nor an open file).
func TestFinishedLogsAreForgotten(t *testing.T) {
	t.Parallel()
	s := setup(t)
	for i := range 20 {
		job := fmt.Sprintf("job-%d", i)
		appendAt(t, s, job, 0, "output\n", t0)
		if _, err := s.Size(t.Context(), job); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, s, job, ReadOptions{}); got != "output\n" {
			t.Fatalf("Copy = %q", got)
		}
		if i%2 == 0 {
			if err := s.Finish(job); err != nil {
				t.Fatal(err)
			}
		} else if _, err := s.Delete(t.Context(), job); err != nil {
			t.Fatal(err)
		}
	}
	// The size of a log no one writes, and a follower that ended.
	if _, err := s.Size(t.Context(), "job-0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Copy(ctx, "job-0", io.Discard, ReadOptions{Follow: true, Poll: time.Hour}) }()
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("follower: %v", err)
	}
	if n := s.memory(); n != 0 {
		t.Errorf("after every log was finished or deleted, the store keeps %d jobs in memory, want none", n)
	}
	// A log being written stays open until it is finished.
	appendAt(t, s, "running", 0, "on\n", t0)
	if n := s.memory(); n != 1 {
		t.Errorf("with one log being written, the store keeps %d jobs in memory, want 1", n)
	}
}
