package sqlcore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dstackai/dstack/store"
)

// logAppendSQL adds a chunk at $2 only while the log ends there: chunks stay
// contiguous without a lock. Two writers that both see the end at $2 race
// for the primary key; the loser's insert is a conflict and it reads the
// size again. A writer whose snapshot is older than another's commit
// inserts at an offset a committed chunk already starts at (every end it
// could see is where a chunk starts), so it conflicts too.
func logAppendSQL(d Dialect) string {
	q := `INSERT INTO job_logs (job_id, off, size, at, data)
	SELECT $1, $2, $3, $4, $5
	WHERE COALESCE((SELECT off + size FROM job_logs WHERE job_id = $1 ORDER BY off DESC LIMIT 1), 0) = $2`
	if d.LogAsyncCommit != "" {
		q += " AND " + d.LogAsyncCommit
	}
	return q
}

const logSizeSQL = `SELECT off + size FROM job_logs WHERE job_id = $1 ORDER BY off DESC LIMIT 1`

// maxLogAppendTries bounds the rounds of an append that other writers of
// the same log keep beating to its end.
const maxLogAppendTries = 100

// LogAppend adds a chunk of output; see store.LogStore. Each piece of at
// most store.MaxLogChunk bytes is one statement that lands only at the log's
// end, so an append that fails half way leaves a shorter log, never a hole,
// and its writer learns the size to resend from.
func (s *Store) LogAppend(ctx context.Context, p store.LogAppendParams) (store.LogAppended, error) {
	if p.JobID == "" || p.Offset < 0 {
		return store.LogAppended{}, fmt.Errorf("append to a job's log: a job and an offset of 0 or more are required")
	}
	offset, data := p.Offset, p.Data
	at := p.At.UnixMicro()
	// The writer's offset is the log's size almost always: try it first,
	// and read the size only when that fails.
	size := offset
	var added int64
	for range maxLogAppendTries {
		if offset > size {
			return store.LogAppended{Size: size, Added: added}, store.ErrLogGap
		}
		if skip := size - offset; skip > 0 {
			if skip >= int64(len(data)) {
				return store.LogAppended{Size: size, Added: added}, nil
			}
			offset, data = size, data[skip:]
		}
		if len(data) == 0 {
			// Nothing to add: the answer is the size.
			n, err := s.LogSize(ctx, p.JobID)
			if err != nil || offset <= n {
				return store.LogAppended{Size: n, Added: added}, err
			}
			size = n
			continue
		}
		n := min(len(data), store.MaxLogChunk)
		rows, err := s.write.Exec(ctx, s.logAppendSQL, p.JobID, offset, int64(n), at, data[:n])
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return store.LogAppended{Size: offset, Added: added}, fmt.Errorf("append to the log of job %s: %w", p.JobID, err)
		}
		if err == nil && rows == 1 {
			offset += int64(n)
			added += int64(n)
			data = data[n:]
			size = offset
			if len(data) == 0 {
				return store.LogAppended{Size: size, Added: added}, nil
			}
			continue
		}
		// The log does not end at offset: another writer got there first,
		// or the writer is behind or ahead.
		if size, err = s.LogSize(ctx, p.JobID); err != nil {
			return store.LogAppended{Size: offset, Added: added}, err
		}
	}
	return store.LogAppended{Size: offset, Added: added}, fmt.Errorf("append to the log of job %s: other writers kept adding to it %d times in a row; try again", p.JobID, maxLogAppendTries)
}

// LogSize returns the size of a job's log; see store.LogStore.
func (s *Store) LogSize(ctx context.Context, jobID string) (int64, error) {
	var n int64
	err := s.read.QueryRow(ctx, logSizeSQL, jobID).Scan(&n)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the size of the log of job %s: %w", jobID, err)
	}
	return n, nil
}

// LogRead returns chunks of a job's log; see store.LogStore. The chunk that
// holds p.Offset is the last one that starts at or before it, and the
// chunks after it are a range of the primary key.
func (s *Store) LogRead(ctx context.Context, p store.LogReadParams) ([]*store.LogChunk, error) {
	q := `SELECT off, at, data FROM job_logs
		WHERE job_id = $1 AND off >= COALESCE((SELECT off FROM job_logs WHERE job_id = $1 AND off <= $2 ORDER BY off DESC LIMIT 1), 0)`
	args := []any{p.JobID, p.Offset}
	if p.MaxBytes > 0 {
		q += ` AND off < $3`
		args = append(args, p.Offset+p.MaxBytes)
	}
	rows, err := s.read.Query(ctx, q+` ORDER BY off`, args...)
	if err != nil {
		return nil, fmt.Errorf("read the log of job %s: %w", p.JobID, err)
	}
	defer rows.Close()
	var out []*store.LogChunk
	for rows.Next() {
		var c store.LogChunk
		var at int64
		if err := rows.Scan(&c.Offset, &at, &c.Data); err != nil {
			return nil, fmt.Errorf("read the log of job %s: %w", p.JobID, err)
		}
		if c.End() <= p.Offset {
			continue // the last chunk, ending where the reader is
		}
		c.At = time.UnixMicro(at).UTC()
		out = append(out, &c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the log of job %s: %w", p.JobID, err)
	}
	return out, nil
}

// LogDelete deletes a job's log; see store.LogStore.
func (s *Store) LogDelete(ctx context.Context, jobID string) (int64, error) {
	var n int64
	err := s.write.Tx(ctx, func(q Querier) error {
		if err := q.QueryRow(ctx, `SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM job_logs WHERE job_id = $1`, jobID).Scan(&n); err != nil {
			return err
		}
		_, err := q.Exec(ctx, `DELETE FROM job_logs WHERE job_id = $1`, jobID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete the log of job %s: %w", jobID, err)
	}
	return n, nil
}
