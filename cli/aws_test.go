package cli_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/ec2fake"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/userconfig"
)

const (
	awsKeyID  = "AKIAIOSFODNN7EXAMPLE"
	awsSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

// serveAWS starts a server whose AWS backend talks to an in-process EC2
// that accepts awsKeyID with awsSecret, beside the local backend's offers,
// and points the CLI at it.
func (h *harness) serveAWS() *servertest.Server {
	h.t.Helper()
	srv, _ := h.serveAWSFake()
	return srv
}

// serveAWSFake is serveAWS, returning the in-process EC2 too.
func (h *harness) serveAWSFake() (*servertest.Server, *ec2fake.Server) {
	h.t.Helper()
	ec2 := ec2fake.New(ec2fake.Options{Credentials: map[string]string{awsKeyID: awsSecret}})
	h.t.Cleanup(ec2.Close)
	srv := servertest.Start(h.t, servertest.WithConfig(func(c *server.Config) {
		c.AWS.Endpoint = ec2.URL()
		c.Backends = []backend.Backend{localOffers{}}
	}))
	if err := userconfig.Save(h.configPath, &userconfig.Config{Server: srv.URL, Token: srv.AdminToken}); err != nil {
		h.t.Fatal(err)
	}
	return srv, ec2
}

// TestAWSConfigOnAnEndpointWithoutDescribeRegions: an EC2-compatible
// endpoint without DescribeRegions still has a bad key refused, with no
// word of InvalidAction; a good key is saved, with a note naming what the
// endpoint lacks.
func TestAWSConfigOnAnEndpointWithoutDescribeRegions(t *testing.T) {
	t.Parallel()
	h := setup(t)
	_, fake := h.serveAWSFake()
	fake.RemoveAction("DescribeRegions")
	r := h.run("aws", "config", "--access-key-id", awsKeyID, "--secret-access-key", "wrong-secret", "--region", "eu-west-1")
	if r.code != 1 || !strings.Contains(r.stderr, "refused") || !strings.Contains(r.stderr, "SignatureDoesNotMatch") || strings.Contains(r.stderr, "InvalidAction") {
		t.Fatalf("wrong secret: %+v", r)
	}
	r = h.run("aws", "config", "--access-key-id", awsKeyID, "--secret-access-key", awsSecret, "--region", "eu-west-1")
	if r.code != 0 || !strings.Contains(r.stdout, "AWS credentials saved") ||
		!strings.Contains(r.stdout, "Note: the endpoint does not support DescribeRegions; using the configured region eu-west-1\n") {
		t.Fatalf("good key: %+v", r)
	}
	if strings.Contains(r.stdout+r.stderr, "refused") {
		t.Errorf("a missing action reported as a refusal: %+v", r)
	}
	noSecret(t, r)
	if r = h.run("aws", "info"); r.code != 0 || !strings.Contains(r.stdout, "eu-west-1") {
		t.Fatalf("aws info after saving: %+v", r)
	}
}

// noSecret fails the test when a command showed the secret.
func noSecret(t *testing.T, r result) {
	t.Helper()
	if strings.Contains(r.stdout+r.stderr, awsSecret) {
		t.Errorf("the output shows the secret access key:\n%s\n%s", r.stdout, r.stderr)
	}
}

func TestAWSConfigPrompts(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.serveAWS()

	// The four questions of the seeds, in order; the secret is read like
	// any answer here (a real terminal reads it without echo).
	r := h.answer(awsKeyID+"\nwrong-secret\neu-west-1\n\n", "aws", "config")
	if r.code != 1 || !strings.Contains(r.stderr, "SignatureDoesNotMatch") || !strings.Contains(r.stderr, "nothing was saved") {
		t.Fatalf("wrong secret: %+v", r)
	}
	r = h.answer(awsKeyID+"\n"+awsSecret+"\neu-west-1\n\n", "aws", "config")
	wantPrompts := "AWS Access Key ID: AWS Secret Access Key: Region name: Artifact S3 bucket[None]: "
	if r.code != 0 || r.stderr != wantPrompts || r.stdout != "AWS credentials saved: access key AKIA…MPLE, region eu-west-1\n" {
		t.Fatalf("config: %+v", r)
	}
	noSecret(t, r)

	// Again, under its other name: the current values are the defaults,
	// the key ID and the secret masked; Enter keeps them.
	r = h.answer("\n\nus-west-2\n\n", "aws", "configure")
	wantPrompts = "AWS Access Key ID [****************MPLE]: AWS Secret Access Key [****************EKEY]: Region name [eu-west-1]: Artifact S3 bucket[None]: "
	if r.code != 0 || r.stderr != wantPrompts || !strings.Contains(r.stdout, "region us-west-2") {
		t.Fatalf("configure with defaults: %+v", r)
	}
	// A new key ID needs its secret.
	r = h.answer("AKIAOTHERKEY00000000\n\n", "aws", "config")
	if r.code != 1 || !strings.Contains(r.stderr, "secret access key of AKIA…0000 is required") {
		t.Fatalf("new key without a secret: %+v", r)
	}
	r = h.run("aws", "info")
	if r.code != 0 || !strings.Contains(r.stdout, "us-west-2") {
		t.Fatalf("info after the refusals: %+v", r)
	}
}

func TestAWSConfigFlags(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serveAWS()

	// Without a terminal, what is missing is named, and nothing is asked.
	r := h.run("aws", "config", "--region", "eu-west-1")
	if r.code != 2 || !strings.Contains(r.stderr, "--access-key-id") || !strings.Contains(r.stderr, "--secret-access-key-stdin") ||
		strings.Contains(r.stderr, "AWS Access Key ID") {
		t.Fatalf("missing values: %+v", r)
	}
	r = h.run("aws", "config", "--access-key-id", awsKeyID, "--secret-access-key", awsSecret, "--secret-access-key-stdin")
	if r.code != 2 || !strings.Contains(r.stderr, "go separately") {
		t.Fatalf("both secrets: %+v", r)
	}

	// The secret on standard input.
	var stdout, stderr lockedBuffer
	env := h.env(&stdout, &stderr)
	env.Stdin = strings.NewReader(awsSecret + "\n")
	code := env.Run(context.Background(), []string{"aws", "config", "--access-key-id", awsKeyID, "--secret-access-key-stdin", "--region", "eu-west-1"})
	if code != 0 || stdout.String() != "AWS credentials saved: access key AKIA…MPLE, region eu-west-1\n" || stderr.String() != "" {
		t.Fatalf("--secret-access-key-stdin: %d %q %q", code, stdout.String(), stderr.String())
	}

	// Flags for all, even in a terminal: no question.
	r = h.answer("", "aws", "config", "--access-key-id", awsKeyID, "--secret-access-key", awsSecret, "--region", "eu-west-1", "--ami", "ami-0123456789abcdef0")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("all flags in a terminal: %+v", r)
	}
	noSecret(t, r)
	// One flag keeps the rest.
	r = h.run("aws", "config", "--region", "us-west-2")
	if r.code != 0 || r.stdout != "AWS credentials saved: access key AKIA…MPLE, region us-west-2\n" {
		t.Fatalf("region only: %+v", r)
	}
	got, err := srv.Client().AWSGet(context.Background())
	if err != nil || got.AMI != "ami-0123456789abcdef0" || got.Region != "us-west-2" {
		t.Fatalf("after flags: %+v %v", got, err)
	}

	// The seeds' limit: the AWS backend offers the type, the local one
	// does not; a typo is refused with exit code 1.
	r = h.run("on-demand", "limit", "-i", "m5.xlarge", "--spot", "--max", "1")
	if r.code != 0 || r.stdout != "Limit added: up to 1 instance of m5.xlarge (spot) in region us-west-2.\n" {
		t.Fatalf("limit: %+v", r)
	}
	r = h.run("on-demand", "limit", "-i", "m5.xlargee", "--spot", "--max", "1")
	if r.code != 1 || !strings.Contains(r.stderr, `"m5.xlargee" is not offered`) || !strings.Contains(r.stderr, "us-west-2 (on-demand/spot) of backend aws") {
		t.Fatalf("typo: %+v", r)
	}
}

