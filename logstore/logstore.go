// Package logstore keeps the output of jobs: one append-only file per job,
// written by the runner in order and read by any number of followers.
//
// A file is a sequence of records: an 8-byte big-endian Unix time in
// nanoseconds, a 4-byte big-endian length, then that many bytes of output. The
// log's size is the sum of the records' lengths: it is the offset a runner
// sends its next chunk at, which makes appends idempotent: a chunk the store
// already holds, whole or in part, is kept once.
package logstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

const headerSize = 12

// maxRecord bounds one record; larger appends are split.
const maxRecord = 4 << 20

// GapError says a chunk starts past the end of the log: the writer must resend
// from Size.
type GapError struct{ Size int64 }

func (e *GapError) Error() string {
	return fmt.Sprintf("log chunk starts past the end of the log (%d bytes): resend from there", e.Size)
}

// Store is a directory of job logs.
type Store struct {
	dir string

	mu    sync.Mutex
	files map[string]*file
}

// file is the writer side of one job's log, and the signal its followers wait on.
type file struct {
	mu      sync.Mutex
	f       *os.File // nil once finished or before the first append
	size    int64    // bytes of output
	end     int64    // bytes in the file
	changed chan struct{}
	done    bool
	loaded  bool
}

// Open returns a store over dir, creating it.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("log store: %w", err)
	}
	return &Store{dir: dir, files: map[string]*file{}}, nil
}

func (s *Store) path(jobID string) string { return filepath.Join(s.dir, jobID+".log") }

func (s *Store) get(jobID string) *file {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.files[jobID]
	if !ok {
		f = &file{changed: make(chan struct{})}
		s.files[jobID] = f
	}
	return f
}

// load opens the job's file for appending, recovering its size and dropping
// a torn last record. f.mu is held.
func (s *Store) load(jobID string, f *file) error {
	if f.f != nil {
		return nil
	}
	fh, err := os.OpenFile(s.path(jobID), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	size, end, err := scan(fh)
	if err != nil {
		fh.Close()
		return err
	}
	if st, err := fh.Stat(); err != nil || st.Size() > end {
		if err := fh.Truncate(end); err != nil {
			fh.Close()
			return fmt.Errorf("truncate torn log record: %w", err)
		}
	}
	if _, err := fh.Seek(end, io.SeekStart); err != nil {
		fh.Close()
		return err
	}
	f.f, f.size, f.end, f.loaded = fh, size, end, true
	return nil
}

// scan walks a log's records and returns the output size and the end of the
// last whole record.
func scan(fh *os.File) (size, end int64, err error) {
	st, err := fh.Stat()
	if err != nil {
		return 0, 0, err
	}
	var h [headerSize]byte
	for end+headerSize <= st.Size() {
		if _, err := fh.ReadAt(h[:], end); err != nil {
			return 0, 0, fmt.Errorf("read log: %w", err)
		}
		n := int64(binary.BigEndian.Uint32(h[8:]))
		if end+headerSize+n > st.Size() {
			break
		}
		size += n
		end += headerSize + n
	}
	return size, end, nil
}

// Append adds output that starts at offset of the job's log and returns the
// log's size after it. Bytes before the current size are skipped; an offset
// past it is a *GapError.
func (s *Store) Append(jobID string, offset int64, data []byte, now time.Time) (int64, error) {
	f := s.get(jobID)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := s.load(jobID, f); err != nil {
		return 0, err
	}
	if offset > f.size {
		return f.size, &GapError{Size: f.size}
	}
	skip := f.size - offset
	if skip >= int64(len(data)) {
		return f.size, nil
	}
	data = data[skip:]
	buf := make([]byte, 0, headerSize+min(len(data), maxRecord)+headerSize*(len(data)/maxRecord))
	for len(data) > 0 {
		n := min(len(data), maxRecord)
		var h [headerSize]byte
		binary.BigEndian.PutUint64(h[:8], uint64(now.UnixNano()))
		binary.BigEndian.PutUint32(h[8:], uint32(n))
		buf = append(append(buf, h[:]...), data[:n]...)
		data = data[n:]
		f.size += int64(n)
	}
	if _, err := f.f.Write(buf); err != nil {
		// Put the file back to its last whole record so the log stays
		// readable, and let go of it: the next append opens it afresh (the
		// disk may have been remounted, or the file replaced, meanwhile).
		_ = f.f.Truncate(f.end)
		f.size = f.sizeAt()
		_ = f.f.Close()
		f.f = nil
		return f.size, fmt.Errorf("append log: %w", err)
	}
	f.end += int64(len(buf))
	f.signal()
	return f.size, nil
}

// sizeAt recomputes size after a failed write; f.mu is held.
func (f *file) sizeAt() int64 {
	size, _, err := scan(f.f)
	if err != nil {
		return 0
	}
	return size
}

func (f *file) signal() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Size returns the job's log size.
func (s *Store) Size(jobID string) (int64, error) {
	f := s.get(jobID)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := s.load(jobID, f); err != nil {
		return 0, err
	}
	return f.size, nil
}

// Finish marks a job's log complete: followers return once they have read it
// all. The file is synced and closed.
func (s *Store) Finish(jobID string) error {
	f := s.get(jobID)
	f.mu.Lock()
	defer f.mu.Unlock()
	var err error
	if f.f != nil {
		err = errors.Join(f.f.Sync(), f.f.Close())
		f.f = nil
	}
	f.done = true
	f.signal()
	return err
}

// DiskSize is how many bytes the job's log file holds (its output and the
// records' headers); 0 when there is none.
func (s *Store) DiskSize(jobID string) int64 {
	st, err := os.Stat(s.path(jobID))
	if err != nil {
		return 0
	}
	return st.Size()
}

// Delete removes a job's log and returns how many bytes its file held; a
// missing log is not an error. The log stays finished: followers, now and
// later, return once they have read what they had open.
func (s *Store) Delete(jobID string) (int64, error) {
	f := s.get(jobID)
	f.mu.Lock()
	var err error
	if f.f != nil {
		err = f.f.Close()
		f.f = nil
	}
	f.done = true
	f.signal()
	var n int64
	if st, serr := os.Stat(s.path(jobID)); serr == nil {
		n = st.Size()
	}
	if rerr := os.Remove(s.path(jobID)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, fmt.Errorf("delete log: %w", rerr))
	}
	f.mu.Unlock()
	return n, err
}

