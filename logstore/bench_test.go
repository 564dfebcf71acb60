package logstore_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/dstackai/dstack/logstore"
	"github.com/dstackai/dstack/store/postgres"
	"github.com/dstackai/dstack/store/sqlite"
	"github.com/dstackai/dstack/store/storetest"
)

// benchStores are the stores the benchmarks compare: files, and the
// database's table on SQLite and on PostgreSQL.
func benchStores(b *testing.B) []struct {
	name string
	open func(b *testing.B) logstore.Store
} {
	return []struct {
		name string
		open func(b *testing.B) logstore.Store
	}{
		{"files", func(b *testing.B) logstore.Store {
			s, err := logstore.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"db-sqlite", func(b *testing.B) logstore.Store {
			s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "dstack.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			if err := s.Migrate(b.Context()); err != nil {
				b.Fatal(err)
			}
			return logstore.NewDB(s, nil)
		}},
		{"db-postgres", func(b *testing.B) logstore.Store {
			s, err := postgres.Open(b.Context(), storetest.PostgresDSN(b))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			if err := s.Migrate(b.Context()); err != nil {
				b.Fatal(err)
			}
			return logstore.NewDB(s, nil)
		}},
	}
}

// BenchmarkAppend measures a job's log appends as a runner sends them, one
// after the other: small chunks (a line or a few, a quiet job) and 1 MiB
// (a job writing as fast as it can; the runner's largest chunk).
func BenchmarkAppend(b *testing.B) {
	for _, st := range benchStores(b) {
		for _, size := range []int{200, 64 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("%s/%dB", st.name, size), func(b *testing.B) {
				s := st.open(b)
				line := []byte("a log line of sixty-four bytes, give or take: 0123456789abcdef\n")
				chunk := bytes.Repeat(line, size/len(line)+1)[:size]
				ctx := context.Background()
				var off int64
				b.SetBytes(int64(size))
				b.ResetTimer()
				for b.Loop() {
					n, err := s.Append(ctx, "job", off, chunk, time.Now())
					if err != nil {
						b.Fatal(err)
					}
					off = n
				}
			})
		}
	}
}

// BenchmarkRead measures a reader of a whole 64 MiB log written in 64 KiB
// chunks.
func BenchmarkRead(b *testing.B) {
	const total, size = 64 << 20, 64 << 10
	for _, st := range benchStores(b) {
		b.Run(st.name, func(b *testing.B) {
			s := st.open(b)
			chunk := bytes.Repeat([]byte("x"), size)
			ctx := context.Background()
			for off := int64(0); off < total; off += size {
				if _, err := s.Append(ctx, "job", off, chunk, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(total)
			b.ResetTimer()
			for b.Loop() {
				var w countWriter
				if err := s.Copy(ctx, "job", &w, logstore.ReadOptions{}); err != nil {
					b.Fatal(err)
				}
				if w != total {
					b.Fatalf("read %d bytes, want %d", w, total)
				}
			}
		})
	}
}

type countWriter int64

func (w *countWriter) Write(p []byte) (int, error) { *w += countWriter(len(p)); return len(p), nil }

var _ io.Writer = (*countWriter)(nil)
