package server_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store/storetest"
)

// wantUnavailable checks that rp is a 503 with Retry-After whose body names
// the database as the cause and says what is wrong.
func wantUnavailable(t *testing.T, what string, rp reply, message string) {
	t.Helper()
	if rp.status != http.StatusServiceUnavailable {
		t.Fatalf("%s: status %d, want 503 (body %s)", what, rp.status, rp.body)
	}
	if rp.header.Get("Retry-After") == "" {
		t.Errorf("%s: no Retry-After header", what)
	}
	var eb api.ErrorBody
	if err := json.Unmarshal(rp.body, &eb); err != nil || eb.Error == nil {
		t.Fatalf("%s: body %s is not an API error: %v", what, rp.body, err)
	}
	if eb.Error.Code != api.CodeUnavailable || eb.Error.Cause != api.CauseDatabase {
		t.Errorf("%s: code %q cause %q, want %q and %q", what, eb.Error.Code, eb.Error.Cause, api.CodeUnavailable, api.CauseDatabase)
	}
	if !strings.Contains(eb.Error.Message, message) {
		t.Errorf("%s: message %q does not say %q", what, eb.Error.Message, message)
	}
}

// registerReq is a runner registration as the admin, a request that writes.
func registerReq(e *apiEnv, name string) req {
	return req{method: http.MethodPost, path: "/api/v1/runners/register", token: e.srv.AdminToken,
		body: `{"name":"` + name + `","hostname":"h","executor":"shell","resources":{"cpus":1,"memory_mib":1024}}`}
}

// TestLockedSQLiteIsA503: while another connection holds the database's
// write lock, a request that writes fails within the busy timeout with 503,
// Retry-After and a message naming the lock, and works again once the lock
// is released.
func TestLockedSQLiteIsA503(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	e := setup(t,
		servertest.WithConfig(func(c *server.Config) { c.DBBusyTimeout = 200 * time.Millisecond }),
		servertest.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.srv.DataDir, "dstack.db"))
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
	wantUnavailable(t, "register while locked", do(t, e.srv.URL, registerReq(e, "r1")),
		"database is busy (locked by another writer); retry")
	if got := logs.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "SQLITE_BUSY") {
		t.Errorf("server log does not have the driver's error at WARN:\n%s", got)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if rp := do(t, e.srv.URL, registerReq(e, "r2")); rp.status != http.StatusCreated {
		t.Errorf("register after the lock is gone: %d %s", rp.status, rp.body)
	}
}

// tcpProxy forwards connections to target until closed; Close also breaks
// the connections it forwards, as a database host that goes away does.
type tcpProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln}
	t.Cleanup(p.Close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestUnreachablePostgresIsA503: once the PostgreSQL server cannot be
// reached (its connections broken, its port closed), requests fail promptly
// with 503 and "database unreachable", not with a 500 or a hang.
func TestUnreachablePostgresIsA503(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, u.Host)
	u.Host = proxy.Addr()
	e := setup(t, servertest.WithPostgres(u.String()))
	if rp := do(t, e.srv.URL, registerReq(e, "r1")); rp.status != http.StatusCreated {
		t.Fatalf("register while PostgreSQL is there: %d %s", rp.status, rp.body)
	}
	proxy.Close()
	// The first request may meet a broken pooled connection, later ones a
	// closed port: both are the database being unreachable.
	for i := range 3 {
		wantUnavailable(t, "register without PostgreSQL", do(t, e.srv.URL, registerReq(e, "r"+string(rune('2'+i)))), "database unreachable")
	}
}

// TestClientGoneIsNotAServerError: a runner that ends its stop long-poll
// (its job ended) is not a server error: the request counts as 499 in the
// metrics, not 500, and is logged at debug, not as an error.
func TestClientGoneIsNotAServerError(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	e := setup(t, servertest.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	e.submit(t, e.admin, bashJob("train"))
	token := registerRunnerToken(t, e.admin, "r")
	a := claim(t, e.admin.WithToken(token))

	// The runner's request arrives, and its connection is gone already.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	hr := httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/v1/runner/jobs/"+a.Job.ID+"/stop?wait=30s", nil)
	hr.Header.Set("Authorization", "Bearer "+token)
	hr.Header.Set(api.LeaseHeader, strconv.FormatInt(a.Lease, 10))
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, hr)
	if rec.Code != server.StatusClientClosedRequest {
		t.Errorf("stop long-poll of a gone client: status %d, want %d", rec.Code, server.StatusClientClosedRequest)
	}
	m := scrape(t, e.srv.URL)
	if got := m[`dstack_http_requests_total{code="500",method="get"}`]; got != 0 {
		t.Errorf(`dstack_http_requests_total{code="500"} = %v, want 0`, got)
	}
	if got := m[`dstack_http_requests_total{code="499",method="get"}`]; got != 1 {
		t.Errorf(`dstack_http_requests_total{code="499"} = %v, want 1`, got)
	}
	got := logs.String()
	if strings.Contains(got, "level=ERROR") {
		t.Errorf("a gone client was logged as an error:\n%s", got)
	}
	if !strings.Contains(got, `level=DEBUG msg="client closed the request"`) {
		t.Errorf("a gone client is not logged at debug:\n%s", got)
	}
}
