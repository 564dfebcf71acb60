package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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
//
// A spool lives in <data-dir>/spool as <job>.log, with <job>.json beside it
// (spoolMeta): the job's lease, where the output starts in the job's log,
// and whether the job's end is reported. It is removed once the server has
// acknowledged every byte, or says it takes no more (the job is gone, or
// another attempt holds it), never before: a server that cannot store
// (its disk is full) gets the job's end reported with the count of bytes it
// lacks, and the shipper goes on after the job, across runner restarts,
// until they are stored.

// maxChunk is the most a shipper sends in one request.
const maxChunk = 1 << 20

// spoolMeta is what a restarted runner needs to finish shipping a spool.
type spoolMeta struct {
	JobID string `json:"job_id"`
	Lease int64  `json:"lease"`
	// Base is where the spool's first byte goes in the job's log (earlier
	// attempts' output comes before it); -1 until the server said.
	Base int64 `json:"base"`
	// Final: the job's end is reported (or on its way): the spool is
	// complete, and what is left of it is sent after the job.
	Final bool `json:"final"`
}

// spool is the on-disk buffer of a job's output. Write appends; a shipper
// learns of new data through notify.
type spool struct {
	f        *os.File
	metaPath string
	notify   chan struct{} // has a token when data or the end arrived

	mu     sync.Mutex
	meta   spoolMeta
	size   int64
	closed bool
}

func spoolPaths(dir, jobID string) (data, meta string) {
	return filepath.Join(dir, jobID+".log"), filepath.Join(dir, jobID+".json")
}

// createSpool starts an empty spool for a job's attempt in dir.
func createSpool(dir, jobID string, lease int64) (*spool, error) {
	data, meta := spoolPaths(dir, jobID)
	f, err := os.OpenFile(data, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create log spool: %w", err)
	}
	s := &spool{f: f, metaPath: meta, notify: make(chan struct{}, 1), meta: spoolMeta{JobID: jobID, Lease: lease, Base: -1}}
	if err := s.saveMeta(false); err != nil {
		_ = s.release()
		return nil, err
	}
	return s, nil
}

// openSpool reopens a spool an earlier life of the runner left, complete:
// nothing more is written to it.
func openSpool(dir, jobID string) (*spool, error) {
	data, meta := spoolPaths(dir, jobID)
	b, err := os.ReadFile(meta)
	if err != nil {
		return nil, fmt.Errorf("read log spool: %w", err)
	}
	s := &spool{metaPath: meta, notify: make(chan struct{}, 1), closed: true}
	if err := json.Unmarshal(b, &s.meta); err != nil || s.meta.JobID != jobID {
		return nil, fmt.Errorf("log spool %s is corrupt: %v", meta, err) //nolint:errorlint // err is nil when the job ID differs
	}
	if s.f, err = os.OpenFile(data, os.O_RDWR, 0o600); err != nil {
		return nil, fmt.Errorf("open log spool: %w", err)
	}
	st, err := s.f.Stat()
	if err != nil {
		s.f.Close()
		return nil, fmt.Errorf("open log spool: %w", err)
	}
	s.size = st.Size()
	return s, nil
}

