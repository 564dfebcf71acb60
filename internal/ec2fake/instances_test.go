package ec2fake

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func tagMap(tags []types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func tagSpec(rt types.ResourceType, kv ...string) types.TagSpecification {
	s := types.TagSpecification{ResourceType: rt}
	for i := 0; i+1 < len(kv); i += 2 {
		s.Tags = append(s.Tags, types.Tag{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
	}
	return s
}

func describeOne(t *testing.T, f *fixture, id string) types.Instance {
	t.Helper()
	out := must(f.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}}))(t)
	if len(out.Reservations) != 1 || len(out.Reservations[0].Instances) != 1 {
		t.Fatalf("DescribeInstances(%s): %d reservations", id, len(out.Reservations))
	}
	return out.Reservations[0].Instances[0]
}

func TestLaunchSpotAndOnDemand(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	ami := ubuntuAMI(t, f)
	sg := must(f.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName: aws.String("dstack-runners"), Description: aws.String("runners"),
	}))(t)

	tests := []struct {
		name string
		spot bool
	}{{"on-demand", false}, {"spot", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &ec2.RunInstancesInput{
				ImageId: aws.String(ami), InstanceType: types.InstanceTypeG4dnXlarge,
				MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
				SecurityGroupIds: []string{aws.ToString(sg.GroupId)},
				UserData:         aws.String(base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\necho " + tt.name))),
				TagSpecifications: []types.TagSpecification{
					tagSpec(types.ResourceTypeInstance, "dstack:server", "s1", "Name", tt.name),
					tagSpec(types.ResourceTypeVolume, "dstack:server", "s1"),
				},
				MetadataOptions: &types.InstanceMetadataOptionsRequest{
					HttpTokens: types.HttpTokensStateRequired, HttpEndpoint: types.InstanceMetadataEndpointStateEnabled,
					InstanceMetadataTags: types.InstanceMetadataTagsStateEnabled,
				},
			}
			if tt.spot {
				in.TagSpecifications = append(in.TagSpecifications, tagSpec(types.ResourceTypeSpotInstancesRequest, "dstack:server", "s1"))
				in.InstanceMarketOptions = &types.InstanceMarketOptionsRequest{
					MarketType: types.MarketTypeSpot,
					SpotOptions: &types.SpotMarketOptions{
						SpotInstanceType:             types.SpotInstanceTypeOneTime,
						InstanceInterruptionBehavior: types.InstanceInterruptionBehaviorTerminate,
						MaxPrice:                     aws.String("1.0"),
					},
				}
			}
			out := must(f.ec2.RunInstances(ctx, in))(t)
			if len(out.Instances) != 1 || out.Instances[0].State.Name != types.InstanceStateNamePending {
				t.Fatalf("RunInstances: %+v", out.Instances)
			}
			id := aws.ToString(out.Instances[0].InstanceId)

			got := describeOne(t, f, id)
			if got.State.Name != types.InstanceStateNameRunning || aws.ToInt32(got.State.Code) != 16 {
				t.Errorf("state %s (%d), want running (16)", got.State.Name, aws.ToInt32(got.State.Code))
			}
			if tags := tagMap(got.Tags); tags["dstack:server"] != "s1" || tags["Name"] != tt.name {
				t.Errorf("tags %v", tags)
			}
			if got.InstanceType != types.InstanceTypeG4dnXlarge || aws.ToString(got.ImageId) != ami {
				t.Errorf("type %s image %s", got.InstanceType, aws.ToString(got.ImageId))
			}
			if got.MetadataOptions.HttpTokens != types.HttpTokensStateRequired ||
				got.MetadataOptions.InstanceMetadataTags != types.InstanceMetadataTagsStateEnabled {
				t.Errorf("metadata options %+v", got.MetadataOptions)
			}
			if len(got.SecurityGroups) != 1 || aws.ToString(got.SecurityGroups[0].GroupId) != aws.ToString(sg.GroupId) ||
				aws.ToString(got.SecurityGroups[0].GroupName) != "dstack-runners" {
				t.Errorf("groups %+v", got.SecurityGroups)
			}
			if az := aws.ToString(got.Placement.AvailabilityZone); az != "eu-west-1a" {
				t.Errorf("zone %s", az)
			}
			if got.LaunchTime == nil || !got.LaunchTime.Equal(f.clock.Now()) {
				t.Errorf("launch time %v, want %v", got.LaunchTime, f.clock.Now())
			}
			if aws.ToString(got.ClientToken) == "" {
				t.Error("no client token (the SDK sends one)")
			}

			snap, ok := f.srv.Instance(id)
			if !ok || snap.UserData != "#!/bin/sh\necho "+tt.name || snap.VolumeTags["dstack:server"] != "s1" ||
				!snap.HTTPTokensRequired || snap.Region != "eu-west-1" || snap.Spot != tt.spot {
				t.Errorf("Instance(%s) = %+v", id, snap)
			}

			if !tt.spot {
				if got.InstanceLifecycle != "" || got.SpotInstanceRequestId != nil {
					t.Errorf("on-demand instance has lifecycle %q, request %v", got.InstanceLifecycle, got.SpotInstanceRequestId)
				}
				return
			}
			if got.InstanceLifecycle != types.InstanceLifecycleTypeSpot {
				t.Errorf("lifecycle %q, want spot", got.InstanceLifecycle)
			}
			sir := aws.ToString(got.SpotInstanceRequestId)
			reqs := must(f.ec2.DescribeSpotInstanceRequests(ctx, &ec2.DescribeSpotInstanceRequestsInput{
				Filters: []types.Filter{{Name: aws.String("tag:dstack:server"), Values: []string{"s1"}}},
			}))(t)
			if len(reqs.SpotInstanceRequests) != 1 {
				t.Fatalf("%d spot requests", len(reqs.SpotInstanceRequests))
			}
			r := reqs.SpotInstanceRequests[0]
			if aws.ToString(r.SpotInstanceRequestId) != sir || r.State != types.SpotInstanceStateActive ||
				aws.ToString(r.InstanceId) != id || aws.ToString(r.Status.Code) != "fulfilled" || aws.ToString(r.SpotPrice) != "1.0" {
				t.Errorf("spot request %+v", r)
			}
		})
	}
}

