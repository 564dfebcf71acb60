package ec2fake

import (
	"context"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func TestDefaultNetwork(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	vpcs := must(f.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{
		Filters: []types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}},
	}))(t)
	if len(vpcs.Vpcs) != 1 || !aws.ToBool(vpcs.Vpcs[0].IsDefault) {
		t.Fatalf("default VPCs %+v", vpcs.Vpcs)
	}
	vpcID := aws.ToString(vpcs.Vpcs[0].VpcId)
	subnets := must(f.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{
		Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpcID}}, {Name: aws.String("default-for-az"), Values: []string{"true"}}},
	}))(t)
	var zones []string
	for _, s := range subnets.Subnets {
		zones = append(zones, aws.ToString(s.AvailabilityZone))
	}
	if !slices.Equal(zones, []string{"eu-west-1a", "eu-west-1b", "eu-west-1c"}) {
		t.Errorf("default subnets in %v", zones)
	}

	// A launch into the subnet of zone c lands there.
	out := runOne(t, f, nil, func(in *ec2.RunInstancesInput) { in.SubnetId = subnets.Subnets[2].SubnetId })
	if az := aws.ToString(out.Instances[0].Placement.AvailabilityZone); az != "eu-west-1c" {
		t.Errorf("launched in %s", az)
	}
}

func TestSecurityGroups(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	created := must(f.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName: aws.String("dstack"), Description: aws.String("dstack runners"),
		TagSpecifications: []types.TagSpecification{tagSpec(types.ResourceTypeSecurityGroup, "dstack:server", "s1")},
	}))(t)
	id := aws.ToString(created.GroupId)
	_, err := f.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("dstack"), Description: aws.String("again")})
	wantCode(t, err, "InvalidGroup.Duplicate")

	ssh := types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
		IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}
	self := types.IpPermission{IpProtocol: aws.String("-1"), UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String(id)}}}
	auth := must(f.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(id), IpPermissions: []types.IpPermission{ssh, self},
	}))(t)
	if !aws.ToBool(auth.Return) || len(auth.SecurityGroupRules) != 2 {
		t.Errorf("authorize: %+v", auth)
	}
	_, err = f.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(id), IpPermissions: []types.IpPermission{ssh},
	})
	wantCode(t, err, "InvalidPermission.Duplicate")
	_, err = f.ec2.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{
		GroupId: aws.String(id), IpPermissions: []types.IpPermission{{IpProtocol: aws.String("-1"),
			IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}},
	})
	wantCode(t, err, "InvalidPermission.Duplicate")

	byName := must(f.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{
		Filters: []types.Filter{{Name: aws.String("group-name"), Values: []string{"dstack"}}, {Name: aws.String("tag:dstack:server"), Values: []string{"s1"}}},
	}))(t)
	if len(byName.SecurityGroups) != 1 {
		t.Fatalf("%d groups named dstack", len(byName.SecurityGroups))
	}
	g := byName.SecurityGroups[0]
	if aws.ToString(g.GroupId) != id || len(g.IpPermissions) != 2 || len(g.IpPermissionsEgress) != 1 {
		t.Errorf("group %+v", g)
	}
	_, err = f.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{"sg-00000000000000000"}})
	wantCode(t, err, "InvalidGroup.NotFound")

	var snap SecurityGroup
	for _, sg := range f.srv.SecurityGroups() {
		if sg.ID == id {
			snap = sg
		}
	}
	if want := []string{"tcp 22-22 0.0.0.0/0", "-1 all " + id}; !slices.Equal(snap.Ingress, want) || snap.Tags["dstack:server"] != "s1" ||
		snap.Region != "eu-west-1" {
		t.Errorf("SecurityGroups() has %+v, want ingress %v", snap, want)
	}
}
