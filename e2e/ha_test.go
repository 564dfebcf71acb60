package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/codearchive/pack"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/store/storetest"
)

// The high-availability scenario: three `dstack server` replicas on one
// PostgreSQL database and one S3 bucket (gofakes3, in this process), with
// one server key, behind nginx (scripts/nginx.sh installs it; the test
// runs it unprivileged on a loopback port with the configuration of
// docs/operations.md). The CLI, a real dstack-runner and simulated runners
// (the runner's protocol through the client package: register, heartbeat,
// long-poll claims, report status, append a log) all talk to nginx only.
// Jobs flow; the replica holding the autoscaler's lease is killed with
// SIGKILL; the other half of the jobs is submitted after. What the product
// promises (PRODUCT.md §9):
//   - no job is lost: every job ends done, and the server agrees;
//   - none runs twice: each job is assigned once and reported done once,
//     by the runner that holds its lease;
//   - every runner is back within haReconnect of the kill, and online at
//     the end;
//   - another replica holds the autoscaler's lease within haLeaseTakeover;
//   - the user's cap on running jobs holds throughout;
//   - `dstack logs -f` through the balancer, of a job running across the
//     failover, prints its output once, without a gap.
//
// `make test` runs a short version (haShort); DSTACK_E2E_HA_FULL=1 runs
// the full one (haFull: 1,000 runners, 5,000 jobs).

const (
	haReplicas = 3
	// What the product promises after a replica dies.
	haReconnect     = 10 * time.Second
	haLeaseTakeover = 10 * time.Second
	// How long the test waits for things that should take far less.
	haDrainTimeout = 2 * time.Minute
	haLeaseWait    = time.Minute
	// The simulated runners' long-poll.
	haClaimWait = 20 * time.Second
	// Each replica's PostgreSQL connections.
	haPoolConns = 16
)

// haSize is how much load the scenario puts on the replicas.
type haSize struct {
	runners    int           // simulated runners
	jobs       int           // jobs submitted, half before the kill and half after
	maxRunning int           // the admin's cap on running jobs
	work       time.Duration // how long a simulated job runs
}

var (
	haShort = haSize{runners: 50, jobs: 300, maxRunning: 40, work: 100 * time.Millisecond}
	haFull  = haSize{runners: 1000, jobs: 5000, maxRunning: 800, work: 200 * time.Millisecond}
)

// haEnvFull runs the full-size scenario when set to 1.
const haEnvFull = "DSTACK_E2E_HA_FULL"

