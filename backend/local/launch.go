package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/backend"
)

// Labels the backend puts on its containers besides the backend.Tag* ones:
// the offer, so List can say what each container is.
const (
	labelBackend      = "dstack:backend"
	labelRegion       = "dstack:region"
	labelInstanceType = "dstack:instance-type"
	labelSpot         = "dstack:spot"
)

// In the runner image (see image.go).
const (
	runnerPath    = "/usr/local/bin/dstack-runner"
	runnerDataDir = "/var/lib/dstack-runner"
)

// envJoinToken is runner.EnvJoinToken (a test keeps them equal), spelled
// out so that the server's backend does not link the runner agent.
const envJoinToken = "DSTACK_JOIN_TOKEN"

// Launch starts one container per spec of req, each running dstack-runner
// with the spec's join token, and returns them running. See Backend.
//
// A repeated call with the same IdempotencyKey returns the containers of the
// first call (starting any a crash left created but not started) and creates
// none. Under Config.MaxContainers it creates what fits, the first specs
// first, or nothing with backend.ErrNoCapacity. When a create fails after
// some succeeded, the ones created are returned without an error.
func (b *Backend) Launch(ctx context.Context, req backend.LaunchRequest) ([]backend.Instance, error) {
	if err := validateLaunch(req); err != nil {
		return nil, err
	}
	it, err := b.offerType(ctx, req.Offer.Key())
	if err != nil {
		return nil, err
	}
	serverURL, err := b.containerServerURL(ctx, req.ServerURL)
	if err != nil {
		return nil, err
	}

	b.launchMu.Lock()
	defer b.launchMu.Unlock()
	existing, err := b.list(ctx, label(backend.TagServerID, req.ServerID), label(backend.TagLaunchKey, req.IdempotencyKey))
	if err != nil {
		return nil, dockerError("launch", err)
	}
	if len(existing) > 0 {
		// Answer as the first call did: in the order of the request.
		pos := map[string]int{}
		for i, spec := range req.Instances {
			pos[spec.RecordID] = i
		}
		insts, err := b.resume(ctx, existing)
		slices.SortStableFunc(insts, func(a, b backend.Instance) int { return pos[a.Tags.RecordID] - pos[b.Tags.RecordID] })
		return insts, err
	}

	n := len(req.Instances)
	if limit, ok := b.cfg.maxContainers(req.Offer.Key()); ok {
		live, err := b.countLive(ctx, req.ServerID, req.Offer.Key())
		if err != nil {
			return nil, dockerError("launch", err)
		}
		if room := limit - live; room < n {
			n = max(room, 0)
		}
		if n == 0 {
			return nil, backend.Errorf(backend.ErrNoCapacity, "launch", "MaxContainers",
				"%s: %d of %d containers of the offer already live", req.Offer.Key(), live, limit)
		}
	}

	var out []backend.Instance
	for _, spec := range req.Instances[:n] {
		inst, err := b.create(ctx, req, it, spec, serverURL)
		if err != nil {
			if len(out) == 0 {
				return nil, err
			}
			b.log.Warn("launched part of the request", "offer", req.Offer.Key().String(), "launched", len(out), "wanted", len(req.Instances), "err", err)
			break
		}
		out = append(out, inst)
	}
	return out, nil
}

// validateLaunch checks what the backend needs of a request.
func validateLaunch(req backend.LaunchRequest) error {
	return req.Validate()
}

// resume returns the containers of an earlier call with the same key,
// starting those left created.
func (b *Backend) resume(ctx context.Context, insts []backend.Instance) ([]backend.Instance, error) {
	for i := range insts {
		if insts[i].State != backend.StatePending {
			continue
		}
		if _, err := b.docker.ContainerStart(ctx, insts[i].CloudID, client.ContainerStartOptions{}); err != nil {
			return nil, dockerError("launch", err)
		}
		insts[i].State = backend.StateRunning
	}
	return insts, nil
}

// countLive counts the server's containers of an offer not yet gone.
func (b *Backend) countLive(ctx context.Context, serverID string, k backend.OfferKey) (int, error) {
	insts, err := b.list(ctx, label(backend.TagServerID, serverID), label(labelInstanceType, k.InstanceType), label(labelSpot, fmt.Sprint(k.Spot)))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, in := range insts {
		if in.State != backend.StateGone {
			n++
		}
	}
	return n, nil
}

// createTimeout bounds creating and starting one container.
const createTimeout = time.Minute

