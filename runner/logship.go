package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// A job's output travels in two steps. The process writes into a spool file
// on the runner's disk, which never blocks on the network and survives a
// server outage; a shipper tails the spool and appends it to the server's
// log at the offset the server acknowledged last. Appends are idempotent on
// the server, so a retry after a lost answer never duplicates a byte, and
// the shipper only moves its offset on an answer, so none is lost.

// maxChunk is the most a shipper sends in one request.
const maxChunk = 1 << 20

// spool is the on-disk buffer of a job's output. Write appends; a shipper
// learns of new data through notify.
type spool struct {
	f      *os.File
	notify chan struct{} // has a token when data or the end arrived

	mu     sync.Mutex
	size   int64
	closed bool
}

func createSpool(path string) (*spool, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create log spool: %w", err)
	}
	return &spool{f: f, notify: make(chan struct{}, 1)}, nil
}

// Write appends p. After Close it fails.
func (s *spool) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, errors.New("log spool is closed")
	}
	n, err := s.f.WriteAt(p, s.size)
	s.size += int64(n)
	s.mu.Unlock()
	s.wake()
	return n, err
}

// Note writes a line of the runner's own into the job's output.
func (s *spool) Note(format string, args ...any) {
	_, _ = fmt.Fprintf(s, "dstack-runner: "+format+"\n", args...)
}

func (s *spool) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Close marks the end of the output; the file stays open for the shipper
// until release.
func (s *spool) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wake()
}

func (s *spool) state() (size int64, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size, s.closed
}

// release closes and removes the file.
func (s *spool) release() error {
	s.Close()
	name := s.f.Name()
	return errors.Join(s.f.Close(), os.Remove(name))
}

// appendFunc sends data that starts at offset of the job's log and returns
// the log's size after it.
type appendFunc func(ctx context.Context, offset int64, data []byte) (int64, error)

// shipper sends a spool to the server.
type shipper struct {
	sp     *spool
	send   appendFunc
	log    *slog.Logger
	minBO  time.Duration
	maxBO  time.Duration
	onLost func() // the job's lease is lost
	// reauth is called when the runner credential is refused; it returns
	// once a new one may be tried.
	reauth func(ctx context.Context)

	acked atomic.Int64 // bytes the server acknowledged
	done  chan struct{}
	err   error // why it gave up; read after done
}

func newShipper(sp *spool, send appendFunc, log *slog.Logger) *shipper {
	return &shipper{sp: sp, send: send, log: log, minBO: 100 * time.Millisecond, maxBO: 5 * time.Second, done: make(chan struct{})}
}

// run ships until the spool is closed and fully acknowledged, the shipper
// gives up, or ctx ends.
func (s *shipper) run(ctx context.Context) {
	defer close(s.done)
	s.err = s.ship(ctx)
}

func (s *shipper) ship(ctx context.Context) error {
	buf := make([]byte, maxChunk)
	bo := newBackoff(s.minBO, s.maxBO)
	for {
		size, closed := s.sp.state()
		acked := s.acked.Load()
		if acked >= size {
			if closed {
				return nil
			}
			select {
			case <-s.sp.notify:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		n := int(min(size-acked, maxChunk))
		if _, err := s.sp.f.ReadAt(buf[:n], acked); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read log spool: %w", err)
		}
		got, err := s.send(ctx, acked, buf[:n])
		switch {
		case err == nil:
			bo.reset()
			if got > size {
				// The server holds more than this runner ever wrote: the
				// log was written by someone else. Nothing of ours is missing.
				s.log.Warn("server's log is longer than the job's output", "server", got, "local", size)
				got = size
			}
			s.acked.Store(max(got, 0))
		case ctx.Err() != nil:
			return ctx.Err()
		case isLeaseLost(err):
			if s.onLost != nil {
				s.onLost()
			}
			return errLeaseLost
		case client.IsCode(err, api.CodeConflict):
			// The server has less than it acknowledged (restored from a
			// backup, say). Resend from the start: the server keeps what it
			// has and answers its true size.
			s.log.Warn("server's log is shorter than acknowledged; resending from its end", "acked", acked)
			s.acked.Store(0)
		case isUnauthenticated(err) && s.reauth != nil:
			s.reauth(ctx)
		case transient(err):
			s.log.Debug("log upload failed; retrying", "offset", acked, "err", err)
			if !bo.wait(ctx) {
				return ctx.Err()
			}
		default:
			return fmt.Errorf("upload log at offset %d: %w", acked, err)
		}
	}
}

// wait waits until the whole output is acknowledged, the shipper gave up,
// or stall passes without progress. It reports whether everything was
// acknowledged.
func (s *shipper) wait(stall time.Duration) bool {
	last := s.acked.Load()
	t := time.NewTimer(stall)
	defer t.Stop()
	tick := time.NewTicker(min(stall, 250*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return s.err == nil
		case <-tick.C:
			if a := s.acked.Load(); a != last {
				last = a
				t.Reset(stall)
			}
		case <-t.C:
			return false
		}
	}
}
