// Package notify carries the server's wake-ups between the replicas that
// share one PostgreSQL database, through LISTEN/NOTIFY: a job queued on one
// replica wakes the runners long-polling another within milliseconds, and
// so do a stop request, a change the web UI shows, a wake of the
// autoscaler, and a job's log growing.
//
// A message is one line of text; what the lines mean is the server's. A
// Bus sends what Publish is given to every other replica and hands what
// they send to Config.Receive. Lines published in a burst are coalesced
// (the same line once) and go out together in one NOTIFY, so a busy
// replica sends a few notifications a second, not one per change, and an
// idle one sends each at once.
//
// Each replica keeps one connection of its own listening, and one to
// publish on. A listening connection that breaks is opened again with
// backoff; notifications sent meanwhile are lost, so after reconnecting the
// Bus calls Config.Resync, on which the server wakes everything that waits.
// Messages are hints, never the state itself: whoever is woken reads the
// database.
//
// A replica ignores its own messages: each Bus has a random identity that
// heads every notification it sends.
package notify

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dstackai/dstack/internal/startstop"
)

// MaxPayload bounds one notification's payload; PostgreSQL refuses 8000
// bytes or more.
const MaxPayload = 7900

// Config is how a Bus runs.
type Config struct {
	// DSN is the PostgreSQL database the replicas share, as the store's;
	// the channel is named after the schema its connections use, so that
	// servers in separate schemas of one database do not hear each other.
	DSN string
	// Receive is called with each line another replica published, in
	// order, from the Bus's own goroutine: it must not block for long.
	Receive func(line string)
	// Resync is called after the listening connection was lost and opened
	// again: lines may have been missed meanwhile. May be nil.
	Resync func()
	// Logger receives the Bus's records; nil discards them.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the waits between attempts to
	// reconnect; zero takes 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
}

// Bus is the PostgreSQL bus of one replica. Start it before publishing;
// Stop ends it. Publish never blocks.
type Bus struct {
	cfg  Config
	log  *slog.Logger
	id   string
	life startstop.Base

	mu      sync.Mutex
	pending []string
	queued  map[string]bool
	signal  chan struct{} // one token while pending is not empty

	// channel is the NOTIFY channel, known once the first listening
	// connection asked its schema.
	channel atomic.Value // string

	// stats
	sent, received, batches atomic.Int64
	conn                    atomic.Pointer[pgx.Conn] // the listening connection, for tests
}

// New returns a Bus; it does nothing until Start.
func New(cfg Config) (*Bus, error) {
	if cfg.DSN == "" {
		return nil, errors.New("notify: no database")
	}
	if cfg.Receive == nil {
		return nil, errors.New("notify: no receiver")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	return &Bus{
		cfg:    cfg,
		log:    cfg.Logger.With("subsystem", "notify"),
		id:     hex.EncodeToString(b[:]),
		queued: map[string]bool{},
		signal: make(chan struct{}, 1),
	}, nil
}

// ID is the Bus's identity, which heads the notifications it sends.
func (b *Bus) ID() string { return b.id }

// Start opens the listening connection (an error when it cannot be had)
// and then listens and publishes in the background until ctx ends or
// Stop. A second call does nothing.
func (b *Bus) Start(ctx context.Context) error {
	return b.life.Start(ctx, func(ctx context.Context) error {
		conn, err := b.listen(ctx)
		if err != nil {
			return fmt.Errorf("listen for other replicas' notifications: %w", err)
		}
		b.life.Go(func() { b.receiveLoop(ctx, conn) })
		b.life.Go(func() { b.publishLoop(ctx) })
		return nil
	}, nil)
}

// Stop ends the Bus and closes its connections; lines not yet sent are
// dropped. Safe to call twice, and before Start.
func (b *Bus) Stop() { b.life.Stop() }

// Publish sends line to the other replicas, soon: it never blocks. line
// must not hold a newline; a line already waiting to be sent is not queued
// twice.
func (b *Bus) Publish(line string) {
	if line == "" || strings.ContainsRune(line, '\n') || len(line) > MaxPayload-len(b.id)-1 {
		b.log.Error("notification dropped: empty, multi-line or too long", "line", line)
		return
	}
	b.mu.Lock()
	if !b.queued[line] {
		b.queued[line] = true
		b.pending = append(b.pending, line)
	}
	b.mu.Unlock()
	select {
	case b.signal <- struct{}{}:
	default:
	}
}

// Stats are counts of what a Bus did since New.
type Stats struct {
	// Sent is lines published, Batches the notifications they went out in;
	// Received is lines of other replicas handed to Receive.
	Sent, Batches, Received int64
}

// Stats returns the Bus's counts.
func (b *Bus) Stats() Stats {
	return Stats{Sent: b.sent.Load(), Batches: b.batches.Load(), Received: b.received.Load()}
}

// channelOf names the channel of a schema: "dstack" and the schema, or a
// hash of it where that would be longer than a PostgreSQL identifier.
func channelOf(schema string) string {
	ch := "dstack:" + schema
	if len(ch) > 63 {
		sum := sha256.Sum256([]byte(schema))
		ch = "dstack:" + hex.EncodeToString(sum[:16])
	}
	return ch
}

// connect opens a connection and learns the channel from its schema.
func (b *Bus) connect(ctx context.Context) (*pgx.Conn, string, error) {
	// The URL is the store's, which may carry its pool's settings
	// (pool_max_conns): the pool's parser takes them out.
	pc, err := pgxpool.ParseConfig(b.cfg.DSN)
	if err != nil {
		return nil, "", err
	}
	conn, err := pgx.ConnectConfig(ctx, pc.ConnConfig)
	if err != nil {
		return nil, "", err
	}
	var schema string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, "", err
	}
	ch := channelOf(schema)
	b.channel.Store(ch)
	return conn, ch, nil
}

