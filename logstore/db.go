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
type DB struct {
	db store.LogStore
	followers
}

var _ Store = (*DB)(nil)

// NewDB returns a store over the database's log table.
func NewDB(db store.LogStore) *DB { return &DB{db: db} }

// Append adds output that starts at offset of the job's log; see Store.
func (s *DB) Append(ctx context.Context, jobID string, offset int64, data []byte, now time.Time) (int64, error) {
	r, err := s.db.LogAppend(ctx, store.LogAppendParams{JobID: jobID, Offset: offset, Data: data, At: now})
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

// Size returns the job's log size.
func (s *DB) Size(ctx context.Context, jobID string) (int64, error) {
	return s.db.LogSize(ctx, jobID)
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
	return n
}

// Delete removes a job's log and returns how many bytes of output it held.
func (s *DB) Delete(ctx context.Context, jobID string) (int64, error) {
	n, err := s.db.LogDelete(ctx, jobID)
	s.signal(jobID, true, true)
	return n, err
}

// Copy writes the job's output to w, a window of the log per query.
func (s *DB) Copy(ctx context.Context, jobID string, w io.Writer, o ReadOptions) error {
	pos := o.Offset // the log's offset read up to
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
