package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"go.uber.org/goleak"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
)

// These tests run the backend against the real Docker Engine: they build
// the runner image from this module's dstack-runner, launch containers and
// watch their runners join a fake server. Without a Docker daemon they are
// skipped, unless CI is set: then they fail.

var shared struct {
	once   sync.Once
	docker *client.Client
	image  string
	dir    string
	skip   string // why there is no Docker
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.docker != nil {
		shared.docker.Close()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// dockerImage returns a Docker client and the runner image built from this
// module, once for the whole test binary.
func dockerImage(t *testing.T) (*client.Client, string) {
	t.Helper()
	shared.once.Do(func() {
		docker, err := client.New(client.FromEnv)
		if err != nil {
			shared.skip = err.Error()
			return
		}
		shared.docker = docker
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := docker.Ping(ctx, client.PingOptions{}); err != nil {
			shared.skip = err.Error()
			return
		}
		shared.dir, shared.err = os.MkdirTemp("", "dstack-local-test-")
		if shared.err != nil {
			return
		}
		bin := filepath.Join(shared.dir, "dstack-runner")
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/dstackai/dstack/cmd/dstack-runner")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			shared.err = fmt.Errorf("build dstack-runner: %w\n%s", err, out)
			return
		}
		ctx, cancel = context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared.image, shared.err = BuildImage(ctx, docker, bin)
	})
	switch {
	case shared.skip != "" && os.Getenv("CI") != "":
		t.Fatalf("no Docker daemon, and CI is set: %s", shared.skip)
	case shared.skip != "":
		t.Skipf("no Docker daemon: %s", shared.skip)
	case shared.err != nil:
		t.Fatal(shared.err)
	}
	return shared.docker, shared.image
}

type fixture struct {
	docker   *client.Client
	b        *Backend
	serverID string
}

// setup returns a backend with its own server ID, whose containers are
// removed when the test ends.
func setup(t *testing.T, change ...func(*Config)) *fixture {
	t.Helper()
	docker, image := dockerImage(t)
	cfg := Config{Image: image, StopTimeout: time.Second, Logger: testLogger(t)}
	for _, c := range change {
		c(&cfg)
	}
	b, err := New(docker, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{docker: docker, b: b, serverID: "test-" + randomHex(6)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		insts, err := b.List(ctx, f.serverID)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		if err := b.Terminate(ctx, cloudIDs(insts)); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return f
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func cloudIDs(insts []backend.Instance) []string {
	ids := make([]string, len(insts))
	for i, in := range insts {
		ids[i] = in.CloudID
	}
	return ids
}

func (f *fixture) request(typ string, spot bool, key string, n int, serverURL string) backend.LaunchRequest {
	req := backend.LaunchRequest{
		Offer:          backend.Offer{Backend: "local", Region: "local", InstanceType: typ, Spot: spot},
		IdempotencyKey: key, ServerID: f.serverID, LimitID: "limit-1", ServerURL: serverURL,
	}
	for range n {
		id := randomHex(4)
		req.Instances = append(req.Instances, backend.InstanceSpec{RecordID: "rec-" + id, JoinToken: "jt-" + id})
	}
	return req
}

// unusedURL is a loopback URL nothing listens on.
func unusedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

func TestLaunchListTerminate(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	req := f.request("local.small", false, "key-"+randomHex(4), 2, unusedURL(t))
	got, err := f.b.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].CloudID == got[1].CloudID {
		t.Fatalf("Launch returned %+v, want 2 containers", got)
	}
	for i, in := range got {
		want := backend.Tags{ServerID: f.serverID, LimitID: "limit-1", RecordID: req.Instances[i].RecordID, LaunchKey: req.IdempotencyKey}
		if in.Tags != want || in.Offer != req.Offer.Key() || in.State != backend.StateRunning || time.Since(in.LaunchedAt) > time.Minute {
			t.Errorf("instance %d: %+v, want tags %+v, offer %v, running, launched now", i, in, want, req.Offer.Key())
		}
		c, err := inspect(ctx, f.docker, in.CloudID)
		if err != nil {
			t.Fatal(err)
		}
		if c.HostConfig.NanoCPUs != 1e9 || c.HostConfig.Memory != 1<<30 || c.HostConfig.MemorySwap != 1<<30 {
			t.Errorf("limits: %d nano CPUs, %d memory, %d swap", c.HostConfig.NanoCPUs, c.HostConfig.Memory, c.HostConfig.MemorySwap)
		}
		if !slices.Contains(c.Config.Env, "DSTACK_JOIN_TOKEN="+req.Instances[i].JoinToken) {
			t.Errorf("instance %d lacks its join token: %v", i, c.Config.Env)
		}
		args := strings.Join(append(c.Config.Entrypoint, c.Config.Cmd...), " ")
		if !strings.HasPrefix(args, "/usr/local/bin/dstack-runner start --server http://") || strings.Contains(args, "127.0.0.1") || strings.Contains(args, "jt-") {
			t.Errorf("command %q: want dstack-runner start against the gateway, no token", args)
		}
	}

	// The same key again: the same containers, nothing new.
	again, err := f.b.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cloudIDs(again), cloudIDs(got)) {
		t.Errorf("repeated Launch returned %v, want %v", cloudIDs(again), cloudIDs(got))
	}

	listed, err := f.b.List(ctx, f.serverID)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 {
		t.Fatalf("List: %+v, want the 2 containers", listed)
	}
	for _, in := range listed {
		i := slices.IndexFunc(got, func(g backend.Instance) bool { return g.CloudID == in.CloudID })
		if i < 0 || in.Tags != got[i].Tags || in.Offer != got[i].Offer || in.State != backend.StateRunning || !in.LaunchedAt.Equal(got[i].LaunchedAt.Truncate(time.Second)) {
			t.Errorf("listed %+v, launched %+v", in, got)
		}
	}
	if other, err := f.b.List(ctx, "someone-else-"+randomHex(4)); err != nil || len(other) != 0 {
		t.Errorf("List of another server: %v, %v", other, err)
	}

	ids := append(cloudIDs(got), "0123456789ab-unknown")
	if err := f.b.Terminate(ctx, ids); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Terminate(ctx, ids); err != nil {
		t.Errorf("second Terminate: %v", err)
	}
	if err := f.b.Terminate(ctx, nil); err != nil {
		t.Errorf("empty Terminate: %v", err)
	}
	if listed, err := f.b.List(ctx, f.serverID); err != nil || len(listed) != 0 {
		t.Errorf("List after Terminate: %+v, %v", listed, err)
	}
}

func TestCapacity(t *testing.T) {
	t.Parallel()
	f := setup(t, func(c *Config) { c.MaxContainers = map[string]int{"local.small/spot": 1} })
	ctx := context.Background()
	url := unusedURL(t)

	// Room for one of two: a partial launch, no error.
	req := f.request("local.small", true, "key-"+randomHex(4), 2, url)
	got, err := f.b.Launch(ctx, req)
	if err != nil || len(got) != 1 || got[0].Tags.RecordID != req.Instances[0].RecordID {
		t.Fatalf("Launch = %+v, %v; want the first instance only", got, err)
	}
	// No room: ErrNoCapacity, the offer unavailable.
	_, err = f.b.Launch(ctx, f.request("local.small", true, "key-"+randomHex(4), 1, url))
	if !errors.Is(err, backend.ErrNoCapacity) || !backend.Unavailable(err) || !strings.Contains(backend.Reason(err), "MaxContainers") {
		t.Fatalf("Launch over capacity = %v, want ErrNoCapacity", err)
	}
	// The on-demand offer of the type is not capped.
	if got, err := f.b.Launch(ctx, f.request("local.small", false, "key-"+randomHex(4), 1, url)); err != nil || len(got) != 1 {
		t.Errorf("on-demand Launch = %+v, %v", got, err)
	}
	// Room again once the spot container is gone.
	if err := f.b.Terminate(ctx, cloudIDs(got)); err != nil {
		t.Fatal(err)
	}
	if got, err := f.b.Launch(ctx, f.request("local.small", true, "key-"+randomHex(4), 1, url)); err != nil || len(got) != 1 {
		t.Errorf("Launch after Terminate = %+v, %v", got, err)
	}
}

func TestLaunchDockerRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	noImage := setup(t, func(c *Config) { c.Image = ImageRepository + ":missing" })
	_, err := noImage.b.Launch(ctx, noImage.request("local.small", false, "k", 1, unusedURL(t)))
	if !errors.Is(err, backend.ErrInvalid) || !strings.Contains(err.Error(), "make local-image") {
		t.Errorf("Launch without the image = %v, want ErrInvalid saying how to build it", err)
	}
	noNet := setup(t, func(c *Config) { c.Network = "dstack-missing-" + randomHex(4) })
	_, err = noNet.b.Launch(ctx, noNet.request("local.small", false, "k", 1, unusedURL(t)))
	if !errors.Is(err, backend.ErrInvalid) {
		t.Errorf("Launch on a missing network = %v, want ErrInvalid", err)
	}
	// A container that is not one of the backend's is left alone.
	c, err := noImage.docker.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: shared.image}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = noImage.docker.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}) }()
	if err := noImage.b.Terminate(ctx, []string{c.ID}); !errors.Is(err, backend.ErrInvalid) {
		t.Errorf("Terminate of another container = %v, want ErrInvalid", err)
	}
	if _, err := noImage.docker.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{}); err != nil {
		t.Errorf("the other container was touched: %v", err)
	}
}