// listSpools returns the jobs with a spool in dir.
func listSpools(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list log spools: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok && !e.IsDir() && !strings.HasPrefix(id, ".") {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// update changes the spool's meta and saves it; durable makes sure it is
// on disk.
func (s *spool) update(change func(*spoolMeta), durable bool) error {
	s.mu.Lock()
	change(&s.meta)
	s.mu.Unlock()
	return s.saveMeta(durable)
}

func (s *spool) saveMeta(durable bool) error {
	s.mu.Lock()
	b, err := json.Marshal(s.meta)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.metaPath, b, 0o600, durable); err != nil {
		return fmt.Errorf("save log spool state: %w", err)
	}
	return nil
}

func (s *spool) getMeta() spoolMeta {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.meta
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

// release closes and removes the spool: its data is stored, or will never
// be.
func (s *spool) release() error {
	s.Close()
	name := s.f.Name()
	return errors.Join(s.f.Close(), removeIfThere(name), removeIfThere(s.metaPath))
}

func removeIfThere(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// keep closes the spool's file and leaves it on disk, for the runner's next
// life to send.
func (s *spool) keep() error {
	s.Close()
	return s.f.Close()
}

// appendFunc sends data that starts at offset of the job's log and returns
// the log's size after it. Empty data asks for the size.
type appendFunc func(ctx context.Context, offset int64, data []byte) (int64, error)

// errJobGone: the server no longer has the job (it was deleted).
var errJobGone = errors.New("the server no longer has the job")

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

	base  atomic.Int64 // where the spool starts in the job's log; -1 until known
	acked atomic.Int64 // bytes of the spool the server acknowledged
	// full: the server's last answer was that its disk is full.
	full atomic.Bool
	// failingSince is when the sends started failing; zero while they
	// work. The shipper's goroutine's own.
	failingSince time.Time

	done chan struct{}
	err  error // why it gave up; read after done
}

func newShipper(sp *spool, send appendFunc, log *slog.Logger) *shipper {
	s := &shipper{sp: sp, send: send, log: log, minBO: 100 * time.Millisecond, maxBO: 5 * time.Second, done: make(chan struct{})}
	s.base.Store(sp.getMeta().Base)
	return s
}

// run ships until the spool is closed and fully acknowledged, the shipper
// gives up, or ctx ends.
func (s *shipper) run(ctx context.Context) {
	defer close(s.done)
	s.err = s.ship(ctx)
}

// unsent is how many bytes of the spool the server has not acknowledged.
func (s *shipper) unsent() int64 {
	size, _ := s.sp.state()
	return max(size-s.acked.Load(), 0)
}

func (s *shipper) ship(ctx context.Context) error {
	buf := make([]byte, maxChunk)
	bo := client.NewBackoff(s.minBO, s.maxBO)
	for {
		size, closed := s.sp.state()
		acked := s.acked.Load()
		base := s.base.Load()
		if acked >= size && base >= 0 {
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
		var n int
		var got int64
		var err error
		if base < 0 {
			// Where the output goes: after what the log holds (earlier
			// attempts' output). An empty append answers the log's size.
			got, err = s.send(ctx, 0, nil)
		} else {
			n = int(min(size-acked, maxChunk))
			if _, err := s.sp.f.ReadAt(buf[:n], acked); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read log spool: %w", err)
			}
			got, err = s.send(ctx, base+acked, buf[:n])
		}
		switch {
		case err == nil:
			bo.Reset()
			if base < 0 {
				s.base.Store(got)
				if err := s.sp.update(func(m *spoolMeta) { m.Base = got }, false); err != nil {
					s.log.Warn("the log spool's state is not saved: a restart may not finish sending it", "err", err)
				}
				s.working()
				continue
			}
			got -= base
			if got > size {
				// The server holds more than this runner ever wrote: the
				// log was written by someone else. Nothing of ours is missing.
				s.log.Warn("server's log is longer than the job's output", "server", got, "local", size)
				got = size
			}
			s.acked.Store(max(got, 0))
			s.working()
		case ctx.Err() != nil:
			return ctx.Err()
		case isLeaseLost(err):
			if s.onLost != nil {
				s.onLost()
			}
			return errLeaseLost
		case client.IsCode(err, api.CodeNotFound):
			return errJobGone
		case client.IsCode(err, api.CodeConflict):
			// The server has less than it acknowledged (restored from a
			// backup, say). Resend from the start: the server keeps what it
			// has and answers its true size.
			s.log.Warn("server's log is shorter than acknowledged; resending from its end", "acked", acked)
			s.acked.Store(0)
		case isUnauthenticated(err) && s.reauth != nil:
			s.reauth(ctx)
		case client.Retryable(err):
			s.failing(err)
			if bo.Wait(ctx, err) != nil {
				return ctx.Err()
			}
		default:
			return fmt.Errorf("upload log at offset %d: %w", acked, err)
		}
	}
}

// failing notes a failed send: a warning at the start of an episode, debug
// lines for its retries.
func (s *shipper) failing(err error) {
	s.full.Store(client.IsCode(err, api.CodeInsufficientStorage))
	if !s.failingSince.IsZero() {
		s.log.Debug("log upload failed again; retrying", "unsent", s.unsent(), "err", err)
		return
	}
	s.failingSince = time.Now()
	s.log.Warn("cannot send the job's log to the server: keeping it in the spool and retrying until it is stored",
		"unsent", s.unsent(), "spool", s.sp.f.Name(), "err", err)
}

// working notes a successful send, ending an episode of failures.
func (s *shipper) working() {
	s.full.Store(false)
	if s.failingSince.IsZero() {
		return
	}
	s.log.Info("the server takes the job's log again", "after", time.Since(s.failingSince).Round(time.Millisecond), "unsent", s.unsent())
	s.failingSince = time.Time{}
}

// wait waits until the whole output is acknowledged, the shipper gave up,
// stall passes without progress, or the server says its disk is full. It
// reports whether everything was acknowledged.
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
			if s.full.Load() {
				return false // waiting will not make room
			}
			if a := s.acked.Load(); a != last {
				last = a
				t.Reset(stall)
			}
		case <-t.C:
			return false
		}
	}
}
