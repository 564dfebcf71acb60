// Package local is the "local" backend: its instances are Docker containers
// on the server's own host, each running the real dstack-runner, so that the
// whole on-demand loop (plan, launch, join, claim, idle, terminate, garbage
// collection) runs without a cloud.
//
// One region, "local", sells three instance types, each at an on-demand and
// a lower spot price (spot containers are never interrupted):
//
//	local.small   1 CPU  1 GiB   0.010 / 0.003 per hour
//	local.medium  2 CPUs 4 GiB   0.020 / 0.006
//	local.large   4 CPUs 8 GiB   0.040 / 0.012
//
// A container gets exactly the type's CPUs and memory as limits (NanoCPUs,
// Memory, no swap), and dstack-runner inside reports them, because package
// hostinfo lowers what it detects to the cgroup's cpu.max / memory.max (v1:
// cpu.cfs_quota_us, memory.limit_in_bytes). Offers therefore promise what the
// runner will report. A type larger than the Docker host (its CPUs or
// memory) is left out of Offers and refused by Launch: its runner would
// report less than the offer.
//
// How the server uses it:
//
//  1. At start, when the backend is enabled: ref, err := BuildImage(ctx,
//     docker, runnerBinary), where runnerBinary is the static dstack-runner
//     next to the server's executable or at a configured path, and docker is
//     client.New(client.FromEnv) of github.com/moby/moby/client (it
//     negotiates the API version). BuildImage reuses the image when the
//     binary has not changed.
//  2. New(docker, Config{Image: ref, Network: "bridge"}).
//  3. LaunchRequest.ServerURL may be the server's own loopback URL
//     (http://127.0.0.1:3000): Launch rewrites a loopback or unspecified host
//     to the gateway of the containers' network (172.17.0.1 on the default
//     bridge), which is the host as the containers see it. The server must
//     then listen on that address too (0.0.0.0, or the gateway address):
//     a server bound to 127.0.0.1 only is unreachable from containers
//     (Backend.Gateway tells the address, for a check or a log line at
//     start). Any other host is passed as it is; with Network "host"
//     nothing is rewritten.
//  4. Instances List reports gone (exited containers: the runner ended) are
//     still there until Terminate removes them, as for any cloud ID the
//     server is done with.
//
// Each container runs `dstack-runner start --server URL --name NAME
// --data-dir /var/lib/dstack-runner --executor shell` (jobs run in the
// container itself, which has no Docker) with the instance's join token in
// DSTACK_JOIN_TOKEN: its own environment only, though `docker inspect` on
// the host shows it, as a cloud's console shows user data. The image has no
// CA certificates, so the server URL must be http: the runner would fail to
// verify an https server's certificate.
//
// Containers are named dstack-<record>-<hash of server and record>, so a
// record has at most one container on a host, and labelled with the
// backend's tags (backend.TagServerID, TagLimitID, TagRecordID,
// TagLaunchKey) and the offer (dstack:backend, dstack:region,
// dstack:instance-type, dstack:spot). List finds them by label.
//
// Capacity: Config.MaxContainers caps the live containers of an offer per
// server, so tests and demos can make Launch grant part of a request or
// refuse it with backend.ErrNoCapacity.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/backend"
)

// Name is the backend's name, in offers and limits.
const Name = "local"

// Region is the backend's only region.
const Region = "local"

// InstanceType is one size of container the backend sells.
type InstanceType struct {
	Name      string
	CPUs      int
	MemoryMiB int64
	// OnDemand and Spot are the notional prices per hour, in US dollars.
	OnDemand, Spot float64
}

// Catalogue is what region "local" sells, smallest first.
var Catalogue = []InstanceType{
	{Name: "local.small", CPUs: 1, MemoryMiB: 1 << 10, OnDemand: 0.01, Spot: 0.003},
	{Name: "local.medium", CPUs: 2, MemoryMiB: 4 << 10, OnDemand: 0.02, Spot: 0.006},
	{Name: "local.large", CPUs: 4, MemoryMiB: 8 << 10, OnDemand: 0.04, Spot: 0.012},
}

// lookupType finds an instance type of the catalogue by name.
func lookupType(name string) (InstanceType, bool) {
	i := slices.IndexFunc(Catalogue, func(t InstanceType) bool { return t.Name == name })
	if i < 0 {
		return InstanceType{}, false
	}
	return Catalogue[i], true
}

// Config configures the backend.
type Config struct {
	// Image is the runner image to run, as BuildImage returned it. Required.
	Image string
	// Network is the Docker network the containers join; "bridge" when
	// empty. The server must be reachable from it (see the package doc).
	Network string
	// MaxContainers caps the live containers of an offer, per server ID, to
	// simulate a cloud out of capacity. Keys, the first that matches
	// winning: "TYPE/spot" or "TYPE/on-demand", "TYPE", "*". An offer with
	// no key is not capped. A Launch beyond the cap launches what fits, or
	// nothing with backend.ErrNoCapacity.
	MaxContainers map[string]int
	// StopTimeout is how long Terminate lets a runner stop its job (SIGTERM)
	// before the container is killed; 10s when zero.
	StopTimeout time.Duration
	// Logger receives the backend's records; nothing is logged when nil.
	Logger *slog.Logger
}

