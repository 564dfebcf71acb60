package s3blob_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dstackai/dstack/blob"
	"github.com/dstackai/dstack/blob/blobtest"
	"github.com/dstackai/dstack/blob/s3blob"
)

const bucket = "dstack-test"

// fake is an in-process S3 (gofakes3 on its memory backend) that records
// the requests it serves.
type fake struct {
	srv     *httptest.Server
	backend *s3mem.Backend
	raw     *s3.Client // talks to the fake directly, around the Store

	mu   sync.Mutex
	reqs []request
	// onRequest, if set, runs before each request is served.
	onRequest func(request)
}

type request struct {
	Method, Path, Query, Range string
}

func newFake(t testing.TB) *fake {
	t.Helper()
	f := &fake{backend: s3mem.New()}
	h := gofakes3.New(f.backend).Server()
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Range: r.Header.Get("Range")}
		f.mu.Lock()
		f.reqs = append(f.reqs, req)
		hook := f.onRequest
		f.mu.Unlock()
		if hook != nil {
			hook(req)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	if err := f.backend.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	f.raw = s3.New(s3.Options{
		BaseEndpoint: aws.String(f.srv.URL),
		UsePathStyle: true,
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		HTTPClient:   f.srv.Client(),
	})
	return f
}

// config returns a Config for url on the fake.
func (f *fake) config(url string) s3blob.Config {
	return s3blob.Config{
		URL:             url,
		Endpoint:        f.srv.URL,
		AccessKeyID:     "test",
		SecretAccessKey: "test",
		HTTPClient:      f.srv.Client(),
	}
}

func (f *fake) open(t testing.TB, cfg s3blob.Config) *s3blob.Store {
	t.Helper()
	s, err := s3blob.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg.URL, err)
	}
	return s
}

// count returns how many recorded requests match.
func (f *fake) count(match func(request) bool) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.reqs {
		if match(r) {
			n++
		}
	}
	return n
}

func (f *fake) reset() {
	f.mu.Lock()
	f.reqs = nil
	f.mu.Unlock()
}

// plant writes an object around the Store.
func (f *fake) plant(t testing.TB, key, content string) {
	t.Helper()
	_, err := f.raw.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(content)})
	if err != nil {
		t.Fatalf("plant %s: %v", key, err)
	}
}

// pendingUploads returns the multipart uploads begun and neither completed
// nor aborted.
func (f *fake) pendingUploads(t testing.TB) int {
	t.Helper()
	out, err := f.raw.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	return len(out.Uploads)
}

func isUploadPart(r request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.Query, "partNumber=")
}

func TestConformance(t *testing.T) {
	t.Parallel()
	t.Run("BucketRoot", func(t *testing.T) {
		t.Parallel()
		blobtest.Run(t, func(t *testing.T) blob.Store {
			f := newFake(t)
			return f.open(t, f.config("s3://"+bucket))
		})
	})
	// Under a prefix, with objects around it that the store must not see,
	// and pages small enough that List pages.
	t.Run("Prefix", func(t *testing.T) {
		t.Parallel()
		blobtest.Run(t, func(t *testing.T) blob.Store {
			f := newFake(t)
			for _, k := range []string{"outside", "tenant/ab/x", "tenant/a", "tenant/a/marker/"} {
				f.plant(t, k, "not the store's")
			}
			cfg := f.config("s3://" + bucket + "/tenant/a")
			cfg.ListPageSize = 7
			return f.open(t, cfg)
		})
	})
}

// patterned is a reader of n deterministic pseudo-random bytes that never
// holds them all; it records how far it has been read.
type patterned struct {
	rng  *rand.ChaCha8
	left int64
	read atomic.Int64
}

func newPatterned(n int64) *patterned {
	return &patterned{rng: rand.NewChaCha8([32]byte{1, 2, 3}), left: n}
}

func (p *patterned) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, _ := p.rng.Read(b)
	p.left -= int64(n)
	p.read.Add(int64(n))
	return n, nil
}

