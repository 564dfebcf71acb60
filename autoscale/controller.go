package autoscale

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dstackai/dstack/autoscale/plan"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/startstop"
	"github.com/dstackai/dstack/store"
)

// LeaseName is the store lease whose holder runs the autoscaler.
const LeaseName = "autoscaler"

// Config is how a Controller runs. Zero durations take the defaults of
// Defaults.
type Config struct {
	Store store.Store
	// Backends are the clouds instances are launched in; they may change
	// while the controller runs (AWS configured or cleared), and each pass
	// reads them afresh. A pass with no backend only says why jobs wait,
	// from the registered runners (WaitingWithoutBackend); nil is none.
	Backends *backend.Set
	// ServerID is the server installation's identity (see ServerID); every
	// instance is tagged with it.
	ServerID string
	// ReplicaID is this replica's identity, the same across its restarts,
	// so that a replica that restarts finds the lease it held still its
	// own instead of waiting for it to expire; two replicas running at once
	// must never share one. Empty takes a random one.
	ReplicaID string
	// ServerURL is where runners on instances reach the server.
	ServerURL string

	// IdleTimeout: an instance idle this long is terminated.
	IdleTimeout time.Duration
	// Interval is the period of passes when nothing wakes the controller.
	Interval time.Duration
	// LaunchTimeout bounds one Launch call.
	LaunchTimeout time.Duration
	// RegisterTimeout: an instance launched this long ago whose runner has
	// not joined is terminated and its job planned again.
	RegisterTimeout time.Duration
	// Grace: a tagged instance with no record, or a record launching with no
	// cloud instance, is dealt with after this long.
	Grace time.Duration
	// UnavailableFor is how long an offer the cloud refused for capacity or
	// quota is not tried.
	UnavailableFor time.Duration
	// OfferTTL is how long the backends' offers are cached.
	OfferTTL time.Duration
	// LeaseTTL is how long the leader lease lasts without renewal. The
	// leader renews it every LeaseTTL/3, however long its passes take; a
	// leader that dies (kill -9) leaves it to another replica within
	// 7/6 LeaseTTL and one Interval.
	LeaseTTL time.Duration
	// ReconcileEvery is how often the backends are listed; zero reconciles
	// every pass.
	ReconcileEvery time.Duration
	// MaxAttempts is how often a job may run (the server's --max-attempts).
	MaxAttempts int

	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Logger receives the controller's records; nil discards them.
	Logger *slog.Logger
	// Registerer receives the controller's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Wake asks for a pass now (a run submitted, a limit changed, a runner
	// freed).
	Wake <-chan struct{}
	// JobsChanged is told of jobs the controller requeued or failed (so the
	// server wakes the runners waiting for work); may be nil.
	JobsChanged func([]*store.Job)
}

// Defaults are the values zero Config fields take.
var Defaults = Config{
	IdleTimeout:     plan.DefaultIdleTimeout,
	Interval:        2 * time.Second,
	LaunchTimeout:   3 * time.Minute,
	RegisterTimeout: 10 * time.Minute,
	Grace:           2 * time.Minute,
	UnavailableFor:  10 * time.Minute,
	OfferTTL:        5 * time.Minute,
	LeaseTTL:        6 * time.Second,
	ReconcileEvery:  30 * time.Second,
	MaxAttempts:     3,
}

func (c *Config) applyDefaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.IdleTimeout, Defaults.IdleTimeout)
	set(&c.Interval, Defaults.Interval)
	set(&c.LaunchTimeout, Defaults.LaunchTimeout)
	set(&c.RegisterTimeout, Defaults.RegisterTimeout)
	set(&c.Grace, Defaults.Grace)
	set(&c.UnavailableFor, Defaults.UnavailableFor)
	set(&c.OfferTTL, Defaults.OfferTTL)
	set(&c.LeaseTTL, Defaults.LeaseTTL)
	if c.MaxAttempts == 0 {
		c.MaxAttempts = Defaults.MaxAttempts
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate says what is wrong with c.
func (c *Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("autoscaler: no store"))
	}
	if c.ServerID == "" {
		errs = append(errs, errors.New("autoscaler: no server ID"))
	}
	if c.ServerURL == "" {
		errs = append(errs, errors.New("autoscaler: no server URL for runners: set --external-url"))
	}
	return errors.Join(errs...)
}

