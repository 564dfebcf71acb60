package s3blob_test

import (
	"bytes"
	"context"
	"io"
	"testing"
)

// BenchmarkS3Throughput uploads and downloads a 64 MiB object through the
// real SDK against the in-process fake S3, with the default part size and
// concurrency; MB/s is the throughput. The fake keeps objects in memory, so
// the figures measure this package, the SDK and the loopback HTTP path, not
// a real S3.
func BenchmarkS3Throughput(b *testing.B) {
	const size = 64 << 20
	data, err := io.ReadAll(newPatterned(size))
	if err != nil {
		b.Fatal(err)
	}
	f := newFake(b)
	s := f.open(b, f.config("s3://"+bucket+"/bench"))
	ctx := context.Background()

	b.Run("Upload", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if _, err := s.Put(ctx, "obj", bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Download", func(b *testing.B) {
		if _, err := s.Put(ctx, "obj", bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(size)
		for b.Loop() {
			rc, _, err := s.Open(ctx, "obj", 0)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil || n != size {
				b.Fatalf("read %d bytes, %v; want %d", n, err, size)
			}
		}
	})
}