// listen opens a listening connection.
func (b *Bus) listen(ctx context.Context) (*pgx.Conn, error) {
	conn, ch, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	b.conn.Store(conn)
	return conn, nil
}

// receiveLoop hands the notifications of conn to Receive; when conn breaks
// it listens again, with backoff, and resyncs.
func (b *Bus) receiveLoop(ctx context.Context, conn *pgx.Conn) {
	defer func() {
		if conn != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
		}
	}()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err == nil {
			b.deliver(n.Payload)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		b.log.Warn("lost the connection that listens for other replicas' notifications: reconnecting "+
			"(until then, waiters on this replica see other replicas' changes at their next recheck)", "err", err)
		_ = conn.Close(context.WithoutCancel(ctx))
		conn = nil
		for wait := b.cfg.MinBackoff; conn == nil; wait = min(2*wait, b.cfg.MaxBackoff) {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if conn, err = b.listen(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				b.log.Debug("listen again", "err", err, "next_attempt_in", min(2*wait, b.cfg.MaxBackoff))
			}
		}
		b.log.Info("listening for other replicas' notifications again")
		if b.cfg.Resync != nil {
			b.cfg.Resync()
		}
	}
}

// deliver hands the lines of a notification from another replica to
// Receive.
func (b *Bus) deliver(payload string) {
	from, rest, _ := strings.Cut(payload, "\n")
	if from == b.id {
		return
	}
	for line := range strings.SplitSeq(rest, "\n") {
		if line != "" {
			b.received.Add(1)
			b.cfg.Receive(line)
		}
	}
}

// take returns the lines pending and clears them.
func (b *Bus) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.pending
	b.pending = nil
	clear(b.queued)
	return out
}

// publishLoop sends what Publish queued: all that is pending at once, in
// as few notifications as fit, while the next burst gathers.
func (b *Bus) publishLoop(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
		}
	}()
	var failing bool
	wait := b.cfg.MinBackoff
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.signal:
		}
		lines := b.take()
		if len(lines) == 0 {
			continue
		}
		var err error
		if conn == nil {
			conn, _, err = b.connect(ctx)
		}
		if err == nil {
			err = b.send(ctx, conn, lines)
		}
		if err == nil {
			if failing {
				b.log.Info("publishing to other replicas again")
			}
			failing, wait = false, b.cfg.MinBackoff
			continue
		}
		if ctx.Err() != nil {
			return
		}
		// The lines are lost: other replicas see the changes at their
		// next recheck. Wait a little before trying again.
		if !failing {
			b.log.Warn("cannot notify the other replicas: they see this replica's changes at their next recheck until it can", "err", err)
		}
		failing = true
		if conn != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
			conn = nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, b.cfg.MaxBackoff)
	}
}

// send publishes lines in notifications of at most MaxPayload bytes, all
// in one round trip.
func (b *Bus) send(ctx context.Context, conn *pgx.Conn, lines []string) error {
	ch, _ := b.channel.Load().(string)
	var batch pgx.Batch
	var p strings.Builder
	flush := func() {
		if p.Len() > len(b.id) {
			batch.Queue(`SELECT pg_notify($1, $2)`, ch, p.String())
		}
		p.Reset()
		p.WriteString(b.id)
	}
	p.WriteString(b.id)
	for _, l := range lines {
		if p.Len()+1+len(l) > MaxPayload {
			flush()
		}
		p.WriteByte('\n')
		p.WriteString(l)
	}
	flush()
	if err := conn.SendBatch(ctx, &batch).Close(); err != nil {
		return err
	}
	b.sent.Add(int64(len(lines)))
	b.batches.Add(int64(batch.Len()))
	return nil
}