// Controller is the autoscaler. Step is one pass; between Start and Stop
// the controller repeats it.
type Controller struct {
	life     startstop.Base
	cfg      Config
	log      *slog.Logger
	st       store.Store
	backends *backend.Set
	holder   string
	metrics  *metrics

	// mu serialises passes: Step may be called by Run and by tests.
	mu sync.Mutex
	// leaseMu guards the lease's state, which passes and the renewals
	// between them share: whether this controller holds it, and when it
	// was last taken or renewed.
	leaseMu   sync.Mutex
	leader    bool
	renewedAt time.Time
	checkedAt time.Time // when the store was last asked

	offers    map[offerCacheKey]cachedOffers
	offersOf  uint64 // the backends' Version the cached offers are of
	lastRecon time.Time
	// reconcileSoon asks the next pass to reconcile, however recent the
	// last (ReconcileSoon).
	reconcileSoon atomic.Bool
	unknownSince  map[string]time.Time // cloud ID → first seen with no record
	cleaned       map[string]bool      // gone cloud IDs already removed

	statMu      sync.Mutex           // launches run in parallel within a pass
	launchedFor map[string]time.Time // job ID → when it was pending, for the start metric
	waiting     map[string]plan.Waiting
	// reasons are the StatusReasons of pending jobs this controller last
	// wrote (Waiting.Message by job attempt), so that a pass writes only
	// changes and clears only what it wrote.
	reasons map[jobAttempt]string
	// unsettled are the launches of unknown outcome, by launch key, to
	// call again (settle.go); guarded by statMu.
	unsettled map[string]*unsettled
}

// New returns a controller; it does nothing until Step or Start.
func New(cfg Config) (*Controller, error) {
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Controller{
		cfg:          cfg,
		log:          cfg.Logger.With("subsystem", "autoscaler"),
		st:           cfg.Store,
		backends:     cfg.Backends,
		holder:       cfg.ServerID + "/" + cmp.Or(cfg.ReplicaID, randomHex(8)),
		offers:       map[offerCacheKey]cachedOffers{},
		unknownSince: map[string]time.Time{},
		cleaned:      map[string]bool{},
		launchedFor:  map[string]time.Time{},
		waiting:      map[string]plan.Waiting{},
		reasons:      map[jobAttempt]string{},
	}
	if c.backends == nil {
		c.backends = backend.NewSet()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	c.metrics = m
	return c, nil
}

// Start makes passes in the background until ctx ends or Stop: every
// Interval and whenever Wake is signalled; and, while it holds the lease,
// renews it every LeaseTTL/3. A second call does nothing.
func (c *Controller) Start(ctx context.Context) error {
	return c.life.Start(ctx, func(ctx context.Context) error {
		c.life.Go(func() { c.run(ctx) })
		c.life.Go(func() { c.keepLease(ctx) })
		return nil
	}, c.releaseLease)
}

// releaseLease gives the lease up, once passes and renewals have ended, so
// that another replica takes it at once.
func (c *Controller) releaseLease() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.st.LeaseRelease(ctx, store.LeaseReleaseParams{Name: LeaseName, Holder: c.holder})
}

// keepLease renews the lease every LeaseTTL/3 while this controller holds
// it, so that a pass that takes long (a launch may take minutes) never lets
// it lapse.
func (c *Controller) keepLease(ctx context.Context) {
	t := time.NewTicker(c.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !c.Leader() {
			continue
		}
		if _, err := c.acquire(ctx, true); err != nil && ctx.Err() == nil {
			c.log.Warn("renew the autoscaler lease", "err", err)
		}
	}
}

