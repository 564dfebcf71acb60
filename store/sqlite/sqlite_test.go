package sqlite_test

import (
	"path/filepath"
	"testing"

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
