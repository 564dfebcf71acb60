package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/sqlite"
	"github.com/dstackai/dstack/store/storetest"
)

func open(t testing.TB) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "dstack.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}

func BenchmarkJobClaimNext(b *testing.B) {
	storetest.BenchmarkJobClaimNext(b, open(b))
}

func BenchmarkJobListPending(b *testing.B) {
	storetest.BenchmarkJobListPending(b, open(b))
}

// TestLockedDatabaseIsUnavailable: while another connection holds the
// write lock, writes fail with store.ErrUnavailable naming the lock once
// the busy timeout has passed, those queued behind them too, and work
// again once the lock is released.
func TestLockedDatabaseIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dstack.db")
	s, err := sqlite.Open(ctx, path, sqlite.WithBusyTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	create := func(name string) error {
		_, err := s.UserCreate(ctx, store.UserCreateParams{ID: name, Name: name, TokenHash: "hash-" + name, Now: time.Now()})
		return err
	}
	errs := make(chan error, 3)
	for i := range 3 {
		go func() { errs <- create(fmt.Sprint("u", i)) }()
	}
	for range 3 {
		err := <-errs
		var ue *store.UnavailableError
		if !errors.As(err, &ue) || !errors.Is(err, store.ErrUnavailable) || !ue.Busy || !strings.Contains(err.Error(), "database is busy") {
			t.Errorf("a write while the database is locked = %v, want a busy store.UnavailableError", err)
		}
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := create("after"); err != nil {
		t.Errorf("a write after the lock is released: %v", err)
	}
}
