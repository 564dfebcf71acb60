package ec2fake

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"go.uber.org/goleak"

	"github.com/dstackai/dstack/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testKey    = "AKIAFAKEFAKEFAKE0001"
	testSecret = "fake/secret/key/for/tests/only/0000000000"
)

type fixture struct {
	srv   *Server
	clock *testutil.Clock
	ec2   *ec2.Client // eu-west-1
}

// setup starts a fake EC2 with one key pair and a fake clock, and an SDK
// client for eu-west-1. Options are applied over those defaults.
func setup(t *testing.T, opts ...func(*Options)) *fixture {
	t.Helper()
	c := testutil.NewClock(time.Date(2024, 10, 7, 12, 0, 0, 0, time.UTC))
	o := Options{
		Credentials: map[string]string{testKey: testSecret},
		Now:         c.Now,
		Logf:        t.Logf,
	}
	for _, f := range opts {
		f(&o)
	}
	srv := New(o)
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, clock: c, ec2: client(srv, "eu-west-1", testKey, testSecret)}
}

func client(srv *Server, region, key, secret string, opts ...func(*ec2.Options)) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:       region,
		BaseEndpoint: aws.String(srv.URL()),
		Credentials:  credentials.NewStaticCredentialsProvider(key, secret, ""),
	}, opts...)
}

// apiCode is the EC2 error code of err, "" if it is none.
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := apiCode(err); got != code {
		t.Fatalf("error = %v, want code %s", err, code)
	}
}

// must fails the test on err: must(c.Op(ctx, in))(t).
func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()

	_, err := f.ec2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
	if err != nil {
		t.Fatalf("good key: %v", err)
	}
	tests := []struct {
		name, key, secret, region, code string
	}{
		{"wrong secret", testKey, "not-the-secret", "eu-west-1", "SignatureDoesNotMatch"},
		{"unknown key", "AKIAUNKNOWN000000000", testSecret, "eu-west-1", "AuthFailure"},
		{"region not enabled", testKey, testSecret, "ap-east-1", "AuthFailure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := client(f.srv, tt.region, tt.key, tt.secret, func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
			_, err := c.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
			wantCode(t, err, tt.code)
		})
	}

	// A signed request whose body was changed on the way is refused too.
	resp, err := http.Post(f.srv.URL(), "application/x-www-form-urlencoded", strings.NewReader("Action=DescribeRegions&Version=2016-11-15"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned request: status %d, want 401", resp.StatusCode)
	}
	if n := f.srv.Calls("DescribeRegions"); n != 5 {
		t.Errorf("Calls(DescribeRegions) = %d, want 5 (failed ones included)", n)
	}
}

func TestUnsignedWhenNoCredentials(t *testing.T) {
	t.Parallel()
	srv := New(Options{})
	defer srv.Close()
	form := url.Values{"Action": {"DescribeAvailabilityZones"}, "Version": {apiVersion}}
	resp, err := http.PostForm(srv.URL(), form)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "<zoneName>us-east-1a</zoneName>") {
		t.Fatalf("status %d, body %s", resp.StatusCode, body)
	}

	form.Set("Action", "RebootInstances")
	resp, err = http.PostForm(srv.URL(), form)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "<Code>InvalidAction</Code>") {
		t.Fatalf("unknown action: status %d, body %s", resp.StatusCode, body)
	}
}

// runOne runs one on-demand m5.large in eu-west-1 with the given tags.
func runOne(t *testing.T, f *fixture, tags map[string]string, mods ...func(*ec2.RunInstancesInput)) *ec2.RunInstancesOutput {
	t.Helper()
	in := &ec2.RunInstancesInput{
		ImageId:      aws.String(ubuntuAMI(t, f)),
		InstanceType: types.InstanceTypeM5Large,
		MinCount:     aws.Int32(1),
		MaxCount:     aws.Int32(1),
	}
	if len(tags) > 0 {
		spec := types.TagSpecification{ResourceType: types.ResourceTypeInstance}
		for k, v := range tags {
			spec.Tags = append(spec.Tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		in.TagSpecifications = []types.TagSpecification{spec}
	}
	for _, m := range mods {
		m(in)
	}
	return must(f.ec2.RunInstances(context.Background(), in))(t)
}

// ubuntuAMI is the newest Ubuntu 22.04 amd64 image of eu-west-1.
func ubuntuAMI(t *testing.T, f *fixture) string {
	t.Helper()
	out := must(f.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{
		Owners: []string{"099720109477"},
		Filters: []types.Filter{
			{Name: aws.String("name"), Values: []string{"ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*"}},
			{Name: aws.String("architecture"), Values: []string{"x86_64"}},
			{Name: aws.String("state"), Values: []string{"available"}},
		},
	}))(t)
	if len(out.Images) == 0 {
		t.Fatal("no Ubuntu image")
	}
	best := out.Images[0]
	for _, im := range out.Images {
		if aws.ToString(im.CreationDate) > aws.ToString(best.CreationDate) {
			best = im
		}
	}
	return aws.ToString(best.ImageId)
}
