package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
)

// TestOnDemandCost: on the local backend at its catalogue prices (local.small
// at 0.01 USD an hour), a run's cost shows in `dstack ps` and its --json,
// `dstack usage --by user` shows two members' costs to the admin and each
// member only their own, and a spent monthly budget stops the next launch
// with the reason on the pending job and in `dstack on-demand status`.
func TestOnDemandCost(t *testing.T) {
	c := newODCluster(t, "--idle-timeout", "2s")
	c.ok("on-demand", "limit", "-i", "local.small", "-m", "1")
	add := func(name string) []string {
		r := c.dstack("", "users", "add", name)
		if r.code != 0 {
			t.Fatalf("users add %s: %s", name, r)
		}
		return []string{"DSTACK_TOKEN=" + strings.TrimSpace(r.stdout)}
	}
	alice, bob := add("alice"), add("bob")
	as := func(who []string, args ...string) result {
		t.Helper()
		r := c.dstackEnv(c.proj, who, args...)
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		return r
	}
	aliceRun := runName(t, func() string { r := as(alice, "run", "hello"); return r.stderr + r.stdout }())
	as(bob, "run", "hello")

	// ps: the COST column, and the figures with their currency in --json.
	ps := as(alice, "ps", "-a").stdout
	if !strings.Contains(ps, "COST") || !strings.Contains(ps, "$") {
		t.Errorf("dstack ps shows no cost:\n%s", ps)
	}
	var runs []api.Run
	if err := json.Unmarshal([]byte(as(alice, "ps", "-a", "--json").stdout), &runs); err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].Name != aliceRun || runs[0].Cost == nil || runs[0].Cost.Currency != "USD" ||
		!(runs[0].Cost.Cost > 0) || !(runs[0].Cost.InstanceHours > 0) || runs[0].Jobs[0].Cost == nil {
		t.Fatalf("alice's runs in --json: %+v; want hers with a cost in USD", runs)
	}
	// The job held the instance for less than it was up, at 0.01 an hour.
	if c := runs[0].Cost; c.Cost > 0.01*c.InstanceHours*1.0001 {
		t.Errorf("alice's run: %v USD for %v h; want 0.01 an hour", c.Cost, c.InstanceHours)
	}

	// usage --by user: the admin sees both, a member only themself.
	var all api.UsageReport
	if err := json.Unmarshal([]byte(c.ok("usage", "--by", "user", "--json").stdout), &all); err != nil {
		t.Fatal(err)
	}
	users := map[string]api.UsageRow{}
	for _, r := range all.Rows {
		users[r.Key] = r
	}
	if !all.All || !(users["alice"].Cost > 0) || !(users["bob"].Cost > 0) || all.Currency != "USD" {
		t.Fatalf("admin's usage by user: %+v; want alice and bob with costs", all)
	}
	table := c.ok("usage", "--by", "user").stdout
	for _, want := range []string{"USER", "IDLE COST", "alice", "bob", "TOTAL"} {
		if !strings.Contains(table, want) {
			t.Errorf("dstack usage lacks %q:\n%s", want, table)
		}
	}
	var mine api.UsageReport
	if err := json.Unmarshal([]byte(as(bob, "usage", "--json").stdout), &mine); err != nil {
		t.Fatal(err)
	}
	if mine.All || len(mine.Rows) != 1 || mine.Rows[0].Key != "bob" {
		t.Fatalf("bob's usage: %+v; want only his", mine)
	}

	// A spent budget: the instance idles out, and the next run waits.
	if r := c.dstackEnv(c.proj, bob, "on-demand", "budget", "--monthly", "1"); r.code == 0 || !strings.Contains(r.stderr, "only an admin") {
		t.Errorf("a member set the budget: %s", r)
	}
	if r := c.ok("on-demand", "budget", "--monthly", "0.0000001"); !strings.Contains(r.stdout, "New launches are stopped") {
		t.Errorf("dstack on-demand budget: %s", r)
	}
	c.waitNone()
	c.resetPeak()
	name := runName(t, as(alice, "run", "-d", "hello").stdout)
	testutil.EventuallyWithin(t, waitTimeout, "dstack ps to say the budget stops "+name, func() bool {
		return strings.Contains(as(alice, "ps").stdout, name+" hello is pending: the monthly on-demand budget")
	})
	if r := c.ok("on-demand", "status"); !strings.Contains(r.stdout, "New launches are stopped: the monthly on-demand budget") {
		t.Errorf("dstack on-demand status: %s", r)
	}
	c.checkPeak(0)
}