func TestHighAvailability(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	size := haShort
	if os.Getenv(haEnvFull) == "1" {
		size = haFull
	}
	nginx := requireNginx(t)
	h := newHACluster(t, storetest.PostgresDSN(t), nginx)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The admin's running jobs are capped: the cap must hold across the
	// failover.
	if r := h.dstack("", "users", "set", "admin", "--max-running", strconv.Itoa(size.maxRunning)); r.code != 0 {
		t.Fatalf("%s", r)
	}

	// A real runner, of a member, runs the member's job that ticks until
	// its gate opens; three `dstack logs -f` follow it through nginx.
	member := h.addUser("ticker")
	h.startMemberRunner("real", member)
	gate := filepath.Join(t.TempDir(), "gate")
	dir := project(t, tickerProject(gate))
	r := h.cli(t, dir, []string{"DSTACK_TOKEN=" + member}, "run", "-d", "ticker")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	tickRun := runName(t, r.stdout+r.stderr)
	var followers []*proc
	for range 3 {
		followers = append(followers, h.start("dstack logs", "", h.userEnv("DSTACK_TOKEN="+member), bins.dstack, "logs", tickRun, "-f"))
	}
	testutil.EventuallyWithin(t, waitTimeout, "the followers to print the ticker's first lines", func() bool {
		for _, f := range followers {
			if f.exited() || !strings.Contains(f.stdout(), "tick 3\n") {
				return f.exited()
			}
		}
		return true
	})
	for _, f := range followers {
		if f.exited() {
			t.Fatalf("dstack logs -f ended before the failover:\n%s", f.output())
		}
	}

	// The simulated runners, and the first half of the jobs.
	admin := h.client(t, h.Token)
	sim := newSimFleet(t, h, admin, size)
	sim.start(ctx)
	code := haUploadCode(t, admin)
	runs := h.submit(t, admin, code, size.jobs/2)
	testutil.EventuallyWithin(t, haDrainTimeout, "a quarter of the jobs to be done", func() bool {
		return sim.doneCount() >= size.jobs/4
	})

	// Kill the replica holding the autoscaler's lease, mid-flow.
	victim, holder := h.leaseHolder(t)
	killed := time.Now()
	if err := h.replicas[victim].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.replicas[victim].wait(t, stopTimeout)
	t.Logf("killed replica %d (autoscaler lease %s) with %d of %d jobs done", victim, holder, sim.doneCount(), size.jobs)

	// The rest of the jobs go in through the surviving replicas.
	runs = append(runs, h.submit(t, admin, code, size.jobs-size.jobs/2)...)

	// The autoscaler's lease moves to a surviving replica.
	var took time.Duration
	testutil.EventuallyWithin(t, haLeaseWait, "another replica to take the autoscaler's lease", func() bool {
		l := h.lease(t)
		if l.holder == "" || l.holder == holder || l.expires.Before(time.Now()) {
			return false
		}
		took = time.Since(killed)
		return true
	})
	if took > haLeaseTakeover {
		t.Errorf("the autoscaler's lease moved %s after its holder died, want within %s", took.Round(100*time.Millisecond), haLeaseTakeover)
	}

	// Every job ends, once; the checks below say which did not.
	if !within(haDrainTimeout, func() bool { return sim.doneCount() >= size.jobs }) {
		t.Errorf("waited %s for every job to be done: %d of %d are", haDrainTimeout, sim.doneCount(), size.jobs)
	}
	// Let the ticker end, and the followers with it.
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range followers {
		if !within(haDrainTimeout, f.exited) {
			t.Errorf("dstack logs -f did not end within %s of the ticker's gate opening:\n%s", haDrainTimeout, tail(f.output()))
		} else if code := f.code(); code != 0 {
			t.Errorf("dstack logs -f exited with code %d:\n%s", code, tail(f.output()))
		}
	}
	cancel()
	sim.wait()

	sim.checkJobs(t, admin, runs)
	sim.checkReconnects(t, killed)
	sim.checkOnline(t, admin)
	if got := sim.maxActive.Load(); got > int64(size.maxRunning) {
		t.Errorf("the simulated runners held %d jobs at once, over the cap of %d", got, size.maxRunning)
	}
	for i, f := range followers {
		if err := checkTicks(f.stdout()); err != nil {
			t.Errorf("dstack logs -f #%d across the failover: %v", i+1, err)
		}
	}
	if run := h.runAs(t, member, tickRun); run.Status != api.StatusDone {
		t.Errorf("the ticker run is %s, want done", run.Status)
	}
}

// within polls cond until it holds, for at most d; it reports whether it
// held.
func within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// tickerProject is a workflow that prints "tick N" every 50 ms until the
// gate file exists, then "end".
func tickerProject(gate string) map[string]string {
	return map[string]string{".dstack/workflows.yaml": `workflows:
  - name: ticker
    provider: bash
    commands:
      - i=0; while [ ! -e '` + gate + `' ] && [ $i -lt 6000 ]; do i=$((i+1)); echo "tick $i"; sleep 0.05; done
      - echo end
`}
}

