package cli_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/userconfig"
)

// localOffers is a backend that offers the local backend's catalogue and
// launches nothing: the commands under test only set limits.
type localOffers struct{}

func (localOffers) Name() string { return "local" }

func (localOffers) Offers(_ context.Context, region string) ([]backend.Offer, error) {
	if region != "local" {
		return nil, backend.Errorf(backend.ErrInvalid, "offers", "UnknownRegion", "the local backend has one region, %q", "local")
	}
	var out []backend.Offer
	for i, t := range []string{"local.small", "local.medium", "local.large"} {
		for _, spot := range []bool{false, true} {
			out = append(out, backend.Offer{Backend: "local", Region: "local", InstanceType: t, Spot: spot, CPUs: 1 << i, MemoryMiB: 1 << (10 + i)})
		}
	}
	return out, nil
}

func (localOffers) Launch(context.Context, backend.LaunchRequest) ([]backend.Instance, error) {
	return nil, backend.ErrNoCapacity
}
func (localOffers) Terminate(context.Context, []string) error                { return nil }
func (localOffers) List(context.Context, string) ([]backend.Instance, error) { return nil, nil }

// serveOnDemand starts a server with the local backend's offers and points
// the CLI at it.
func (h *harness) serveOnDemand() *servertest.Server {
	h.t.Helper()
	srv := servertest.Start(h.t, servertest.WithConfig(func(c *server.Config) { c.Backends = []backend.Backend{localOffers{}} }))
	if err := userconfig.Save(h.configPath, &userconfig.Config{Server: srv.URL, Token: srv.AdminToken}); err != nil {
		h.t.Fatal(err)
	}
	return srv
}

// terminal is a stdin that reads like a terminal the user types into.
type terminal struct{ *strings.Reader }

func (terminal) Write(p []byte) (int, error) { return len(p), nil }

// answer runs a command in a terminal where the user types input.
func (h *harness) answer(input string, args ...string) result {
	h.t.Helper()
	var stdout, stderr lockedBuffer
	env := h.env(&stdout, &stderr)
	env.Stdin = terminal{strings.NewReader(input)}
	env.IsTerminal = func(io.Writer) bool { return true }
	code := env.Run(context.Background(), args)
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	h.t.Logf("dstack %q <<%q -> %d\nstdout:\n%s\nstderr:\n%s", args, input, r.code, r.stdout, r.stderr)
	return r
}

func hexID(t *testing.T) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// limitID finds the ID of the admin's limit of an instance type.
func limitID(t *testing.T, srv *servertest.Server, instanceType string) string {
	t.Helper()
	ls, err := srv.Client().LimitList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.InstanceType == instanceType {
			return l.ID
		}
	}
	t.Fatalf("no limit of %s in %+v", instanceType, ls)
	return ""
}

