// Package server is the dstack control plane: the HTTP API the CLI, the UI and
// the runners call, the job queue they are matched through, and the loops
// that keep state honest (runners that stop heartbeating lose their jobs;
// the autoscaler launches on-demand runners and says why jobs wait).
//
// A Server is built from a Config with New, started with Start and stopped
// with Stop (or by ending the context given to Start); both are safe to
// call twice (see package startstop).
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/autoscale"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/blob"
	"github.com/dstackai/dstack/internal/secretbox"
	"github.com/dstackai/dstack/internal/startstop"
	"github.com/dstackai/dstack/logstore"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/postgres"
	"github.com/dstackai/dstack/store/sqlite"
)

// Config is how a server runs. Zero fields take the defaults of Defaults.
type Config struct {
	// Host and Port to listen on. Port 0 picks a free port.
	Host string
	Port int
	// DataDir holds the SQLite database, logs, and (unless Artifacts is
	// set) artifacts and code archives.
	DataDir string
	// DB is "" for SQLite in DataDir, or a postgres:// URL.
	DB string
	// LogStore is where jobs' logs live: "files" (under DataDir, on the
	// replica the runner talks to) or "database" (every replica reads
	// them); "" is the database on PostgreSQL and files on SQLite.
	LogStore string
	// DBBusyTimeout bounds how long a write to the SQLite database waits for
	// another writer before the request fails with 503; zero is
	// sqlite.DefaultBusyTimeout.
	DBBusyTimeout time.Duration
	// HeartbeatTimeout: a runner not heard from for this long is offline and
	// its job is requeued.
	HeartbeatTimeout time.Duration
	// MaxAttempts bounds how often an interrupted job is run.
	MaxAttempts int
	// Recheck is how often a runner's long-poll reads the store although
	// nothing woke it: it catches a change whose wake from another replica
	// was lost (plus up to half as much again, at random, so that idle
	// runners do not look together); zero is 2 minutes.
	Recheck time.Duration
	// Artifacts is where job artifacts and uploaded code archives are kept:
	// "" for files under DataDir, or s3://bucket/prefix for an S3 bucket.
	// One store holds both, so that server replicas sharing a PostgreSQL
	// database share them too. The S3 credentials come from the AWS default
	// chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the shared files,
	// SSO, an instance or task role) and are never logged.
	Artifacts string
	// S3Endpoint is the URL of an S3-compatible store (MinIO, Ceph, R2...)
	// for Artifacts, addressed path-style; "" is AWS S3.
	S3Endpoint string
	// S3Region is the bucket's region; "" takes AWS_REGION or the shared
	// config, failing that us-east-1 with S3Endpoint, or the region S3
	// reports for the bucket without it.
	S3Region string
	// MaxCodeSize bounds an uploaded code archive.
	MaxCodeSize int64
	// MinFreeSpace is the free space, in bytes, below which the file
	// systems of DataDir and its logs refuse new code uploads and runs
	// (507), so that running jobs keep room for their logs: 0 is the
	// smaller of DefaultMinFreeSpace and MinFreePercent of the file
	// system; negative turns the watermark off (see storage.go).
	MinFreeSpace int64
	// RunnerTokenTTL is how long a runner credential is valid.
	RunnerTokenTTL time.Duration
	// RunnerRetention is how long an offline self-hosted runner is listed
	// before its row is removed (a restarted runner registers anew); zero
	// takes Defaults, a negative value keeps them forever.
	RunnerRetention time.Duration
	// StorageQuota is the storage quota, in bytes, of the users without one
	// of their own: code archives, logs and artifacts of their runs; 0 is
	// none. A write that would take a user over it is refused with 507.
	StorageQuota int64
	// Retention is how long finished runs no tag names are kept: older ones
	// are deleted with their logs, artifacts and code, in the background;
	// 0 keeps them forever.
	Retention time.Duration
	// TLSCert and TLSKey turn on HTTPS.
	TLSCert, TLSKey string
	// AlsoListen are more hosts the server listens on, at the port it got
	// for Host: `dstack server` adds the local backend's Docker gateway when
	// Host is a loopback address, so that the containers it launches reach
	// the server on the defaults. One that cannot be had is logged at WARN
	// and skipped.
	AlsoListen []string
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Getenv reads the environment (DSTACK_SERVER_ENCRYPTION_KEY); nil is
	// os.Getenv.
	Getenv func(string) string

	// Backends are the clouds (or the local Docker engine) on-demand
	// runners are launched on from the start: the first content of the
	// server's backend.Set, which AWS joins at run time when it is
	// configured (`dstack aws config`, see AWS).
	Backends []backend.Backend
	// AWS is how the server reaches the AWS account configured at run
	// time (aws.go).
	AWS AWSOptions
	// Kubernetes is how the server runs the Kubernetes backend configured
	// at run time (kubernetes.go).
	Kubernetes KubernetesOptions
	// IdleTimeout: an on-demand instance idle this long is terminated.
	IdleTimeout time.Duration
	// ExternalURL is where runners on on-demand instances reach the server;
	// empty means the URL the server listens at (a backend may rewrite a
	// loopback host, as the local backend does to its containers' gateway).
	ExternalURL string
	// RunnerBinaries are dstack-runner executables served to the installer
	// at GET /runner, each under the OS and architecture its ELF header
	// names; none answers 404 there (see runnerinstall.go).
	RunnerBinaries []string
	// Autoscale tunes the autoscaler's timeouts (zero fields take
	// autoscale.Defaults); its store, backends, server identity, URL, idle
	// timeout, clock, logger, metrics and wake channel are the server's.
	Autoscale autoscale.Config
}