// create creates and starts the container of one spec. A container of the
// record already there (a call that crashed between create and record, with
// another key) is taken over when it carries the same server's tags.
//
// Once begun, the create and the start go on even when ctx ends (a server
// stopping mid-launch), as a cloud's single launch call would: a container
// created but never started would hold its limit's room until the register
// timeout, since no later call starts it.
func (b *Backend) create(ctx context.Context, req backend.LaunchRequest, it InstanceType, spec backend.InstanceSpec, serverURL string) (backend.Instance, error) {
	if err := ctx.Err(); err != nil {
		return backend.Instance{}, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), createTimeout)
	defer cancel()
	name := containerName(req.ServerID, spec.RecordID)
	labels := map[string]string{
		backend.TagServerID:  req.ServerID,
		backend.TagLimitID:   req.LimitID,
		backend.TagRecordID:  spec.RecordID,
		backend.TagLaunchKey: req.IdempotencyKey,
		labelBackend:         Name,
		labelRegion:          Region,
		labelInstanceType:    it.Name,
		labelSpot:            fmt.Sprint(req.Offer.Spot),
	}
	cfg := &container.Config{
		Image:      b.cfg.Image,
		Hostname:   name,
		Entrypoint: []string{runnerPath},
		Cmd:        []string{"start", "--server", serverURL, "--name", name, "--data-dir", runnerDataDir, "--executor", "shell"},
		Env:        []string{envJoinToken + "=" + spec.JoinToken, "HOME=/root", "PATH=/usr/local/bin:/bin"},
		Labels:     labels,
	}
	if b.cfg.Network == "host" {
		cfg.Hostname = "" // Docker refuses a host name on the host's network
	}
	useInit := true
	mem := it.MemoryMiB << 20
	host := &container.HostConfig{
		NetworkMode: container.NetworkMode(b.cfg.Network),
		Init:        &useInit, // reaps the jobs' orphans; the runner gets the signals
		Resources: container.Resources{
			NanoCPUs:   int64(it.CPUs) * 1e9,
			Memory:     mem,
			MemorySwap: mem, // no swap: the runner's memory is the limit
		},
	}
	created, err := b.docker.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: host, NetworkingConfig: &network.NetworkingConfig{}, Name: name})
	var id string
	switch {
	case err == nil:
		id = created.ID
	case isConflict(err):
		res, ierr := b.docker.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
		if ierr != nil {
			return backend.Instance{}, dockerError("launch", ierr)
		}
		old := res.Container
		if old.Config == nil || old.Config.Labels[backend.TagServerID] != req.ServerID || old.Config.Labels[backend.TagRecordID] != spec.RecordID {
			return backend.Instance{}, backend.Errorf(backend.ErrInvalid, "launch", "NameInUse", "container name %s is taken by a container that is not this server's instance %s", name, spec.RecordID)
		}
		id = old.ID
	default:
		return backend.Instance{}, b.explain(dockerError("launch", err))
	}
	if _, err := b.docker.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		return backend.Instance{}, dockerError("launch", err)
	}
	got, err := b.docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return backend.Instance{}, dockerError("launch", err)
	}
	b.log.Info("launched", "container", shortID(id), "name", name, "record", spec.RecordID, "offer", req.Offer.Key().String())
	return inspectInstance(got.Container), nil
}

// explain adds what to do to a launch error the operator can fix.
func (b *Backend) explain(err error) error {
	var be *backend.Error
	if errors.As(err, &be) && be.Code == "NotFound" {
		be.Reason = fmt.Sprintf("%s (is image %s built, with local.BuildImage or `make local-image`, and does network %q exist?)", be.Reason, b.cfg.Image, b.cfg.Network)
	}
	return err
}

// containerServerURL rewrites a loopback or unspecified host of serverURL to
// the gateway of the containers' network: the host as they see it.
func (b *Backend) containerServerURL(ctx context.Context, serverURL string) (string, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", backend.Errorf(backend.ErrInvalid, "launch", "InvalidRequest", "server URL %q: %v", serverURL, err)
	}
	if b.cfg.Network == "host" || !localHost(u.Hostname()) {
		return serverURL, nil
	}
	gw, err := b.Gateway(ctx)
	if err != nil {
		return "", err
	}
	if p := u.Port(); p != "" {
		u.Host = net.JoinHostPort(gw, p)
	} else {
		u.Host = net.JoinHostPort(gw, "80")
		if u.Scheme == "https" {
			u.Host = net.JoinHostPort(gw, "443")
		}
	}
	return u.String(), nil
}

// localHost reports whether host means "this machine" to the server, and
// so something else inside a container.
func localHost(host string) bool {
	if strings.EqualFold(host, "localhost") || host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// Gateway is the address of the host on the containers' network (e.g.
// 172.17.0.1 on the default bridge): the server must listen on it (or on
// all addresses) for its containers' runners to reach it.
func (b *Backend) Gateway(ctx context.Context) (string, error) {
	b.mu.Lock()
	gw := b.gateway
	b.mu.Unlock()
	if gw != "" {
		return gw, nil
	}
	n, err := b.docker.NetworkInspect(ctx, b.cfg.Network, client.NetworkInspectOptions{})
	if err != nil {
		return "", b.explain(dockerError("launch", err))
	}
	for _, c := range n.Network.IPAM.Config {
		if gw = ipv4Gateway(c.Gateway.String(), c.Subnet.String()); gw != "" {
			break
		}
	}
	if gw == "" {
		return "", backend.Errorf(backend.ErrInvalid, "launch", "NoGateway",
			"Docker network %q has no IPv4 gateway: give the server a URL its containers can reach, or use another network", b.cfg.Network)
	}
	b.mu.Lock()
	b.gateway = gw
	b.mu.Unlock()
	return gw, nil
}

// ipv4Gateway is gateway when it is an IPv4 address, else the first host
// address of an IPv4 subnet: Docker's default IPAM gives the gateway that
// address, and the default bridge's IPAM config names only the subnet.
func ipv4Gateway(gateway, subnet string) string {
	if ip := net.ParseIP(gateway); ip != nil && ip.To4() != nil {
		return ip.To4().String()
	}
	_, n, err := net.ParseCIDR(subnet)
	if err != nil || n.IP.To4() == nil {
		return ""
	}
	if ones, _ := n.Mask.Size(); ones > 30 {
		return ""
	}
	ip := n.IP.To4()
	return net.IPv4(ip[0], ip[1], ip[2], ip[3]+1).String()
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// containerName is dstack-<record>-<hash>: readable, valid for Docker and
// as a host name, and unique per (server, record) whatever the IDs hold.
func containerName(serverID, recordID string) string {
	h := sha256.Sum256([]byte(serverID + "\x00" + recordID))
	r := strings.Trim(unsafeName.ReplaceAllString(recordID, "-"), "-._")
	if len(r) > 40 {
		r = r[:40]
	}
	if r == "" {
		return "dstack-" + hex.EncodeToString(h[:6])
	}
	return "dstack-" + r + "-" + hex.EncodeToString(h[:4])
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
