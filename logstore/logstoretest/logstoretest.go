// Package logstoretest is the conformance suite every logstore.Store passes:
// the files of a server on SQLite and the database table every replica of a
// server on PostgreSQL shares behave the same to runners and followers.
package logstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/logstore"
)

// Open returns a new, empty store that no other test uses, and a function
// that opens another store over the same logs: another replica, or the
// same server restarted.
type Open func(t *testing.T) (s logstore.Store, again func() logstore.Store)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// Run runs the suite, each test in parallel.
func Run(t *testing.T, open Open) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open)
		})
	}
}

var tests = []struct {
	name string
	fn   func(t *testing.T, open Open)
}{
	{"AppendAndReadInOrder", appendAndReadInOrder},
	{"AppendIsIdempotentByOffset", appendIsIdempotentByOffset},
	{"GapError", gapError},
	{"SinceAndOffset", sinceAndOffset},
	{"MissingLogIsEmpty", missingLogIsEmpty},
	{"FollowUntilFinish", followUntilFinish},
	{"FollowEndsWhenFinishedElsewhere", followEndsWhenFinishedElsewhere},
	{"WakeReadsAnotherReplicasAppend", wakeReadsAnotherReplicasAppend},
	{"FollowEndsWithContext", followEndsWithContext},
	{"ConcurrentReaders", concurrentReaders},
	{"LargeAppendIsSplitAndReadWhole", largeAppendIsSplitAndReadWhole},
	{"ReopenKeepsData", reopenKeepsData},
	{"Delete", deleteLog},
	{"NotifyOnChange", notifyOnChange},
}

func appendAt(t *testing.T, s logstore.Store, job string, offset int64, data string, now time.Time) int64 {
	t.Helper()
	size, err := s.Append(t.Context(), job, offset, []byte(data), now)
	if err != nil {
		t.Fatalf("Append(%s, %d, %q): %v", job, offset, data, err)
	}
	return size
}

func readAll(t *testing.T, s logstore.Store, job string, o logstore.ReadOptions) string {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Copy(t.Context(), job, &buf, o); err != nil {
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

// follower runs Copy in the background; done has its result.
type follower struct {
	out  syncBuffer
	done chan error
}

func follow(ctx context.Context, s logstore.Store, job string, o logstore.ReadOptions) *follower {
	f := &follower{done: make(chan error, 1)}
	o.Follow = true
	go func() { f.done <- s.Copy(ctx, job, &f.out, o) }()
	return f
}

// has waits until the follower has written want.
func (f *follower) has(t *testing.T, want, what string) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("the follower to write %q (%s); it wrote %q", want, what, f.out.String()), func() bool {
		return f.out.String() == want
	})
}

// running fails the test when the follower has returned.
func (f *follower) running(t *testing.T, why string) {
	t.Helper()
	select {
	case err := <-f.done:
		t.Fatalf("the follower returned (%v) %s", err, why)
	default:
	}
}

// ended waits for the follower to return, without an error.
func (f *follower) ended(t *testing.T, why string) {
	t.Helper()
	select {
	case err := <-f.done:
		if err != nil {
			t.Fatalf("Copy: %v", err)
		}
	case <-time.After(testutil.Wait):
		t.Fatalf("the follower did not return %s", why)
	}
}

func appendAndReadInOrder(t *testing.T, open Open) {
	s, _ := open(t)
	var want strings.Builder
	var off int64
	for i := range 50 {
		line := fmt.Sprintf("line %d\n", i)
		off = appendAt(t, s, "job", off, line, t0.Add(time.Duration(i)*time.Second))
		want.WriteString(line)
	}
	if got := readAll(t, s, "job", logstore.ReadOptions{}); got != want.String() {
		t.Errorf("Copy = %q, want %q", got, want.String())
	}
	if size, err := s.Size(t.Context(), "job"); err != nil || size != int64(want.Len()) {
		t.Errorf("Size = %d, %v; want %d", size, err, want.Len())
	}
	if n := s.DiskSize(t.Context(), "job"); n < int64(want.Len()) {
		t.Errorf("DiskSize = %d, want at least the %d bytes of output", n, want.Len())
	}
	// Jobs do not mix.
	appendAt(t, s, "other", 0, "other output", t0)
	if got := readAll(t, s, "job", logstore.ReadOptions{}); got != want.String() {
		t.Errorf("after another job's append, Copy = %q", got)
	}
}