// Defaults are the values zero Config fields take.
var Defaults = Config{
	Host:             "127.0.0.1",
	Port:             3000,
	HeartbeatTimeout: 30 * time.Second,
	MaxAttempts:      3,
	MaxCodeSize:      256 << 20,
	RunnerTokenTTL:   30 * 24 * time.Hour,
	RunnerRetention:  24 * time.Hour,
	IdleTimeout:      5 * time.Minute,
}

// DefaultDataDir is ~/.dstack/server.
func DefaultDataDir() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find home directory: %w (set --data-dir)", err)
	}
	return filepath.Join(home, ".dstack", "server"), nil
}

func (c *Config) applyDefaults() error {
	if c.Host == "" {
		c.Host = Defaults.Host
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = Defaults.HeartbeatTimeout
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = Defaults.MaxAttempts
	}
	if c.Recheck <= 0 {
		c.Recheck = recheck
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = Defaults.IdleTimeout
	}
	if c.MaxCodeSize == 0 {
		c.MaxCodeSize = Defaults.MaxCodeSize
	}
	if c.RunnerTokenTTL == 0 {
		c.RunnerTokenTTL = Defaults.RunnerTokenTTL
	}
	if c.RunnerRetention == 0 {
		c.RunnerRetention = Defaults.RunnerRetention
	}
	if c.DataDir == "" {
		d, err := DefaultDataDir()
		if err != nil {
			return err
		}
		c.DataDir = d
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Validate says what is wrong with c, in words a user can act on.
func (c *Config) Validate() error {
	var errs []error
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d is not a TCP port (0-65535)", c.Port))
	}
	if c.DB != "" && !strings.HasPrefix(c.DB, "postgres://") && !strings.HasPrefix(c.DB, "postgresql://") {
		errs = append(errs, fmt.Errorf("--db %q: give a postgres://user:password@host:port/dbname URL, or leave it out for SQLite", redactDSN(c.DB)))
	}
	switch c.LogStore {
	case "", LogStoreFiles, LogStoreDatabase:
	default:
		errs = append(errs, fmt.Errorf("--log-store %q: give %q or %q (default: the database on PostgreSQL, files on SQLite)", c.LogStore, LogStoreFiles, LogStoreDatabase))
	}
	if c.HeartbeatTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--heartbeat-timeout %s is too short: use at least 1s", c.HeartbeatTimeout))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together: give both or neither"))
	}
	if c.StorageQuota < 0 {
		errs = append(errs, fmt.Errorf("--storage-quota %d: give a size, or 0 for no quota", c.StorageQuota))
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("--retention %s: give a duration such as 30d, or 0 to keep runs forever", c.Retention))
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("--max-attempts %d: must be at least 1", c.MaxAttempts))
	}
	errs = append(errs, c.validateArtifacts(), c.AWS.validate(), c.Kubernetes.validate())
	return errors.Join(errs...)
}