// Validate says what is wrong with c.
func (c Config) Validate() error {
	var errs []error
	if c.Image == "" {
		errs = append(errs, errors.New("local backend: no runner image: build it with local.BuildImage (or `make local-image`) and set Image"))
	}
	for k, v := range c.MaxContainers {
		if v < 0 {
			errs = append(errs, fmt.Errorf("local backend: MaxContainers[%q] = %d is negative", k, v))
		}
	}
	if c.StopTimeout < 0 {
		errs = append(errs, fmt.Errorf("local backend: StopTimeout %s is negative", c.StopTimeout))
	}
	return errors.Join(errs...)
}

// maxContainers is the cap of an offer, if any.
func (c Config) maxContainers(k backend.OfferKey) (int, bool) {
	purchase := "on-demand"
	if k.Spot {
		purchase = "spot"
	}
	for _, key := range []string{k.InstanceType + "/" + purchase, k.InstanceType, "*"} {
		if v, ok := c.MaxContainers[key]; ok {
			return v, true
		}
	}
	return 0, false
}

// Backend launches runners as Docker containers. Create it with New.
type Backend struct {
	docker Docker
	cfg    Config
	log    *slog.Logger

	// launchMu serialises launches, so that a cap of MaxContainers holds
	// and two calls with one idempotency key do not both create.
	launchMu sync.Mutex

	mu      sync.Mutex
	host    *hostCapacity // the Docker host's size, once known
	gateway string        // the network's gateway address, once known
}

// hostCapacity is the Docker host's size.
type hostCapacity struct {
	CPUs      int
	MemoryMiB int64
}

var _ backend.Backend = (*Backend)(nil)

// New returns a backend that launches containers through docker.
func New(docker Docker, cfg Config) (*Backend, error) {
	if docker == nil {
		return nil, errors.New("local backend: no Docker client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Network == "" {
		cfg.Network = "bridge"
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Backend{docker: docker, cfg: cfg, log: log.With("subsystem", "backend", "backend", Name)}, nil
}

// Name is "local".
func (b *Backend) Name() string { return Name }

// Offers lists the catalogue's types that fit the Docker host, each at both
// purchase types. A region other than "local" is backend.ErrInvalid, as
// Backend says of an unknown region, and backend.ErrUnsupported too (the
// region sells nothing), so a caller testing either sees it.
func (b *Backend) Offers(ctx context.Context, region string) ([]backend.Offer, error) {
	if region != Region {
		return nil, &backend.Error{Kind: backend.ErrInvalid, Op: "offers", Code: "UnknownRegion",
			Reason: fmt.Sprintf("the local backend has one region, %q, not %q", Region, region), Err: backend.ErrUnsupported}
	}
	host, err := b.hostCapacity(ctx)
	if err != nil {
		return nil, dockerError("offers", err)
	}
	var out []backend.Offer
	for _, t := range Catalogue {
		if !host.fits(t) {
			continue
		}
		for _, spot := range []bool{false, true} {
			price := t.OnDemand
			if spot {
				price = t.Spot
			}
			out = append(out, backend.Offer{
				Backend: Name, Region: Region, InstanceType: t.Name, Spot: spot,
				CPUs: t.CPUs, MemoryMiB: t.MemoryMiB, PricePerHour: price,
			})
		}
	}
	return out, nil
}

func (h hostCapacity) fits(t InstanceType) bool {
	return t.CPUs <= h.CPUs && t.MemoryMiB <= h.MemoryMiB
}

// hostCapacity asks the Docker host for its size once.
func (b *Backend) hostCapacity(ctx context.Context) (hostCapacity, error) {
	b.mu.Lock()
	h := b.host
	b.mu.Unlock()
	if h != nil {
		return *h, nil
	}
	res, err := b.docker.Info(ctx, client.InfoOptions{})
	if err != nil {
		return hostCapacity{}, err
	}
	info := res.Info
	h = &hostCapacity{CPUs: info.NCPU, MemoryMiB: info.MemTotal >> 20}
	b.mu.Lock()
	b.host = h
	b.mu.Unlock()
	return *h, nil
}

// offerType checks that the backend sells k and returns its type.
func (b *Backend) offerType(ctx context.Context, k backend.OfferKey) (InstanceType, error) {
	if k.Backend != Name {
		return InstanceType{}, backend.Errorf(backend.ErrInvalid, "launch", "WrongBackend", "offer %s is not the local backend's", k)
	}
	if k.Region != Region {
		return InstanceType{}, backend.Errorf(backend.ErrUnsupported, "launch", "UnknownRegion", "the local backend has one region, %q, not %q", Region, k.Region)
	}
	t, ok := lookupType(k.InstanceType)
	if !ok {
		return InstanceType{}, backend.Errorf(backend.ErrUnsupported, "launch", "UnknownInstanceType", "the local backend sells %s, not %q", typeNames(), k.InstanceType)
	}
	host, err := b.hostCapacity(ctx)
	if err != nil {
		return InstanceType{}, dockerError("launch", err)
	}
	if !host.fits(t) {
		return InstanceType{}, backend.Errorf(backend.ErrUnsupported, "launch", "HostTooSmall",
			"%s needs %d CPUs and %d MiB; the Docker host has %d CPUs and %d MiB", t.Name, t.CPUs, t.MemoryMiB, host.CPUs, host.MemoryMiB)
	}
	return t, nil
}

func typeNames() string {
	s := ""
	for i, t := range Catalogue {
		if i > 0 {
			s += ", "
		}
		s += strconv.Quote(t.Name)
	}
	return s
}
