package server_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store/storetest"
)

// Two replicas on one PostgreSQL database behave as one server: what one
// is told wakes what waits on the other at once. Their long-polls re-check
// the store only every hour here, so that nothing but the bus can wake
// them within a test's time.

// noRecheck makes a server's long-polls re-check the store only hourly.
var noRecheck = servertest.WithConfig(func(c *server.Config) { c.Recheck = time.Hour })

// behindBalancer gives a replica the service's address, as every replica
// behind one load balancer has.
var behindBalancer = servertest.WithConfig(func(c *server.Config) { c.ExternalURL = "http://dstack.example" })

// setupReplicas starts two replicas, a and b, of one server on PostgreSQL.
func setupReplicas(t testing.TB) (a *apiEnv, b *servertest.Server) {
	t.Helper()
	srv := servertest.Start(t, servertest.WithPostgres(storetest.PostgresDSN(t)), noRecheck, behindBalancer)
	admin := srv.Client()
	a = &apiEnv{srv: srv, admin: admin, codeID: uploadCode(t, admin)}
	return a, srv.StartReplica(t)
}

// clientOf is a client of srv with token.
func clientOf(t testing.TB, token string, srv *servertest.Server) *client.Client {
	t.Helper()
	out, err := client.New(srv.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitForWaiter waits until a long-poll (a claim, or a wait for a stop)
// waits on srv.
func waitForWaiter(t *testing.T, srv *servertest.Server) {
	t.Helper()
	testutil.Eventually(t, "a long-poll waiting on the replica", func() bool { return server.ClaimWaiters(srv.Server)+server.QueueWatchers(srv.Server) > 0 })
}

func TestJobSubmittedOnOneReplicaIsClaimedOnAnotherAtOnce(t *testing.T) {
	t.Parallel()
	a, b := setupReplicas(t)
	rc := clientOf(t, registerRunnerToken(t, a.admin, "on-b"), b)
	claimed := make(chan *api.Assignment, 1)
	go func() {
		as, err := rc.RunnerClaim(context.Background(), api.ClaimRequest{Free: bigRunner, Wait: api.Duration(50 * time.Second)})
		if err != nil {
			t.Errorf("claim on replica b: %v", err)
		}
		claimed <- as
	}()
	waitForWaiter(t, b)
	run := a.submit(t, a.admin, bashJob("train"))
	select {
	case as := <-claimed:
		if as == nil || as.Job.ID != run.Jobs[0].ID {
			t.Fatalf("the runner long-polling replica b got %+v, want job %s submitted on replica a", as, run.Jobs[0].ID)
		}
	case <-time.After(testutil.Wait):
		t.Fatal("the job submitted on replica a did not wake the runner long-polling replica b")
	}
}

func TestStopOnOneReplicaReachesARunnerWaitingOnAnother(t *testing.T) {
	t.Parallel()
	a, b := setupReplicas(t)
	rc := clientOf(t, registerRunnerToken(t, a.admin, "on-b"), b)
	run := a.submit(t, a.admin, bashJob("train"))
	as := claim(t, rc)
	setStatus(t, rc, as, api.StatusRunning)
	stopped := make(chan *api.StopSignal, 1)
	go func() {
		sig, err := rc.JobWaitStop(context.Background(), as.Job.ID, as.Lease, 50*time.Second)
		if err != nil {
			t.Errorf("wait for a stop on replica b: %v", err)
		}
		stopped <- sig
	}()
	waitForWaiter(t, b)
	if _, err := a.admin.RunStop(context.Background(), run.Name, false); err != nil {
		t.Fatalf("stop the run on replica a: %v", err)
	}
	select {
	case sig := <-stopped:
		if sig == nil || !sig.Stop {
			t.Fatalf("the runner waiting on replica b got %+v, want a stop", sig)
		}
	case <-time.After(testutil.Wait):
		t.Fatal("the stop asked on replica a did not reach the runner waiting on replica b")
	}
}

func TestEventOnOneReplicaReachesAStreamOnAnother(t *testing.T) {
	t.Parallel()
	a, b := setupReplicas(t)
	req, err := http.NewRequest(http.MethodGet, b.URL+"/api/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.srv.AdminToken)
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed below, once checked
	if err != nil {
		t.Fatalf("open the event stream on replica b: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("event stream on replica b: %s", resp.Status)
	}
	lines, done := make(chan string), make(chan struct{})
	defer close(done)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-done:
				return
			}
		}
	}()
	for l := range lines {
		if strings.HasPrefix(l, ": connected") {
			break
		}
	}
	a.submit(t, a.admin, bashJob("train"))
	timeout := time.After(testutil.Wait)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the event stream on replica b ended")
			}
			if l == "event: "+string(api.EventRuns) {
				return
			}
			if l == "event: "+string(api.EventTick) {
				t.Fatal("replica b's stream ticked before the run submitted on replica a reached it")
			}
		case <-timeout:
			t.Fatal("the run submitted on replica a did not reach the event stream on replica b")
		}
	}
}