// acquire takes or renews the lease, and reports whether this controller
// holds it. Passes come as often as every passGap, on every replica, so the
// store is not asked again unless force: by a holder that renewed it less
// than LeaseTTL/3 ago, or by a replica that found it another's less than
// LeaseTTL/6 ago (a dead holder's lease moves at most that much later).
func (c *Controller) acquire(ctx context.Context, force bool) (bool, error) {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	now := c.cfg.Now()
	if !force && c.leader && now.Sub(c.renewedAt) < c.cfg.LeaseTTL/3 {
		return true, nil
	}
	if !force && !c.leader && !c.checkedAt.IsZero() && now.Sub(c.checkedAt) < c.cfg.LeaseTTL/6 {
		// Another replica held it a moment ago: it cannot have expired
		// since unless it was given up, and the holder's wake reaches
		// this replica's next pass anyway soon enough.
		return false, nil
	}
	c.checkedAt = now
	ok, err := c.st.LeaseAcquire(ctx, store.LeaseAcquireParams{Name: LeaseName, Holder: c.holder, TTL: c.cfg.LeaseTTL, Now: now})
	if err != nil {
		if c.leader && now.Sub(c.renewedAt) >= c.cfg.LeaseTTL {
			c.leader = false
			c.log.Info("autoscaler lease lost: it could not be renewed before it expired", "err", err)
		}
		return c.leader, fmt.Errorf("acquire lease: %w", err)
	}
	if ok != c.leader {
		if ok {
			c.log.Info("autoscaler lease taken: this server plans on-demand instances", "holder", c.holder)
		} else {
			c.log.Info("autoscaler lease lost: another server plans on-demand instances")
		}
	}
	c.leader = ok
	if ok {
		c.renewedAt = now
	}
	return ok, nil
}

// Stop ends the passes and returns once the lease is released (when this
// controller held it). It is safe to call twice, and before Start.
func (c *Controller) Stop() { c.life.Stop() }

// run makes the passes of Start until ctx ends.
func (c *Controller) run(ctx context.Context) {
	c.log.Info("autoscaler started", "server_id", c.cfg.ServerID, "server_url", c.cfg.ServerURL,
		"backends", strings.Join(c.backendNames(), ","), "idle_timeout", c.cfg.IdleTimeout)
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		start := time.Now()
		if err := c.Step(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("autoscaler pass", "err", err)
		}
		// Wakes that come in a burst (every job that ends sends one) share
		// a pass: passes are spaced by twice the last one's length, at
		// least passGap, so a deep queue never keeps the server busy
		// planning.
		gap := time.NewTimer(max(passGap, 2*time.Since(start)))
		if c.backends.Len() == 0 {
			// With no backend a pass only says why jobs wait: that need
			// not be instant, and a requeue's reason stays a while.
			gap.Reset(max(noBackendGap, 4*time.Since(start)))
		}
		select {
		case <-ctx.Done():
			gap.Stop()
			return
		case <-gap.C:
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.cfg.Wake:
		}
	}
}

// passGap is the least time between two passes.
const passGap = 20 * time.Millisecond

// noBackendGap is the least time between two passes with no backend.
const noBackendGap = 500 * time.Millisecond

func (c *Controller) backendNames() []string { return c.backends.Names() }

// Leader reports whether this controller held the lease when it last took
// or renewed it.
func (c *Controller) Leader() bool {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	return c.leader
}

// Waiting returns why each pending job nothing could take waited, as of
// the last pass. The leader also stores it as the job's StatusReason, which
// `dstack ps` shows.
func (c *Controller) Waiting() map[string]plan.Waiting {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]plan.Waiting, len(c.waiting))
	for k, v := range c.waiting {
		out[k] = v
	}
	return out
}

// ReconcileSoon has the next pass reconcile the records with the backends
// whatever ReconcileEvery says: a backend that watches its instances (the
// Kubernetes backend's Pod watch) calls it when one leaves, so that the job
// of an evicted instance is requeued at once. It does not wake the
// controller: send on Config.Wake too.
func (c *Controller) ReconcileSoon() { c.reconcileSoon.Store(true) }

