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

// Files is a directory of job logs, one file per job. A file is a sequence
// of records, each an 8-byte big-endian Unix time in nanoseconds, a 4-byte
// big-endian length, then that many bytes of output. The store keeps in
// memory the open files of the logs being written, until they are finished,
// and the signals of the followers of a log while there are any.
type Files struct {
	dir string
	followers

	mu    sync.Mutex
	files map[string]*file
}

var _ Store = (*Files)(nil)

// file is the writer side of one job's log.
type file struct {
	mu   sync.Mutex
	f    *os.File // nil before the first append, or after a failed write
	size int64    // bytes of output
	end  int64    // bytes in the file
	// gone: the log was finished or deleted and the entry dropped from the
	// map; a writer that finds it gone takes a new one.
	gone bool
}

// Open returns a store over dir, creating it.
func Open(dir string) (*Files, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("log store: %w", err)
	}
	return &Files{dir: dir, files: map[string]*file{}}, nil
}

func (s *Files) path(jobID string) string { return filepath.Join(s.dir, jobID+".log") }

// lock returns the job's writer entry, locked and not gone.
func (s *Files) lock(jobID string) *file {
	for {
		s.mu.Lock()
		f, ok := s.files[jobID]
		if !ok {
			f = &file{}
			s.files[jobID] = f
		}
		s.mu.Unlock()
		f.mu.Lock()
		if !f.gone {
			return f
		}
		f.mu.Unlock()
	}
}

// drop closes the job's file and forgets its entry; f.mu is held.
func (s *Files) drop(jobID string, f *file) error {
	var err error
	if f.f != nil {
		err = f.f.Close()
		f.f = nil
	}
	f.gone = true
	s.mu.Lock()
	if s.files[jobID] == f {
		delete(s.files, jobID)
	}
	s.mu.Unlock()
	return err
}

// forget drops the job's writer entry when it holds no open file (a failed
// open, or a Size of a log not being written); f.mu is held.
func (s *Files) forget(jobID string, f *file) {
	if f.f == nil {
		_ = s.drop(jobID, f)
	}
}

// memory is how many jobs the store keeps anything for in memory.
func (s *Files) memory() int {
	s.mu.Lock()
	n := len(s.files)
	s.mu.Unlock()
	return n + s.followers.size()
}

// load opens the job's file for appending, recovering its size and dropping
// a torn last record. f.mu is held.
func (s *Files) load(jobID string, f *file) error {
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
	f.f, f.size, f.end = fh, size, end
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

// Append adds output that starts at offset of the job's log; see Store.
func (s *Files) Append(_ context.Context, jobID string, offset int64, data []byte, now time.Time) (int64, error) {
	f := s.lock(jobID)
	defer f.mu.Unlock()
	if err := s.load(jobID, f); err != nil {
		s.forget(jobID, f)
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
		size := f.sizeAt()
		_ = s.drop(jobID, f)
		return size, fmt.Errorf("append log: %w", err)
	}
	f.end += int64(len(buf))
	s.signal(jobID, false, true)
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

// Size returns the job's log size. A log not being written is scanned, and
// nothing of it is kept.
func (s *Files) Size(_ context.Context, jobID string) (int64, error) {
	f := s.lock(jobID)
	defer f.mu.Unlock()
	if f.f != nil {
		return f.size, nil
	}
	defer s.forget(jobID, f)
	fh, err := os.Open(s.path(jobID))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open log: %w", err)
	}
	defer fh.Close()
	size, _, err := scan(fh)
	return size, err
}

// Finish marks a job's log complete: followers return once they have read
// it all. The file is synced and closed, and the store forgets the job.
func (s *Files) Finish(jobID string) error {
	f := s.lock(jobID)
	var err error
	if f.f != nil {
		err = f.f.Sync()
	}
	err = errors.Join(err, s.drop(jobID, f))
	f.mu.Unlock()
	s.signal(jobID, true, true)
	return err
}

// DiskSize is how many bytes the job's log file holds (its output and the
// records' headers); 0 when there is none.
func (s *Files) DiskSize(_ context.Context, jobID string) int64 {
	st, err := os.Stat(s.path(jobID))
	if err != nil {
		return 0
	}
	return st.Size()
}

// Delete removes a job's log and returns how many bytes its file held; a
// missing log is not an error. Its followers return once they have read
// what they had open.
func (s *Files) Delete(_ context.Context, jobID string) (int64, error) {
	f := s.lock(jobID)
	err := s.drop(jobID, f)
	var n int64
	if st, serr := os.Stat(s.path(jobID)); serr == nil {
		n = st.Size()
	}
	if rerr := os.Remove(s.path(jobID)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, fmt.Errorf("delete log: %w", rerr))
	}
	f.mu.Unlock()
	s.signal(jobID, true, true)
	return n, err
}

// Copy writes the job's output to w. A missing log is empty.
func (s *Files) Copy(ctx context.Context, jobID string, w io.Writer, o ReadOptions) error {
	r := reader{buf: make([]byte, 256<<10), o: o, w: w}
	defer func() {
		if r.fh != nil {
			r.fh.Close()
		}
	}()
	return s.follow(ctx, jobID, o, func() (int64, error) {
		if r.fh == nil {
			h, err := os.Open(s.path(jobID))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return 0, fmt.Errorf("open log: %w", err)
			}
			r.fh = h
		}
		if r.fh == nil {
			return 0, nil
		}
		return r.copy()
	})
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

// eachRecord calls fn with every whole record of the job's log, in order; a
// missing log has none.
func (s *Files) eachRecord(jobID string, fn func(at time.Time, data []byte) error) error {
	fh, err := os.Open(s.path(jobID))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer fh.Close()
	_, end, err := scan(fh)
	if err != nil {
		return err
	}
	var h [headerSize]byte
	for pos := int64(0); pos < end; {
		if _, err := fh.ReadAt(h[:], pos); err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		ts := int64(binary.BigEndian.Uint64(h[:8])) //nolint:gosec // written from an int64
		data := make([]byte, binary.BigEndian.Uint32(h[8:]))
		if _, err := fh.ReadAt(data, pos+headerSize); err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		if err := fn(time.Unix(0, ts), data); err != nil {
			return err
		}
		pos += headerSize + int64(len(data))
	}
	return nil
}
