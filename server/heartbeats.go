package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/dstackai/dstack/store"
)

// heartbeats is the lease table of the runners this replica hears from:
// runner ID → when it was last heard. A heartbeat of a runner that is
// online only updates the table; flush writes the table to the store in
// one batch (RunnerHeartbeatBatch) every flushEvery, so that 10,000
// runners cost a statement a second, not a write per heartbeat.
//
// A runner's liveness in the store is thus up to flushEvery late. The
// reaper flushes first, so it never marks offline a runner this replica
// heard; and it marks offline only runners silent for HeartbeatTimeout
// plus flushEvery, the time another replica may hold a heartbeat unwritten.
type heartbeats struct {
	store store.Store
	log   *slog.Logger
	// onRevived is told of runners the store had offline that a flushed
	// heartbeat brought back.
	onRevived func(ids []string)

	mu      sync.Mutex
	pending map[string]time.Time

	// flushMu makes flushes one at a time, and lets forget wait for a
	// flush in progress.
	flushMu sync.Mutex
}

// flushEvery is how often heartbeats are written: a tenth of the heartbeat
// timeout, at most a second.
func flushEvery(timeout time.Duration) time.Duration {
	return min(time.Second, timeout/10)
}

func newHeartbeats(st store.Store, log *slog.Logger, onRevived func([]string)) *heartbeats {
	return &heartbeats{store: st, log: log, onRevived: onRevived, pending: map[string]time.Time{}}
}

// note records that runner id was heard at at.
func (h *heartbeats) note(id string, at time.Time) {
	h.mu.Lock()
	if at.After(h.pending[id]) {
		h.pending[id] = at
	}
	h.mu.Unlock()
}

// forget drops the runner's unwritten heartbeat, once a flush in progress
// is over: for a runner that goes offline, so that no flush brings it back.
func (h *heartbeats) forget(id string) {
	h.flushMu.Lock()
	defer h.flushMu.Unlock()
	h.mu.Lock()
	delete(h.pending, id)
	h.mu.Unlock()
}

// flush writes the table's heartbeats. Those it could not write stay for
// the next flush.
func (h *heartbeats) flush(ctx context.Context) error {
	h.flushMu.Lock()
	defer h.flushMu.Unlock()
	h.mu.Lock()
	if len(h.pending) == 0 {
		h.mu.Unlock()
		return nil
	}
	taken := h.pending
	h.pending = make(map[string]time.Time, len(taken))
	h.mu.Unlock()
	beats := make([]store.RunnerBeat, 0, len(taken))
	for id, at := range taken {
		beats = append(beats, store.RunnerBeat{ID: id, At: at})
	}
	revived, err := h.store.RunnerHeartbeatBatch(ctx, store.RunnerHeartbeatBatchParams{Beats: beats})
	if err != nil {
		h.mu.Lock()
		for id, at := range taken {
			if at.After(h.pending[id]) {
				h.pending[id] = at
			}
		}
		h.mu.Unlock()
		return err
	}
	if len(revived) > 0 && h.onRevived != nil {
		h.onRevived(revived)
	}
	return nil
}

// loop flushes every `every` until ctx ends, and once more then.
func (h *heartbeats) loop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := h.flush(fctx); err != nil {
				h.log.Warn("write runner heartbeats at stop", "err", err)
			}
			cancel()
			return
		case <-t.C:
		}
		if err := h.flush(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("write runner heartbeats; retrying at the next flush", "err", err)
		}
	}
}
