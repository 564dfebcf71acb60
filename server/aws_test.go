package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/ec2fake"
	"github.com/dstackai/dstack/internal/secretbox"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store"
)

// The AWS account of `dstack aws config` (PUT /api/v1/aws), checked against
// an in-process EC2 (ec2fake) that verifies SigV4 signatures.

const (
	awsKeyID  = "AKIAIOSFODNN7EXAMPLE"
	awsSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	awsWrong  = "wrong-secret-that-must-not-leak-either"
)

// logBuffer collects what a server logs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// awsServerEnv is a server whose AWS backend talks to a fake EC2, with its log
// captured.
type awsServerEnv struct {
	*apiEnv
	ec2  *ec2fake.Server
	logs *logBuffer
}

func setupAWS(t *testing.T, opts ...servertest.Option) *awsServerEnv {
	t.Helper()
	ec2 := ec2fake.New(ec2fake.Options{Credentials: map[string]string{awsKeyID: awsSecret, "AKIAOTHERKEY00000000": "other-secret"}})
	t.Cleanup(ec2.Close)
	logs := &logBuffer{}
	opts = append([]servertest.Option{
		servertest.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		servertest.WithConfig(func(c *server.Config) { c.AWS.Endpoint = ec2.URL() }),
	}, opts...)
	return &awsServerEnv{apiEnv: setup(t, opts...), ec2: ec2, logs: logs}
}

func awsRequest(secret string) api.AWSConfigRequest {
	return api.AWSConfigRequest{AccessKeyID: awsKeyID, SecretAccessKey: secret, Region: "eu-west-1"}
}

// putAWS sends PUT /api/v1/aws raw and returns the reply.
func (e *awsServerEnv) putAWS(t *testing.T, token string, r api.AWSConfigRequest) reply {
	t.Helper()
	b, _ := json.Marshal(r)
	return do(t, e.srv.URL, req{method: http.MethodPut, path: "/api/v1/aws", token: token, body: string(b)})
}