func TestLaunchErrors(t *testing.T) {
	t.Parallel()
	f := setup(t, func(o *Options) { o.SpotInstanceLimit = 2 })
	ctx := context.Background()
	ami := ubuntuAMI(t, f)
	spot := func(price string) *types.InstanceMarketOptionsRequest {
		o := &types.InstanceMarketOptionsRequest{MarketType: types.MarketTypeSpot, SpotOptions: &types.SpotMarketOptions{}}
		if price != "" {
			o.SpotOptions.MaxPrice = aws.String(price)
		}
		return o
	}
	tests := []struct {
		name string
		in   ec2.RunInstancesInput
		code string
	}{
		{"unknown image", ec2.RunInstancesInput{ImageId: aws.String("ami-0000000000000000"), InstanceType: "m5.large"}, "InvalidAMIID.NotFound"},
		{"unknown type", ec2.RunInstancesInput{InstanceType: "m9.huge"}, "Unsupported"},
		{"type not offered in region", ec2.RunInstancesInput{InstanceType: "p4d.24xlarge"}, "Unsupported"},
		{"no spot for type", ec2.RunInstancesInput{InstanceType: "p3.2xlarge", InstanceMarketOptions: spot("")}, "Unsupported"},
		{"architecture mismatch", ec2.RunInstancesInput{InstanceType: "m6g.large"}, "InvalidParameterValue"},
		{"max price too low", ec2.RunInstancesInput{InstanceType: "m5.large", InstanceMarketOptions: spot("0.001")}, "SpotMaxPriceTooLow"},
		{"bad tag resource", ec2.RunInstancesInput{InstanceType: "m5.large",
			TagSpecifications: []types.TagSpecification{tagSpec(types.ResourceTypeImage, "a", "b")}}, "InvalidParameterValue"},
		{"unknown group", ec2.RunInstancesInput{InstanceType: "m5.large", SecurityGroupIds: []string{"sg-00000000000000000"}}, "InvalidGroup.NotFound"},
		{"unknown subnet", ec2.RunInstancesInput{InstanceType: "m5.large", SubnetId: aws.String("subnet-0")}, "InvalidSubnetID.NotFound"},
		{"bad user data", ec2.RunInstancesInput{InstanceType: "m5.large", UserData: aws.String("!!!")}, "InvalidParameterValue"},
		{"spot limit", ec2.RunInstancesInput{InstanceType: "m5.large", InstanceMarketOptions: spot(""), MinCount: aws.Int32(3), MaxCount: aws.Int32(3)},
			"MaxSpotInstanceCountExceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			if in.ImageId == nil {
				in.ImageId = aws.String(ami)
			}
			if in.MinCount == nil {
				in.MinCount, in.MaxCount = aws.Int32(1), aws.Int32(1)
			}
			_, err := f.ec2.RunInstances(ctx, &in)
			wantCode(t, err, tt.code)
		})
	}
	if n := len(f.srv.Instances()); n != 0 {
		t.Errorf("%d instances launched by failed requests", n)
	}
	if n := len(f.srv.SpotRequests()); n != 0 {
		t.Errorf("%d spot requests made by failed requests", n)
	}

	// Within the spot limit, a request launches what the limit leaves.
	out := must(f.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: "m5.large",
		InstanceMarketOptions: spot(""), MinCount: aws.Int32(1), MaxCount: aws.Int32(5)}))(t)
	if len(out.Instances) != 2 {
		t.Errorf("launched %d spot instances under a limit of 2", len(out.Instances))
	}
}

