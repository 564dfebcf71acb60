package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/testutil"
)

// logServer is an httptest server that keeps one job's log the way the real
// server does: a chunk at an offset the log already covers is kept once, a
// chunk past the end is refused with 409 conflict. It misbehaves on demand.
type logServer struct {
	*httptest.Server
	t testing.TB

	mu       sync.Mutex
	log      []byte
	requests int
	// failFirst requests answer 503 without touching the log.
	failFirst int
	// loseAnswerEvery: every Nth request is applied, then answered 500, as
	// if the answer was lost on the way.
	loseAnswerEvery int
	// answer, when set, replaces the handling of a request.
	answer func(w http.ResponseWriter, n int) bool
}

func newLogServer(t testing.TB) *logServer {
	s := &logServer{t: t}
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	t.Cleanup(s.Close)
	return s
}

func writeAPIError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: code, Message: msg}})
}

func (s *logServer) handle(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	n := s.requests
	if s.answer != nil && s.answer(w, n) {
		return
	}
	if n <= s.failFirst {
		writeAPIError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "starting up")
		return
	}
	if r.Header.Get(api.LeaseHeader) != "7" {
		writeAPIError(w, http.StatusConflict, api.CodeLeaseLost, "wrong lease")
		return
	}
	offset, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if err != nil || offset < 0 {
		writeAPIError(w, http.StatusBadRequest, api.CodeInvalid, "bad offset")
		return
	}
	size := int64(len(s.log))
	if offset > size {
		writeAPIError(w, http.StatusConflict, api.CodeConflict, "log chunk starts past the end of the log ("+strconv.FormatInt(size, 10)+" bytes): resend from there")
		return
	}
	if end := offset + int64(len(data)); end > size {
		s.log = append(s.log, data[size-offset:]...)
	}
	if s.loseAnswerEvery > 0 && n%s.loseAnswerEvery == 0 {
		writeAPIError(w, http.StatusInternalServerError, api.CodeInternal, "answer lost")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(api.LogAppendResponse{Size: int64(len(s.log))})
}

func (s *logServer) content() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.log)
}

type shipFixture struct {
	srv *logServer
	sp  *spool
	sh  *shipper
	ctx context.Context
}

// setupShipper starts a shipper to a log server that configure sets up;
// each of prepare sets the shipper up before it starts.
func setupShipper(t testing.TB, configure func(*logServer), prepare ...func(*shipper)) shipFixture {
	t.Helper()
	return setupShipperLog(t, configure, testLogger(t), prepare...)
}

// setupShipperLog is setupShipper with the shipper logging to log.
func setupShipperLog(t testing.TB, configure func(*logServer), log *slog.Logger, prepare ...func(*shipper)) shipFixture {
	t.Helper()
	srv := newLogServer(t)
	if configure != nil {
		configure(srv)
	}
	c, err := client.New(srv.URL, "runner-token")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := createSpool(t.TempDir(), "job-1", 7)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.release() })
	sh := newShipper(sp, func(ctx context.Context, offset int64, data []byte) (int64, error) {
		return c.JobLogAppend(ctx, "job-1", 7, offset, data)
	}, log)
	sh.minBO, sh.maxBO = time.Millisecond, 20*time.Millisecond
	for _, p := range prepare {
		p(sh)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		<-sh.done
	})
	go sh.run(ctx)
	return shipFixture{srv: srv, sp: sp, sh: sh, ctx: ctx}
}

// writeRandom writes n random bytes to the spool in pieces of random size
// and returns them.
func writeRandom(t *testing.T, sp *spool, n int, seed uint64) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	want := make([]byte, n)
	for i := range want {
		want[i] = byte('a' + rng.IntN(26))
	}
	for off := 0; off < n; {
		k := min(n-off, 1+rng.IntN(300<<10))
		if _, err := sp.Write(want[off : off+k]); err != nil {
			t.Fatal(err)
		}
		off += k
	}
	return want
}

func TestShipperDeliversEveryByteOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		configure func(*logServer)
		size      int
	}{
		{"healthy server", nil, 5 << 20},
		{"server down at first", func(s *logServer) { s.failFirst = 10 }, 3 << 20},
		{"answers lost after applying", func(s *logServer) { s.loseAnswerEvery = 3 }, 4 << 20},
		{"connections dropped", func(s *logServer) {
			s.answer = func(w http.ResponseWriter, n int) bool {
				if n%4 != 0 {
					return false
				}
				// Drop the connection without an answer.
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
				return true
			}
		}, 3 << 20},
		{"empty output", nil, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setupShipper(t, tt.configure)
			want := writeRandom(t, f.sp, tt.size, uint64(i+1))
			f.sp.Close()
			if !f.sh.wait(10 * time.Second) {
				t.Fatalf("not all acknowledged: %d of %d, err %v", f.sh.acked.Load(), tt.size, f.sh.err)
			}
			if got := f.srv.content(); !bytes.Equal(got, want) {
				t.Fatalf("server has %d bytes, want %d (equal prefix: %v)", len(got), len(want), bytes.HasPrefix(want, got))
			}
		})
	}
}

func TestShipperResendsWhenServerLostData(t *testing.T) {
	t.Parallel()
	f := setupShipper(t, nil)
	first := writeRandom(t, f.sp, 2<<20, 42)
	testutil.Eventually(t, "the first part to be acknowledged", func() bool { return f.sh.acked.Load() == int64(len(first)) })
	// The server loses the second half of what it acknowledged.
	f.srv.mu.Lock()
	f.srv.log = f.srv.log[:1<<20]
	f.srv.mu.Unlock()
	second := writeRandom(t, f.sp, 1<<20, 43)
	f.sp.Close()
	if !f.sh.wait(10 * time.Second) {
		t.Fatalf("not all acknowledged: %v", f.sh.err)
	}
	if got, want := f.srv.content(), append(first, second...); !bytes.Equal(got, want) {
		t.Fatalf("server has %d bytes, want %d", len(got), len(want))
	}
}

func TestShipperStops(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		answer   func(w http.ResponseWriter, n int) bool
		wantErr  func(error) bool
		wantLost bool
	}{
		{"lease lost", func(w http.ResponseWriter, _ int) bool {
			writeAPIError(w, http.StatusConflict, api.CodeLeaseLost, "gone")
			return true
		}, isLeaseLost, true},
		{"refused for good", func(w http.ResponseWriter, _ int) bool {
			writeAPIError(w, http.StatusRequestEntityTooLarge, api.CodeTooLarge, "too large")
			return true
		}, func(err error) bool { return client.IsCode(err, api.CodeTooLarge) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var lost sync.WaitGroup
			lost.Add(1)
			var once sync.Once
			f := setupShipper(t, func(s *logServer) { s.answer = tt.answer },
				func(sh *shipper) { sh.onLost = func() { once.Do(lost.Done) } })
			_, _ = f.sp.Write([]byte("hello\n"))
			<-f.sh.done
			if !tt.wantErr(f.sh.err) {
				t.Errorf("err = %v", f.sh.err)
			}
			if tt.wantLost {
				lost.Wait()
			}
			if f.sh.wait(time.Second) {
				t.Errorf("wait reports success after a failure")
			}
		})
	}
}

func TestShipperWaitGivesUpWithoutProgress(t *testing.T) {
	t.Parallel()
	f := setupShipper(t, func(s *logServer) { s.failFirst = 1 << 30 })
	_, _ = f.sp.Write([]byte("never delivered\n"))
	f.sp.Close()
	start := time.Now()
	if f.sh.wait(200 * time.Millisecond) {
		t.Fatal("wait succeeded against a server that is down")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("wait took %v", d)
	}
}