func appendIsIdempotentByOffset(t *testing.T, open Open) {
	s, _ := open(t)
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
		size, err := s.Append(t.Context(), "job", step.offset, []byte(step.data), t0)
		if err != nil {
			t.Fatalf("Append(%d, %q): %v", step.offset, step.data, err)
		}
		if size != step.wantSize {
			t.Errorf("Append(%d, %q) = size %d, want %d", step.offset, step.data, size, step.wantSize)
		}
	}
	if got := readAll(t, s, "job", logstore.ReadOptions{}); got != "hello world!\n" {
		t.Errorf("Copy = %q, want each byte once", got)
	}
}

func gapError(t *testing.T, open Open) {
	s, _ := open(t)
	appendAt(t, s, "job", 0, "abc", t0)
	size, err := s.Append(t.Context(), "job", 10, []byte("later"), t0)
	var gap *logstore.GapError
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
	if _, err := s.Append(t.Context(), "empty", 1, []byte("x"), t0); !errors.As(err, &gap) || gap.Size != 0 {
		t.Errorf("Append at 1 of an empty log = %v, want a GapError at 0", err)
	}
	// The log is untouched and the writer can resend.
	appendAt(t, s, "job", 3, "def", t0)
	if got := readAll(t, s, "job", logstore.ReadOptions{}); got != "abcdef" {
		t.Errorf("Copy = %q, want %q", got, "abcdef")
	}
}