func TestVCPULimit(t *testing.T) {
	t.Parallel()
	f := setup(t, func(o *Options) { o.OnDemandVCPULimit = 8 })
	out := runOne(t, f, nil, func(in *ec2.RunInstancesInput) { in.InstanceType = "m5.xlarge"; in.MaxCount = aws.Int32(5) })
	if len(out.Instances) != 2 {
		t.Fatalf("launched %d m5.xlarge under 8 vCPUs", len(out.Instances))
	}
	_, err := f.ec2.RunInstances(context.Background(), &ec2.RunInstancesInput{ImageId: out.Instances[0].ImageId,
		InstanceType: "t3.micro", MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	wantCode(t, err, "VcpuLimitExceeded")
}

func TestClientTokenIdempotency(t *testing.T) {
	t.Parallel()
	f := setup(t)
	token := "launch-0001"
	first := runOne(t, f, map[string]string{"k": "v"}, func(in *ec2.RunInstancesInput) { in.ClientToken = aws.String(token) })
	again := runOne(t, f, map[string]string{"k": "v"}, func(in *ec2.RunInstancesInput) { in.ClientToken = aws.String(token) })
	if aws.ToString(first.ReservationId) != aws.ToString(again.ReservationId) ||
		aws.ToString(first.Instances[0].InstanceId) != aws.ToString(again.Instances[0].InstanceId) {
		t.Errorf("second call launched %s in %s, want %s in %s", aws.ToString(again.Instances[0].InstanceId),
			aws.ToString(again.ReservationId), aws.ToString(first.Instances[0].InstanceId), aws.ToString(first.ReservationId))
	}
	if n := len(f.srv.Instances()); n != 1 {
		t.Errorf("%d instances, want 1", n)
	}

	_, err := f.ec2.RunInstances(context.Background(), &ec2.RunInstancesInput{
		ImageId: first.Instances[0].ImageId, InstanceType: types.InstanceTypeM5Xlarge,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ClientToken: aws.String(token),
	})
	wantCode(t, err, "IdempotentParameterMismatch")

	// The token is remembered for 7 days.
	f.clock.Advance(8 * 24 * time.Hour)
	later := runOne(t, f, map[string]string{"k": "v"}, func(in *ec2.RunInstancesInput) { in.ClientToken = aws.String(token) })
	if aws.ToString(later.Instances[0].InstanceId) == aws.ToString(first.Instances[0].InstanceId) {
		t.Error("a token older than 7 days still returned the old launch")
	}
}

func TestPartialCapacity(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.srv.SetCapacity("eu-west-1", "m5.large", false, 2)
	out := runOne(t, f, nil, func(in *ec2.RunInstancesInput) { in.MaxCount = aws.Int32(3) })
	if len(out.Instances) != 2 {
		t.Fatalf("launched %d, want 2", len(out.Instances))
	}
	for i, in := range out.Instances {
		if aws.ToInt32(in.AmiLaunchIndex) != int32(i) {
			t.Errorf("instance %d has launch index %d", i, aws.ToInt32(in.AmiLaunchIndex))
		}
	}
	_, err := f.ec2.RunInstances(context.Background(), &ec2.RunInstancesInput{ImageId: out.Instances[0].ImageId,
		InstanceType: "m5.large", MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	wantCode(t, err, "InsufficientInstanceCapacity")

	// Capacity is per purchase option and region: spot m5.large still launches.
	runOne(t, f, nil, func(in *ec2.RunInstancesInput) {
		in.InstanceMarketOptions = &types.InstanceMarketOptionsRequest{MarketType: types.MarketTypeSpot}
	})
	f.srv.ClearFaults()
	runOne(t, f, nil)
}

func TestTerminate(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	a := aws.ToString(runOne(t, f, nil).Instances[0].InstanceId)
	b := aws.ToString(runOne(t, f, nil).Instances[0].InstanceId)

	_, err := f.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{a, "i-0123456789abcdef0"}})
	wantCode(t, err, "InvalidInstanceID.NotFound")
	if got := describeOne(t, f, a).State.Name; got != types.InstanceStateNameRunning {
		t.Fatalf("a failed TerminateInstances left %s %s", a, got)
	}

	out := must(f.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{a}}))(t)
	ch := out.TerminatingInstances[0]
	if ch.PreviousState.Name != types.InstanceStateNameRunning || ch.CurrentState.Name != types.InstanceStateNameShuttingDown {
		t.Errorf("state change %s → %s", ch.PreviousState.Name, ch.CurrentState.Name)
	}
	if got := describeOne(t, f, a).State.Name; got != types.InstanceStateNameTerminated {
		t.Errorf("after terminate: %s", got)
	}
	again := must(f.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{a, b}}))(t)
	if s := again.TerminatingInstances[0]; s.PreviousState.Name != types.InstanceStateNameTerminated ||
		s.CurrentState.Name != types.InstanceStateNameTerminated {
		t.Errorf("terminating again: %s → %s", s.PreviousState.Name, s.CurrentState.Name)
	}
	// Other regions do not see the instance.
	us := client(f.srv, "us-east-1", testKey, testSecret)
	_, err = us.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{a}})
	wantCode(t, err, "InvalidInstanceID.NotFound")
}