func TestShipperCancelled(t *testing.T) {
	t.Parallel()
	f := setupShipper(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	sh := newShipper(f.sp, func(context.Context, int64, []byte) (int64, error) { return 0, errors.New("unused") }, testLogger(t))
	done := make(chan struct{})
	go func() {
		sh.run(ctx)
		close(done)
	}()
	cancel()
	<-done
	if !errors.Is(sh.err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", sh.err)
	}
}

// answerFull answers the first n requests 507, as a server whose disk is
// full does.
func answerFull(n int) func(w http.ResponseWriter, i int) bool {
	return func(w http.ResponseWriter, i int) bool {
		if i > n {
			return false
		}
		writeAPIError(w, http.StatusInsufficientStorage, api.CodeInsufficientStorage, "the server's disk is full")
		return true
	}
}

func TestShipperWarnsOncePerEpisode(t *testing.T) {
	t.Parallel()
	log, rec := newRecorder(testLogger(t), slog.LevelInfo)
	f := setupShipperLog(t, func(s *logServer) { s.answer = answerFull(30) }, log)
	want := writeRandom(t, f.sp, 3<<20, 7)
	f.sp.Close()
	<-f.sh.done
	if f.sh.err != nil {
		t.Fatalf("shipper gave up: %v", f.sh.err)
	}
	if got := f.srv.content(); !bytes.Equal(got, want) {
		t.Fatalf("server has %d bytes, want %d", len(got), len(want))
	}
	if n := rec.count("WARN cannot send the job's log"); n != 1 {
		t.Errorf("%d warnings for one episode of 30 failures, want 1", n)
	}
	if n := rec.count("INFO the server takes the job's log again"); n != 1 {
		t.Errorf("%d notes of the recovery, want 1", n)
	}
}

func TestShipperWaitEndsWhenTheServerIsFull(t *testing.T) {
	t.Parallel()
	f := setupShipper(t, func(s *logServer) { s.answer = answerFull(1 << 30) })
	_, _ = f.sp.Write([]byte("not stored yet\n"))
	f.sp.Close()
	// The stall timeout is far away: only the server's answer ends the wait.
	if f.sh.wait(time.Hour) {
		t.Fatal("wait reports the log stored by a full server")
	}
	if n := f.sh.unsent(); n != int64(len("not stored yet\n")) {
		t.Errorf("unsent = %d", n)
	}
	select {
	case <-f.sh.done:
		t.Fatalf("the shipper gave up: %v", f.sh.err)
	default:
	}
}

func TestSpoolResumesFromDisk(t *testing.T) {
	t.Parallel()
	srv := newLogServer(t)
	srv.log = []byte("earlier attempt\n")
	dir := t.TempDir()
	sp, err := createSpool(dir, "job-1", 7)
	if err != nil {
		t.Fatal(err)
	}
	want := writeRandom(t, sp, 2<<20, 9)
	if err := sp.update(func(m *spoolMeta) { m.Base, m.Final = int64(len(srv.log)), true }, true); err != nil {
		t.Fatal(err)
	}
	if err := sp.keep(); err != nil {
		t.Fatal(err)
	}

	// A later life of the runner finds it.
	ids, err := listSpools(dir)
	if err != nil || len(ids) != 1 || ids[0] != "job-1" {
		t.Fatalf("listSpools = %v, %v", ids, err)
	}
	sp, err = openSpool(dir, "job-1")
	if err != nil {
		t.Fatal(err)
	}
	if m := sp.getMeta(); !m.Final || m.Lease != 7 || m.Base != int64(len("earlier attempt\n")) {
		t.Fatalf("meta = %+v", m)
	}
	c, err := client.New(srv.URL, "runner-token")
	if err != nil {
		t.Fatal(err)
	}
	sh := newShipper(sp, func(ctx context.Context, offset int64, data []byte) (int64, error) {
		return c.JobLogAppend(ctx, "job-1", 7, offset, data)
	}, testLogger(t))
	sh.minBO, sh.maxBO = time.Millisecond, 20*time.Millisecond
	sh.run(t.Context())
	if sh.err != nil {
		t.Fatal(sh.err)
	}
	if got := srv.content(); !bytes.Equal(got, append([]byte("earlier attempt\n"), want...)) {
		t.Fatalf("server has %d bytes, want %d", len(got), len(want)+len("earlier attempt\n"))
	}
	if err := sp.release(); err != nil {
		t.Fatal(err)
	}
	if ids, _ := listSpools(dir); len(ids) != 0 {
		t.Errorf("spools left after release: %v", ids)
	}
}