// redactDSN hides a password in a database URL.
func redactDSN(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		rest := dsn[i+3:]
		if at := strings.Index(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 {
				return dsn[:i+3] + rest[:colon] + ":***" + rest[at:]
			}
		}
	}
	return dsn
}

// Server is a running control plane.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store store.Store
	logs  logstore.Store
	blobs blob.Store
	// storage watches the disk the server writes to (storage.go).
	storage *storageMonitor
	auth    *authenticator
	queue   *queue
	// beats holds the heartbeats not yet written (heartbeats.go).
	beats *heartbeats
	// upSince is when the server began, from which runners could reach it
	// (reap).
	upSince time.Time
	metrics *metrics
	// box seals the secrets the server keeps (cloud credentials, UI
	// sessions) under the server key (see package secretbox).
	box *secretbox.Box
	// events tells the streams of GET /events what changed (events.go).
	events *broadcaster
	// relay passes wakes and events to the other replicas on the same
	// PostgreSQL database (bus.go).
	relay *replicaBus

	adminToken string
	// routeTable is every route with its role (roles.go), as routes()
	// registered them.
	routeTable []route

	// life starts and stops the listeners and the loops; the store,
	// opened by New, is closed once they stopped (closeStore).
	life      startstop.Base
	closeOnce sync.Once
	mu        sync.Mutex
	ln        net.Listener
	stopErrs  []error      // what went wrong while serving and stopping; under mu
	handler   http.Handler // what Start serves (export_test.go)

	// backends are the backends on-demand runners are launched on now:
	// Config.Backends and, once configured, AWS. The autoscaler reads the
	// same set.
	backends *backend.Set
	// backendMetrics counts the calls of every backend in backends: each
	// is wrapped with backend.WithMetrics as it is put there.
	backendMetrics *backend.Metrics
	// aws is the AWS configuration in use (aws.go).
	aws awsState
	// kube is the Kubernetes configuration in use (kubernetes.go).
	kube kubeState

	// autoscaler launches and terminates on-demand instances and, with or
	// without backends, says why pending jobs wait. Set by Start while
	// requests may already come in.
	autoscaler atomic.Pointer[autoscale.Controller]

	// autoscale is signalled when what the autoscaler plans from changed
	// (a job queued, a runner registered, a limit changed); see
	// wakeAutoscaler.
	autoscale chan struct{}

	// replicaID is this replica's identity (replica.go), released by
	// releaseReplicaID as the server stops; replica is its record in the
	// database, renewed by replicaLoop.
	replicaID        string
	releaseReplicaID func()
	replica          store.Replica

	// quotas and logSizes serve storage accounting (retention.go).
	quotas   quotaCache
	logSizes logSizes
}

// wakeAutoscaler asks the autoscaler for a pass now, without waiting for
// its next tick: this replica's, and the others' (one of them may hold its
// lease).
func (s *Server) wakeAutoscaler() {
	s.relayAutoscalerWake()
	s.wakeAutoscalerHere()
}

// wakeAutoscalerHere is wakeAutoscaler on this replica only.
func (s *Server) wakeAutoscalerHere() {
	select {
	case s.autoscale <- struct{}{}:
	default:
	}
}