func TestShutdownDelay(t *testing.T) {
	t.Parallel()
	f := setup(t, func(o *Options) { o.BootDelay = time.Minute; o.ShutdownDelay = 30 * time.Second })
	id := aws.ToString(runOne(t, f, nil).Instances[0].InstanceId)
	if got := describeOne(t, f, id).State.Name; got != types.InstanceStateNamePending {
		t.Fatalf("before BootDelay: %s", got)
	}
	f.clock.Advance(time.Minute)
	if got := describeOne(t, f, id).State.Name; got != types.InstanceStateNameRunning {
		t.Fatalf("after BootDelay: %s", got)
	}
	must(f.ec2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}))(t)
	if got := describeOne(t, f, id).State.Name; got != types.InstanceStateNameShuttingDown {
		t.Fatalf("before ShutdownDelay: %s", got)
	}
	f.clock.Advance(30 * time.Second)
	got := describeOne(t, f, id)
	if got.State.Name != types.InstanceStateNameTerminated || aws.ToString(got.StateReason.Code) != "Client.UserInitiatedShutdown" {
		t.Fatalf("after ShutdownDelay: %s (%v)", got.State.Name, got.StateReason)
	}
}

func TestDescribeFiltersAndPagination(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	for i := range 7 {
		runOne(t, f, map[string]string{"dstack:server": "s1", "n": fmt.Sprint(i)})
	}
	other := runOne(t, f, map[string]string{"dstack:server": "s2"})
	spot := runOne(t, f, map[string]string{"dstack:server": "s1"}, func(in *ec2.RunInstancesInput) {
		in.InstanceMarketOptions = &types.InstanceMarketOptionsRequest{MarketType: types.MarketTypeSpot}
		in.InstanceType = "c5.large"
	})
	must(f.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{aws.ToString(other.Instances[0].InstanceId)}}))(t)

	count := func(filters ...types.Filter) (n, pages int) {
		t.Helper()
		p := ec2.NewDescribeInstancesPaginator(f.ec2, &ec2.DescribeInstancesInput{Filters: filters, MaxResults: aws.Int32(5)})
		for p.HasMorePages() {
			page := must(p.NextPage(ctx))(t)
			pages++
			for _, r := range page.Reservations {
				n += len(r.Instances)
			}
		}
		return n, pages
	}
	filter := func(name string, values ...string) types.Filter {
		return types.Filter{Name: aws.String(name), Values: values}
	}
	tests := []struct {
		name    string
		filters []types.Filter
		want    int
	}{
		{"all", nil, 9},
		{"tag", []types.Filter{filter("tag:dstack:server", "s1")}, 8},
		{"tag wildcard", []types.Filter{filter("tag:dstack:server", "s*")}, 9},
		{"tag-key", []types.Filter{filter("tag-key", "n")}, 7},
		{"state", []types.Filter{filter("instance-state-name", "pending", "running")}, 8},
		{"terminated", []types.Filter{filter("instance-state-name", "terminated")}, 1},
		{"type and tag", []types.Filter{filter("instance-type", "c5.large"), filter("tag:dstack:server", "s1")}, 1},
		{"lifecycle", []types.Filter{filter("instance-lifecycle", "spot")}, 1},
		{"request", []types.Filter{filter("spot-instance-request-id", aws.ToString(spot.Instances[0].SpotInstanceRequestId))}, 1},
		{"id", []types.Filter{filter("instance-id", aws.ToString(other.Instances[0].InstanceId))}, 1},
		{"zone", []types.Filter{filter("availability-zone", "eu-west-1b")}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, pages := count(tt.filters...)
			if n != tt.want {
				t.Errorf("%d instances, want %d", n, tt.want)
			}
			if want := max(1, (tt.want+4)/5); pages != want {
				t.Errorf("%d pages, want %d", pages, want)
			}
		})
	}

	_, err := f.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{filter("color", "red")}})
	wantCode(t, err, "InvalidParameterValue")
	_, err = f.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(2)})
	wantCode(t, err, "InvalidParameterValue")
	_, err = f.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
	wantCode(t, err, "InvalidInstanceID.NotFound")
}