func TestAWSConfigIsCheckedSavedAndNeverShown(t *testing.T) {
	t.Parallel()
	e := setupAWS(t)
	ctx := context.Background()
	var bodies [][]byte // every answer, searched for the secrets at the end

	if cur, err := e.admin.AWSGet(ctx); err != nil || cur.Configured || cur.AccessKeyID != "" {
		t.Fatalf("GET before config: %+v %v", cur, err)
	}
	// AWS's refusal is shown with its code, and nothing is kept.
	rp := e.putAWS(t, e.srv.AdminToken, awsRequest(awsWrong))
	bodies = append(bodies, rp.body)
	msg := wantError(t, "wrong secret", rp, http.StatusBadRequest, api.CodeInvalid, "AWS refused", awsKeyID, "SignatureDoesNotMatch", "nothing was saved")
	t.Log(msg)
	rp = e.putAWS(t, e.srv.AdminToken, api.AWSConfigRequest{AccessKeyID: "AKIAUNKNOWN000000000", SecretAccessKey: awsSecret, Region: "eu-west-1"})
	bodies = append(bodies, rp.body)
	wantError(t, "unknown key", rp, http.StatusBadRequest, api.CodeInvalid, "AuthFailure")
	rp = e.putAWS(t, e.srv.AdminToken, api.AWSConfigRequest{AccessKeyID: awsKeyID, SecretAccessKey: awsSecret, Region: "mars-north-1"})
	wantError(t, "unknown region", rp, http.StatusBadRequest, api.CodeInvalid, "mars-north-1")
	rp = e.putAWS(t, e.srv.AdminToken, api.AWSConfigRequest{AccessKeyID: awsKeyID, Region: "eu-west-1"})
	wantError(t, "no secret", rp, http.StatusBadRequest, api.CodeInvalid, "secret_access_key is missing")
	if _, err := e.srv.Store().SettingGet(ctx, "aws"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused config was stored: %v", err)
	}
	if cur, err := e.admin.AWSGet(ctx); err != nil || cur.Configured {
		t.Fatalf("GET after refusals: %+v %v", cur, err)
	}

	// Only an admin changes it; anyone reads it.
	bob := newUser(t, e.srv, "bob")
	_, err := bob.AWSPut(ctx, awsRequest(awsSecret))
	wantAPIError(t, "bob's PUT", err, http.StatusForbidden, api.CodeForbidden)
	if ae := (*api.Error)(nil); errors.As(err, &ae) && !strings.Contains(ae.Message, "only an admin") {
		t.Errorf("bob's refusal says %q", ae.Message)
	}
	wantAPIError(t, "bob's DELETE", bob.AWSDelete(ctx, false), http.StatusForbidden, api.CodeForbidden)

	rp = e.putAWS(t, e.srv.AdminToken, awsRequest(awsSecret))
	bodies = append(bodies, rp.body)
	if rp.status != http.StatusOK {
		t.Fatalf("good PUT: %d %s", rp.status, rp.body)
	}
	want := api.AWSConfig{Configured: true, AccessKeyID: awsKeyID, SecretAccessKey: "****************EKEY", Region: "eu-west-1", UpdatedBy: "admin"}
	for _, c := range []*client.Client{e.admin, bob} {
		want := want
		if c == bob {
			want.SecretAccessKey = "****************" // not even its last characters
		}
		got, err := c.AWSGet(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(got)
		bodies = append(bodies, b)
		if got.UpdatedAt == nil {
			t.Errorf("GET: no updated_at")
		}
		got.UpdatedAt = nil
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("GET = %+v, want %+v", *got, want)
		}
	}
	if st, err := e.admin.OnDemandGet(ctx); err != nil || !slices.Contains(st.Backends, "aws") {
		t.Fatalf("backends after config: %+v %v", st, err)
	}
	// The backend configured at run time is counted as those given at start.
	if body := metricsBody(t, e.srv.URL); !strings.Contains(body, `dstack_backend_calls_total{backend="aws",method="launch"}`) {
		t.Errorf("/metrics has no calls of the aws backend")
	}
	// An empty secret keeps the stored one of the same key; another key
	// needs its own.
	kept := awsRequest("")
	kept.Region = "us-west-2"
	if got, err := e.admin.AWSPut(ctx, kept); err != nil || got.Region != "us-west-2" || got.SecretAccessKey != want.SecretAccessKey {
		t.Fatalf("PUT keeping the secret: %+v %v", got, err)
	}
	_, err = e.admin.AWSPut(ctx, api.AWSConfigRequest{AccessKeyID: "AKIAOTHERKEY00000000", Region: "eu-west-1"})
	wantAPIError(t, "another key without its secret", err, http.StatusBadRequest, api.CodeInvalid)
	if _, err := e.admin.AWSPut(ctx, awsRequest(awsSecret)); err != nil {
		t.Fatal(err)
	}

	// The secrets are in no answer, no log line, and no file of the data
	// directory (the database stores the configuration sealed).
	logs := e.logs.String()
	if !strings.Contains(logs, "AWS configured") || !strings.Contains(logs, awsKeyID) {
		t.Fatalf("the log does not say AWS was configured:\n%s", logs)
	}
	if err := e.srv.Server.Stop(); err != nil {
		t.Fatal(err)
	}
	noSecrets(t, e.srv.DataDir, logs, bodies, awsSecret, awsWrong)
}

// noSecrets fails the test when a secret is in the log, an answer or a
// file under dir.
func noSecrets(t *testing.T, dir, logs string, bodies [][]byte, secrets ...string) {
	t.Helper()
	var sawDB bool
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sawDB = sawDB || strings.HasPrefix(filepath.Base(p), "dstack.db")
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds a secret access key in plain text", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sawDB {
		t.Fatalf("no database file under %s: the search looked in the wrong place", dir)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the server's log holds a secret access key")
		}
		for _, b := range bodies {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("an answer holds a secret access key: %s", b)
			}
		}
	}
}