func TestLargeMultipartObject(t *testing.T) {
	t.Parallel()
	const size = 40<<20 + 12345
	const part = 5 << 20
	f := newFake(t)
	cfg := f.config("s3://" + bucket + "/big")
	cfg.PartSize, cfg.Concurrency = part, 2
	s := f.open(t, cfg)

	// When the first part reaches S3, the Put must not have read the whole
	// object: it streams, holding a few parts at most.
	src := newPatterned(size)
	var readAtFirstPart atomic.Int64
	readAtFirstPart.Store(-1)
	f.mu.Lock()
	f.onRequest = func(r request) {
		if isUploadPart(r) {
			readAtFirstPart.CompareAndSwap(-1, src.read.Load())
		}
	}
	f.mu.Unlock()
	n, err := s.Put(context.Background(), "job/model.bin", src)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if n != size {
		t.Errorf("Put = %d bytes, want %d", n, size)
	}
	parts := f.count(isUploadPart)
	if want := (size + part - 1) / part; parts != want {
		t.Errorf("Put sent %d parts, want %d of %d bytes", parts, want, part)
	}
	if got, limit := readAtFirstPart.Load(), int64(part*(cfg.Concurrency+2)); got < 0 || got > limit {
		t.Errorf("at the first UploadPart, %d bytes had been read; want at most %d (no whole-object buffering)", got, limit)
	}
	if pending := f.pendingUploads(t); pending != 0 {
		t.Errorf("%d multipart uploads left pending", pending)
	}

	want := sha256.New()
	if _, err := io.Copy(want, newPatterned(size)); err != nil {
		t.Fatal(err)
	}
	rc, got, err := s.Open(context.Background(), "job/model.bin", 0)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	m, err := io.Copy(h, rc)
	rc.Close()
	if err != nil || m != size || got != size || !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
		t.Fatalf("read back %d bytes (announced %d, err %v), sha256 equal %v; want %d bytes", m, got, err, bytes.Equal(h.Sum(nil), want.Sum(nil)), size)
	}

	// Resume near the end: a ranged GET fetches only the tail.
	f.reset()
	const off = size - 3<<20 - 7
	tail, announced := blobtest.MustRead(t, s, "job/model.bin", off)
	full := make([]byte, size)
	if _, err := io.ReadFull(newPatterned(size), full); err != nil {
		t.Fatal(err)
	}
	if announced != size-off || tail != string(full[off:]) {
		t.Errorf("Open at %d: %d bytes announced, %d read; want the last %d bytes", off, announced, len(tail), size-off)
	}
	if ranged := f.count(func(r request) bool { return r.Method == http.MethodGet && r.Range == fmt.Sprintf("bytes=%d-", off) }); ranged != 1 {
		t.Errorf("%d GETs with Range bytes=%d-, want 1", ranged, off)
	}
	if obj, err := s.Stat(context.Background(), "job/model.bin"); err != nil || obj.Size != size {
		t.Errorf("Stat = %+v, %v; want size %d", obj, err, size)
	}
}

// cancelAfter reads n bytes of src, then cancels and keeps going, as a
// client whose request is torn down mid-upload.
type cancelAfter struct {
	src    io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.src.Read(p)
	if c.n -= int64(n); c.n <= 0 {
		c.cancel()
	}
	return n, err
}

func TestCancelledPutLeavesNothing(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	cfg := f.config("s3://" + bucket)
	cfg.PartSize = 5 << 20
	s := f.open(t, cfg)
	blobtest.MustPut(t, s, "replaced", "version 1")

	for _, key := range []string{"fresh", "replaced"} {
		for _, cut := range []int64{1 << 20, 12 << 20} { // within the first part, and mid-multipart
			ctx, cancel := context.WithCancel(context.Background())
			_, err := s.Put(ctx, key, &cancelAfter{src: newPatterned(30 << 20), n: cut, cancel: cancel})
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Put(%s) cancelled after %d bytes = %v, want context.Canceled", key, cut, err)
			}
		}
	}
	if _, err := s.Stat(context.Background(), "fresh"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("after cancelled Puts, Stat(fresh) = %v, want ErrNotFound", err)
	}
	if got, _ := blobtest.MustRead(t, s, "replaced", 0); got != "version 1" {
		t.Errorf("after cancelled Puts, replaced = %q, want the old version", got)
	}
	if f.count(isUploadPart) == 0 {
		t.Error("no part was uploaded: the test did not reach a multipart upload")
	}
	if pending := f.pendingUploads(t); pending != 0 {
		t.Errorf("%d multipart uploads left pending after cancelled Puts, want them aborted", pending)
	}
}

func TestListPagination(t *testing.T) {
	t.Parallel()
	isList := func(r request) bool { return r.Method == http.MethodGet && strings.Contains(r.Query, "list-type=2") }
	for _, tc := range []struct {
		pageSize  int32
		keys      int
		wantPages int
	}{
		{0, 1001, 2}, // S3's default page of 1000
		{10, 95, 10},
		{10, 100, 10},
	} {
		t.Run(fmt.Sprintf("%d_keys_by_%d", tc.keys, tc.pageSize), func(t *testing.T) {
			t.Parallel()
			f := newFake(t)
			cfg := f.config("s3://" + bucket + "/p")
			cfg.ListPageSize = tc.pageSize
			s := f.open(t, cfg)
			var want []string
			for i := range tc.keys {
				want = append(want, fmt.Sprintf("k/%05d", i))
			}
			// Planted through the backend: fast, and keys under the prefix.
			for _, k := range want {
				if _, err := f.backend.PutObject(bucket, "p/"+k, nil, strings.NewReader("v"), 1, nil); err != nil {
					t.Fatal(err)
				}
			}
			f.reset()
			got := blobtest.Keys(t, s, "k/")
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("List returned %d keys, want %d in order", len(got), len(want))
			}
			if pages := f.count(isList); pages != tc.wantPages {
				t.Errorf("List made %d ListObjectsV2 calls, want %d", pages, tc.wantPages)
			}
		})
	}
}

