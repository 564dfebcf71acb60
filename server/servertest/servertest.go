// Package servertest starts a real dstack server in process, on loopback with
// a fresh SQLite database (or PostgreSQL), for tests of the packages that talk
// to it.
package servertest

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server"
)

// Server is a started server.
type Server struct {
	*server.Server
	URL        string
	AdminToken string
	DataDir    string
	cfg        server.Config
}

// Option changes the server's Config.
type Option func(*server.Config)

// WithHeartbeatTimeout sets how long a silent runner keeps its job.
func WithHeartbeatTimeout(d time.Duration) Option {
	return func(c *server.Config) { c.HeartbeatTimeout = d }
}

// WithLogger sends the server's log records to l too, for tests that read
// what the server logs.
func WithLogger(l *slog.Logger) Option {
	return func(c *server.Config) { c.Logger = l }
}

// WithConfig changes the config in any way.
func WithConfig(f func(*server.Config)) Option { return Option(f) }

// WithPostgres runs the server on the PostgreSQL DSN given.
func WithPostgres(dsn string) Option { return func(c *server.Config) { c.DB = dsn } }

// Start starts a server that stops with the test.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	cfg := server.Config{
		Host:    "127.0.0.1",
		Port:    0,
		DataDir: t.TempDir(),
		Logger:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	def := cfg.Logger
	for _, o := range opts {
		o(&cfg)
	}
	testLog := def
	if os.Getenv("DSTACK_TEST_VERBOSE") == "" {
		testLog = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if cfg.Logger != def {
		// WithLogger's logger gets every record; the test's log as usual.
		cfg.Logger = slog.New(slog.NewMultiHandler(cfg.Logger.Handler(), testLog.Handler()))
	} else {
		cfg.Logger = testLog
	}
	s := &Server{cfg: cfg, DataDir: cfg.DataDir}
	s.start(t)
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	srv, err := server.New(ctx, s.cfg)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	s.Server = srv
	s.URL = srv.URL()
	if tok := srv.AdminToken(); tok != "" {
		s.AdminToken = tok
	}
}

// Restart stops the server and starts it again on the same data and port.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.Server.Stop(); err != nil {
		t.Fatalf("stop server: %v", err)
	}
	s.cfg.Port = portOf(t, s.URL)
	s.start(t)
}

// StartReplica starts another replica of s, as a second `dstack server`
// on the same database would be: s must run on PostgreSQL. The replica
// shares s's data directory (and so its server key and local artifact
// store), listens on a port of its own, stops with the test, and takes
// opts on top of s's configuration.
func (s *Server) StartReplica(t testing.TB, opts ...Option) *Server {
	t.Helper()
	if s.cfg.DB == "" {
		t.Fatal("StartReplica: the server runs on SQLite; replicas share a PostgreSQL database (WithPostgres)")
	}
	cfg := s.cfg
	cfg.Port = 0
	for _, o := range opts {
		o(&cfg)
	}
	r := &Server{cfg: cfg, DataDir: cfg.DataDir, AdminToken: s.AdminToken}
	r.start(t)
	return r
}

// Client returns a client authenticated as the admin.
func (s *Server) Client() *client.Client {
	c, err := client.New(s.URL, s.AdminToken)
	if err != nil {
		panic(err)
	}
	return c
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
