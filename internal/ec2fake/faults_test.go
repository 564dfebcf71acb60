package ec2fake

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func TestFail(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	tests := []struct {
		code   string
		status int
	}{
		{"InsufficientInstanceCapacity", http.StatusBadRequest},
		{"InternalError", http.StatusInternalServerError},
		{"RequestLimitExceeded", http.StatusServiceUnavailable},
	}
	once := client(f.srv, "eu-west-1", testKey, testSecret, func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	for _, tt := range tests {
		f.srv.Fail("DescribeVpcs", tt.code, "it failed", 1)
		_, err := once.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
		wantCode(t, err, tt.code)
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorMessage() != "it failed" {
			t.Errorf("%s: message %q", tt.code, ae.ErrorMessage())
		}
		if got := httpStatus(err); got != tt.status {
			t.Errorf("%s: HTTP %d, want %d", tt.code, got, tt.status)
		}
	}
	// The faults were used up; other actions were never affected.
	must(once.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}))(t)

	f.srv.Fail("DescribeSubnets", "Unavailable", "down", -1)
	for range 3 {
		_, err := once.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
		wantCode(t, err, "Unavailable")
	}
	f.srv.ClearFaults()
	must(once.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{}))(t)
}

func TestThrottle(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()

	once := client(f.srv, "eu-west-1", testKey, testSecret, func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	f.srv.Throttle("DescribeRegions", 1)
	_, err := once.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
	wantCode(t, err, "RequestLimitExceeded")

	// The SDK retries throttling by itself.
	f.srv.Throttle("DescribeRegions", 2)
	retrying := client(f.srv, "eu-west-1", testKey, testSecret, func(o *ec2.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 3
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	})
	must(retrying.DescribeRegions(ctx, &ec2.DescribeRegionsInput{}))(t)
	if n := f.srv.Calls("DescribeRegions"); n != 4 {
		t.Errorf("Calls = %d, want 4 (1 refused, then 2 refused and 1 answered)", n)
	}
}

func TestDelay(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.srv.Delay("RunInstances", time.Minute, 1)
	once := client(f.srv, "eu-west-1", testKey, testSecret, func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := once.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ubuntuAMI(t, f)), InstanceType: "m5.large",
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want a deadline", err)
	}
	if n := len(f.srv.Instances()); n != 0 {
		t.Errorf("a request abandoned while delayed launched %d instances", n)
	}

	f.srv.Delay("DescribeVpcs", 50*time.Millisecond, 1)
	start := time.Now()
	must(f.ec2.DescribeVpcs(context.Background(), &ec2.DescribeVpcsInput{}))(t)
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("answered after %v, want at least 50ms", d)
	}
}

