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
//
// A runner waiting in a claim (a long poll of up to maxWait) is heard for
// as long as its request is open: hold notes it, and each flush notes it
// again every `every` (the heartbeat interval runners are given) while it
// waits, so that an idle runner need not heartbeat (RunnerRegisterResponse's
// ClaimBeats). 10,000 idle runners then make a claim request every half
// minute each rather than that and a heartbeat every 10 seconds.
type heartbeats struct {
	store store.Store
	log   *slog.Logger
	now   func() time.Time
	// every is how often a held runner is noted: the heartbeat interval.
	every time.Duration
	// onRevived is told of runners the store had offline that a flushed
	// heartbeat brought back.
	onRevived func(ids []string)

	mu      sync.Mutex
	pending map[string]time.Time
	// held are the runners with a request open that counts as their
	// heartbeats, by runner ID.
	held map[string]*hold

	// flushMu makes flushes one at a time, and lets forget wait for a
	// flush in progress.
	flushMu sync.Mutex
}

// heartbeatInterval is how often runners are asked to heartbeat: a third
// of the timeout, so that one lost beat does not take a runner offline.
func heartbeatInterval(timeout time.Duration) time.Duration { return timeout / 3 }

// flushEvery is how often heartbeats are written: a tenth of the heartbeat
// timeout, at most a second.
func flushEvery(timeout time.Duration) time.Duration {
	return min(time.Second, timeout/10)
}

func newHeartbeats(st store.Store, log *slog.Logger, now func() time.Time, every time.Duration, onRevived func([]string)) *heartbeats {
	return &heartbeats{store: st, log: log, now: now, every: every, onRevived: onRevived,
		pending: map[string]time.Time{}, held: map[string]*hold{}}
}

// hold is a runner's open requests that count as its heartbeats.
type hold struct {
	open  int
	noted time.Time // when the runner was last noted for them
}

// hold notes runner id heard at at, and holds it heard until release is
// called: for a request the runner keeps open (a claim's long poll).
func (h *heartbeats) hold(id string, at time.Time) (release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hd := h.held[id]
	if hd == nil {
		hd = &hold{}
		h.held[id] = hd
	}
	hd.open++
	h.noteLocked(id, at)
	hd.noted = at
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		// A runner forgotten meanwhile (it went offline) is not noted
		// again, nor is a new hold of it, made since, ended.
		if h.held[id] != hd {
			return
		}
		if hd.open--; hd.open == 0 {
			delete(h.held, id)
		}
	}
}

// noteHeldLocked notes, at now, the held runners last noted an interval ago
// or more.
func (h *heartbeats) noteHeldLocked(now time.Time) {
	for id, hd := range h.held {
		if now.Sub(hd.noted) >= h.every {
			h.noteLocked(id, now)
			hd.noted = now
		}
	}
}

// note records that runner id was heard at at.
func (h *heartbeats) note(id string, at time.Time) {
	h.mu.Lock()
	h.noteLocked(id, at)
	h.mu.Unlock()
}

func (h *heartbeats) noteLocked(id string, at time.Time) {
	if at.After(h.pending[id]) {
		h.pending[id] = at
	}
}

// forget drops the runner's unwritten heartbeat and its holds, once a
// flush in progress is over: for a runner that goes offline, so that no
// flush brings it back.
func (h *heartbeats) forget(id string) {
	h.flushMu.Lock()
	defer h.flushMu.Unlock()
	h.mu.Lock()
	delete(h.pending, id)
	delete(h.held, id)
	h.mu.Unlock()
}

// flush writes the table's heartbeats. Those it could not write stay for
// the next flush.
func (h *heartbeats) flush(ctx context.Context) error {
	h.flushMu.Lock()
	defer h.flushMu.Unlock()
	h.mu.Lock()
	h.noteHeldLocked(h.now())
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
