package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresDSN creates a fresh schema in the PostgreSQL database named by
// DSTACK_TEST_POSTGRES_DSN, drops it when the test ends, and returns a URL
// whose connections use it (search_path). A schema costs a few milliseconds
// where a database costs a few hundred, and the suite creates one per test;
// the store keeps schemas apart (its migration lock is per schema).
// Without the variable the test fails under CI and is skipped elsewhere:
// `make test` starts PostgreSQL and sets it.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv("DSTACK_TEST_POSTGRES_DSN")
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("DSTACK_TEST_POSTGRES_DSN is not set: run the tests with `make test`")
		}
		t.Skip("DSTACK_TEST_POSTGRES_DSN is not set: `make test` (or scripts/postgres.sh) starts PostgreSQL for these tests")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "dstack_t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP SCHEMA IF EXISTS "+name+" CASCADE")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("DSTACK_TEST_POSTGRES_DSN: %v", err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}
