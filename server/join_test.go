package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/autoscale"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store"
)

// memCloud is a backend that only remembers what it was asked: the server
// tests play the instances' runners themselves.
type memCloud struct {
	mu       sync.Mutex
	requests []backend.LaunchRequest
	live     map[string]backend.Instance
}

func (m *memCloud) Name() string { return "mem" }

func (m *memCloud) Offers(context.Context, string) ([]backend.Offer, error) {
	return []backend.Offer{{Backend: "mem", Region: "r", InstanceType: "m.small", CPUs: 8, MemoryMiB: 16 << 10, PricePerHour: 0.1}}, nil
}

func (m *memCloud) Launch(_ context.Context, req backend.LaunchRequest) ([]backend.Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests = append(m.requests, req)
	var out []backend.Instance
	for _, s := range req.Instances {
		in := backend.Instance{CloudID: "c-" + s.RecordID, Offer: req.Offer.Key(), State: backend.StateRunning, LaunchedAt: time.Now(),
			Tags: backend.Tags{ServerID: req.ServerID, LimitID: req.LimitID, RecordID: s.RecordID, LaunchKey: req.IdempotencyKey}}
		m.live[in.CloudID] = in
		out = append(out, in)
	}
	return out, nil
}

func (m *memCloud) Terminate(_ context.Context, ids []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		delete(m.live, id)
	}
	return nil
}

func (m *memCloud) List(_ context.Context, serverID string) ([]backend.Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []backend.Instance
	for _, in := range m.live {
		if in.Tags.ServerID == serverID {
			out = append(out, in)
		}
	}
	return out, nil
}

func (m *memCloud) launched() []backend.LaunchRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]backend.LaunchRequest(nil), m.requests...)
}

func (m *memCloud) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.live)
}

// TestOnDemandJoinRunIdle drives the server's autoscaler through its API: a
// submitted run launches an instance, its runner joins with the join token
// (once only), takes the job, and the idle instance is terminated after the
// idle timeout.
func TestOnDemandJoinRunIdle(t *testing.T) {
	t.Parallel()
	cloud := &memCloud{live: map[string]backend.Instance{}}
	e := setup(t, servertest.WithConfig(func(c *server.Config) {
		c.Backends = []backend.Backend{cloud}
		c.IdleTimeout = 300 * time.Millisecond
		c.ExternalURL = "http://dstack.example:3000"
		c.Autoscale.Interval = 50 * time.Millisecond
	}))
	ctx := context.Background()
	st := e.srv.Store()
	if _, err := st.LimitPut(ctx, store.LimitPutParams{ID: "l1", UserID: adminID(t, e.srv), Backend: "mem", Region: "r", InstanceType: "m.small", Max: 1, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	run := e.submit(t, e.admin, bashJob("w"))
	testutil.Eventually(t, "a launch", func() bool { return len(cloud.launched()) == 1 })
	req := cloud.launched()[0]
	if req.ServerURL != "http://dstack.example:3000" || len(req.Instances) != 1 {
		t.Fatalf("launch request %+v", req)
	}
	token := req.Instances[0].JoinToken

	// A wrong token is refused; the right one works once.
	anon := e.srv.Client().WithToken("")
	join := api.RunnerJoinRequest{RunnerRegisterRequest: api.RunnerRegisterRequest{Name: "od-1", Executor: "shell", Resources: bigRunner}}
	join.JoinToken = "dstj_wrong"
	_, err := anon.RunnerJoin(ctx, join)
	wantAPIError(t, "join with a wrong token", err, http.StatusUnauthorized, api.CodeUnauthenticated)
	join.JoinToken = token
	reg, err := anon.RunnerJoin(ctx, join)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	_, err = anon.RunnerJoin(ctx, join)
	wantAPIError(t, "second join", err, http.StatusUnauthorized, api.CodeUnauthenticated)

	rc := e.srv.Client().WithToken(reg.Token)
	a := claim(t, rc)
	if a.Job.ID != run.Jobs[0].ID {
		t.Fatalf("claimed %s, want %s", a.Job.ID, run.Jobs[0].ID)
	}
	rs, err := e.admin.RunnerList(ctx)
	if err != nil || len(rs) != 1 || rs[0].InstanceType != "m.small" || rs[0].Backend != "mem" {
		t.Fatalf("runners = %+v, %v", rs, err)
	}
	setStatus(t, rc, a, api.StatusRunning)
	setStatus(t, rc, a, api.StatusDone)
	testutil.Eventually(t, "the idle instance's termination", func() bool {
		ins, err := st.InstanceList(ctx, store.InstanceListParams{States: []store.InstanceState{store.InstanceTerminated}})
		return err == nil && len(ins) == 1 && ins[0].Reason == "idle_timeout" && cloud.count() == 0
	})

	body := metricsBody(t, e.srv.URL)
	for _, m := range []string{"dstack_ondemand_launches_total", "dstack_ondemand_pending_to_launch_seconds", "dstack_ondemand_instances", "dstack_ondemand_pending_jobs",
		`dstack_backend_calls_total{backend="mem",method="launch"} `, `dstack_backend_calls_total{backend="mem",method="terminate"} `,
		`dstack_backend_call_duration_seconds_count{backend="mem",method="list"}`} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics has no %s", m)
		}
	}
}

// metricsBody is what the server at url serves on /metrics.
func metricsBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// adminID finds the admin user's ID by its token.
func adminID(t *testing.T, srv *servertest.Server) string {
	t.Helper()
	u, err := srv.Store().UserGetByTokenHash(context.Background(), autoscale.HashToken(srv.AdminToken))
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}