func sinceAndOffset(t *testing.T, open Open) {
	s, _ := open(t)
	var off int64
	for i, chunk := range []string{"one\n", "two\n", "three\n", "four\n"} {
		off = appendAt(t, s, "job", off, chunk, t0.Add(time.Duration(i)*time.Minute))
	}
	for _, tc := range []struct {
		name string
		o    logstore.ReadOptions
		want string
	}{
		{"all", logstore.ReadOptions{}, "one\ntwo\nthree\nfour\n"},
		{"since the third record", logstore.ReadOptions{Since: t0.Add(2 * time.Minute)}, "three\nfour\n"},
		{"since between records", logstore.ReadOptions{Since: t0.Add(90 * time.Second)}, "three\nfour\n"},
		{"since before all", logstore.ReadOptions{Since: t0.Add(-time.Hour)}, "one\ntwo\nthree\nfour\n"},
		{"since after all", logstore.ReadOptions{Since: t0.Add(time.Hour)}, ""},
		{"offset at a record", logstore.ReadOptions{Offset: 8}, "three\nfour\n"},
		{"offset inside a record", logstore.ReadOptions{Offset: 10}, "ree\nfour\n"},
		{"offset past the end", logstore.ReadOptions{Offset: 100}, ""},
		{"offset and since", logstore.ReadOptions{Offset: 2, Since: t0.Add(time.Minute)}, "two\nthree\nfour\n"},
	} {
		if got := readAll(t, s, "job", tc.o); got != tc.want {
			t.Errorf("%s: Copy = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func missingLogIsEmpty(t *testing.T, open Open) {
	s, _ := open(t)
	if got := readAll(t, s, "nothing", logstore.ReadOptions{}); got != "" {
		t.Errorf("Copy of a missing log = %q, want empty", got)
	}
	if size, err := s.Size(t.Context(), "nothing"); err != nil || size != 0 {
		t.Errorf("Size of a missing log = %d, %v; want 0", size, err)
	}
	if n := s.DiskSize(t.Context(), "nothing"); n != 0 {
		t.Errorf("DiskSize of a missing log = %d, want 0", n)
	}
}

// followUntilFinish: a follower writes what the log has, then what is
// appended while it follows, and returns once the log is finished.
func followUntilFinish(t *testing.T, open Open) {
	s, _ := open(t)
	appendAt(t, s, "job", 0, "first\n", t0)
	f := follow(t.Context(), s, "job", logstore.ReadOptions{Poll: time.Hour})
	f.has(t, "first\n", "the output written before it started")
	appendAt(t, s, "job", 6, "second\n", t0)
	f.has(t, "first\nsecond\n", "the output appended while following too")
	f.running(t, "before the log was finished")
	appendAt(t, s, "job", 13, "last\n", t0)
	if err := s.Finish("job"); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	f.ended(t, "after Finish")
	if got := f.out.String(); got != "first\nsecond\nlast\n" {
		t.Errorf("follower read %q, want all of the log", got)
	}
	// A follower of a finished log returns at once with all of it, once
	// it learns of the end (a later follower learns it from Finished).
	finished := func() bool { return true }
	if got := readAll(t, s, "job", logstore.ReadOptions{Follow: true, Poll: time.Hour, Finished: finished}); got != "first\nsecond\nlast\n" {
		t.Errorf("follow of a finished log = %q", got)
	}
}

// followEndsWhenFinishedElsewhere: another replica adds the last output and
// ends the job; the follower learns of it from Finished at its next poll.
func followEndsWhenFinishedElsewhere(t *testing.T, open Open) {
	s, again := open(t)
	appendAt(t, s, "job", 0, "output\n", t0)
	var mu sync.Mutex
	ended := false
	finished := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ended
	}
	f := follow(t.Context(), s, "job", logstore.ReadOptions{Finished: finished, Poll: time.Millisecond})
	f.has(t, "output\n", "the output")
	other := again()
	appendAt(t, other, "job", 7, "more\n", t0)
	mu.Lock()
	ended = true
	mu.Unlock()
	f.ended(t, "once Finished said so")
	if got := f.out.String(); got != "output\nmore\n" {
		t.Errorf("follower read %q, want the output written before the end", got)
	}
}

// wakeReadsAnotherReplicasAppend: output appended through another replica
// reaches a follower when Wake tells it, without waiting for its poll.
func wakeReadsAnotherReplicasAppend(t *testing.T, open Open) {
	s, again := open(t)
	other := again()
	appendAt(t, other, "job", 0, "one\n", t0)
	f := follow(t.Context(), s, "job", logstore.ReadOptions{Poll: time.Hour})
	f.has(t, "one\n", "the output before it started")
	appendAt(t, other, "job", 4, "two\n", t0)
	s.Wake("job")
	f.has(t, "one\ntwo\n", "the other replica's output, once woken")
	s.Wake("another job") // no follower: nothing to do
	f.running(t, "on a Wake: only the end, or Finished, ends it")
	if err := s.Finish("job"); err != nil {
		t.Fatal(err)
	}
	f.ended(t, "after Finish")
}

func followEndsWithContext(t *testing.T, open Open) {
	s, _ := open(t)
	ctx, cancel := context.WithCancel(t.Context())
	f := follow(ctx, s, "job", logstore.ReadOptions{Poll: time.Hour})
	cancel()
	select {
	case err := <-f.done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Copy after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(testutil.Wait):
		t.Fatal("follower did not return when its context ended")
	}
}

func concurrentReaders(t *testing.T, open Open) {
	s, _ := open(t)
	const readers, chunks = 8, 200
	var want strings.Builder
	for i := range chunks {
		fmt.Fprintf(&want, "chunk %03d\n", i)
	}
	// A reader that starts after Finish learns of the end from Finished,
	// as a server's followers do from the job's status.
	var finished atomic.Bool
	fs := make([]*follower, readers)
	for i := range fs {
		fs[i] = follow(t.Context(), s, "job", logstore.ReadOptions{Poll: 5 * time.Millisecond, Finished: finished.Load})
	}
	var off int64
	for i := range chunks {
		var err error
		off, err = s.Append(t.Context(), "job", off, fmt.Appendf(nil, "chunk %03d\n", i), t0)
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Finish("job"); err != nil {
		t.Fatal(err)
	}
	finished.Store(true)
	for i, f := range fs {
		f.ended(t, "after Finish")
		if got := f.out.String(); got != want.String() {
			t.Errorf("reader %d read %d bytes, want all %d in order", i, len(got), want.Len())
		}
	}
}

func largeAppendIsSplitAndReadWhole(t *testing.T, open Open) {
	s, _ := open(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), (5<<20)/16+7)
	size, err := s.Append(t.Context(), "job", 0, data, t0)
	if err != nil || size != int64(len(data)) {
		t.Fatalf("Append of %d bytes = %d, %v", len(data), size, err)
	}
	var buf bytes.Buffer
	if err := s.Copy(t.Context(), "job", &buf, logstore.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Errorf("Copy returned %d bytes, want the %d appended", buf.Len(), len(data))
	}
	buf.Reset()
	if err := s.Copy(t.Context(), "job", &buf, logstore.ReadOptions{Offset: 3 << 20}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data[3<<20:]) {
		t.Errorf("Copy from 3 MiB returned %d bytes, want the %d after it", buf.Len(), len(data)-3<<20)
	}
	// A retry of the same large chunk adds nothing.
	if size, err := s.Append(t.Context(), "job", 0, data, t0); err != nil || size != int64(len(data)) {
		t.Errorf("retried large Append = %d, %v", size, err)
	}
}

func reopenKeepsData(t *testing.T, open Open) {
	s, again := open(t)
	appendAt(t, s, "job", 0, "before restart\n", t0)
	appendAt(t, s, "running", 0, "still going\n", t0)
	if err := s.Finish("job"); err != nil {
		t.Fatal(err)
	}
	s2 := again()
	if got := readAll(t, s2, "job", logstore.ReadOptions{}); got != "before restart\n" {
		t.Errorf("after reopen, Copy = %q", got)
	}
	if size, err := s2.Size(t.Context(), "running"); err != nil || size != 12 {
		t.Errorf("after reopen, Size = %d, %v; want 12", size, err)
	}
	// The writer carries on where it was, and retries are still idempotent.
	appendAt(t, s2, "running", 0, "still going\n", t0)
	if size := appendAt(t, s2, "running", 12, "and on\n", t0); size != 19 {
		t.Errorf("size after reopen and append = %d, want 19", size)
	}
	if _, err := s2.Append(t.Context(), "running", 50, []byte("x"), t0); !errors.As(err, new(*logstore.GapError)) {
		t.Errorf("gap after reopen = %v, want a GapError", err)
	}
	if got := readAll(t, s2, "running", logstore.ReadOptions{}); got != "still going\nand on\n" {
		t.Errorf("after reopen and append, Copy = %q", got)
	}
}

// deleteLog: a deleted log is gone, a follower returns, and the job reads
// as empty (as a missing log does).
func deleteLog(t *testing.T, open Open) {
	s, _ := open(t)
	appendAt(t, s, "j1", 0, "hello\n", t0)
	appendAt(t, s, "j2", 0, "other\n", t0)
	f := follow(t.Context(), s, "j1", logstore.ReadOptions{Poll: time.Hour})
	f.has(t, "hello\n", "the log")
	n, err := s.Delete(t.Context(), "j1")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if n < int64(len("hello\n")) {
		t.Errorf("Delete freed %d bytes, want at least the %d of output", n, len("hello\n"))
	}
	f.ended(t, "when its log was deleted")
	if got := readAll(t, s, "j1", logstore.ReadOptions{}); got != "" {
		t.Errorf("deleted log reads %q, want nothing", got)
	}
	if size, err := s.Size(t.Context(), "j1"); err != nil || size != 0 {
		t.Errorf("Size of a deleted log = %d, %v; want 0", size, err)
	}
	if got := readAll(t, s, "j2", logstore.ReadOptions{}); got != "other\n" {
		t.Errorf("another job's log reads %q", got)
	}
	if n, err := s.Delete(t.Context(), "never"); err != nil || n != 0 {
		t.Errorf("Delete of a missing log = %d, %v; want 0, nil", n, err)
	}
}

// notifyOnChange: the hook hears of each change made through the store, for
// other replicas to wake their followers, and of nothing else.
func notifyOnChange(t *testing.T, open Open) {
	s, _ := open(t)
	var mu sync.Mutex
	var got []string
	s.SetNotify(func(jobID string) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, jobID)
	})
	appendAt(t, s, "a", 0, "x", t0)
	appendAt(t, s, "a", 0, "x", t0) // a retry changes nothing
	appendAt(t, s, "b", 0, "y", t0)
	s.Wake("a") // from elsewhere: not told again
	if err := s.Finish("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"a", "b", "a", "b"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("notified of %v, want %v (append a, append b, finish a, delete b)", got, want)
	}
}
