package store

import (
	"context"
	"errors"
	"time"
)

// ErrLogGap is a log chunk that starts past the end of the job's log (LogAppend);
// the writer resends from the log's size, which LogAppend returns with it.
var ErrLogGap = errors.New("log chunk starts past the end of the log")

// MaxLogChunk bounds the output one row of a job's log holds: LogAppend
// splits larger appends, and a reader holds at most a few rows at once.
const MaxLogChunk = 1 << 20

// LogStore keeps jobs' output in the database, where every server replica
// reads it (package logstore's DB). A job's log is a sequence of chunks,
// each the output appended at one time: a chunk starts where the one before
// it ends, so the log's size, the end of its last chunk, is the offset the
// next chunk goes at. Rows are not tied to the jobs table: a deleted run's
// logs go with its trash (TrashLog, then LogDelete).
type LogStore interface {
	// LogAppend adds output that starts at p.Offset of the job's log and
	// returns the log's size after it, and how many bytes it added. Bytes
	// before the current size are skipped, so a chunk sent again (a retry,
	// a failover to another replica) is kept once; an offset past the size
	// returns the size and ErrLogGap. Appends of one job from several callers at once each land
	// whole or not at all, one after the other.
	LogAppend(ctx context.Context, p LogAppendParams) (LogAppended, error)
	// LogRead returns the chunks of the job's log from the one that holds
	// byte p.Offset on, in order, up to the first that ends at or past
	// p.Offset+p.MaxBytes (all of them when MaxBytes is 0). None when the
	// log is shorter than p.Offset.
	LogRead(ctx context.Context, p LogReadParams) ([]*LogChunk, error)
	// LogSize returns the size of the job's log; 0 when it has none.
	LogSize(ctx context.Context, jobID string) (int64, error)
	// LogDelete deletes the job's log and returns how many bytes of output
	// it held; a job without a log is 0, not an error.
	LogDelete(ctx context.Context, jobID string) (int64, error)
}

// LogAppendParams is a chunk of a job's output.
type LogAppendParams struct {
	JobID  string
	Offset int64
	Data   []byte
	// At is when the output was written; readers filter by it.
	At time.Time
}

// LogAppended is the result of LogAppend.
type LogAppended struct {
	Size  int64 // the log's size after the append
	Added int64 // bytes of the chunk that were new
}

// LogReadParams select the chunks LogRead returns.
type LogReadParams struct {
	JobID    string
	Offset   int64
	MaxBytes int64
}

// LogChunk is output appended at one time: Data starts at byte Offset of the
// job's log.
type LogChunk struct {
	Offset int64
	At     time.Time
	Data   []byte
}

// End is the offset of the byte after the chunk.
func (c *LogChunk) End() int64 { return c.Offset + int64(len(c.Data)) }