// backend returns the backend named name, or nil.
func (s *Server) backend(name string) backend.Backend {
	return s.backends.Get(name)
}

// putBackend adds b to the server's backends, or replaces the one of its
// name; the autoscaler uses it from its next pass.
func (s *Server) putBackend(b backend.Backend) {
	s.backends.Put(backend.WithMetrics(b, s.backendMetrics))
	s.wakeAutoscaler()
}

// removeBackend removes the backend named name. It returns once no pass of
// the autoscaler still uses it, so that its instances can be counted.
func (s *Server) removeBackend(name string) {
	if s.backends.Remove(name) != nil {
		s.wakeAutoscaler()
	}
}

// New opens the server's state (creating and migrating it as needed) and the
// admin user on first start. It does not listen yet.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := prepareDataDir(cfg, cfg.Logger.With("subsystem", "server")); err != nil {
		return nil, err
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("migrate database: %w", err)
	}
	logs, err := openLogs(cfg, st)
	if err != nil {
		st.Close()
		return nil, err
	}
	blobs, err := openBlobs(ctx, cfg)
	if err != nil {
		st.Close()
		return nil, err
	}
	box, keySource, err := secretbox.Load(cfg.DataDir, cfg.Getenv)
	if err != nil {
		st.Close()
		return nil, err
	}
	s := &Server{
		box:       box,
		cfg:       cfg,
		autoscale: make(chan struct{}, 1),
		backends:  backend.NewSet(cfg.Backends...),
		log:       cfg.Logger.With("subsystem", "server"),
		store:     st,
		logs:      logs,
		blobs:     blobs,
		queue:     newQueue(),
		events:    newBroadcaster(),
	}
	s.queue.recheck = cfg.Recheck
	if err := s.newBus(); err != nil {
		st.Close()
		return nil, err
	}
	// Followers of a log on the other replicas read on as soon as it
	// changes here, and the other way round.
	logs.SetNotify(func(jobID string) { s.publishLogGrew(jobID, -1) })
	s.onLogGrew(func(jobID string, _ int64) {
		if jobID != "" {
			logs.Wake(jobID)
		}
	})
	s.backendMetrics = backend.NewMetrics(nil)
	for _, b := range s.backends.All() {
		s.backends.Put(backend.WithMetrics(b, s.backendMetrics))
	}
	watched := []string{cfg.DataDir}
	if cfg.logStore() == LogStoreFiles {
		watched = append(watched, filepath.Join(cfg.DataDir, "logs"))
	}
	s.storage = newStorageMonitor(watched, cfg.MinFreeSpace, cfg.Logger.With("subsystem", "storage"), cfg.Now)
	if cfg.DB != "" && cfg.logStore() == LogStoreFiles {
		s.log.Warn("jobs' logs are files in --data-dir of this replica: other replicas on this database neither serve nor delete them; leave out --log-store files to keep them in the database")
	}
	if cfg.Artifacts != "" {
		s.log.Info("artifacts and code archives in S3", "url", cfg.Artifacts, "endpoint", cfg.S3Endpoint, "region", cfg.S3Region)
	}
	s.log.Debug("encryption key", "source", keySource, "key_id", box.ID())
	s.auth = newAuthenticator(st, cfg.Now)
	s.auth.ttl = min(runnerCacheTTL, cfg.HeartbeatTimeout)
	s.beats = newHeartbeats(st, s.log, cfg.Now, heartbeatInterval(cfg.HeartbeatTimeout), s.runnersRevived)
	s.upSince = cfg.Now()
	s.auth.box = box
	s.auth.origin = originOf(cfg.ExternalURL)
	s.metrics = newMetrics(s)
	fail := func(err error) (*Server, error) {
		s.leaveReplicas()
		st.Close()
		return nil, err
	}
	if err := s.joinReplicas(ctx, keySource); err != nil {
		return fail(err)
	}
	token, err := s.ensureAdmin(ctx)
	if err != nil {
		return fail(err)
	}
	s.adminToken = token
	if !cfg.AWS.Disabled {
		if err := applyStored(ctx, &s.aws.change, s.awsApplyStored); err != nil {
			return fail(err)
		}
	}
	if !cfg.Kubernetes.Disabled {
		if err := applyStored(ctx, &s.kube.change, s.kubeApplyStored); err != nil {
			return fail(err)
		}
	}
	return s, nil
}

