package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server"
)

// registerShared registers a shared runner with c's token.
func registerShared(c *client.Client, name string) (*client.Client, error) {
	reg, err := c.RunnerRegister(context.Background(), api.RunnerRegisterRequest{
		Name: name, Hostname: name + ".example", Executor: "shell", Version: "test", Resources: bigRunner, Shared: true,
	})
	if err != nil {
		return nil, err
	}
	return c.WithToken(reg.Token), nil
}

// noClaimNow asserts that rc gets no job when it asks without waiting.
func noClaimNow(t *testing.T, rc *client.Client, what string) {
	t.Helper()
	a, err := rc.RunnerClaim(context.Background(), api.ClaimRequest{Free: bigRunner})
	if err != nil || a != nil {
		t.Fatalf("%s: claim = %+v, %v; want none", what, a, err)
	}
}

// TestRunnerOwnership: a member's runner takes only that member's jobs; a
// shared runner, which only an admin may register, takes anyone's and
// reaches the job it holds.
func TestRunnerOwnership(t *testing.T) {
	t.Parallel()
	e := setup(t)
	bob, carol := newUser(t, e.srv, "bob"), newUser(t, e.srv, "carol")
	_, err := registerShared(bob, "bobs-shared")
	apiErr(t, "a member registers a shared runner", err, api.CodeForbidden, "only an admin can register a shared runner")

	bobs := registerRunner(t, bob, "bobs")
	run := e.submit(t, carol, bashJob("carols"))
	noClaimNow(t, bobs, "bob's runner with only carol's job pending")
	shared, err := registerShared(e.admin, "shared")
	if err != nil {
		t.Fatal(err)
	}
	if rs, err := e.admin.RunnerList(context.Background()); err != nil || len(rs) != 1 || !rs[0].Shared {
		t.Fatalf("admin's runners = %+v, %v; want the shared one, marked shared", rs, err)
	}
	a := claim(t, shared)
	if a.Job.ID != run.Jobs[0].ID {
		t.Fatalf("shared runner claimed %s, want carol's %s", a.Job.ID, run.Jobs[0].ID)
	}
	setStatus(t, shared, a, api.StatusRunning)
	setStatus(t, shared, a, api.StatusDone)
	if j := getJob(t, carol, run.Name, a.Job.ID); j.Status != api.StatusDone || j.RunnerName != "shared" {
		t.Fatalf("carol's job = %s on %q, want done on shared", j.Status, j.RunnerName)
	}
}

// TestUserMaxRunning: a user at their cap of running jobs gets no more
// claims, and their pending jobs say why; another user's jobs go on.
func TestUserMaxRunning(t *testing.T) {
	t.Parallel()
	e := setup(t)
	bob, bobID := newUserWithID(t, e, "bob")
	u, err := e.srv.Store().UserGet(context.Background(), bobID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := server.SetUserMaxRunning(e.srv.Server, u, -1); err == nil {
		t.Fatal("a negative cap was accepted")
	}
	if u, err = server.SetUserMaxRunning(e.srv.Server, u, 1); err != nil || u.MaxRunning != 1 {
		t.Fatalf("SetUserMaxRunning = %+v, %v", u, err)
	}
	first := e.submit(t, bob, bashJob("first"))
	second := e.submit(t, bob, bashJob("second"))
	r1, err := registerShared(e.admin, "r1")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := registerShared(e.admin, "r2")
	if err != nil {
		t.Fatal(err)
	}
	a := claim(t, r1)
	if a.Job.ID != first.Jobs[0].ID {
		t.Fatalf("claimed %s, want bob's first job", a.Job.ID)
	}
	noClaimNow(t, r2, "bob at his cap")
	waitReason(t, bob, second, "waiting: user limit of 1 running jobs")
	admins := e.submit(t, e.admin, bashJob("admins"))
	if a2 := claim(t, r2); a2.Job.ID != admins.Jobs[0].ID {
		t.Fatalf("claimed %s, want the admin's job", a2.Job.ID)
	}
	setStatus(t, r1, a, api.StatusRunning)
	setStatus(t, r1, a, api.StatusDone)
	a = claimFor(t, r1, 10*time.Second)
	if a == nil || a.Job.ID != second.Jobs[0].ID {
		t.Fatalf("claim once bob's first job ended = %+v, want his second", a)
	}
}
