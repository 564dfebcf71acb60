package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/dstackai/dstack/internal/testutil"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/postgres"
	"github.com/dstackai/dstack/store/sqlite"
)

// openStore opens the cluster's database, for what the API does not do yet.
func (c *cluster) openStore() store.Store {
	c.t.Helper()
	ctx := context.Background()
	var (
		st  store.Store
		err error
	)
	if c.dsn == "" {
		st, err = sqlite.Open(ctx, filepath.Join(c.dir, "server", "dstack.db"))
	} else {
		st, err = postgres.Open(ctx, c.dsn)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { st.Close() })
	return st
}

// addMember creates a member straight in the database and returns its token.
func (c *cluster) addMember(st store.Store, name string) string {
	c.t.Helper()
	token := "dstu_e2e" + name + strings.Repeat("0", 24)
	sum := sha256.Sum256([]byte(token))
	if _, err := st.UserCreate(context.Background(), store.UserCreateParams{
		ID: "user-" + name, Name: name, TokenHash: hex.EncodeToString(sum[:]), Now: time.Now(),
	}); err != nil {
		c.t.Fatal(err)
	}
	return token
}

// startRunnerAs configures a runner with token and the extra config
// arguments, starts it and waits until it has registered.
func (c *cluster) startRunnerAs(name, token string, configArgs ...string) *proc {
	c.t.Helper()
	p := c.startRunnerRaw(name, token, configArgs...)
	testutil.EventuallyWithin(c.t, startTimeout, "runner "+name+" to register", func() bool {
		return p.exited() || strings.Contains(p.stdout(), "waiting for jobs")
	})
	if p.exited() {
		c.t.Fatalf("runner %s exited with code %d:\n%s", name, p.code(), p.output())
	}
	return p
}

func (c *cluster) startRunnerRaw(name, token string, configArgs ...string) *proc {
	c.t.Helper()
	env := c.env("DSTACK_RUNNER_CONFIG=" + filepath.Join(c.dir, "runner-"+name+".yaml"))
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	args := append([]string{"config", "--server", c.URL, "--token", token,
		"--data-dir", filepath.Join(c.dir, "runner-"+name), "--name", name}, configArgs...)
	cmd := exec.CommandContext(ctx, bins.runner, args...)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("dstack-runner config: %v\n%s", err, out)
	}
	return c.start("runner "+name, "", env, bins.runner, "start")
}

// fanOut is a workflow file whose workflow all depends on n others: `dstack
// run all` queues n jobs at once.
func fanOut(n int) string {
	var b strings.Builder
	b.WriteString("workflows:\n  - name: all\n    provider: bash\n    depends-on: [")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "w%02d", i)
	}
	b.WriteString("]\n    commands: [echo all]\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: w%02d\n    provider: bash\n    commands: [echo w%02d]\n", i, i)
	}
	return b.String()
}

// TestFairShareBetweenUsers: two members submit 50 jobs each at once to 2
// shared runners: the starts alternate between them, neither waits for the
// other's 50. A member's own runner takes only that member's jobs, and a
// member cannot register a shared runner.
func TestFairShareBetweenUsers(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn)
		st := c.openStore()
		alice, bob := c.addMember(st, "alice"), c.addMember(st, "bob")

		refused := c.startRunnerRaw("bobs-shared", bob, "--shared")
		if code := refused.wait(t, startTimeout); code == 0 ||
			!strings.Contains(refused.output(), "only an admin can register a shared runner") {
			t.Fatalf("a member's shared runner: exit %d\n%s", code, refused.output())
		}

		const n = 50
		dir := project(t, map[string]string{".dstack/workflows.yaml": fanOut(n)})
		submit := func(token, workflow string) string {
			t.Helper()
			r := c.dstackEnv(dir, c.env("DSTACK_SERVER="+c.URL, "DSTACK_TOKEN="+token), "run", "-d", workflow)
			if r.code != 0 {
				t.Fatalf("dstack run -d %s: %s", workflow, r)
			}
			return runName(t, r.stdout+r.stderr)
		}
		ctx := context.Background()

		// Alice's own runner leaves bob's job alone: it says no runner of
		// his is there, until the shared runners come.
		alices := c.startRunnerAs("alices", alice)
		runs := []string{submit(bob, "w00")}
		testutil.EventuallyWithin(t, waitTimeout, "bob's job to say it has no runner", func() bool {
			r, err := st.RunGet(ctx, store.RunGetParams{Name: runs[0]})
			return err == nil && r.Jobs[0].StatusReason == "no runner is registered: start one with dstack-runner start"
		})
		if code := alices.stop(t, syscall.SIGTERM); code != 0 {
			t.Fatalf("alice's runner exited %d:\n%s", code, alices.output())
		}

		// Both users queue 50 jobs at once; then two shared runners start.
		runs = append(runs, submit(alice, "all"), submit(bob, "all"))
		c.startRunnerAs("shared-1", c.Token, "--shared")
		c.startRunnerAs("shared-2", c.Token, "--shared")

		var jobs []*store.Job
		testutil.EventuallyWithin(t, 3*time.Minute, "every job to finish", func() bool {
			jobs = jobs[:0]
			for _, name := range runs {
				r, err := st.RunGet(ctx, store.RunGetParams{Name: name})
				if err != nil {
					t.Fatal(err)
				}
				jobs = append(jobs, r.Jobs...)
			}
			for _, j := range jobs {
				if !j.Status.Finished() {
					return false
				}
			}
			return true
		})
		var started []*store.Job
		for _, j := range jobs {
			if j.Status != api.StatusDone {
				t.Fatalf("job %s of %s is %s (%s)", j.Workflow, j.UserID, j.Status, j.StatusReason)
			}
			if j.RunnerName == "alices" && j.UserID != "user-alice" {
				t.Errorf("alice's runner ran job %s of %s", j.Workflow, j.UserID)
			}
			if j.Workflow != "all" && j.RunID != jobs[0].RunID {
				started = append(started, j)
			}
		}
		slices.SortFunc(started, func(a, b *store.Job) int { return a.ClaimedAt.Compare(*b.ClaimedAt) })
		// In the order of starts, neither user gets ahead of the other by
		// more than the runners that may claim at the same instant.
		ahead := 0
		for i, j := range started {
			if j.UserID == "user-alice" {
				ahead++
			} else {
				ahead--
			}
			if ahead > 3 || ahead < -3 {
				var order []string
				for _, j := range started[:i+1] {
					order = append(order, strings.TrimPrefix(j.UserID, "user-"))
				}
				t.Fatalf("start %d: one user is %d jobs ahead; starts so far: %v", i+1, ahead, order)
			}
		}
	})
}
