package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/dstackai/dstack/store"
)

var heartbeatBatchTests = []test{
	{"later beats win, offline runners come back, unknown ones are skipped", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		a, b, gone := f.runner(u, cpuHost), f.runner(u, cpuHost), f.runner(u, cpuHost)
		cut := f.tick()
		if _, err := f.s.RunnerMarkOffline(f.ctx, store.RunnerMarkOfflineParams{RunnerID: b.ID, HeartbeatBefore: base, MaxAttempts: 1, Now: cut}); err != nil {
			t.Fatalf("RunnerMarkOffline: %v", err)
		}
		if _, err := f.s.RunnerMarkOffline(f.ctx, store.RunnerMarkOfflineParams{RunnerID: gone.ID, HeartbeatBefore: base, MaxAttempts: 1, Now: cut}); err != nil {
			t.Fatalf("RunnerMarkOffline: %v", err)
		}
		if err := f.s.RunnerDelete(f.ctx, store.RunnerDeleteParams{ID: gone.ID}); err != nil {
			t.Fatalf("RunnerDelete: %v", err)
		}
		later := cut.Add(10 * time.Second)
		revived, err := f.s.RunnerHeartbeatBatch(f.ctx, store.RunnerHeartbeatBatchParams{Beats: []store.RunnerBeat{
			{ID: a.ID, At: later}, {ID: b.ID, At: later.Add(time.Second)}, {ID: gone.ID, At: later},
		}})
		if err != nil {
			t.Fatalf("RunnerHeartbeatBatch: %v", err)
		}
		if !slices.Equal(revived, []string{b.ID}) {
			t.Fatalf("RunnerHeartbeatBatch revived %v, want [%s]", revived, b.ID)
		}
		for id, want := range map[string]time.Time{a.ID: later, b.ID: later.Add(time.Second)} {
			r, err := f.s.RunnerGet(f.ctx, id)
			if err != nil {
				t.Fatalf("RunnerGet: %v", err)
			}
			if !r.Online {
				t.Fatalf("runner %s is offline after its heartbeat", id)
			}
			sameTime(t, "LastHeartbeat", r.LastHeartbeat, want)
		}
		// An older beat (written late) does not move a heartbeat back.
		if _, err := f.s.RunnerHeartbeatBatch(f.ctx, store.RunnerHeartbeatBatchParams{Beats: []store.RunnerBeat{{ID: a.ID, At: cut}}}); err != nil {
			t.Fatalf("RunnerHeartbeatBatch: %v", err)
		}
		r, _ := f.s.RunnerGet(f.ctx, a.ID)
		sameTime(t, "LastHeartbeat after an older beat", r.LastHeartbeat, later)
		// An empty batch is nothing to do.
		if revived, err := f.s.RunnerHeartbeatBatch(f.ctx, store.RunnerHeartbeatBatchParams{}); err != nil || len(revived) != 0 {
			t.Fatalf("empty RunnerHeartbeatBatch: %v, %v", revived, err)
		}
	}},
	{"a batch of thousands of beats", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		const n = 2500
		var beats []store.RunnerBeat
		at := f.tick().Add(time.Minute)
		for range n {
			beats = append(beats, store.RunnerBeat{ID: f.id("ghost"), At: at})
		}
		r := f.runner(u, cpuHost)
		beats = append(beats, store.RunnerBeat{ID: r.ID, At: at})
		if _, err := f.s.RunnerHeartbeatBatch(f.ctx, store.RunnerHeartbeatBatchParams{Beats: beats}); err != nil {
			t.Fatalf("RunnerHeartbeatBatch of %d: %v", len(beats), err)
		}
		got, _ := f.s.RunnerGet(f.ctx, r.ID)
		sameTime(t, "LastHeartbeat", got.LastHeartbeat, at)
	}},
}

// BenchmarkRunnerHeartbeatBatch measures what a server's flush of
// heartbeats costs: 10,000 runners that beat every 10 s give a flush of
// 1,000 beats a second. Each operation writes the beats of 1,000 runners,
// a tenth of the fleet in turn.
func BenchmarkRunnerHeartbeatBatch(b *testing.B, s store.Store) {
	ctx := b.Context()
	const fleet, flush = 10000, 1000
	_, rs := benchSetup(b, s, fleet)
	at := base
	b.ResetTimer()
	for it := range b.N {
		at = at.Add(time.Second)
		beats := make([]store.RunnerBeat, flush)
		for i := range beats {
			beats[i] = store.RunnerBeat{ID: rs[(it*flush+i)%fleet].ID, At: at}
		}
		if _, err := s.RunnerHeartbeatBatch(ctx, store.RunnerHeartbeatBatchParams{Beats: beats}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(flush*b.N)/b.Elapsed().Seconds(), "beats/s")
}
