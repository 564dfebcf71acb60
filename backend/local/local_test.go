package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/runner"
)

// These tests need no Docker daemon: fakeDocker answers the few calls they
// make. docker_test.go runs the backend against the real Engine.

// fakeDocker is a Docker host of a given size with one network; the calls
// the tests do not expect panic through the nil embedded interface.
type fakeDocker struct {
	Docker
	cpus     int
	memBytes int64
	gateway  string
	images   map[string]bool
}

func (f *fakeDocker) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	return client.SystemInfoResult{Info: system.Info{NCPU: f.cpus, MemTotal: f.memBytes}}, nil
}

func (f *fakeDocker) NetworkInspect(_ context.Context, name string, _ client.NetworkInspectOptions) (client.NetworkInspectResult, error) {
	if name != "bridge" {
		return client.NetworkInspectResult{}, cerrdefs.ErrNotFound.WithMessage("network " + name + " not found")
	}
	cfg := network.IPAMConfig{Subnet: netip.MustParsePrefix("172.17.0.0/16")}
	if f.gateway != "" {
		cfg.Gateway = netip.MustParseAddr(f.gateway)
	}
	return client.NetworkInspectResult{Network: network.Inspect{Network: network.Network{IPAM: network.IPAM{Config: []network.IPAMConfig{cfg}}}}}, nil
}

func (f *fakeDocker) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	if f.images[ref] {
		return client.ImageInspectResult{InspectResponse: image.InspectResponse{ID: "sha256:x"}}, nil
	}
	return client.ImageInspectResult{}, cerrdefs.ErrNotFound.WithMessage("no such image")
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newFake(t *testing.T, cpus int, memGiB int64) *Backend {
	t.Helper()
	b, err := New(&fakeDocker{cpus: cpus, memBytes: memGiB << 30, gateway: "172.17.0.1"}, Config{Image: "img", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOffersFitTheHost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cpus   int
		memGiB int64
		want   []string
	}{
		{16, 64, []string{"local.small", "local.medium", "local.large"}},
		{2, 24, []string{"local.small", "local.medium"}},
		{8, 2, []string{"local.small"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d CPUs %d GiB", tt.cpus, tt.memGiB), func(t *testing.T) {
			t.Parallel()
			offers, err := newFake(t, tt.cpus, tt.memGiB).Offers(context.Background(), "local")
			if err != nil {
				t.Fatal(err)
			}
			if len(offers) != 2*len(tt.want) {
				t.Fatalf("%d offers, want %d: %+v", len(offers), 2*len(tt.want), offers)
			}
			byKey := map[backend.OfferKey]backend.Offer{}
			for _, o := range offers {
				byKey[o.Key()] = o
			}
			for _, name := range tt.want {
				it, _ := lookupType(name)
				od := byKey[backend.OfferKey{Backend: "local", Region: "local", InstanceType: name}]
				spot := byKey[backend.OfferKey{Backend: "local", Region: "local", InstanceType: name, Spot: true}]
				if od.CPUs != it.CPUs || od.MemoryMiB != it.MemoryMiB || spot.CPUs != it.CPUs || spot.MemoryMiB != it.MemoryMiB {
					t.Errorf("%s: offers %+v %+v, want %d CPUs %d MiB", name, od, spot, it.CPUs, it.MemoryMiB)
				}
				if !(spot.PricePerHour > 0 && spot.PricePerHour < od.PricePerHour) {
					t.Errorf("%s: spot %v, on-demand %v", name, spot.PricePerHour, od.PricePerHour)
				}
			}
		})
	}
}

func TestCatalogue(t *testing.T) {
	t.Parallel()
	want := map[string][2]int64{"local.small": {1, 1024}, "local.medium": {2, 4096}, "local.large": {4, 8192}}
	for _, it := range Catalogue {
		if w := want[it.Name]; int64(it.CPUs) != w[0] || it.MemoryMiB != w[1] {
			t.Errorf("%s: %d CPUs %d MiB, want %v", it.Name, it.CPUs, it.MemoryMiB, w)
		}
	}
	if len(Catalogue) != len(want) {
		t.Errorf("%d types, want %d", len(Catalogue), len(want))
	}
}

func TestOffersUnknownRegion(t *testing.T) {
	t.Parallel()
	_, err := newFake(t, 4, 16).Offers(context.Background(), "eu-west-1")
	if !errors.Is(err, backend.ErrInvalid) || !errors.Is(err, backend.ErrUnsupported) || !strings.Contains(err.Error(), `"local"`) {
		t.Errorf("Offers(eu-west-1) = %v, want ErrInvalid and ErrUnsupported naming region \"local\"", err)
	}
}

func launchRequest(typ string, n int) backend.LaunchRequest {
	req := backend.LaunchRequest{
		Offer:          backend.Offer{Backend: "local", Region: "local", InstanceType: typ},
		IdempotencyKey: "key-1", ServerID: "srv", LimitID: "lim", ServerURL: "http://127.0.0.1:3000",
	}
	for i := range n {
		req.Instances = append(req.Instances, backend.InstanceSpec{RecordID: fmt.Sprintf("rec-%d", i), JoinToken: fmt.Sprintf("jt-%d", i)})
	}
	return req
}

func TestLaunchRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*backend.LaunchRequest)
		kind   error
		want   string
	}{
		{"unknown type", func(r *backend.LaunchRequest) { r.Offer.InstanceType = "m5.xlarge" }, backend.ErrUnsupported, "local.small"},
		{"unknown region", func(r *backend.LaunchRequest) { r.Offer.Region = "us-east-1" }, backend.ErrUnsupported, "one region"},
		{"too big for the host", func(r *backend.LaunchRequest) { r.Offer.InstanceType = "local.large" }, backend.ErrUnsupported, "Docker host has 2 CPUs"},
		{"other backend", func(r *backend.LaunchRequest) { r.Offer.Backend = "aws" }, backend.ErrInvalid, "not the local backend's"},
		{"no instances", func(r *backend.LaunchRequest) { r.Instances = nil }, backend.ErrInvalid, "no instances"},
		{"long key", func(r *backend.LaunchRequest) { r.IdempotencyKey = strings.Repeat("k", 65) }, backend.ErrInvalid, "1 to 64"},
		{"no server ID", func(r *backend.LaunchRequest) { r.ServerID = "" }, backend.ErrInvalid, "server ID"},
		{"bad server URL", func(r *backend.LaunchRequest) { r.ServerURL = "127.0.0.1:3000" }, backend.ErrInvalid, "http(s)"},
		{"duplicate record", func(r *backend.LaunchRequest) { r.Instances[1].RecordID = "rec-0" }, backend.ErrInvalid, "twice"},
		{"no join token", func(r *backend.LaunchRequest) { r.Instances[0].JoinToken = "" }, backend.ErrInvalid, "join token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := launchRequest("local.small", 2)
			tt.change(&req)
			_, err := newFake(t, 2, 24).Launch(context.Background(), req)
			if !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Launch = %v, want %v mentioning %q", err, tt.kind, tt.want)
			}
		})
	}
}