// checkTicks checks that out is "tick 1" to "tick n", each once and in
// order, then "end".
func checkTicks(out string) error {
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 2 || lines[len(lines)-1] != "end" {
		return fmt.Errorf("the output does not end with the job's last line %q; its last lines: %q", "end", lines[max(0, len(lines)-3):])
	}
	for i, l := range lines[:len(lines)-1] {
		if want := fmt.Sprintf("tick %d", i+1); l != want {
			return fmt.Errorf("line %d is %q, want %q (a gap or a repeat)", i+1, l, want)
		}
	}
	return nil
}

// tail is the end of a long output, for messages.
func tail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}

// requireNginx returns the nginx binary: $NGINX, /usr/sbin/nginx, or on
// PATH. Without one the test fails under CI (make test installs it with
// scripts/nginx.sh) and is skipped elsewhere.
func requireNginx(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("NGINX"), "/usr/sbin/nginx"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no nginx: run scripts/nginx.sh (make test does), or set NGINX to its binary")
	}
	t.Skip("no nginx: scripts/nginx.sh installs it (make test runs it)")
	return ""
}

// haCluster is the replicas, nginx in front of them and the bucket; its
// cluster's URL is nginx's.
type haCluster struct {
	*cluster
	dsn      string
	replicas []*proc
	ports    []int
	http     *http.Client // the test's clients'
}

// newHACluster starts haReplicas servers on the database dsn and a fresh
// bucket, with one server key, and nginx in front of them.
func newHACluster(t *testing.T, dsn, nginx string) *haCluster {
	t.Helper()
	fake := s3mem.New()
	if err := fake.CreateBucket(s3Bucket); err != nil {
		t.Fatal(err)
	}
	s3srv := httptest.NewServer(gofakes3.New(fake).Server())
	t.Cleanup(s3srv.Close)

	dir := t.TempDir()
	c := &cluster{t: t, dir: dir, home: filepath.Join(dir, "home"), dsn: dsn}
	for _, d := range []string{c.home, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.stopAll)
	h := &haCluster{cluster: c, dsn: dsn}
	for range haReplicas {
		h.ports = append(h.ports, freePort(t))
	}
	lbPort := freePort(t)
	c.URL = fmt.Sprintf("http://127.0.0.1:%d", lbPort)

	var key [32]byte
	_, _ = rand.Read(key[:])
	env := c.env("DSTACK_SERVER_ENCRYPTION_KEY="+base64.StdEncoding.EncodeToString(key[:]),
		"AWS_ACCESS_KEY_ID=AKIDE2ETEST", "AWS_SECRET_ACCESS_KEY="+s3Secret, "AWS_SESSION_TOKEN=", "AWS_PROFILE=", "AWS_REGION=",
		"AWS_CONFIG_FILE="+filepath.Join(dir, "none"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "none"))
	// Each replica's pool as docs/operations.md advises for many runners.
	db := dsn + "&pool_max_conns=" + strconv.Itoa(haPoolConns)
	if !strings.Contains(dsn, "?") {
		db = dsn + "?pool_max_conns=" + strconv.Itoa(haPoolConns)
	}
	start := func(i int) *proc {
		return c.start("server", "", env, bins.dstack, "server", "--host", "127.0.0.1", "--port", strconv.Itoa(h.ports[i]),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("replica-%d", i)), "--no-cli-config", "--local-backend", "off",
			"--db", db, "--artifacts", "s3://"+s3Bucket+"/ha", "--s3-endpoint", s3srv.URL, "--s3-region", "eu-west-1",
			"--external-url", c.URL)
	}
	ready := func(p *proc, what string, re func(string) bool) {
		t.Helper()
		testutil.EventuallyWithin(t, startTimeout, what, func() bool { return p.exited() || re(p.stdout()) })
		if p.exited() {
			t.Fatalf("dstack server exited with code %d before it started:\n%s", p.code(), p.output())
		}
	}
	// The first replica makes the admin; the others find it.
	first := start(0)
	ready(first, "the first replica to print the admin token", tokenRe.MatchString)
	c.Token = tokenRe.FindStringSubmatch(first.stdout())[1]
	h.replicas = append(h.replicas, first)
	for i := 1; i < haReplicas; i++ {
		h.replicas = append(h.replicas, start(i))
	}
	for i, p := range h.replicas[1:] {
		ready(p, fmt.Sprintf("replica %d to start", i+1), urlRe.MatchString)
	}
	c.server = first
	h.startNginx(nginx, lbPort)
	return h
}

