package logstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/dstackai/dstack/store"
)

// readWindow is how much output a follower of a DB log reads per query: it
// holds at most this plus two chunks (store.MaxLogChunk) in memory.
const readWindow = 1 << 20

// DB keeps jobs' logs in the database (store.LogStore), where every replica
// of a server reads and appends them: a runner that fails over to another
// replica resends from the offset that replica answers, and a follower of
// any replica reads what was appended through all of them. Followers of
// this replica are woken by its own appends at once, and by other
// replicas' through Wake (or their next poll).
//
// It keeps nothing in memory but the signals of the followers waiting.
//
// A server that kept its logs in files before keeps reading them: a job
// whose log the database does not have is read from its file (legacy), and
// a runner's next append to it first copies the file into the database.
type DB struct {
	db     store.LogStore
	legacy *Files
	followers
}

var _ Store = (*DB)(nil)

// NewDB returns a store over the database's log table. legacy, when not
// nil, holds the logs this replica kept in files before.
func NewDB(db store.LogStore, legacy *Files) *DB { return &DB{db: db, legacy: legacy} }

// Append adds output that starts at offset of the job's log; see Store.
func (s *DB) Append(ctx context.Context, jobID string, offset int64, data []byte, now time.Time) (int64, error) {
	r, err := s.db.LogAppend(ctx, store.LogAppendParams{JobID: jobID, Offset: offset, Data: data, At: now})
	if errors.Is(err, store.ErrLogGap) && r.Size == 0 && s.legacy != nil {
		// The log may be in a file, from before the database kept logs.
		if ierr := s.importFile(ctx, jobID); ierr != nil {
			return 0, ierr
		}
		r, err = s.db.LogAppend(ctx, store.LogAppendParams{JobID: jobID, Offset: offset, Data: data, At: now})
	}
	if r.Added > 0 {
		s.signal(jobID, false, true)
	}
	if errors.Is(err, store.ErrLogGap) {
		return r.Size, &GapError{Size: r.Size}
	}
	if err != nil {
		return r.Size, fmt.Errorf("append log: %w", err)
	}
	return r.Size, nil
}

// importFile copies the job's log file, records and times, into the
// database; the file stays until the log is deleted.
func (s *DB) importFile(ctx context.Context, jobID string) error {
	var off int64
	err := s.legacy.eachRecord(jobID, func(at time.Time, data []byte) error {
		r, err := s.db.LogAppend(ctx, store.LogAppendParams{JobID: jobID, Offset: off, Data: data, At: at})
		off = r.Size
		return err
	})
	if err != nil {
		return fmt.Errorf("copy the log file of job %s into the database: %w", jobID, err)
	}
	return nil
}

// Size returns the job's log size.
func (s *DB) Size(ctx context.Context, jobID string) (int64, error) {
	n, err := s.db.LogSize(ctx, jobID)
	if err == nil && n == 0 && s.legacy != nil {
		return s.legacy.Size(ctx, jobID)
	}
	return n, err
}

// Finish wakes the job's followers of this replica for the last time, and
// other replicas' through the hook; the database has nothing to close.
func (s *DB) Finish(jobID string) error {
	s.signal(jobID, true, true)
	return nil
}

// DiskSize is the bytes of output the job's log holds; 0 when there is
// none or the database cannot say now.
func (s *DB) DiskSize(ctx context.Context, jobID string) int64 {
	n, err := s.db.LogSize(ctx, jobID)
	if err != nil {
		return 0
	}
	if s.legacy != nil {
		n += s.legacy.DiskSize(ctx, jobID)
	}
	return n
}

// Delete removes a job's log and returns how many bytes of output it held.
func (s *DB) Delete(ctx context.Context, jobID string) (int64, error) {
	n, err := s.db.LogDelete(ctx, jobID)
	if s.legacy != nil {
		m, lerr := s.legacy.Delete(ctx, jobID)
		n, err = n+m, errors.Join(err, lerr)
	}
	s.signal(jobID, true, true)
	return n, err
}

// Copy writes the job's output to w, a window of the log per query.
func (s *DB) Copy(ctx context.Context, jobID string, w io.Writer, o ReadOptions) error {
	pos := o.Offset // the log's offset read up to
	if s.legacy != nil {
		// What a file holds comes first (a log from before the database
		// kept logs); what the database has past it follows.
		if n, err := s.db.LogSize(ctx, jobID); err == nil && n == 0 {
			size, err := s.legacy.Size(ctx, jobID)
			if err != nil {
				return err
			}
			if size > 0 {
				lo := o
				lo.Follow = false
				if err := s.legacy.Copy(ctx, jobID, w, lo); err != nil {
					return err
				}
				pos = max(pos, size)
			}
		}
	}
	return s.follow(ctx, jobID, o, func() (int64, error) {
		var written int64
		for {
			from := pos
			chunks, err := s.db.LogRead(ctx, store.LogReadParams{JobID: jobID, Offset: pos, MaxBytes: readWindow})
			if err != nil {
				return written, fmt.Errorf("read log: %w", err)
			}
			for _, c := range chunks {
				if o.Since.IsZero() || !c.At.Before(o.Since) {
					if skip := pos - c.Offset; skip < int64(len(c.Data)) {
						n, err := w.Write(c.Data[max(skip, 0):])
						written += int64(n)
						if err != nil {
							return written, err
						}
					}
				}
				pos = c.End()
			}
			if pos < from+readWindow {
				// The window was not full: this is the end of the log for
				// now.
				return written, nil
			}
		}
	})
}