// Where jobs' logs live (Config.LogStore).
const (
	LogStoreFiles    = "files"
	LogStoreDatabase = "database"
)

// logStore is where the server keeps logs under cfg.
func (c *Config) logStore() string {
	if c.LogStore != "" {
		return c.LogStore
	}
	if c.DB != "" {
		return LogStoreDatabase
	}
	return LogStoreFiles
}

// openLogs opens the store of jobs' logs: files under the data directory,
// fastest for one server, or the database's table, which every replica of
// a server on PostgreSQL reads and appends.
func openLogs(cfg Config, st store.Store) (logstore.Store, error) {
	dir := filepath.Join(cfg.DataDir, "logs")
	if cfg.logStore() == LogStoreFiles {
		return logstore.Open(dir)
	}
	// Logs this replica kept in files before stay readable.
	var legacy *logstore.Files
	if _, err := os.Stat(dir); err == nil {
		if legacy, err = logstore.Open(dir); err != nil {
			return nil, err
		}
	}
	return logstore.NewDB(st, legacy), nil
}

func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	if cfg.DB != "" {
		st, err := postgres.Open(ctx, cfg.DB)
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL %s: %w", redactDSN(cfg.DB), err)
		}
		return st, nil
	}
	path := filepath.Join(cfg.DataDir, "dstack.db")
	st, err := sqlite.Open(ctx, path, sqlite.WithBusyTimeout(cfg.DBBusyTimeout))
	if err != nil {
		return nil, fmt.Errorf("open SQLite %s: %w", path, err)
	}
	return st, nil
}

// AdminToken is the admin's token when this start created the admin user, ""
// otherwise: tokens are stored hashed and cannot be shown again.
func (s *Server) AdminToken() string { return s.adminToken }

// Store is the server's state, for tests and tools that run in process.
func (s *Server) Store() store.Store { return s.store }

// Start listens and serves until Stop, or until ctx ends: either stops the
// server the same way.
func (s *Server) Start(ctx context.Context) error {
	return s.life.Start(ctx, s.start, s.closeStore)
}

// start is Start's work; ctx is the server's own context, which ends when
// the server stops. Every goroutine it starts ends with ctx.
func (s *Server) start(ctx context.Context) error {
	addr := net.JoinHostPort(s.cfg.Host, fmt.Sprint(s.cfg.Port))
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another server running? use --port)", addr, err)
	}
	var tlsCfg *tls.Config
	if s.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, tlsCfg)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	lns := append([]net.Listener{ln}, s.listenAlso(ctx, ln.Addr(), tlsCfg)...)
	c, err := s.newAutoscaler(ctx)
	if err != nil {
		for _, l := range lns {
			l.Close()
		}
		return err
	}
	services := []startstop.Service{c, startstop.NewLoop(s.reapLoop), startstop.NewLoop(s.retentionLoop), startstop.NewLoop(s.replicaLoop),
		startstop.NewLoop(func(ctx context.Context) { s.beats.loop(ctx, flushEvery(s.cfg.HeartbeatTimeout)) })}
	if s.relay.bus != nil {
		// First, so that this replica hears the others once Start returns.
		services = append([]startstop.Service{s.relay.bus}, services...)
	}
	if !s.cfg.AWS.Disabled {
		services = append(services, startstop.NewLoop(func(ctx context.Context) { s.followStored(ctx, "AWS", &s.aws.change, s.awsApplyStored) }))
	}
	if !s.cfg.Kubernetes.Disabled {
		services = append(services, startstop.NewLoop(func(ctx context.Context) { s.followStored(ctx, "Kubernetes", &s.kube.change, s.kubeApplyStored) }))
	}
	srv := &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		// Long-polls and event streams end as the server stops.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.handler = srv.Handler
	for _, l := range lns {
		s.life.Go(func() {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				s.stopErr(err)
			}
		})
	}
	// As the server stops, the loops end with ctx, and requests in flight
	// get up to 10s.
	s.life.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			s.stopErr(err)
		}
		startstop.StopAll(services...)
	})
	if err := startstop.StartAll(ctx, services...); err != nil {
		return err
	}
	s.log.Info("listening", "url", s.URL())
	return nil
}

