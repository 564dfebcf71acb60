package notify_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/notify"
	"github.com/dstackai/dstack/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// inbox collects what a Bus receives.
type inbox struct {
	mu      sync.Mutex
	lines   []string
	resyncs int
}

func (i *inbox) receive(l string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.lines = append(i.lines, l)
}

func (i *inbox) resync() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.resyncs++
}

func (i *inbox) got() ([]string, int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.lines), i.resyncs
}

// start starts a Bus on dsn that stops with the test.
func start(t *testing.T, dsn string) (*notify.Bus, *inbox) {
	t.Helper()
	in := &inbox{}
	b, err := notify.New(notify.Config{DSN: dsn, Receive: in.receive, Resync: in.resync, MinBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return b, in
}

func TestLinesReachTheOtherBusesNotTheSender(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	a, fromA := start(t, dsn)
	_, fromB := start(t, dsn)
	_, fromC := start(t, dsn)
	other, fromOther := start(t, storetest.PostgresDSN(t)) // another schema: another server
	a.Publish("w user/1")
	a.Publish("e * runs")
	for name, in := range map[string]*inbox{"b": fromB, "c": fromC} {
		testutil.Eventually(t, "both lines at "+name, func() bool { l, _ := in.got(); return len(l) == 2 })
		if l, _ := in.got(); !slices.Equal(l, []string{"w user/1", "e * runs"}) {
			t.Errorf("%s received %q, want the lines in the order published", name, l)
		}
	}
	// The sender hears nothing of its own; another schema neither: a line
	// published after the others shows that they came through first.
	other.Publish("marker")
	a.Publish("marker")
	testutil.Eventually(t, "the marker at b", func() bool { l, _ := fromB.got(); return slices.Contains(l, "marker") })
	if l, _ := fromA.got(); len(l) != 0 {
		t.Errorf("the sender received its own lines: %q", l)
	}
	if l, _ := fromOther.got(); len(l) != 0 {
		t.Errorf("a bus on another schema received %q", l)
	}
}

func TestABurstIsCoalescedAndSplitToFit(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	a, _ := start(t, dsn)
	_, in := start(t, dsn)
	var want []string
	for i := range 2000 {
		l := "w job/" + strings.Repeat("x", 20) + string(rune('a'+i%26)) + "-" + time.Duration(i).String()
		want = append(want, l)
		a.Publish(l)
		a.Publish(l) // a line waiting to be sent is not queued again
	}
	a.Publish("end")
	testutil.Eventually(t, "every line at b", func() bool { l, _ := in.got(); return slices.Contains(l, "end") })
	got, _ := in.got()
	got = slices.DeleteFunc(got, func(l string) bool { return l == "end" })
	n := len(got)
	slices.Sort(got)
	slices.Sort(want)
	if got = slices.Compact(got); !slices.Equal(got, want) {
		t.Fatalf("received %d distinct lines, want the %d published", len(got), len(want))
	}
	// The sender counts a batch once its round trip ends, which may be
	// after the receiver has it.
	var st notify.Stats
	testutil.Eventually(t, "the sender to count every line", func() bool {
		st = a.Stats()
		return st.Sent > int64(len(want))
	})
	if n >= 2*len(want) || st.Batches >= st.Sent/10 {
		t.Errorf("%d lines received, stats %+v: want the %d lines sent about once each, in a few notifications", n, st, len(want))
	}
}

func TestAListenerThatLosesItsConnectionResyncs(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	a, _ := start(t, dsn)
	b, in := start(t, dsn)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, notify.ListenerPID(b)); err != nil {
		t.Fatalf("end the listening connection: %v", err)
	}
	testutil.Eventually(t, "a resync after the listener reconnected", func() bool { _, n := in.got(); return n == 1 })
	a.Publish("after")
	testutil.Eventually(t, "a line after the reconnect", func() bool { l, _ := in.got(); return slices.Contains(l, "after") })
}

func TestPublishRefusesWhatDoesNotFitALine(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	a, _ := start(t, dsn)
	_, in := start(t, dsn)
	a.Publish("two\nlines")
	a.Publish(strings.Repeat("x", notify.MaxPayload))
	a.Publish("")
	a.Publish("ok")
	testutil.Eventually(t, "the good line", func() bool { l, _ := in.got(); return len(l) > 0 })
	if l, _ := in.got(); !slices.Equal(l, []string{"ok"}) {
		t.Fatalf("received %q, want only the good line", l)
	}
}

// TestTheStoresURLWithPoolSettings: the bus takes the store's URL, pool
// settings (pool_max_conns) and all, which a plain connection refuses.
func TestTheStoresURLWithPoolSettings(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t) + "&pool_max_conns=16"
	a, _ := start(t, dsn)
	_, fromB := start(t, dsn)
	a.Publish("w user/1")
	testutil.Eventually(t, "the line at b", func() bool { l, _ := fromB.got(); return len(l) == 1 })
}