// launch records n launching instances of the limit of instanceType and
// returns their join token hashes.
func launch(t *testing.T, srv *servertest.Server, instanceType string, n int) []string {
	t.Helper()
	var ins []store.InstanceCreate
	var hashes []string
	for range n {
		h := hexID(t)
		hashes = append(hashes, h)
		ins = append(ins, store.InstanceCreate{ID: hexID(t), JoinTokenHash: h})
	}
	if _, err := srv.Store().InstanceCreate(context.Background(), store.InstanceCreateParams{
		LimitID: limitID(t, srv, instanceType), LaunchKey: hexID(t), Instances: ins, Now: time.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	return hashes
}

func TestOnDemandLimitAndLimits(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serveOnDemand()
	r := h.run("on-demand", "limit", "-i", "local.small", "--spot", "-m", "2")
	if r.code != 0 || r.stdout != "Limit added: up to 2 instances of local.small (spot) in region local.\n" {
		t.Fatalf("limit: %+v", r)
	}
	r = h.run("on-demand", "limit", "--instance-type", "local.medium", "--region", "local")
	if r.code != 0 || !strings.Contains(r.stdout, "up to 1 instance of local.medium (on-demand)") {
		t.Fatalf("limit with the default max: %+v", r)
	}
	r = h.run("on-demand", "limit", "-i", "local.small", "--spot", "--max", "3")
	if r.code != 0 || !strings.Contains(r.stdout, "Limit changed: up to 3 instances of local.small (spot) in region local (was 2).") {
		t.Fatalf("raise: %+v", r)
	}
	launch(t, srv, "local.small", 1)
	since := time.Now().Add(-time.Minute)
	if err := srv.Store().OfferMarkUnavailable(context.Background(), store.OfferMarkUnavailableParams{
		Backend: "local", Region: "local", InstanceType: "local.medium", Until: time.Now().Add(time.Hour), Reason: "no room", Now: since,
	}); err != nil {
		t.Fatal(err)
	}

	r = h.run("on-demand", "limits")
	if r.code != 0 {
		t.Fatalf("limits: %+v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^REGION\s+INSTANCE TYPE\s+PURCHASE TYPE\s+MAXIMUM\s+CPU\s+MEMORY\s+GPU\s+RUNNING\s+NOTE$`).MatchString(lines[0]) {
		t.Fatalf("limits header: %q", r.stdout)
	}
	note := "No capacity since " + since.Local().Format("15:04")
	for _, want := range []string{
		`local\s+local\.small\s+spot\s+3\s+1\s+1 GiB\s+-\s+1\s+-$`,
		`local\s+local\.medium\s+on-demand\s+1\s+2\s+2 GiB\s+-\s+0\s+` + note + `$`,
	} {
		if !regexp.MustCompile(`(?m)^` + want).MatchString(r.stdout) {
			t.Errorf("limits: no row %s in %q", want, r.stdout)
		}
	}
	r = h.run("on-demand", "limits", "--json")
	var ls []api.Limit
	if err := json.Unmarshal([]byte(r.stdout), &ls); err != nil || len(ls) != 2 {
		t.Fatalf("limits --json: %v %q", err, r.stdout)
	}
	r = h.run("on-demand", "status")
	if r.code != 0 || r.stdout != "On-demand runners are enabled: 2 limits, 1 instance running.\n" {
		t.Fatalf("status: %+v", r)
	}
	r = h.run("on-demand", "status", "--json")
	var st api.OnDemandStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || !st.Enabled || st.Limits != 2 || st.Backends[0] != "local" {
		t.Fatalf("status --json: %v %q", err, r.stdout)
	}
}

func TestOnDemandRefusals(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.serveOnDemand()
	r := h.run("on-demand", "limit", "-i", "m5.xlarge", "--spot")
	if r.code != 1 || !strings.Contains(r.stderr, `"m5.xlarge" is not offered`) || !strings.Contains(r.stderr, "local.small, local.medium, local.large") {
		t.Errorf("unsupported type: %+v", r)
	}
	r = h.run("on-demand", "limit", "-i", "local.small", "-r", "eu-west-1")
	if r.code != 1 || !strings.Contains(r.stderr, `region "eu-west-1"`) {
		t.Errorf("unknown region: %+v", r)
	}
	for _, args := range [][]string{
		{"on-demand", "limit", "--spot"},
		{"on-demand", "limit", "-i", "local.small", "-m", "-1"},
		{"on-demand", "limit", "-i", "local.small", "-m", "x"},
		{"on-demand", "limit", "-i", "local.small", "--delete", "-m", "2"},
		{"autoscale", "allow", "local.small"},
		{"autoscale", "allow", "--max", "1"},
	} {
		if r := h.run(args...); r.code != 2 {
			t.Errorf("%q: %+v, want a usage error", args, r)
		}
	}
	if r := h.run("on-demand", "limit", "-i", "local.small", "--delete"); r.code != 1 || !strings.Contains(r.stderr, "no limit for local.small (on-demand)") {
		t.Errorf("delete a missing limit: %+v", r)
	}
	if r := h.run("on-demand", "limits"); r.code != 0 || !strings.Contains(r.stderr, "No limits yet") {
		t.Errorf("no limits: %+v", r)
	}
}

func TestOnDemandNeedsABackend(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.serve()
	r := h.run("on-demand", "limit", "-i", "local.small")
	if r.code != 1 || !strings.Contains(r.stderr, "need a backend") || !strings.Contains(r.stderr, "dstack aws config") {
		t.Errorf("limit: %+v", r)
	}
	if r := h.run("on-demand", "status"); r.code != 0 || !strings.Contains(r.stderr, "no backend") {
		t.Errorf("status: %+v", r)
	}
}

// TestTerminatingNeedsConfirmation: each change that terminates instances
// is refused without a terminal, goes ahead with -f, and asks in a terminal.
func TestTerminatingNeedsConfirmation(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serveOnDemand()
	if r := h.run("on-demand", "limit", "-i", "local.small", "--spot", "-m", "3"); r.code != 0 {
		t.Fatal(r)
	}
	launch(t, srv, "local.small", 3)

	r := h.run("on-demand", "limit", "-i", "local.small", "--spot", "-m", "1")
	if r.code != 1 || !strings.Contains(r.stderr, "Lowering the limit of local.small (spot) in region local from 3 to 1 would terminate 2 running instances") ||
		!strings.Contains(r.stderr, "--force") {
		t.Fatalf("lower without a terminal: %+v", r)
	}
	if r := h.answer("n\n", "on-demand", "limit", "-i", "local.small", "--spot", "-m", "1"); r.code != 1 ||
		!strings.Contains(r.stderr, "Continue? [y/N]") || !strings.Contains(r.stderr, "cancelled") {
		t.Fatalf("lower, answered no: %+v", r)
	}
	if ls, _ := srv.Client().LimitList(context.Background()); len(ls) != 1 || ls[0].Max != 3 {
		t.Fatalf("a refused change changed the limit: %+v", ls)
	}
	r = h.answer("y\n", "on-demand", "limit", "-i", "local.small", "--spot", "-m", "2")
	if r.code != 0 || !strings.Contains(r.stdout, "(was 3).\nTerminating 1 instance.\n") {
		t.Fatalf("lower, answered yes: %+v", r)
	}
	// Raising needs no question.
	if r := h.run("on-demand", "limit", "-i", "local.small", "--spot", "-m", "5"); r.code != 0 {
		t.Fatalf("raise: %+v", r)
	}

	for _, args := range [][]string{
		{"on-demand", "limit", "-i", "local.small", "--spot", "-m", "1"},
		{"on-demand", "limit", "-i", "local.small", "--spot", "--delete"},
		{"on-demand", "limits", "--delete-all"},
		{"on-demand", "disable"},
		{"autoscale", "allow", "local.small", "--max", "1"},
		{"autoscale", "allow", "local.small", "--max", "0"},
		{"autoscale", "clear"},
		{"autoscale", "disable"},
	} {
		if r := h.run(args...); r.code != 1 || !strings.Contains(r.stderr, "would terminate") || !strings.Contains(r.stderr, "--force") {
			t.Errorf("%q without a terminal: %+v", args, r)
		}
	}
	r = h.run("on-demand", "disable", "-f")
	if r.code != 0 || !strings.Contains(r.stdout, "On-demand runners are disabled; the limits are kept.\nTerminating ") {
		t.Fatalf("disable -f: %+v", r)
	}
	if r := h.run("on-demand", "status"); !strings.HasPrefix(r.stdout, "On-demand runners are disabled: 1 limit") {
		t.Errorf("status after disable: %+v", r)
	}
	if r := h.run("on-demand", "limits"); !strings.Contains(r.stderr, "disabled") {
		t.Errorf("limits while disabled: %+v", r)
	}
	if r := h.run("on-demand", "enable"); r.code != 0 || r.stdout != "On-demand runners are enabled.\n" {
		t.Errorf("enable: %+v", r)
	}
	r = h.run("on-demand", "limit", "-i", "local.small", "--spot", "--delete", "-f")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "Limit deleted: local.small (spot) in region local.\n") {
		t.Errorf("delete -f: %+v", r)
	}
}

func TestAutoscaleSpelling(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serveOnDemand()
	r := h.run("autoscale", "allow", "local.medium", "--max", "2")
	if r.code != 0 || r.stdout != "Limit added: up to 2 instances of local.medium (spot) in region local.\n" {
		t.Fatalf("allow: %+v", r)
	}
	r = h.run("autoscale", "info")
	if r.code != 0 || !regexp.MustCompile(`(?m)^local\s+local\.medium\s+spot\s+2\s+2\s+2 GiB`).MatchString(r.stdout) {
		t.Fatalf("info: %+v", r)
	}
	if r := h.run("autoscale", "allow", "local.medium", "--max", "0"); r.code != 0 || !strings.Contains(r.stdout, "Limit deleted: local.medium (spot)") {
		t.Fatalf("allow --max 0: %+v", r)
	}
	if r := h.run("autoscale", "allow", "local.medium", "--max", "0"); r.code != 0 || !strings.Contains(r.stdout, "nothing to remove") {
		t.Fatalf("allow --max 0 again: %+v", r)
	}
	if r := h.run("autoscale", "allow", "m5.xlarge", "--max", "1"); r.code != 1 || !strings.Contains(r.stderr, "not offered") {
		t.Fatalf("allow an unsupported type: %+v", r)
	}
	h.run("autoscale", "allow", "local.small", "--max", "1")
	h.run("autoscale", "allow", "local.large", "--max", "1")
	launch(t, srv, "local.large", 1)
	if r := h.run("autoscale", "clear", "--force"); r.code != 0 || r.stdout != "Deleted 2 limits.\nTerminating 1 instance.\n" {
		t.Fatalf("clear: %+v", r)
	}
	if r := h.run("autoscale", "clear"); r.code != 0 || r.stdout != "No limits to delete.\n" {
		t.Fatalf("clear again: %+v", r)
	}
	if r := h.run("autoscale", "disable"); r.code != 0 || !strings.Contains(r.stdout, "disabled") {
		t.Fatalf("disable: %+v", r)
	}
	if r := h.run("autoscale", "enable"); r.code != 0 || !strings.Contains(r.stdout, "enabled") {
		t.Fatalf("enable: %+v", r)
	}
	if r := h.run("autoscale", "info", "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("info --json: %+v", r)
	}
}

func TestRunnersShowInstances(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serveOnDemand()
	startRunner(t, srv, "gpu-box", nil)
	h.run("on-demand", "limit", "-i", "local.small", "--spot", "-m", "1")
	hash := launch(t, srv, "local.small", 1)[0]
	if _, _, err := srv.Store().InstanceRegister(context.Background(), store.InstanceRegisterParams{
		JoinTokenHash: hash,
		Runner: store.RunnerCreateParams{
			ID: hexID(t), Name: "od-1", Hostname: "od-1.local", Executor: "shell", Version: "test",
			Resources: api.HostResources{CPUs: 1, MemoryMiB: 1024}, TokenHash: hexID(t), TokenExpiresAt: time.Now().Add(time.Hour), Now: time.Now(),
		},
	}); err != nil {
		t.Fatal(err)
	}
	r := h.run("runners")
	if r.code != 0 || !regexp.MustCompile(`NAME\s+HOST\s+STATUS\s+CPU\s+MEMORY\s+GPU\s+DISK\s+JOB\s+BACKEND\s+REGION\s+INSTANCE TYPE\s+PURCHASE TYPE\s+INSTANCE\n`).MatchString(r.stdout) {
		t.Fatalf("runners header: %+v", r)
	}
	for _, want := range []string{
		`od-1\s+od-1\.local\s+online\s+1\s+1 GiB\s+-\s+-\s+-\s+local\s+local\s+local\.small\s+spot\s+running\n`,
		`gpu-box\s+gpu-box\.local\s+online\s+4\s+8 GiB\s+1xT4 \(16 GiB\)\s+100 GiB\s+-\s+self-hosted\s+-\s+-\s+-\s+-\n`,
	} {
		if !regexp.MustCompile(want).MatchString(r.stdout) {
			t.Errorf("runners: no row %s in %q", want, r.stdout)
		}
	}
}

// TestAutoscaleDeprecated: `dstack autoscale` is deprecated in favour of
// `dstack on-demand`: hidden from the help, it says so on stderr and still
// works, its output unchanged.
func TestAutoscaleDeprecated(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.serveOnDemand()
	r := h.run("autoscale", "info", "--json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("autoscale info --json: %+v", r)
	}
	if !strings.Contains(r.stderr, `Command "autoscale" is deprecated, use `+"`dstack on-demand`"+` instead`) {
		t.Errorf("autoscale info: stderr %q, want the deprecation pointing to on-demand", r.stderr)
	}
	r = h.run("autoscale")
	if r.code != 0 || !strings.Contains(r.stdout, "deprecated, use `dstack on-demand` instead") {
		t.Errorf("autoscale: %+v, want the deprecation", r)
	}
	r = h.run("--help")
	if r.code != 0 || strings.Contains(r.stdout, "autoscale") || !strings.Contains(r.stdout, "on-demand") {
		t.Errorf("--help lists:\n%s\nwant on-demand and not the deprecated autoscale", r.stdout)
	}
}