func TestContainerServerURL(t *testing.T) {
	t.Parallel()
	b := newFake(t, 2, 4)
	tests := map[string]string{
		"http://127.0.0.1:3000":         "http://172.17.0.1:3000",
		"http://localhost:3000/prefix":  "http://172.17.0.1:3000/prefix",
		"http://0.0.0.0:3000":           "http://172.17.0.1:3000",
		"http://[::1]:8080":             "http://172.17.0.1:8080",
		"http://localhost":              "http://172.17.0.1:80",
		"http://dstack.example.org:300": "http://dstack.example.org:300",
		"http://10.1.2.3:3000":          "http://10.1.2.3:3000",
	}
	for in, want := range tests {
		got, err := b.containerServerURL(context.Background(), in)
		if err != nil || got != want {
			t.Errorf("containerServerURL(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	other, err := New(&fakeDocker{cpus: 2, memBytes: 4 << 30}, Config{Image: "img", Network: "dstack-net"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.containerServerURL(context.Background(), "http://127.0.0.1:3000"); !errors.Is(err, backend.ErrInvalid) || !strings.Contains(err.Error(), "dstack-net") {
		t.Errorf("missing network: %v, want ErrInvalid naming it", err)
	}
}

func TestIPv4Gateway(t *testing.T) {
	t.Parallel()
	tests := []struct{ gateway, subnet, want string }{
		{"172.18.0.1", "172.18.0.0/16", "172.18.0.1"},
		{"", "172.17.0.0/16", "172.17.0.1"},
		{"", "10.5.0.0/24", "10.5.0.1"},
		{"", "fd00::/64", ""},
		{"", "10.0.0.0/31", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		if got := ipv4Gateway(tt.gateway, tt.subnet); got != tt.want {
			t.Errorf("ipv4Gateway(%q, %q) = %q, want %q", tt.gateway, tt.subnet, got, tt.want)
		}
	}
}

func TestContainerName(t *testing.T) {
	t.Parallel()
	valid := regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)
	names := map[string]bool{}
	for _, c := range [][2]string{
		{"srv", "0190e4c2-7d1a-7cc0-8b1e-3f2a1b0c9d8e"}, {"srv", "a/b"}, {"srv", "a:b"}, {"other", "a:b"},
		{"srv", "///"}, {"srv", strings.Repeat("x", 300)}, {"srv", ""},
	} {
		n := containerName(c[0], c[1])
		if !valid.MatchString(n) || len(n) > 63 {
			t.Errorf("containerName(%q, %q) = %q: not a valid container and host name", c[0], c[1], n)
		}
		if names[n] {
			t.Errorf("containerName(%q, %q) = %q twice", c[0], c[1], n)
		}
		names[n] = true
	}
	if a, b := containerName("s", "r"), containerName("s", "r"); a != b {
		t.Errorf("containerName is not stable: %q, %q", a, b)
	}
}

func TestMapState(t *testing.T) {
	t.Parallel()
	tests := map[container.ContainerState]backend.InstanceState{
		container.StateCreated: backend.StatePending, container.StateRestarting: backend.StatePending,
		container.StateRunning: backend.StateRunning, container.StatePaused: backend.StateRunning,
		container.StateRemoving: backend.StateTerminating,
		container.StateExited:   backend.StateGone, container.StateDead: backend.StateGone, "": backend.StateGone,
	}
	for in, want := range tests {
		if got := mapState(in); got != want {
			t.Errorf("mapState(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDockerError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		kind error
		code string
	}{
		{cerrdefs.ErrNotFound.WithMessage("No such image: x"), backend.ErrInvalid, "NotFound"},
		{cerrdefs.ErrInvalidArgument.WithMessage("Minimum memory limit allowed is 6MB"), backend.ErrInvalid, "InvalidParameter"},
		{cerrdefs.ErrResourceExhausted.WithMessage("no space left"), backend.ErrNoCapacity, "ResourceExhausted"},
		{cerrdefs.ErrConflict.WithMessage("name in use"), nil, "Conflict"},
		{errors.New("something"), nil, ""},
	}
	for _, tt := range tests {
		err := dockerError("launch", tt.err)
		var be *backend.Error
		if !errors.As(err, &be) || be.Code != tt.code || be.Op != "launch" || !errors.Is(err, tt.err) {
			t.Errorf("dockerError(%v) = %#v", tt.err, err)
			continue
		}
		if tt.kind != nil && !errors.Is(err, tt.kind) || tt.kind == nil && be.Kind != nil {
			t.Errorf("dockerError(%v) kind %v, want %v", tt.err, be.Kind, tt.kind)
		}
	}
	if err := dockerError("list", context.Canceled); err != context.Canceled { //nolint:errorlint // the very error, not one wrapping it
		t.Errorf("context error wrapped: %v", err)
	}
}

func TestMaxContainersKeys(t *testing.T) {
	t.Parallel()
	c := Config{MaxContainers: map[string]int{"local.small/spot": 1, "local.small": 2, "*": 3}}
	tests := []struct {
		key  backend.OfferKey
		want int
	}{
		{backend.OfferKey{InstanceType: "local.small", Spot: true}, 1},
		{backend.OfferKey{InstanceType: "local.small"}, 2},
		{backend.OfferKey{InstanceType: "local.medium", Spot: true}, 3},
	}
	for _, tt := range tests {
		if got, ok := c.maxContainers(tt.key); !ok || got != tt.want {
			t.Errorf("maxContainers(%v) = %d, %v; want %d", tt.key, got, ok, tt.want)
		}
	}
	if _, ok := (Config{}).maxContainers(backend.OfferKey{InstanceType: "local.small"}); ok {
		t.Error("a cap without MaxContainers")
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "make local-image"},
		{Config{Image: "i", MaxContainers: map[string]int{"*": -1}}, "negative"},
		{Config{Image: "i", StopTimeout: -1}, "negative"},
	} {
		if err := tt.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.cfg, err, tt.want)
		}
	}
	if _, err := New(nil, Config{Image: "i"}); err == nil {
		t.Error("New without a Docker client")
	}
}

func TestJoinTokenVariable(t *testing.T) {
	t.Parallel()
	if envJoinToken != runner.EnvJoinToken {
		t.Errorf("containers get %s, the runner reads %s", envJoinToken, runner.EnvJoinToken)
	}
}

func TestBuildImageRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	docker := &fakeDocker{}
	for _, tt := range []struct{ path, want string }{
		{filepath.Join(dir, "missing"), "make build"},
		{script, "not an ELF"},
	} {
		if _, err := BuildImage(context.Background(), docker, tt.path); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("BuildImage(%s) = %v, want an error mentioning %q", tt.path, err, tt.want)
		}
	}
	// A dynamically linked binary has no C library FROM scratch.
	for _, p := range []string{"/bin/ls", "/usr/bin/env"} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if _, err := BuildImage(context.Background(), docker, p); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
			t.Errorf("BuildImage(%s) = %v, want a dynamic-linking error", p, err)
		}
		break
	}
}