func TestAWSConfigSurvivesRestartUnderItsKeyOnly(t *testing.T) {
	t.Parallel()
	e := setupAWS(t)
	ctx := context.Background()
	if _, err := e.admin.AWSPut(ctx, awsRequest(awsSecret)); err != nil {
		t.Fatal(err)
	}
	e.srv.Restart(t)
	c := e.srv.Client()
	if got, err := c.AWSGet(ctx); err != nil || !got.Configured || got.AccessKeyID != awsKeyID {
		t.Fatalf("GET after restart: %+v %v", got, err)
	}
	// The backend is back: limits of AWS types are accepted.
	res, err := c.LimitPut(ctx, api.LimitPutRequest{InstanceType: "m5.xlarge", PurchaseType: api.PurchaseSpot, Max: 1}, false)
	if err != nil || res.Limit.Backend != "aws" || res.Limit.Region != "eu-west-1" {
		t.Fatalf("limit after restart: %+v %v", res, err)
	}

	// Under another key the configuration does not open: the server says
	// what to do and starts without AWS.
	stopWithAnotherServerKey(t, e.srv)
	before := len(e.logs.String())
	e.srv.Restart(t)
	logs := e.logs.String()[before:]
	for _, w := range []string{"level=ERROR", "cannot be decrypted", "DSTACK_SERVER_ENCRYPTION_KEY", "dstack aws config"} {
		if !strings.Contains(logs, w) {
			t.Errorf("the log at a start under another key does not say %q:\n%s", w, logs)
		}
	}
	c = e.srv.Client()
	if got, err := c.AWSGet(ctx); err != nil || got.Configured {
		t.Fatalf("GET under another key: %+v %v", got, err)
	}
	st, err := c.OnDemandGet(ctx)
	if err != nil || slices.Contains(st.Backends, "aws") {
		t.Fatalf("backends under another key: %+v %v", st, err)
	}
	_, err = c.LimitPut(ctx, api.LimitPutRequest{InstanceType: "m5.xlarge", Max: 1}, false)
	apiErr(t, "limit without AWS", err, api.CodeInvalid, "dstack aws config")
	// The limit set before stays, and AWS comes back when configured again.
	if ls, err := c.LimitList(ctx); err != nil || len(ls) != 1 || ls[0].Backend != "aws" {
		t.Fatalf("limits under another key: %+v %v", ls, err)
	}
	if _, err := c.AWSPut(ctx, awsRequest(awsSecret)); err != nil {
		t.Fatalf("configure again: %v", err)
	}
	if st, err := c.OnDemandGet(ctx); err != nil || !slices.Contains(st.Backends, "aws") {
		t.Fatalf("backends configured again: %+v %v", st, err)
	}
}

func TestAWSLimitsBesideTheLocalBackend(t *testing.T) {
	t.Parallel()
	e := setupAWS(t, withBackends(localFake()))
	ctx := context.Background()
	_, err := e.admin.LimitPut(ctx, api.LimitPutRequest{Backend: "aws", InstanceType: "m5.xlarge", Max: 1}, false)
	apiErr(t, "aws before config", err, api.CodeInvalid, `no backend "aws"`, "dstack aws config", "local (region local)")
	if _, err := e.admin.AWSPut(ctx, awsRequest(awsSecret)); err != nil {
		t.Fatal(err)
	}
	// `dstack on-demand limit -i m5.xlarge --spot --max 1`: no backend or
	// region named, and the AWS backend is the one that offers the type.
	res, err := e.admin.LimitPut(ctx, api.LimitPutRequest{InstanceType: "m5.xlarge", PurchaseType: api.PurchaseSpot, Max: 1}, false)
	if err != nil || res.Limit.Backend != "aws" || res.Limit.Region != "eu-west-1" || res.Limit.Resources == nil || res.Limit.Resources.CPUs != 4 {
		t.Fatalf("m5.xlarge spot: %+v %v", res, err)
	}
	if res, err = e.admin.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.small", Max: 1}, false); err != nil || res.Limit.Backend != "local" {
		t.Fatalf("local.small: %+v %v", res, err)
	}
	_, err = e.admin.LimitPut(ctx, api.LimitPutRequest{InstanceType: "m5.xlargee", PurchaseType: api.PurchaseSpot, Max: 1}, false)
	apiErr(t, "a typo", err, api.CodeInvalid, `"m5.xlargee" is not offered`, "eu-west-1 (on-demand/spot) of backend aws",
		"m5.xlarge", "region local (on-demand/spot) of backend local", "check the name")
	_, err = e.admin.LimitPut(ctx, api.LimitPutRequest{Region: "eu-west-1", InstanceType: "m5.xlargee", Max: 1}, false)
	apiErr(t, "a typo in a region", err, api.CodeInvalid, `"m5.xlargee" is not offered in region eu-west-1 (on-demand/spot) of backend aws`)
	if ls, err := e.admin.LimitList(ctx); err != nil || len(ls) != 2 {
		t.Fatalf("limits: %+v %v", ls, err)
	}
}