// nginxConf is the load balancer's configuration: the upstream and server
// blocks are those docs/operations.md shows (TestOperationsDocShowsNginxConf
// keeps them alike); the rest keeps an unprivileged nginx in its directory.
var nginxConf = template.Must(template.New("nginx.conf").Parse(`worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events {
    worker_connections 16384;
}
http {
    access_log off;
    client_body_temp_path {{.Dir}}/client_body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;

` + nginxUpstream + `
}
`))

// nginxUpstream is the part of the configuration docs/operations.md shows.
const nginxUpstream = `    upstream dstack {
{{- range .Replicas}}
        server {{.}} max_fails=1 fail_timeout=5s;
{{- end}}
        keepalive 256;
    }
    server {
        listen {{.Listen}};
        # Code archives and artifacts: the server applies its own limits.
        client_max_body_size 0;
        location / {
            proxy_pass http://dstack;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # A replica that does not answer is skipped quickly.
            proxy_connect_timeout 2s;
            # Long polls (claims wait up to 60 s) and streams (dstack logs -f,
            # the web UI's /events) stay open.
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            # Streams reach the client as they are written; uploads stream
            # to the server.
            proxy_buffering off;
            proxy_request_buffering off;
            # A request no replica has seen goes to the next one; a POST
            # already sent is never repeated (nginx's default).
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 10s;
        }
    }`

// startNginx writes the configuration and starts nginx on port, as nobody
// when this process is root, and waits until it answers /healthz.
func (h *haCluster) startNginx(bin string, port int) {
	t := h.t
	t.Helper()
	// Its own directory, which an unprivileged nginx can reach.
	dir, err := os.MkdirTemp("", "dstack-e2e-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	var replicas []string
	for _, p := range h.ports {
		replicas = append(replicas, fmt.Sprintf("127.0.0.1:%d", p))
	}
	var conf bytes.Buffer
	if err := nginxConf.Execute(&conf, map[string]any{"Dir": dir, "Listen": fmt.Sprintf("127.0.0.1:%d", port), "Replicas": replicas}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, conf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	p := h.startAs(cred, "nginx", dir, h.env(), bin, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("---- nginx error.log (its end):\n%s", tail(string(b)))
		}
	})
	c := h.client(t, "")
	testutil.EventuallyWithin(t, startTimeout, "nginx to answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return p.exited() || c.Health(ctx) == nil
	})
	if p.exited() {
		t.Fatalf("nginx exited with code %d:\n%s\nits configuration:\n%s", p.code(), p.output(), conf.String())
	}
}

// client is an API client of the balancer with token. The test's clients
// share one transport, whose connections close with the test.
func (h *haCluster) client(t testing.TB, token string) *client.Client {
	t.Helper()
	if h.http == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		h.t.Cleanup(tr.CloseIdleConnections)
		h.http = &http.Client{Transport: tr}
	}
	c, err := client.New(h.URL, token, client.WithHTTPClient(h.http))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// addUser adds a member and returns its token.
func (h *haCluster) addUser(name string) string {
	h.t.Helper()
	r := h.dstack("", "users", "add", name)
	if r.code != 0 {
		h.t.Fatalf("%s", r)
	}
	return strings.TrimSpace(r.stdout)
}

// startMemberRunner starts a real dstack-runner of the member whose token
// is given, through the balancer.
func (h *haCluster) startMemberRunner(name, token string) *proc {
	h.t.Helper()
	p := h.start("runner "+name, "", h.configRunner(name, token), bins.runner, "start", "--executor", "shell")
	testutil.EventuallyWithin(h.t, startTimeout, "runner "+name+" to register", func() bool {
		return p.exited() || strings.Contains(p.stdout(), "waiting for jobs")
	})
	if p.exited() {
		h.t.Fatalf("runner %s exited with code %d:\n%s", name, p.code(), p.output())
	}
	return p
}

