package aws

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/ec2fake"
	"github.com/dstackai/dstack/internal/testutil"
)

// Test credentials: the fake verifies SigV4 signatures with them.
const (
	testKeyID  = "AKIDDSTACKTEST000001"
	testSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzSECRETzKEY" // must never appear in output
	testServer = "dstack-srv0001"
	testURL    = "http://10.0.0.1:3000"
	// testAttempts is the SDK's attempts per call. It also resends, now and
	// then, a request whose answer it could not read ("use of closed network
	// connection" on a 200, aws/aws-sdk-go-v2#2737), so tests do not count
	// on one request per call where a resend would change the count.
	testAttempts = 5
)

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// tWriter sends log lines to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// noBackoff makes the SDK retry at once.
type noBackoff struct{}

func (noBackoff) BackoffDelay(int, error) (time.Duration, error) { return 0, nil }

// env is one test's cloud and backend.
type env struct {
	t     *testing.T
	fake  *ec2fake.Server
	b     *Backend
	clock *testutil.Clock
	logs  *syncBuffer

	mu     sync.Mutex
	sleeps []time.Duration // the backend's own pauses, not slept
}

type setupOpts struct {
	fake func(*ec2fake.Options)
	cfg  func(*Config)
}

// setup starts a fake EC2 (us-east-1, eu-west-1, us-west-2) and a backend
// on it with the default region us-east-1, no pacing and no pauses.
func setup(t *testing.T, opts ...setupOpts) *env {
	t.Helper()
	e := &env{t: t, clock: testutil.NewClock(time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)), logs: &syncBuffer{}}
	fo := ec2fake.Options{
		Credentials: map[string]string{testKeyID: testSecret},
		Now:         e.clock.Now,
	}
	for _, o := range opts {
		if o.fake != nil {
			o.fake(&fo)
		}
	}
	e.fake = ec2fake.New(fo)
	t.Cleanup(e.fake.Close)
	e.b = e.newBackend(opts...)
	return e
}

// newBackend is another backend (with empty caches) on the env's cloud.
func (e *env) newBackend(opts ...setupOpts) *Backend {
	e.t.Helper()
	cfg := Config{
		AccessKeyID: testKeyID, SecretAccessKey: testSecret, Region: "us-east-1", Endpoint: e.fake.URL(),
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(e.logs, tWriter{e.t}), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:    e.clock.Now, RetryMaxAttempts: testAttempts,
	}
	for _, o := range opts {
		if o.cfg != nil {
			o.cfg(&cfg)
		}
	}
	b, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	b.backoff = noBackoff{}
	b.limiter = rate.NewLimiter(rate.Inf, 0)
	b.sleep = func(ctx context.Context, d time.Duration) error {
		e.mu.Lock()
		e.sleeps = append(e.sleeps, d)
		e.mu.Unlock()
		return ctx.Err()
	}
	return b
}

func (e *env) sleepCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sleeps)
}

// request is a launch of n instances of an offer in us-east-1.
func request(itype string, spot bool, n int) backend.LaunchRequest {
	return requestIn("us-east-1", itype, spot, n)
}

var keySeq struct {
	sync.Mutex
	n int
}

func requestIn(region, itype string, spot bool, n int) backend.LaunchRequest {
	keySeq.Lock()
	keySeq.n++
	k := keySeq.n
	keySeq.Unlock()
	req := backend.LaunchRequest{
		Offer:          backend.Offer{Backend: Name, Region: region, InstanceType: itype, Spot: spot},
		IdempotencyKey: fmt.Sprintf("dl-test-%04d", k),
		ServerID:       testServer,
		LimitID:        "lim-1",
		ServerURL:      testURL,
	}
	for i := range n {
		req.Instances = append(req.Instances, backend.InstanceSpec{
			RecordID:  fmt.Sprintf("rec%04d-%d", k, i),
			JoinToken: fmt.Sprintf("dstj_token%04dx%dsecretpart", k, i),
		})
	}
	return req
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// mustLaunch launches req or fails the test.
func (e *env) mustLaunch(req backend.LaunchRequest) []backend.Instance {
	e.t.Helper()
	got, err := e.b.Launch(ctx(e.t), req)
	if err != nil {
		e.t.Fatalf("Launch(%s x%d): %v", req.Offer.Key(), len(req.Instances), err)
	}
	return got
}

// instance is the fake's view of an instance, or fails the test.
func (e *env) instance(id string) ec2fake.Instance {
	e.t.Helper()
	in, ok := e.fake.Instance(id)
	if !ok {
		e.t.Fatalf("the cloud has no instance %s", id)
	}
	return in
}

// assertKind checks that err is a *backend.Error of kind with AWS's code.
func assertKind(t *testing.T, err error, kind error, code string) *backend.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %v (%s)", kind, code)
	}
	var be *backend.Error
	if !errors.As(err, &be) {
		t.Fatalf("error %v (%T) is no *backend.Error", err, err)
	}
	if kind != nil && !errors.Is(err, kind) {
		t.Fatalf("error %v: want kind %v", err, kind)
	}
	if code != "" && be.Code != code {
		t.Fatalf("error %v: code %q, want %q", err, be.Code, code)
	}
	return be
}