func TestBuildImageReuses(t *testing.T) {
	t.Parallel()
	docker, image := dockerImage(t)
	ref, err := BuildImage(context.Background(), docker, filepath.Join(shared.dir, "dstack-runner"))
	if err != nil || ref != image {
		t.Errorf("BuildImage again = %q, %v; want %q", ref, err, image)
	}
}

// joinServer is a fake dstack server that answers joins with a credential
// (refusing tokens that start with "bad-") and holds claims; it listens on every address, as a server with the local
// backend must, so the containers reach it through the network's gateway.
func joinServer(t *testing.T) (string, <-chan api.RunnerJoinRequest) {
	t.Helper()
	joins := make(chan api.RunnerJoinRequest, 16)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/runners/join", func(w http.ResponseWriter, r *http.Request) {
		var req api.RunnerJoinRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if strings.HasPrefix(req.JoinToken, "bad-") {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: api.CodeUnauthenticated, Message: "unknown join token"}})
			return
		}
		joins <- req
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(api.RunnerRegisterResponse{RunnerID: "runner-" + req.Name, Token: "rt", ExpiresAt: time.Now().Add(time.Hour), HeartbeatInterval: api.Duration(time.Minute)})
	})
	mux.HandleFunc("POST /api/v1/runner/", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(200 * time.Millisecond):
		}
		w.WriteHeader(http.StatusNoContent)
	})
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		srv.Close()
	})
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return "http://127.0.0.1:" + port, joins
}