func TestAWSInfo(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.serveAWS()
	r := h.run("aws", "info")
	if r.code != 0 || r.stdout != "AWS is not configured: run `dstack aws config`.\n" {
		t.Fatalf("info before config: %+v", r)
	}
	r = h.run("aws", "config", "--access-key-id", awsKeyID, "--secret-access-key", awsSecret, "--region", "eu-west-1")
	if r.code != 0 {
		t.Fatalf("config: %+v", r)
	}
	r = h.run("aws", "info")
	noSecret(t, r)
	for _, want := range []string{"Access key ID:       " + awsKeyID, "Secret access key:   ****************EKEY", "Region:              eu-west-1",
		"Artifact S3 bucket:  None", "by admin"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("info does not say %q:\n%s", want, r.stdout)
		}
	}
	r = h.run("aws", "info", "--json")
	var c api.AWSConfig
	if err := json.Unmarshal([]byte(r.stdout), &c); err != nil || !c.Configured || c.SecretAccessKey != "****************EKEY" {
		t.Fatalf("info --json: %v %q", err, r.stdout)
	}
	noSecret(t, r)
}

func TestAWSClear(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serveAWS()
	if r := h.run("aws", "clear"); r.code != 0 || !strings.Contains(r.stdout, "AWS is not configured: nothing to clear") {
		t.Fatalf("clear before config: %+v", r)
	}
	if r := h.run("aws", "config", "--access-key-id", awsKeyID, "--secret-access-key", awsSecret, "--region", "eu-west-1"); r.code != 0 {
		t.Fatalf("config: %+v", r)
	}
	// Without a terminal it refuses unless forced; in one it asks.
	r := h.run("aws", "clear")
	if r.code != 1 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("clear without a terminal: %+v", r)
	}
	r = h.answer("n\n", "aws", "clear")
	if r.code != 1 || !strings.Contains(r.stderr, "Clearing the AWS credentials (access key AKIA…MPLE)") || !strings.Contains(r.stderr, "cancelled") {
		t.Fatalf("clear answered no: %+v", r)
	}
	if r := h.run("aws", "info"); !strings.Contains(r.stdout, awsKeyID) {
		t.Fatalf("cancelled clear cleared: %+v", r)
	}

	// While AWS instances run the server refuses, and says how to go on.
	if r := h.run("on-demand", "limit", "-i", "m5.xlarge", "--spot", "-m", "2"); r.code != 0 {
		t.Fatalf("limit: %+v", r)
	}
	launch(t, srv, "m5.xlarge", 2)
	for _, args := range [][]string{{"aws", "clear"}, {"aws", "clear", "-f"}} {
		r = h.answer("y\n", args...)
		if r.code != 1 || !strings.Contains(r.stderr, "2 AWS instances are running: run `dstack on-demand disable`") || strings.Contains(r.stderr, "Continue?") {
			t.Fatalf("%v with instances: %+v", args, r)
		}
	}
	if r = h.run("on-demand", "disable", "-f"); r.code != 0 {
		t.Fatalf("disable: %+v", r)
	}
	// The autoscaler terminates them; the records end once the cloud
	// agrees. Here they are ended by hand, as no cloud ever had them.
	endInstances(t, srv)
	r = h.answer("y\n", "aws", "clear")
	if r.code != 0 || !strings.Contains(r.stdout, "AWS credentials cleared") {
		t.Fatalf("clear: %+v", r)
	}
	if r := h.run("aws", "info"); !strings.Contains(r.stdout, "not configured") {
		t.Fatalf("info after clear: %+v", r)
	}
	if r := h.run("on-demand", "limits"); r.code != 0 || !strings.Contains(r.stdout, "m5.xlarge") {
		t.Fatalf("the AWS limit did not stay: %+v", r)
	}
}

// endInstances records every instance of the server as terminated.
func endInstances(t *testing.T, srv *servertest.Server) {
	t.Helper()
	ctx := context.Background()
	ins, err := srv.Store().InstanceList(ctx, store.InstanceListParams{})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range ins {
		if _, _, err := srv.Store().InstanceSetState(ctx, store.InstanceSetStateParams{ID: in.ID, State: store.InstanceTerminated, Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
}