func TestTags(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	id := aws.ToString(runOne(t, f, map[string]string{"a": "1", "b": "2"}).Instances[0].InstanceId)
	must(f.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id},
		Tags: []types.Tag{{Key: aws.String("c"), Value: aws.String("3")}, {Key: aws.String("a"), Value: aws.String("one")}}}))(t)
	must(f.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{id},
		Tags: []types.Tag{{Key: aws.String("b"), Value: aws.String("not-2")}, {Key: aws.String("c")}}}))(t)
	got := tagMap(describeOne(t, f, id).Tags)
	if want := map[string]string{"a": "one", "b": "2"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tags %v, want %v", got, want)
	}
	_, err := f.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id, "i-0123456789abcdef0"},
		Tags: []types.Tag{{Key: aws.String("x"), Value: aws.String("y")}}})
	wantCode(t, err, "InvalidInstanceID.NotFound")
	if _, ok := tagMap(describeOne(t, f, id).Tags)["x"]; ok {
		t.Error("a failed CreateTags tagged the good resource")
	}
}

func TestSpotRequests(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	spot := func(in *ec2.RunInstancesInput) {
		in.InstanceMarketOptions = &types.InstanceMarketOptionsRequest{MarketType: types.MarketTypeSpot}
	}
	a := runOne(t, f, nil, spot).Instances[0]
	b := runOne(t, f, nil, spot).Instances[0]

	out := must(f.ec2.CancelSpotInstanceRequests(ctx, &ec2.CancelSpotInstanceRequestsInput{
		SpotInstanceRequestIds: []string{aws.ToString(a.SpotInstanceRequestId)}}))(t)
	if out.CancelledSpotInstanceRequests[0].State != types.CancelSpotInstanceRequestStateCancelled {
		t.Errorf("cancel: %s", out.CancelledSpotInstanceRequests[0].State)
	}
	if got := describeOne(t, f, aws.ToString(a.InstanceId)).State.Name; got != types.InstanceStateNameRunning {
		t.Errorf("instance of a cancelled request: %s, want running", got)
	}
	_, err := f.ec2.CancelSpotInstanceRequests(ctx, &ec2.CancelSpotInstanceRequestsInput{SpotInstanceRequestIds: []string{"sir-nothere"}})
	wantCode(t, err, "InvalidSpotInstanceRequestID.NotFound")

	must(f.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{aws.ToString(b.InstanceId)}}))(t)
	states := map[string]string{}
	for _, r := range f.srv.SpotRequests() {
		states[r.InstanceID] = r.State
	}
	if states[aws.ToString(a.InstanceId)] != "cancelled" || states[aws.ToString(b.InstanceId)] != "closed" {
		t.Errorf("spot request states %v", states)
	}
	reqs := must(f.ec2.DescribeSpotInstanceRequests(ctx, &ec2.DescribeSpotInstanceRequestsInput{
		Filters: []types.Filter{{Name: aws.String("state"), Values: []string{"closed"}}}}))(t)
	if len(reqs.SpotInstanceRequests) != 1 || aws.ToString(reqs.SpotInstanceRequests[0].Status.Code) != "instance-terminated-by-user" {
		t.Errorf("closed requests %+v", reqs.SpotInstanceRequests)
	}
}