// BenchmarkPickupLatency measures how long a job takes from its submit to
// its assignment to a runner already long-polling: on one replica, across
// two replicas (submitted on a, claimed on b), and across two replicas
// without their bus, where only the long-poll's re-check finds it (set to
// 5s there: the default, 2 minutes, is longer than the claim's wait).
// Run it with -benchtime=100x (the last with fewer: each takes seconds).
func BenchmarkPickupLatency(b *testing.B) {
	for _, mode := range []string{"one-replica", "two-replicas", "two-replicas-no-bus"} {
		b.Run(mode, func(b *testing.B) {
			srv := servertest.Start(b, servertest.WithPostgres(storetest.PostgresDSN(b)), servertest.WithHeartbeatTimeout(time.Hour), behindBalancer)
			admin := srv.Client()
			code := uploadCode(b, admin)
			on := srv
			if mode != "one-replica" {
				recheck := time.Duration(0) // the default: the bus wakes b
				if mode == "two-replicas-no-bus" {
					recheck = 5 * time.Second
				}
				on = srv.StartReplica(b, servertest.WithConfig(func(c *server.Config) { c.Recheck = recheck }))
			}
			if mode == "two-replicas-no-bus" {
				server.StopBus(srv.Server)
				server.StopBus(on.Server)
			}
			rc := clientOf(b, registerRunnerToken(b, admin, "r"), on)
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				claimed := make(chan *api.Assignment, 1)
				go func() {
					as, err := rc.RunnerClaim(ctx, api.ClaimRequest{Free: bigRunner, Wait: api.Duration(50 * time.Second)})
					if err != nil {
						b.Error(err)
					}
					claimed <- as
				}()
				for server.ClaimWaiters(on.Server) == 0 {
					time.Sleep(time.Millisecond)
				}
				start := time.Now()
				if _, err := admin.RunSubmit(ctx, api.RunSubmitRequest{Workflow: "w", CodeID: code, Jobs: []api.JobSpec{bashJob("w")}}); err != nil {
					b.Fatal(err)
				}
				as := <-claimed
				if as == nil {
					b.Fatal("no job assigned")
				}
				lat = append(lat, time.Since(start))
				if _, err := rc.JobSetStatus(ctx, as.Job.ID, as.Lease, api.JobStatusUpdate{Status: api.StatusDone}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
		})
	}
}

// A runner revoked with its token, or its user removed, on one replica is
// refused on another at once, not when that replica's cached copy of its
// credential expires (runnerCacheTTL, 30 s).
func TestRunnerRevokedOnOneReplicaIsRefusedOnAnother(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := setupReplicas(t)
	dana, err := a.admin.UserCreate(ctx, api.UserCreateRequest{Name: "dana"})
	if err != nil {
		t.Fatal(err)
	}
	removed := clientOf(t, registerRunnerToken(t, a.admin.WithToken(dana.Token), "removed"), b)
	ci, err := a.admin.TokenCreate(ctx, api.TokenCreateRequest{Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	revoked := clientOf(t, registerRunnerToken(t, a.admin.WithToken(ci.Token), "revoked"), b)
	for _, rc := range []*client.Client{removed, revoked} {
		// Replica b caches the credential.
		if err := rc.RunnerHeartbeat(ctx, api.HeartbeatRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.admin.UserDelete(ctx, "dana"); err != nil {
		t.Fatalf("remove the user on replica a: %v", err)
	}
	if _, err := a.admin.TokenRevoke(ctx, "ci", true); err != nil {
		t.Fatalf("revoke on replica a: %v", err)
	}
	for name, rc := range map[string]*client.Client{"of the removed user": removed, "revoked with its token": revoked} {
		// The relay takes milliseconds; well under the cache's 30 s.
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := rc.RunnerHeartbeat(ctx, api.HeartbeatRequest{})
			if ae := (*api.Error)(nil); errors.As(err, &ae) && ae.Code == api.CodeUnauthenticated {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the runner %s: replica b still accepts its credential 5 s after replica a dropped it (heartbeat: %v)", name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