func TestAWSClearIsRefusedWhileInstancesRun(t *testing.T) {
	t.Parallel()
	e := setupAWS(t)
	ctx := context.Background()
	if err := e.admin.AWSDelete(ctx, false); err != nil {
		t.Fatalf("clearing an unconfigured server: %v", err)
	}
	limitID := e.configureWithLimit(t)
	ins := recordInstances(t, e.srv, limitID, 2)
	for _, dry := range []bool{true, false} {
		err := e.admin.AWSDelete(ctx, dry)
		apiErr(t, "clear with instances", err, api.CodeConflict,
			"2 AWS instances are running: run `dstack on-demand disable` (or delete the limits) to terminate them, then `dstack aws clear` again")
	}
	// Another access key might be of another account: refused too.
	_, err := e.admin.AWSPut(ctx, api.AWSConfigRequest{AccessKeyID: "AKIAOTHERKEY00000000", SecretAccessKey: "other-secret", Region: "eu-west-1"})
	apiErr(t, "another key with instances", err, api.CodeConflict, "2 AWS instances are running", "dstack on-demand disable")

	setInstances(t, e.srv, ins, store.InstanceTerminated)
	if err := e.admin.AWSDelete(ctx, true); err != nil {
		t.Fatalf("dry-run clear: %v", err)
	}
	if got, err := e.admin.AWSGet(ctx); err != nil || !got.Configured {
		t.Fatalf("a dry run cleared it: %+v %v", got, err)
	}
	if err := e.admin.AWSDelete(ctx, false); err != nil {
		t.Fatalf("clear: %v", err)
	}
	if got, err := e.admin.AWSGet(ctx); err != nil || got.Configured {
		t.Fatalf("GET after clear: %+v %v", got, err)
	}
	if _, err := e.srv.Store().SettingGet(ctx, "aws"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("setting after clear: %v", err)
	}
	if st, err := e.admin.OnDemandGet(ctx); err != nil || len(st.Backends) != 0 {
		t.Fatalf("backends after clear: %+v %v", st, err)
	}
	if ls, err := e.admin.LimitList(ctx); err != nil || len(ls) != 1 || ls[0].Backend != "aws" {
		t.Fatalf("the AWS limit did not stay: %+v %v", ls, err)
	}

	// Instances still terminating are counted too (set up with AWS
	// cleared, so that no autoscaler ends them meanwhile).
	ins = recordInstances(t, e.srv, limitID, 2)
	setInstances(t, e.srv, ins, store.InstanceTerminating)
	apiErr(t, "clear while terminating", e.admin.AWSDelete(ctx, false), api.CodeConflict,
		"2 AWS instances are still terminating: wait for them to end, then `dstack aws clear` again")
}