func TestLoseResponse(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.srv.LoseResponse("RunInstances", 1)
	// The SDK retries the lost answer with the same client token; EC2
	// answers with the instance the first attempt launched.
	out := runOne(t, f, map[string]string{"k": "v"})
	if n := f.srv.Calls("RunInstances"); n != 2 {
		t.Errorf("Calls(RunInstances) = %d, want 2", n)
	}
	all := f.srv.Instances()
	if len(all) != 1 || all[0].ID != aws.ToString(out.Instances[0].InstanceId) {
		t.Fatalf("instances %+v, want only %s", all, aws.ToString(out.Instances[0].InstanceId))
	}

	// Without retries the caller sees the transport error and retries itself.
	f.srv.LoseResponse("RunInstances", 1)
	once := client(f.srv, "eu-west-1", testKey, testSecret, func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	in := &ec2.RunInstancesInput{ImageId: out.Instances[0].ImageId, InstanceType: "m5.large",
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ClientToken: aws.String("retry-me")}
	if _, err := once.RunInstances(context.Background(), in); err == nil || apiCode(err) != "" {
		t.Fatalf("lost answer: error %v, want a transport error", err)
	}
	retried := must(once.RunInstances(context.Background(), in))(t)
	if n := len(f.srv.Instances()); n != 2 {
		t.Errorf("%d instances, want 2", n)
	}
	snap, _ := f.srv.Instance(aws.ToString(retried.Instances[0].InstanceId))
	if snap.ClientToken != "retry-me" {
		t.Errorf("retry answered with %+v", snap)
	}
}

func TestFaultForEveryAction(t *testing.T) {
	t.Parallel()
	f := setup(t)
	once := client(f.srv, "eu-west-1", testKey, testSecret, func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	f.srv.Fail("*", "AuthFailure", "nope", 2)
	_, err := once.DescribeVpcs(context.Background(), &ec2.DescribeVpcsInput{})
	wantCode(t, err, "AuthFailure")
	_, err = once.DescribeRegions(context.Background(), &ec2.DescribeRegionsInput{})
	wantCode(t, err, "AuthFailure")
	must(once.DescribeRegions(context.Background(), &ec2.DescribeRegionsInput{}))(t)
}

func TestRepeatLaunchIndex(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.srv.RepeatLaunchIndex(1)
	// A launch of one has no second instance: the fault waits.
	runOne(t, f, nil)
	out := runOne(t, f, nil, func(in *ec2.RunInstancesInput) { in.MaxCount = aws.Int32(3) })
	var got []int32
	for _, in := range out.Instances {
		got = append(got, aws.ToInt32(in.AmiLaunchIndex))
		d := describeOne(t, f, aws.ToString(in.InstanceId))
		if aws.ToInt32(d.AmiLaunchIndex) != aws.ToInt32(in.AmiLaunchIndex) {
			t.Errorf("instance %s: launch index %d described, %d answered", aws.ToString(in.InstanceId), aws.ToInt32(d.AmiLaunchIndex), aws.ToInt32(in.AmiLaunchIndex))
		}
	}
	if len(got) != 3 || got[0] != 0 || got[1] != 0 || got[2] != 2 {
		t.Fatalf("launch indexes %v, want [0 0 2]", got)
	}
	// Used up.
	out = runOne(t, f, nil, func(in *ec2.RunInstancesInput) { in.MaxCount = aws.Int32(2) })
	if i := aws.ToInt32(out.Instances[1].AmiLaunchIndex); i != 1 {
		t.Errorf("after the fault: second launch index %d, want 1", i)
	}
}

func TestStrayInstance(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.srv.StrayInstance(1)
	out := runOne(t, f, map[string]string{"k": "v"}, func(in *ec2.RunInstancesInput) {
		in.UserData = aws.String("ZWNobyBoaQ==")
	})
	if len(out.Instances) != 1 {
		t.Fatalf("answered %d instances, want 1", len(out.Instances))
	}
	all := f.srv.Instances()
	if len(all) != 2 {
		t.Fatalf("the cloud has %d instances, want 2 (one left out of the answer)", len(all))
	}
	first, stray := all[0], all[1]
	if first.ID != aws.ToString(out.Instances[0].InstanceId) {
		t.Fatalf("the answered instance is %s, want the first launched %s", aws.ToString(out.Instances[0].InstanceId), first.ID)
	}
	if stray.Tags["k"] != "v" || stray.UserData != first.UserData || stray.LaunchIndex != first.LaunchIndex || stray.State != "running" {
		t.Errorf("stray %+v; want a running copy of %+v", stray, first)
	}
	d := describeOne(t, f, stray.ID)
	if tagMap(d.Tags)["k"] != "v" {
		t.Errorf("DescribeInstances shows the stray's tags %v", tagMap(d.Tags))
	}
	runOne(t, f, nil)
	if n := len(f.srv.Instances()); n != 3 {
		t.Errorf("after the fault: %d instances, want 3", n)
	}
}

func TestRemoveAction(t *testing.T) {
	t.Parallel()
	f := setup(t)
	once := client(f.srv, "eu-west-1", testKey, testSecret, func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	f.srv.RemoveAction("DescribeRegions")
	for range 2 {
		_, err := once.DescribeRegions(context.Background(), &ec2.DescribeRegionsInput{})
		wantCode(t, err, "InvalidAction")
		if got := httpStatus(err); got != http.StatusBadRequest {
			t.Errorf("HTTP %d, want 400", got)
		}
	}
	must(once.DescribeVpcs(context.Background(), &ec2.DescribeVpcsInput{}))(t)
	f.srv.ClearFaults()
	must(once.DescribeRegions(context.Background(), &ec2.DescribeRegionsInput{}))(t)
}
