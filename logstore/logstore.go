// Package logstore keeps the output of jobs, written by the job's runner in
// order and read by any number of followers. Two stores keep it: Files, one
// file per job on the server's disk (the default of a server on SQLite), and
// DB, chunks in the database every replica of a server shares (the default
// on PostgreSQL). Both pass the conformance suite in logstore/logstoretest.
//
// A log is a sequence of records, each the output appended at one time with
// that time. The log's size is the sum of the records' lengths: it is the
// offset a runner sends its next chunk at, which makes appends idempotent: a
// chunk the store already holds, whole or in part, is kept once, whichever
// replica it is sent to.
package logstore

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// Store keeps jobs' logs.
type Store interface {
	// Append adds output that starts at offset of the job's log and returns
	// the log's size after it. Bytes before the current size are skipped;
	// an offset past it is a *GapError.
	Append(ctx context.Context, jobID string, offset int64, data []byte, now time.Time) (int64, error)
	// Size returns the job's log size; 0 when it has none.
	Size(ctx context.Context, jobID string) (int64, error)
	// Finish marks a job's log complete: this store's followers return once
	// they have read it all. Followers elsewhere (another replica's) learn
	// of the end from ReadOptions.Finished, or at once through Wake.
	Finish(jobID string) error
	// DiskSize is how many bytes the job's log takes in storage, for the
	// storage quota; 0 when there is none.
	DiskSize(ctx context.Context, jobID string) int64
	// Delete removes a job's log and returns how many bytes it took; a
	// missing log is not an error. Its followers return.
	Delete(ctx context.Context, jobID string) (int64, error)
	// Copy writes the job's output to w. A missing log is empty.
	Copy(ctx context.Context, jobID string, w io.Writer, o ReadOptions) error
	// Wake tells the job's followers that its log may have changed
	// elsewhere (appended to, or finished, through another replica): they
	// read on without waiting for their next poll.
	Wake(jobID string)
	// SetNotify sets the function called after each change of a job's log
	// made through this store (an append, its end, its removal), for other
	// replicas to Wake their followers. It is called synchronously; nil
	// (the default) calls nothing.
	SetNotify(fn func(jobID string))
}

// GapError says a chunk starts past the end of the log: the writer must resend
// from Size.
type GapError struct{ Size int64 }

func (e *GapError) Error() string {
	return fmt.Sprintf("log chunk starts past the end of the log (%d bytes): resend from there", e.Size)
}

// ReadOptions select what Copy writes.
type ReadOptions struct {
	Offset int64     // skip this many bytes of output
	Since  time.Time // skip records written before it
	Follow bool      // wait for more until the log is finished
	// Finished is asked, when a follower has read everything, whether the job
	// has ended (another process may have finished it); it may be nil.
	Finished func() bool
	// Poll is how often a waiting follower reads again and asks Finished,
	// without a change seen through this store; default 2s.
	Poll time.Duration
	// Flush, if set, is called after each batch of output written to w.
	Flush func()
}

// followers is the followers waiting on each job's log, and the hook that
// tells other replicas of a change. A job has an entry only while it has
// followers: a long-lived server keeps nothing for the jobs of the past.
type followers struct {
	mu     sync.Mutex
	m      map[string]*watch
	notify func(jobID string)
}

// watch is the signal a job's followers wait on.
type watch struct {
	users   int
	changed chan struct{} // closed on a change, then replaced
	done    bool
}

func (fs *followers) SetNotify(fn func(jobID string)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.notify = fn
}

// watch registers a follower of the job; release unregisters it.
func (fs *followers) watch(jobID string) *watch {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.m == nil {
		fs.m = map[string]*watch{}
	}
	w := fs.m[jobID]
	if w == nil {
		w = &watch{changed: make(chan struct{})}
		fs.m[jobID] = w
	}
	w.users++
	return w
}

func (fs *followers) release(jobID string, w *watch) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	w.users--
	if w.users == 0 && fs.m[jobID] == w {
		delete(fs.m, jobID)
	}
}

// state is what a follower checks before it reads: the channel closed on
// the next change, and whether the log was finished here.
func (fs *followers) state(w *watch) (<-chan struct{}, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return w.changed, w.done
}

// signal wakes the job's followers, marks the log finished when end is set,
// and, when local is set (the change was made here), calls the hook.
func (fs *followers) signal(jobID string, end, local bool) {
	fs.mu.Lock()
	if w := fs.m[jobID]; w != nil {
		close(w.changed)
		w.changed = make(chan struct{})
		w.done = w.done || end
	}
	notify := fs.notify
	fs.mu.Unlock()
	if local && notify != nil {
		notify(jobID)
	}
}

func (fs *followers) Wake(jobID string) { fs.signal(jobID, false, false) }

// size is how many jobs the store keeps anything for in memory.
func (fs *followers) size() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return len(fs.m)
}

// follow is the loop of Copy: read writes what the log holds past what it
// wrote before, and follow waits for more until the log is finished.
func (fs *followers) follow(ctx context.Context, jobID string, o ReadOptions, read func() (int64, error)) error {
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	w := fs.watch(jobID)
	defer fs.release(jobID, w)
	for {
		changed, done := fs.state(w)
		n, err := read()
		if err != nil {
			return err
		}
		if n > 0 && o.Flush != nil {
			o.Flush()
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