func TestKillAndAddInstance(t *testing.T) {
	t.Parallel()
	var terminated []string
	done := make(chan string, 4)
	f := setup(t, func(o *Options) { o.Terminated = func(in Instance) { done <- in.ID } })
	id := f.srv.AddInstance(Instance{Region: "eu-west-1", InstanceType: "m5.large", Spot: true,
		Tags: map[string]string{"dstack:server": "old"}})
	got := describeOne(t, f, id)
	if got.State.Name != types.InstanceStateNameRunning || tagMap(got.Tags)["dstack:server"] != "old" ||
		aws.ToString(got.SpotInstanceRequestId) == "" {
		t.Fatalf("added instance %+v", got)
	}
	f.srv.Kill(id)
	if got := describeOne(t, f, id).State.Name; got != types.InstanceStateNameTerminated {
		t.Errorf("killed instance: %s", got)
	}
	select {
	case x := <-done:
		terminated = append(terminated, x)
	case <-time.After(10 * time.Second):
		t.Fatal("Terminated not called")
	}
	if !slices.Equal(terminated, []string{id}) {
		t.Errorf("Terminated called for %v", terminated)
	}
	if r := f.srv.SpotRequests(); len(r) != 1 || r[0].State != "closed" {
		t.Errorf("spot requests %+v", r)
	}
}
