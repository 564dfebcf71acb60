package postgres_test

import (
	"testing"

	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/postgres"
	"github.com/dstackai/dstack/store/storetest"
)

func open(t testing.TB) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), storetest.PostgresDSN(t))
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