// setInstances moves instance records to st.
func setInstances(t *testing.T, srv *servertest.Server, ins []*store.Instance, st store.InstanceState) {
	t.Helper()
	for _, in := range ins {
		if _, _, err := srv.Store().InstanceSetState(context.Background(), store.InstanceSetStateParams{ID: in.ID, State: st, Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
}

// recordInstances records n launching instances of a limit, as the
// autoscaler would before launching them.
// configureWithLimit saves the AWS credentials and sets a limit of
// m5.xlarge spot, max 3, in the default region; it returns the limit's ID.
func (e *awsServerEnv) configureWithLimit(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	if _, err := e.admin.AWSPut(ctx, awsRequest(awsSecret)); err != nil {
		t.Fatal(err)
	}
	res, err := e.admin.LimitPut(ctx, api.LimitPutRequest{InstanceType: "m5.xlarge", PurchaseType: api.PurchaseSpot, Max: 3}, false)
	if err != nil {
		t.Fatal(err)
	}
	return res.Limit.ID
}

// stopWithAnotherServerKey stops the server and replaces its key file with
// a new key, so that what it sealed before no longer opens at its restart.
func stopWithAnotherServerKey(t *testing.T, srv *servertest.Server) {
	t.Helper()
	if err := srv.Server.Stop(); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, secretbox.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(srv.DataDir, secretbox.KeyFile), []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func recordInstances(t *testing.T, srv *servertest.Server, limitID string, n int) []*store.Instance {
	t.Helper()
	var specs []store.InstanceCreate
	for range n {
		specs = append(specs, store.InstanceCreate{ID: randomHex(t)[:16], JoinTokenHash: randomHex(t)})
	}
	ins, err := srv.Store().InstanceCreate(context.Background(), store.InstanceCreateParams{
		LimitID: limitID, LaunchKey: randomHex(t)[:16], Instances: specs, Now: time.Now(),
	})
	if err != nil {
		t.Fatalf("create instances: %v", err)
	}
	return ins
}

// TestAWSBackendFollowsTheSet: jobs pending on a server with no backend say
// why (no runner fits); once AWS is configured the autoscaler says why
// instead, and when it is cleared the server's own check does again.
func TestAWSWaitingReasonsFollowTheBackends(t *testing.T) {
	t.Parallel()
	e := setupAWS(t)
	ctx := context.Background()
	registerRunner(t, e.admin, "small")
	run := e.submit(t, e.admin, withResources(bashJob("train"), api.Resources{CPU: 64}))
	waitReason(t, e.admin, run, "no runner has 64 CPUs (the largest has 8); add a runner that does, or lower resources")
	if _, err := e.admin.AWSPut(ctx, awsRequest(awsSecret)); err != nil {
		t.Fatal(err)
	}
	waitReason(t, e.admin, run, "no runner has 64 CPUs (the largest has 8) and no on-demand limit is set; add a runner that does, or lower resources, or add a limit with `dstack on-demand limit`")
	if err := e.admin.AWSDelete(ctx, false); err != nil {
		t.Fatal(err)
	}
	waitReason(t, e.admin, run, "no runner has 64 CPUs (the largest has 8); add a runner that does, or lower resources")
}

var _ backend.Backend = (*offerBackend)(nil)

// TestAWSConfigOnAnEndpointWithoutDescribeRegions: the check of an
// EC2-compatible endpoint that lacks DescribeRegions names the missing
// action instead of calling the key refused, and saves a good key; a bad
// key is still refused with AWS's code once.
func TestAWSConfigOnAnEndpointWithoutDescribeRegions(t *testing.T) {
	t.Parallel()
	e := setupAWS(t)
	e.ec2.RemoveAction("DescribeRegions")
	rp := e.putAWS(t, e.srv.AdminToken, awsRequest(awsWrong))
	msg := wantError(t, "wrong secret", rp, http.StatusBadRequest, api.CodeInvalid, "AWS refused", "SignatureDoesNotMatch", "nothing was saved")
	if strings.Contains(msg, "InvalidAction") || strings.Count(msg, "SignatureDoesNotMatch") != 1 {
		t.Errorf("refusal %q: want AWS's code once and no InvalidAction", msg)
	}
	rp = e.putAWS(t, e.srv.AdminToken, awsRequest(awsSecret))
	if rp.status != http.StatusOK {
		t.Fatalf("good key: %d %s", rp.status, rp.body)
	}
	var got api.AWSConfig
	if err := json.Unmarshal(rp.body, &got); err != nil {
		t.Fatal(err)
	}
	want := "the endpoint does not support DescribeRegions; using the configured region eu-west-1"
	if !got.Configured || len(got.Notes) != 1 || got.Notes[0] != want {
		t.Fatalf("answer %+v; want configured with the note %q", got, want)
	}
	if cur, err := e.admin.AWSGet(context.Background()); err != nil || !cur.Configured || len(cur.Notes) != 0 {
		t.Fatalf("GET after saving: %+v %v", cur, err)
	}
	if logs := e.logs.String(); !strings.Contains(logs, want) || strings.Contains(logs, "AWS refused") {
		t.Errorf("the server's log does not name the missing action, or calls it a refusal:\n%s", logs)
	}
}