// runAs is the run called name, as the user of token sees it.
func (h *haCluster) runAs(t *testing.T, token, name string) *api.Run {
	t.Helper()
	run, err := h.client(t, token).RunGet(context.Background(), name)
	if err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	return run
}

// submit queues n jobs of no dependencies in runs of up to 500 jobs, and
// returns the runs' names.
func (h *haCluster) submit(t *testing.T, c *client.Client, code string, n int) []string {
	t.Helper()
	var names []string
	for n > 0 {
		size := min(n, 500)
		req := api.RunSubmitRequest{CodeID: code, Workflow: "w0"}
		for i := range size {
			req.Jobs = append(req.Jobs, api.JobSpec{Workflow: fmt.Sprintf("w%d", i), Provider: "bash", Commands: []string{"true"}})
		}
		run, err := c.RunSubmit(context.Background(), req)
		if err != nil {
			t.Fatalf("submit a run of %d jobs: %v", size, err)
		}
		names = append(names, run.Name)
		n -= size
	}
	return names
}

// haUploadCode uploads a small code archive and returns its ID.
func haUploadCode(t *testing.T, c *client.Client) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := pack.Dir(context.Background(), dir, &buf, pack.Options{}); err != nil {
		t.Fatal(err)
	}
	up, err := c.CodeUpload(context.Background(), &buf)
	if err != nil {
		t.Fatalf("upload code: %v", err)
	}
	return up.CodeID
}

// haLease is the autoscaler's lease as the database holds it.
type haLease struct {
	holder  string
	expires time.Time
}

// lease reads the autoscaler's lease from the database.
func (h *haCluster) lease(t *testing.T) haLease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, h.dsn)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	var l haLease
	var micros int64
	err = conn.QueryRow(ctx, `SELECT holder, expires_at FROM leases WHERE name = 'autoscaler'`).Scan(&l.holder, &micros)
	if errors.Is(err, pgx.ErrNoRows) {
		return haLease{}
	}
	if err != nil {
		t.Fatalf("read the autoscaler's lease: %v", err)
	}
	l.expires = time.UnixMicro(micros)
	return l
}

// leaseHolder waits until a replica holds the autoscaler's lease and says
// so in its log, and returns its index and the holder.
func (h *haCluster) leaseHolder(t *testing.T) (int, string) {
	t.Helper()
	idx, holder := -1, ""
	testutil.EventuallyWithin(t, haLeaseWait, "a replica to hold the autoscaler's lease", func() bool {
		l := h.lease(t)
		if l.holder == "" {
			return false
		}
		for i, p := range h.replicas {
			if !p.exited() && strings.Contains(p.stderr(), l.holder) {
				idx, holder = i, l.holder
				return true
			}
		}
		return false
	})
	return idx, holder
}

// TestOperationsDocShowsNginxConf: docs/operations.md shows the load
// balancer's configuration this test runs with, with the addresses of an
// example.
func TestOperationsDocShowsNginxConf(t *testing.T) {
	t.Parallel()
	doc := readFile(t, filepath.Join("..", "docs", "operations.md"))
	var want bytes.Buffer
	tmpl := template.Must(template.New("upstream").Parse(nginxUpstream))
	if err := tmpl.Execute(&want, map[string]any{
		"Listen": "80", "Replicas": []string{"10.0.0.11:3000", "10.0.0.12:3000", "10.0.0.13:3000"},
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(doc, "```nginx\n"+want.String()+"\n```") {
		t.Errorf("docs/operations.md does not show the nginx configuration the test uses; it should hold:\n```nginx\n%s\n```", want.String())
	}
}