// ReadOptions select what Copy writes.
type ReadOptions struct {
	Offset int64     // skip this many bytes of output
	Since  time.Time // skip records written before it
	Follow bool      // wait for more until the log is finished
	// Finished is asked, when a follower has read everything, whether the job
	// has ended (another process may have finished it); it may be nil.
	Finished func() bool
	// Poll is how often a waiting follower asks Finished; default 2s.
	Poll time.Duration
	// Flush, if set, is called after each batch of output written to w.
	Flush func()
}

// Copy writes the job's output to w. A missing log is empty.
func (s *Store) Copy(ctx context.Context, jobID string, w io.Writer, o ReadOptions) error {
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	f := s.get(jobID)
	r := reader{buf: make([]byte, 256<<10), o: o, w: w}
	defer func() {
		if r.fh != nil {
			r.fh.Close()
		}
	}()
	for {
		f.mu.Lock()
		changed, done := f.changed, f.done
		f.mu.Unlock()
		if r.fh == nil {
			h, err := os.Open(s.path(jobID))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("open log: %w", err)
			}
			r.fh = h
		}
		if r.fh != nil {
			n, err := r.copy()
			if err != nil {
				return err
			}
			if n > 0 && o.Flush != nil {
				o.Flush()
			}
		}
		if !o.Follow || done {
			return nil
		}
		if o.Finished != nil && o.Finished() {
			// One more pass picks up what was written before the end.
			o.Follow = false
			continue
		}
		t := time.NewTimer(o.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// reader walks one log file for Copy.
type reader struct {
	fh      *os.File
	filePos int64 // file offset of the next record
	pos     int64 // output offset of the next record
	buf     []byte
	o       ReadOptions
	w       io.Writer
}

// copy writes the whole records present in the file, leaving a record still
// being written for the next call. It returns the bytes written.
func (r *reader) copy() (int64, error) {
	st, err := r.fh.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat log: %w", err)
	}
	limit := st.Size()
	var written int64
	var h [headerSize]byte
	for r.filePos+headerSize <= limit {
		if _, err := r.fh.ReadAt(h[:], r.filePos); err != nil {
			return written, fmt.Errorf("read log: %w", err)
		}
		ts := int64(binary.BigEndian.Uint64(h[:8])) //nolint:gosec // written from an int64
		n := int64(binary.BigEndian.Uint32(h[8:]))
		if r.filePos+headerSize+n > limit {
			break
		}
		keep := r.o.Since.IsZero() || ts >= r.o.Since.UnixNano()
		// The part of the record at or after Offset.
		from := max(r.o.Offset-r.pos, 0)
		if keep && from < n {
			at := r.filePos + headerSize + from
			left := n - from
			for left > 0 {
				m, err := r.fh.ReadAt(r.buf[:min(left, int64(len(r.buf)))], at)
				if err != nil && !(errors.Is(err, io.EOF) && m > 0) {
					return written, fmt.Errorf("read log: %w", err)
				}
				k, err := r.w.Write(r.buf[:m])
				written += int64(k)
				if err != nil {
					return written, err
				}
				at += int64(m)
				left -= int64(m)
			}
		}
		r.filePos += headerSize + n
		r.pos += n
	}
	return written, nil
}