// TestRunnersJoin: every container's runner joins the server (reached
// through the gateway, from the loopback URL the server gave) with its own
// join token, and reports exactly the offer's CPUs and memory.
func TestRunnersJoin(t *testing.T) {
	t.Parallel()
	f := setup(t)
	serverURL, joins := joinServer(t)
	ctx := context.Background()
	var reqs []backend.LaunchRequest
	for _, typ := range []string{"local.small", "local.small", "local.medium"} {
		reqs = append(reqs, f.request(typ, false, "key-"+randomHex(4), 1, serverURL))
	}
	reqs[0].Instances = append(reqs[0].Instances, reqs[1].Instances...) // two in one call
	reqs = slices.Delete(reqs, 1, 2)

	want := map[string]InstanceType{} // join token -> type
	names := map[string]string{}      // join token -> container name
	for _, req := range reqs {
		insts, err := f.b.Launch(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		it, _ := lookupType(req.Offer.InstanceType)
		for i, spec := range req.Instances {
			want[spec.JoinToken] = it
			c, err := inspect(ctx, f.docker, insts[i].CloudID)
			if err != nil {
				t.Fatal(err)
			}
			names[spec.JoinToken] = strings.TrimPrefix(c.Name, "/")
		}
	}
	timeout := time.After(90 * time.Second)
	for len(want) > 0 {
		select {
		case j := <-joins:
			it, ok := want[j.JoinToken]
			if !ok {
				t.Errorf("a join with an unknown or repeated token: %+v", j)
				continue
			}
			delete(want, j.JoinToken)
			if j.Resources.CPUs != it.CPUs || j.Resources.MemoryMiB != it.MemoryMiB {
				t.Errorf("%s's runner reports %d CPUs, %d MiB; the offer says %d, %d", it.Name, j.Resources.CPUs, j.Resources.MemoryMiB, it.CPUs, it.MemoryMiB)
			}
			if j.Name != names[j.JoinToken] || j.Hostname != names[j.JoinToken] || j.Executor != "shell" || j.Version == "" {
				t.Errorf("join %+v, want name and host name %s", j.RunnerRegisterRequest, names[j.JoinToken])
			}
		case <-timeout:
			t.Fatalf("%d runners did not join; their containers' logs are in `docker logs`", len(want))
		}
	}
}

// TestRefusedRunnerIsGone: a runner whose join token is refused exits, and
// List reports its container gone until Terminate removes it.
func TestRefusedRunnerIsGone(t *testing.T) {
	t.Parallel()
	f := setup(t)
	serverURL, _ := joinServer(t)
	ctx := context.Background()
	req := f.request("local.small", false, "key-"+randomHex(4), 1, serverURL)
	req.Instances[0].JoinToken = "bad-token"
	insts, err := f.b.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(60 * time.Second)
	for {
		listed, err := f.b.List(ctx, f.serverID)
		if err != nil {
			t.Fatal(err)
		}
		if len(listed) != 1 || listed[0].CloudID != insts[0].CloudID {
			t.Fatalf("List = %+v, want the one container", listed)
		}
		if listed[0].State == backend.StateGone {
			break
		}
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatalf("the container is still %s after its runner was refused", listed[0].State)
		}
	}
	c, err := inspect(ctx, f.docker, insts[0].CloudID)
	if err != nil {
		t.Fatal(err)
	}
	if c.State.ExitCode != 1 {
		t.Errorf("the runner exited with %d, want 1", c.State.ExitCode)
	}
	if err := f.b.Terminate(ctx, cloudIDs(insts)); err != nil {
		t.Fatal(err)
	}
	if listed, err := f.b.List(ctx, f.serverID); err != nil || len(listed) != 0 {
		t.Errorf("List after Terminate: %+v, %v", listed, err)
	}
}

// TestHostNetwork: on the host's network the loopback URL is kept, and the
// runner reaches the server through it.
func TestHostNetwork(t *testing.T) {
	t.Parallel()
	f := setup(t, func(c *Config) { c.Network = "host" })
	serverURL, joins := joinServer(t)
	req := f.request("local.small", false, "key-"+randomHex(4), 1, serverURL)
	insts, err := f.b.Launch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	c, err := inspect(context.Background(), f.docker, insts[0].CloudID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(c.Config.Cmd, serverURL) {
		t.Errorf("command %v, want the server URL %s as given", c.Config.Cmd, serverURL)
	}
	select {
	case j := <-joins:
		if j.JoinToken != req.Instances[0].JoinToken || j.Resources.CPUs != 1 || j.Resources.MemoryMiB != 1024 {
			t.Errorf("join %+v", j)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the runner did not join")
	}
}

// inspect is the container id as the Engine describes it.
func inspect(ctx context.Context, docker *client.Client, id string) (container.InspectResponse, error) {
	res, err := docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	return res.Container, err
}
