package aws

import (
	"context"
	"errors"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/testutil"
)

// stubEC2 answers the few calls a test needs; any other call panics (the
// embedded interface is nil). It covers what the fake cloud cannot stage.
type stubEC2 struct {
	ec2API
	groups     []types.SecurityGroup // what DescribeSecurityGroups finds, in turn
	describes  int
	creates    int
	createErr  error
	spot       []types.SpotInstanceRequest
	cancelled  []string
	spotFilter []types.Filter
}

func (s *stubEC2) DescribeSecurityGroups(context.Context, *ec2.DescribeSecurityGroupsInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error) {
	s.describes++
	if s.describes == 1 {
		return &ec2.DescribeSecurityGroupsOutput{}, nil
	}
	return &ec2.DescribeSecurityGroupsOutput{SecurityGroups: s.groups}, nil
}

func (s *stubEC2) CreateSecurityGroup(context.Context, *ec2.CreateSecurityGroupInput, ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error) {
	s.creates++
	return nil, s.createErr
}

func (s *stubEC2) DescribeSpotInstanceRequests(_ context.Context, in *ec2.DescribeSpotInstanceRequestsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSpotInstanceRequestsOutput, error) {
	s.spotFilter = in.Filters
	return &ec2.DescribeSpotInstanceRequestsOutput{SpotInstanceRequests: s.spot}, nil
}

func (s *stubEC2) CancelSpotInstanceRequests(_ context.Context, in *ec2.CancelSpotInstanceRequestsInput, _ ...func(*ec2.Options)) (*ec2.CancelSpotInstanceRequestsOutput, error) {
	s.cancelled = append(s.cancelled, in.SpotInstanceRequestIds...)
	return &ec2.CancelSpotInstanceRequestsOutput{}, nil
}

// stubbed is a backend whose us-east-1 client is s.
func stubbed(t *testing.T, s *stubEC2) (*Backend, *testutil.Clock) {
	t.Helper()
	c := testutil.NewClock(time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC))
	b, err := New(Config{AccessKeyID: "AKID", SecretAccessKey: "secret", Region: "us-east-1", Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	b.clients["us-east-1"] = s
	return b, c
}

func TestSecurityGroupCreateRace(t *testing.T) {
	t.Parallel()
	// Another server process created the group between our look and our
	// create: EC2 says InvalidGroup.Duplicate, and we use theirs.
	s := &stubEC2{
		groups:    []types.SecurityGroup{{GroupId: awssdk.String("sg-theirs"), GroupName: awssdk.String(groupName("srv"))}},
		createErr: &smithy.GenericAPIError{Code: "InvalidGroup.Duplicate", Message: "The security group 'dstack-srv' already exists"},
	}
	b, _ := stubbed(t, s)
	id, err := b.securityGroup(context.Background(), "us-east-1", "srv")
	if err != nil || id != "sg-theirs" {
		t.Fatalf("securityGroup = %q, %v; want the other's sg-theirs", id, err)
	}
	if _, err := b.securityGroup(context.Background(), "us-east-1", "srv"); err != nil || s.describes != 2 || s.creates != 1 {
		t.Errorf("the group is not cached: %d describes, %d creates, %v", s.describes, s.creates, err)
	}

	s2 := &stubEC2{createErr: &smithy.GenericAPIError{Code: "VPCIdNotSpecified", Message: "No default VPC for this user"}}
	b2, _ := stubbed(t, s2)
	_, err = b2.securityGroup(context.Background(), "us-east-1", "srv")
	assertKind(t, err, backend.ErrInvalid, "VPCIdNotSpecified")
}

func TestCancelOrphanSpotRequests(t *testing.T) {
	t.Parallel()
	b, c := stubbed(t, nil)
	now := c.Now()
	s := &stubEC2{spot: []types.SpotInstanceRequest{
		{SpotInstanceRequestId: awssdk.String("sir-orphan"), State: types.SpotInstanceStateOpen, CreateTime: awssdk.Time(now.Add(-time.Hour))},
		{SpotInstanceRequestId: awssdk.String("sir-young"), State: types.SpotInstanceStateOpen, CreateTime: awssdk.Time(now.Add(-time.Minute))},
		{SpotInstanceRequestId: awssdk.String("sir-fulfilled"), State: types.SpotInstanceStateOpen, InstanceId: awssdk.String("i-1"), CreateTime: awssdk.Time(now.Add(-time.Hour))},
		{SpotInstanceRequestId: awssdk.String("sir-active"), State: types.SpotInstanceStateActive, InstanceId: awssdk.String("i-2"), CreateTime: awssdk.Time(now.Add(-time.Hour))},
	}}
	b.clients["us-east-1"] = s
	if !b.sweepDue("us-east-1") {
		t.Fatal("the first sweep is not due")
	}
	b.cancelOrphanSpotRequests(context.Background(), "us-east-1", "srv")
	if len(s.cancelled) != 1 || s.cancelled[0] != "sir-orphan" {
		t.Errorf("cancelled %v, want only sir-orphan", s.cancelled)
	}
	var byServer bool
	for _, f := range s.spotFilter {
		if awssdk.ToString(f.Name) == "tag:"+backend.TagServerID && len(f.Values) == 1 && f.Values[0] == "srv" {
			byServer = true
		}
	}
	if !byServer {
		t.Errorf("spot requests were not filtered by the server's tag: %v", s.spotFilter)
	}
	if b.sweepDue("us-east-1") {
		t.Error("a second sweep is due at once")
	}
	c.Advance(spotSweepEvery)
	if !b.sweepDue("us-east-1") {
		t.Error("no sweep due after the interval")
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	err := &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "Value (dstj_secret) for parameter tag is invalid"}
	got := redact(err, "dstj_secret")
	be := assertKind(t, got, backend.ErrInvalid, "InvalidParameterValue")
	if be.Reason != "Value (****) for parameter tag is invalid" || be.Err != nil {
		t.Errorf("redacted to %+v", be)
	}
	if !errors.Is(redact(err, "other"), err) || redact(nil, "x") != nil {
		t.Error("redact changed an error without the secret")
	}
}