func TestInvalidKeysSendNothing(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	s := f.open(t, f.config("s3://"+bucket))
	f.reset()
	ctx := context.Background()
	for _, key := range []string{"../x", "/x", "a//b", "a/", ""} {
		if _, err := s.Put(ctx, key, strings.NewReader("x")); err == nil || !strings.Contains(err.Error(), "invalid object key") {
			t.Errorf("Put(%q) = %v, want an invalid-key error", key, err)
		}
		if _, _, err := s.Open(ctx, key, 3); err == nil {
			t.Errorf("Open(%q) succeeded", key)
		}
	}
	if _, err := s.List(ctx, "a/../"); err == nil {
		t.Error(`List("a/../") succeeded`)
	}
	if n := f.count(func(request) bool { return true }); n != 0 {
		t.Errorf("invalid keys sent %d requests to S3, want none", n)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for _, tc := range []struct {
		name string
		cfg  func() s3blob.Config
		want []string
	}{
		{"MissingBucket", func() s3blob.Config { return f.config("s3://no-such-bucket/x") }, []string{`bucket "no-such-bucket" not found`, f.srv.URL, "create it"}},
		{"BadURL", func() s3blob.Config { return f.config("https://" + bucket) }, []string{`scheme "https" is not s3`}},
		{"BadBucketName", func() s3blob.Config { return f.config("s3://Bad_Bucket") }, []string{"lowercase letters"}},
		{"HalfCredentials", func() s3blob.Config { c := f.config("s3://" + bucket); c.SecretAccessKey = ""; return c }, []string{"set both"}},
		{"BadEndpoint", func() s3blob.Config { c := f.config("s3://" + bucket); c.Endpoint = "localhost:9000"; return c }, []string{"http:// or https://"}},
		{"SmallParts", func() s3blob.Config { c := f.config("s3://" + bucket); c.PartSize = 1 << 20; return c }, []string{"at least"}},
		{"Unreachable", func() s3blob.Config {
			c := f.config("s3://" + bucket)
			c.Endpoint, c.HTTPClient = closed.URL, nil
			return c
		}, []string{"cannot reach S3 bucket", closed.URL}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := s3blob.Open(ctx, tc.cfg())
			if err == nil {
				t.Fatalf("Open = %v, want an error", s)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Open error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestBucketGone(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	s := f.open(t, f.config("s3://"+bucket))
	if err := f.backend.DeleteBucket(bucket); err != nil {
		t.Fatal(err)
	}
	// GET says which is missing; HEAD cannot, so Stat reports the object.
	if _, _, err := s.Open(context.Background(), "k", 0); err == nil || errors.Is(err, blob.ErrNotFound) || !strings.Contains(err.Error(), "no longer exists") {
		t.Errorf("Open in a deleted bucket = %v, want a missing-bucket error, not ErrNotFound", err)
	}
	if _, err := s.List(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("List in a deleted bucket = %v, want a bucket-not-found error", err)
	}
}

// failingAbort is an S3 client whose second part and every abort fail.
type failingAbort struct {
	*s3.Client
	parts atomic.Int32
}

func (c *failingAbort) UploadPart(ctx context.Context, in *s3.UploadPartInput, opts ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	if c.parts.Add(1) == 2 {
		return nil, errors.New("connection reset by peer")
	}
	return c.Client.UploadPart(ctx, in, opts...)
}

func (c *failingAbort) AbortMultipartUpload(context.Context, *s3.AbortMultipartUploadInput, ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	return nil, errors.New("network unreachable")
}

// TestAbortFailureIsReported: when the parts of a failed upload cannot be
// removed, the error says so and what to do about it.
func TestAbortFailureIsReported(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	s, err := s3blob.New(&failingAbort{Client: f.raw}, s3blob.Location{Bucket: bucket, Prefix: "x/"}, s3blob.Config{PartSize: 5 << 20, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Put(context.Background(), "obj", newPatterned(12<<20))
	if err == nil {
		t.Fatal("Put succeeded with a failing part")
	}
	for _, w := range []string{"connection reset by peer", "abort multipart upload", "network unreachable", "lifecycle rule"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Put error %q does not mention %q", err, w)
		}
	}
	if _, err := s.Stat(context.Background(), "obj"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("after a failed Put, Stat = %v, want ErrNotFound", err)
	}
	if pending := f.pendingUploads(t); pending != 1 {
		t.Errorf("%d pending uploads, want the 1 whose abort failed", pending)
	}
}