// Step is one pass: lease, snapshot, plan, execute, and reconcile when due;
// with no backend, lease and say why jobs wait. It returns the first error
// that stopped it; what it did before stays done.
func (c *Controller) Step(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A backend removed from the set is used by no pass once Remove has
	// returned.
	defer c.backends.Use()()
	now := c.cfg.Now()
	ok, err := c.acquire(ctx, false)
	if err != nil {
		return err
	}
	if !ok {
		return nil
	}
	if c.backends.Len() == 0 {
		// No backend (AWS not configured yet, or cleared): nothing to
		// launch or reconcile.
		return c.explain(ctx)
	}
	var errs []error
	if err := c.settle(ctx); err != nil {
		errs = append(errs, fmt.Errorf("settle: %w", err))
	}
	if c.cfg.ReconcileEvery <= 0 || now.Sub(c.lastRecon) >= c.cfg.ReconcileEvery || c.reconcileSoon.Swap(false) {
		if err := c.reconcile(ctx); err != nil {
			errs = append(errs, fmt.Errorf("reconcile: %w", err))
		} else {
			c.lastRecon = now
		}
	}
	if err := c.plan(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// plan reads a snapshot, plans and carries the decision out.
func (c *Controller) plan(ctx context.Context) error {
	snap, recs, err := c.snapshot(ctx)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	d := plan.Plan(snap.Snapshot)
	c.waiting = make(map[string]plan.Waiting, len(d.Waiting))
	for _, w := range d.Waiting {
		c.waiting[w.JobID] = w
	}
	c.metrics.pending.Set(float64(len(snap.Jobs)))
	var errs []error
	if err := c.storeReasons(ctx, d.Waiting, snap.pending); err != nil {
		errs = append(errs, err)
	}
	for _, t := range d.Terminations {
		if err := c.terminate(ctx, recs[t.InstanceID], string(t.Reason)); err != nil {
			errs = append(errs, err)
		}
	}
	for _, b := range d.Bindings {
		if b.InstanceID == "" {
			continue
		}
		if r := recs[b.InstanceID]; r != nil && r.JobID != b.JobID {
			if _, err := c.st.InstanceBindJob(ctx, store.InstanceBindJobParams{ID: b.InstanceID, JobID: b.JobID}); err != nil && !errors.Is(err, store.ErrNotFound) {
				errs = append(errs, fmt.Errorf("bind job %s to instance %s: %w", b.JobID, b.InstanceID, err))
			}
		}
	}
	if len(d.Launches) > 0 {
		errs = append(errs, c.launchAll(ctx, d.Launches, snap))
	}
	return errors.Join(errs...)
}

// explain is a pass with no backend: it says why pending jobs wait from
// the runners that may take them (plan.WaitingWithoutBackend).
func (c *Controller) explain(ctx context.Context) error {
	jobs, err := c.st.JobListPending(ctx, store.JobListPendingParams{})
	if err != nil {
		return fmt.Errorf("list pending jobs: %w", err)
	}
	snap := plan.Snapshot{Now: c.cfg.Now()}
	pending := make(map[string]*store.PendingJob, len(jobs))
	for _, j := range jobs {
		pending[j.ID] = j
		snap.Jobs = append(snap.Jobs, plan.Job{ID: j.ID, UserID: j.UserID, Resources: j.Resources, QueuedAt: j.QueuedAt})
	}
	if len(jobs) > 0 {
		kinds, err := c.st.RunnerTally(ctx)
		if err != nil {
			return fmt.Errorf("tally runners: %w", err)
		}
		snap.Registered = mayTakeJobs(kinds)
		caps, err := c.st.UserCapList(ctx)
		if err != nil {
			return fmt.Errorf("list capped users: %w", err)
		}
		snap.Users = usersOf(caps)
	}
	waiting := plan.WaitingWithoutBackend(snap)
	c.waiting = make(map[string]plan.Waiting, len(waiting))
	for _, w := range waiting {
		c.waiting[w.JobID] = w
	}
	c.metrics.pending.Set(float64(len(jobs)))
	return c.storeReasons(ctx, waiting, pending)
}

// mayTakeJobs are the runners that could take a job some day on a server
// with no backend: every self-hosted runner, online or not (an offline one
// may come back), and the runner of an on-demand instance while it is
// online (left from when a backend was configured), which takes anyone's
// jobs. Runners alike come as one, with their count: with thousands of
// runners a pass reads a few rows, not thousands.
func mayTakeJobs(kinds []*store.RunnerKind) []plan.RegisteredRunner {
	var out []plan.RegisteredRunner
	for _, k := range kinds {
		if k.OnDemand && !k.Online {
			continue
		}
		out = append(out, plan.RegisteredRunner{
			UserID: k.UserID, Resources: k.Resources, Busy: k.Busy, Count: k.Count,
			Offline: !k.Online || k.Interrupted, Shared: k.Shared || k.OnDemand,
		})
	}
	return out
}

// jobAttempt names one attempt of a job: a requeued job is pending again
// with the next attempt and the reason its requeue gave, which is not the
// controller's to clear.
type jobAttempt struct {
	id      string
	attempt int
}

// storeReasons writes why each waiting job waits as its StatusReason, and
// clears the reasons it wrote of pending jobs that no longer wait (an
// instance is launching for them, or a runner takes them), in one batch of
// the changes since the last pass. The store leaves jobs no longer pending
// alone; a claim clears the reason itself.
//
// A job that waits only for a busy runner to be free (plan.Waiting.Busy)
// gets its reason once it has waited busyReasonAfter: a queue that drains
// within seconds has every job's reason written, and then cleared by its
// claim, for nothing, while the writes hold up the claims on SQLite.
func (c *Controller) storeReasons(ctx context.Context, waiting []plan.Waiting, pending map[string]*store.PendingJob) error {
	now := c.cfg.Now()
	want := make(map[jobAttempt]string, len(waiting))
	for _, w := range waiting {
		if j := pending[w.JobID]; j != nil && (!w.Busy || now.Sub(j.QueuedAt) >= busyReasonAfter) {
			want[jobAttempt{j.ID, j.Attempt}] = waitingMessage(w.Message, j)
		}
	}
	changes := map[string]string{}
	for k, msg := range want {
		if prev, ok := c.reasons[k]; !ok || prev != msg {
			changes[k.id] = msg
		}
	}
	for k := range c.reasons {
		// A reason of an attempt no longer pending is not this
		// controller's: a claim cleared it, a requeue wrote its own.
		if _, ok := want[k]; !ok {
			if j := pending[k.id]; j != nil && j.Attempt == k.attempt {
				changes[k.id] = ""
			}
		}
	}
	if len(changes) == 0 {
		c.reasons = want
		return nil
	}
	if _, err := c.st.JobSetPendingReasons(ctx, store.JobSetPendingReasonsParams{Reasons: changes}); err != nil {
		return fmt.Errorf("store why jobs wait: %w", err) // written again next pass
	}
	c.reasons = want
	return nil
}

// busyReasonAfter is how long a job waits for a busy runner before it says
// so ("waiting: 2 runners that fit are busy").
const busyReasonAfter = 5 * time.Second

// waitingMessage is why a job waits; a requeued job's also says why its
// previous attempt ended, which its requeue wrote as its reason before:
// "waiting: 1 runner that fits is offline (attempt 1: runner r1 stopped
// responding)".
func waitingMessage(msg string, j *store.PendingJob) string {
	if j.Attempt == 0 || j.LastInterruption == "" {
		return msg
	}
	return fmt.Sprintf("%s (attempt %d: %s)", msg, j.Attempt, j.LastInterruption)
}

// ServerID returns the server installation's identity, creating it on first
// use; every replica on one database gets the same one.
func ServerID(ctx context.Context, st store.Store) (string, error) {
	id, err := st.SettingInit(ctx, store.SettingInitParams{Name: store.SettingServerID, Value: "dstack-" + randomHex(8)})
	if err != nil {
		return "", fmt.Errorf("server identity: %w", err)
	}
	return id, nil
}

// JoinTokenPrefix marks an instance's join token.
const JoinTokenPrefix = "dstj_"

// NewJoinToken returns a fresh join token and the hash the store keeps of
// it (HashToken).
func NewJoinToken() (token, hash string) {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	token = JoinTokenPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
	return token, HashToken(token)
}

// HashToken is the SHA-256 of a token in hex, as the server stores every
// token (they are random: no salt or stretching is needed).
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}
