package runner

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger sends log records to t.Log; DSTACK_TEST_VERBOSE shows debug
// records too.
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("DSTACK_TEST_VERBOSE") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// recorder is a slog handler that keeps the messages of the records at or
// above a level, and passes every record on to next.
type recorder struct {
	next  slog.Handler
	level slog.Level
	mu    *sync.Mutex
	msgs  *[]string
}

func newRecorder(next *slog.Logger, level slog.Level) (*slog.Logger, *recorder) {
	r := &recorder{next: next.Handler(), level: level, mu: &sync.Mutex{}, msgs: new([]string)}
	return slog.New(r), r
}

func (r *recorder) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= r.level || r.next.Enabled(ctx, l)
}

func (r *recorder) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= r.level {
		r.mu.Lock()
		*r.msgs = append(*r.msgs, rec.Level.String()+" "+rec.Message)
		r.mu.Unlock()
	}
	if r.next.Enabled(ctx, rec.Level) {
		return r.next.Handle(ctx, rec)
	}
	return nil
}

func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *r
	c.next = r.next.WithAttrs(as)
	return &c
}

func (r *recorder) WithGroup(name string) slog.Handler {
	c := *r
	c.next = r.next.WithGroup(name)
	return &c
}

// count is how many recorded messages start with prefix.
func (r *recorder) count(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range *r.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}
