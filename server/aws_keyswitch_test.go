package server_test

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/ec2fake"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store"
)

// Switching the access key of the server's AWS account: the instances
// launched under the previous key may be in another account, where the
// server would not see them any more.

const (
	awsOtherKeyID  = "AKIAOTHERKEY00000000"
	awsOtherSecret = "other-secret"
)

// awsBackendOn reports whether the AWS backend is in the server's set.
func awsBackendOn(t *testing.T, e *awsServerEnv) bool {
	t.Helper()
	st, err := e.admin.OnDemandGet(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(st.Backends, "aws")
}

// putAWSHeld sends a PUT /aws whose check against EC2 is held for a while
// (and then refused with refuse, when not ""), watching the server's set
// of backends meanwhile: it returns what the PUT returned and whether the
// AWS backend was seen out of the set, and in it, while the PUT ran.
func putAWSHeld(t *testing.T, e *awsServerEnv, r api.AWSConfigRequest, refuse string) (sawOff, sawOn bool, err error) {
	t.Helper()
	e.ec2.Delay("DescribeRegions", time.Second, 1)
	if refuse != "" {
		e.ec2.Fail("DescribeRegions", refuse, "refused after a while", 1)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.admin.AWSPut(context.Background(), r)
		done <- err
	}()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case err := <-done:
			return sawOff, sawOn, err
		case <-timeout:
			t.Fatal("the PUT did not end")
		case <-time.After(5 * time.Millisecond):
		}
		if awsBackendOn(t, e) {
			sawOn = true
		} else {
			sawOff = true
		}
	}
}

func TestAWSKeySwitchTakesTheBackendOutWhileTheNewKeyIsChecked(t *testing.T) {
	t.Parallel()
	e := setupAWS(t)
	ctx := context.Background()
	if _, err := e.admin.AWSPut(ctx, awsRequest(awsSecret)); err != nil {
		t.Fatal(err)
	}
	other := api.AWSConfigRequest{AccessKeyID: awsOtherKeyID, SecretAccessKey: awsOtherSecret, Region: "eu-west-1"}

	// While another key is checked, the autoscaler cannot launch with the
	// old one; when the new key is refused, the old backend is back.
	sawOff, _, err := putAWSHeld(t, e, other, "UnauthorizedOperation")
	apiErr(t, "another key, refused", err, api.CodeInvalid, "AWS refused", "UnauthorizedOperation")
	if !sawOff {
		t.Error("the AWS backend of the old key stayed in the set while another key was checked")
	}
	if !awsBackendOn(t, e) {
		t.Fatal("the AWS backend of the old key was not put back after the new key was refused")
	}
	if got, err := e.admin.AWSGet(ctx); err != nil || got.AccessKeyID != awsKeyID {
		t.Fatalf("GET after a refused switch: %+v %v", got, err)
	}

	// EC2 unable to answer is no refusal of the key: 503, try again; the
	// old backend is back too.
	e.ec2.Fail("DescribeRegions", "ServiceUnavailable", "Service is unavailable.", 1)
	_, err = e.admin.AWSPut(ctx, other)
	apiErr(t, "another key while EC2 cannot answer", err, api.CodeUnavailable, "ServiceUnavailable", "try again")
	if !awsBackendOn(t, e) {
		t.Fatal("the AWS backend of the old key was not put back after EC2 failed")
	}

	// An update of the same key (another region) keeps the backend in the
	// set meanwhile, as before.
	same := awsRequest("")
	same.Region = "us-west-2"
	sawOff, sawOn, err := putAWSHeld(t, e, same, "")
	if err != nil {
		t.Fatalf("same key, another region: %v", err)
	}
	if sawOff || !sawOn {
		t.Errorf("during an update of the same key the AWS backend was out of the set (%v) or never seen in it (%v)", sawOff, !sawOn)
	}

	// The switch itself goes through when no instance is left.
	sawOff, _, err = putAWSHeld(t, e, other, "")
	if err != nil || !sawOff {
		t.Fatalf("switch to another key: %v (backend out meanwhile: %v)", err, sawOff)
	}
	if got, err := e.admin.AWSGet(ctx); err != nil || got.AccessKeyID != awsOtherKeyID {
		t.Fatalf("GET after the switch: %+v %v", got, err)
	}
	if !awsBackendOn(t, e) {
		t.Fatal("no AWS backend after the switch")
	}
}

func TestAWSKeySwitchRefusedWhileInstancesRunPutsTheBackendBack(t *testing.T) {
	t.Parallel()
	e := setupAWS(t)
	ctx := context.Background()
	limitID := e.configureWithLimit(t)
	recordInstances(t, e.srv, limitID, 1)
	_, err := e.admin.AWSPut(ctx, api.AWSConfigRequest{AccessKeyID: awsOtherKeyID, SecretAccessKey: awsOtherSecret, Region: "eu-west-1"})
	apiErr(t, "another key with an instance", err, api.CodeConflict, "1 AWS instance is running under access key "+awsKeyID,
		"switching to access key "+awsOtherKeyID, "another account", "a new key of the same account needs them stopped first",
		"dstack on-demand disable", "keep access key ID "+awsKeyID)
	if !awsBackendOn(t, e) {
		t.Fatal("a refused switch left the server without its AWS backend")
	}
	if got, err := e.admin.AWSGet(ctx); err != nil || got.AccessKeyID != awsKeyID {
		t.Fatalf("GET after a refused switch: %+v %v", got, err)
	}
}