// newAutoscaler makes the autoscaler, which start starts with the loops
// (only the replica holding its lease in the database acts). With no
// backend it only says why jobs wait.
func (s *Server) newAutoscaler(ctx context.Context) (*autoscale.Controller, error) {
	id, err := autoscale.ServerID(ctx, s.store)
	if err != nil {
		return nil, err
	}
	url := s.cfg.ExternalURL
	if url == "" {
		url = s.URL()
	}
	cfg := s.cfg.Autoscale
	cfg.Store, cfg.Backends, cfg.ServerID, cfg.ServerURL = s.store, s.backends, id, url
	cfg.ReplicaID = s.replicaID
	cfg.IdleTimeout, cfg.MaxAttempts, cfg.Now, cfg.Logger = s.cfg.IdleTimeout, s.cfg.MaxAttempts, s.cfg.Now, s.cfg.Logger
	cfg.Registerer, cfg.Wake, cfg.JobsChanged = s.metrics.reg, s.autoscale, s.jobsRequeued
	c, err := autoscale.New(cfg)
	if err != nil {
		return nil, err
	}
	s.autoscaler.Store(c)
	return c, nil
}

// stopErr records what went wrong while serving or stopping, for Stop.
func (s *Server) stopErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopErrs = append(s.stopErrs, err)
}

// closeStore closes the state once the server stopped, or at a Stop
// before Start.
func (s *Server) closeStore() {
	s.closeOnce.Do(func() {
		s.leaveReplicas()
		if err := s.store.Close(); err != nil {
			s.stopErr(err)
		}
	})
}

// jobsRequeued tells the runners waiting for work, and the logs, of jobs
// the autoscaler requeued or failed by terminating their instances.
func (s *Server) jobsRequeued(jobs []*store.Job) {
	for _, j := range jobs {
		s.queue.wake(userKey(j.UserID))
		s.queue.wake(jobKey(j.ID))
		if j.Status.Finished() {
			s.finishLog(j.ID)
		}
	}
	s.publishJobs(jobs, api.EventRuns, api.EventRunners, api.EventInstances)
}

// URL is where the server listens, once started.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.urlLocked()
}

func (s *Server) urlLocked() string {
	if s.ln == nil {
		return ""
	}
	scheme := "http"
	if s.cfg.TLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + s.ln.Addr().String()
}

// Stop stops serving (waiting up to 10s for requests in flight; long-polls
// end at once), stops the loops and closes the state. It returns what went
// wrong while serving and stopping.
func (s *Server) Stop() error {
	s.life.Stop()
	if _, b := s.kube.current(); b != nil {
		b.Close() // its Pod watch
	}
	s.closeStore()
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.stopErrs...)
}

// Done is closed once the server has stopped: after Stop, or once the
// context given to Start ended and the server wound down.
func (s *Server) Done() <-chan struct{} { return s.life.Stopped() }

// Migrate applies the database migrations of cfg's store and returns.
func Migrate(ctx context.Context, cfg Config) error {
	if err := cfg.applyDefaults(); err != nil {
		return err
	}
	if err := prepareDataDir(cfg, cfg.Logger.With("subsystem", "server")); err != nil {
		return err
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate database: %w", err)
	}
	return nil
}