// TestAWSNewSecretOfTheSameKeyWhileInstancesRun: the same key ID with a
// new secret is the same account, and is accepted while instances run.
func TestAWSNewSecretOfTheSameKeyWhileInstancesRun(t *testing.T) {
	t.Parallel()
	// An EC2 that takes any signature, so that the key's secret can change.
	ec2 := ec2fake.New(ec2fake.Options{})
	t.Cleanup(ec2.Close)
	logs := &logBuffer{}
	e := &awsServerEnv{apiEnv: setup(t,
		servertest.WithLogger(slog.New(slog.NewTextHandler(logs, nil))),
		servertest.WithConfig(func(c *server.Config) { c.AWS.Endpoint = ec2.URL() })), ec2: ec2, logs: logs}
	ctx := context.Background()
	limitID := e.configureWithLimit(t)
	recordInstances(t, e.srv, limitID, 2)
	got, err := e.admin.AWSPut(ctx, awsRequest("a-new-secret-of-the-same-key-0001"))
	if err != nil || got.AccessKeyID != awsKeyID || got.SecretAccessKey != "****************0001" {
		t.Fatalf("a new secret of the same key while instances run: %+v %v", got, err)
	}
	if !awsBackendOn(t, e) {
		t.Fatal("no AWS backend after a new secret")
	}
	_, err = e.admin.AWSPut(ctx, api.AWSConfigRequest{AccessKeyID: awsOtherKeyID, SecretAccessKey: awsOtherSecret, Region: "eu-west-1"})
	apiErr(t, "another key with instances", err, api.CodeConflict, "2 AWS instances are running")
}

// TestAWSKeySwitchWhenTheStoredKeyCannotBeOpened: under another server key
// the stored configuration cannot be opened, so the key of the instances
// is not known: no configuration is accepted while AWS instances are
// recorded, whatever key it names.
func TestAWSKeySwitchWhenTheStoredKeyCannotBeOpened(t *testing.T) {
	t.Parallel()
	e := setupAWS(t)
	ctx := context.Background()
	limitID := e.configureWithLimit(t)
	ins := recordInstances(t, e.srv, limitID, 2)
	stopWithAnotherServerKey(t, e.srv)
	e.srv.Restart(t)
	c := e.srv.Client()
	if got, err := c.AWSGet(ctx); err != nil || got.Configured {
		t.Fatalf("GET under another server key: %+v %v", got, err)
	}
	for _, r := range []api.AWSConfigRequest{
		{AccessKeyID: awsOtherKeyID, SecretAccessKey: awsOtherSecret, Region: "eu-west-1"},
		awsRequest(awsSecret),
	} {
		_, err := c.AWSPut(ctx, r)
		apiErr(t, "key "+r.AccessKeyID+" with instances of an unknown key", err, api.CodeConflict,
			"2 AWS instances are running under the access key configured before", "dstack on-demand disable")
	}
	if _, err := e.srv.Store().SettingGet(ctx, "aws"); err != nil {
		t.Fatalf("the stored configuration went: %v", err)
	}
	setInstances(t, e.srv, ins, store.InstanceTerminated)
	if got, err := c.AWSPut(ctx, awsRequest(awsSecret)); err != nil || got.AccessKeyID != awsKeyID {
		t.Fatalf("configure again once the instances are gone: %+v %v", got, err)
	}
}

// TestAWSConfigWhenEC2Fails: EC2 failing during the check (500
// InternalError, after the SDK's own retries) is no refusal of the key:
// 503, try again, and nothing is saved.
func TestAWSConfigWhenEC2Fails(t *testing.T) {
	t.Parallel()
	e := setupAWS(t)
	ctx := context.Background()
	e.ec2.Fail("DescribeRegions", "InternalError", "We encountered an internal error.", -1)
	rp := e.putAWS(t, e.srv.AdminToken, awsRequest(awsSecret))
	e.ec2.ClearFaults()
	wantError(t, "EC2 failing", rp, http.StatusServiceUnavailable, api.CodeUnavailable, "InternalError", "try again", "nothing was saved")
	if got, err := e.admin.AWSGet(ctx); err != nil || got.Configured {
		t.Fatalf("GET after EC2 failed: %+v %v", got, err)
	}
	if _, err := e.admin.AWSPut(ctx, awsRequest(awsSecret)); err != nil {
		t.Fatalf("once EC2 answers again: %v", err)
	}
}
