package aws

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"golang.org/x/time/rate"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/ec2fake"
)

func TestLaunchOnDemandOne(t *testing.T) {
	t.Parallel()
	e := setup(t)
	req := request("m5.large", false, 1)
	got := e.mustLaunch(req)
	if len(got) != 1 {
		t.Fatalf("launched %d instances, want 1", len(got))
	}
	in := got[0]
	want := backend.Tags{ServerID: testServer, LimitID: "lim-1", RecordID: req.Instances[0].RecordID, LaunchKey: req.IdempotencyKey}
	if in.Tags != want || in.Offer != req.Offer.Key() || in.CloudID == "" || in.LaunchedAt.IsZero() {
		t.Errorf("Launch returned %+v; want tags %+v, offer %s", in, want, req.Offer.Key())
	}
	fi := e.instance(in.CloudID)
	for k, v := range map[string]string{
		backend.TagServerID: testServer, backend.TagLimitID: "lim-1", backend.TagLaunchKey: req.IdempotencyKey,
		backend.TagRecordID: req.Instances[0].RecordID, "Name": "dstack-" + req.Instances[0].RecordID,
	} {
		if fi.Tags[k] != v {
			t.Errorf("instance tag %s = %q, want %q", k, fi.Tags[k], v)
		}
		if fi.VolumeTags[k] != v {
			t.Errorf("volume tag %s = %q, want %q", k, fi.VolumeTags[k], v)
		}
	}
	if fi.Spot || !fi.HTTPTokensRequired || !fi.MetadataTags || fi.ClientToken != req.IdempotencyKey || fi.LaunchIndex != 0 {
		t.Errorf("instance %+v: want on-demand, IMDSv2 required, tags in metadata, client token %s", fi, req.IdempotencyKey)
	}
	if !strings.Contains(fi.UserData, "token='"+req.Instances[0].JoinToken+"'") || !strings.Contains(fi.UserData, "server='"+testURL+"'") {
		t.Errorf("the user data of a one-instance launch lacks its token or the server:\n%s", fi.UserData)
	}
	if _, ok := fi.Tags[TagJoinToken]; ok {
		t.Error("a one-instance launch put its token in a tag too")
	}
	if n := e.fake.Calls("CreateTags"); n != 0 {
		t.Errorf("CreateTags called %d times for a one-instance launch, want 0", n)
	}
	var group ec2fake.SecurityGroup
	for _, g := range e.fake.SecurityGroups() {
		if g.Name == testServer {
			group = g
		}
	}
	if group.ID == "" || len(fi.SecurityGroupIDs) != 1 || fi.SecurityGroupIDs[0] != group.ID {
		t.Errorf("instance groups %v; want the server's group %+v", fi.SecurityGroupIDs, group)
	}
	if group.Tags[backend.TagServerID] != testServer || len(group.Ingress) != 0 {
		t.Errorf("the server's group %+v: want tagged with the server and no ingress", group)
	}
}

func TestLaunchSpotMany(t *testing.T) {
	t.Parallel()
	e := setup(t)
	req := request("g4dn.xlarge", true, 3)
	got := e.mustLaunch(req)
	if len(got) != 3 {
		t.Fatalf("launched %d instances, want 3", len(got))
	}
	for i, in := range got {
		spec := req.Instances[i]
		if in.Tags.RecordID != spec.RecordID || !in.Offer.Spot {
			t.Errorf("instance %d is %+v; want record %s, spot", i, in, spec.RecordID)
		}
		fi := e.instance(in.CloudID)
		if fi.LaunchIndex != i {
			t.Errorf("instance %d has launch index %d", i, fi.LaunchIndex)
		}
		if !fi.Spot || fi.SpotRequestID == "" {
			t.Errorf("instance %s is not spot: %+v", in.CloudID, fi)
		}
		for k, v := range map[string]string{
			backend.TagRecordID: spec.RecordID, TagJoinToken: spec.JoinToken, "Name": "dstack-" + spec.RecordID,
			backend.TagServerID: testServer, backend.TagLaunchKey: req.IdempotencyKey,
		} {
			if fi.Tags[k] != v {
				t.Errorf("instance %d: tag %s = %q, want %q", i, k, fi.Tags[k], v)
			}
		}
		if fi.VolumeTags[backend.TagServerID] != testServer || fi.VolumeTags[TagJoinToken] != "" {
			t.Errorf("instance %d: volume tags %v: want the server's, no token", i, fi.VolumeTags)
		}
		for _, s := range req.Instances {
			if strings.Contains(fi.UserData, s.JoinToken) {
				t.Errorf("instance %d's user data holds a join token, which every instance of the launch sees", i)
			}
		}
		if !fi.MetadataTags || !fi.HTTPTokensRequired {
			t.Errorf("instance %d cannot read its tags through IMDSv2: %+v", i, fi)
		}
	}
	reqs := e.fake.SpotRequests()
	if len(reqs) != 3 {
		t.Fatalf("%d spot requests, want 3", len(reqs))
	}
	for _, r := range reqs {
		if r.Tags[backend.TagServerID] != testServer || r.Tags[backend.TagLaunchKey] != req.IdempotencyKey {
			t.Errorf("spot request %s tags %v: want the launch's", r.ID, r.Tags)
		}
	}
}

func TestLaunchImages(t *testing.T) {
	t.Parallel()
	e := setup(t)
	images := map[string]string{}
	for _, itype := range []string{"m5.large", "c5.large", "m6g.large", "g5.xlarge"} {
		got := e.mustLaunch(request(itype, false, 1))
		images[itype] = e.instance(got[0].CloudID).ImageID
	}
	if images["m5.large"] != images["c5.large"] {
		t.Errorf("two amd64 types got different images: %v", images)
	}
	if images["m5.large"] == images["m6g.large"] || images["m5.large"] == images["g5.xlarge"] {
		t.Errorf("arm64 or GPU types got the amd64 image: %v", images)
	}
	described := e.fake.Calls("DescribeImages")
	for _, itype := range []string{"m5.xlarge", "m6g.large", "g4dn.xlarge"} {
		e.mustLaunch(request(itype, false, 1))
	}
	if n := e.fake.Calls("DescribeImages"); n != described {
		t.Errorf("DescribeImages called %d more times for kinds of image already chosen (cached)", n-described)
	}

	// Configured images win.
	b := e.newBackend(setupOpts{cfg: func(c *Config) { c.AMI, c.GPUAMI = images["m5.large"], images["g5.xlarge"] }})
	got, err := b.Launch(ctx(t), request("g4dn.xlarge", false, 1))
	if err != nil {
		t.Fatal(err)
	}
	if id := e.instance(got[0].CloudID).ImageID; id != images["g5.xlarge"] {
		t.Errorf("GPU type launched from %s, want the configured %s", id, images["g5.xlarge"])
	}
	// An amd64 image configured for every non-GPU type cannot run arm64.
	_, err = b.Launch(ctx(t), request("m6g.large", false, 1))
	assertKind(t, err, backend.ErrUnsupported, "ImageArchitecture")
	bad := e.newBackend(setupOpts{cfg: func(c *Config) { c.AMI = "ami-00000000000000bad" }})
	_, err = bad.Launch(ctx(t), request("m5.large", false, 1))
	assertKind(t, err, backend.ErrInvalid, "InvalidAMIID.NotFound")
}

func TestLaunchPartialCapacity(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.fake.SetCapacity("us-east-1", "c5.large", false, 2)
	req := request("c5.large", false, 4)
	got := e.mustLaunch(req)
	if len(got) != 2 {
		t.Fatalf("launched %d, want the 2 EC2 had room for", len(got))
	}
	for i, in := range got {
		if in.Tags.RecordID != req.Instances[i].RecordID {
			t.Errorf("instance %d is record %s, want %s (launch index order)", i, in.Tags.RecordID, req.Instances[i].RecordID)
		}
	}
	// No room at all: the offer is unavailable.
	_, err := e.b.Launch(ctx(t), request("c5.large", false, 1))
	be := assertKind(t, err, backend.ErrNoCapacity, "InsufficientInstanceCapacity")
	if !strings.Contains(be.Reason, "capacity") {
		t.Errorf("reason %q is not AWS's message", be.Reason)
	}
}

func TestLaunchIdempotentAfterLostResponse(t *testing.T) {
	t.Parallel()
	e := setup(t)
	req := request("m5.xlarge", false, 2)
	e.fake.LoseResponse("RunInstances", testAttempts) // every attempt of the first call
	_, err := e.b.Launch(ctx(t), req)
	if err == nil {
		t.Fatal("Launch succeeded with its answers lost")
	}
	if backend.Unavailable(err) {
		t.Fatalf("a lost answer is taken for a refusal: %v", err)
	}
	if n := len(e.fake.Instances()); n != 2 {
		t.Fatalf("the cloud has %d instances after the lost call, want 2", n)
	}
	got := e.mustLaunch(req)
	if len(got) != 2 {
		t.Fatalf("the repeated launch returned %d instances, want 2", len(got))
	}
	all := e.fake.Instances()
	if len(all) != 2 {
		t.Fatalf("the repeated launch launched more: %d instances", len(all))
	}
	for i, in := range got {
		if in.CloudID != all[i].ID || e.instance(in.CloudID).Tags[TagJoinToken] != req.Instances[i].JoinToken {
			t.Errorf("instance %d: %s, want %s tagged with its token", i, in.CloudID, all[i].ID)
		}
	}

	// A lost answer the SDK's own retry recovers from.
	req2 := request("m5.xlarge", false, 2)
	e.fake.LoseResponse("RunInstances", 1)
	if got := e.mustLaunch(req2); len(got) != 2 || len(e.fake.Instances()) != 4 {
		t.Errorf("after one lost answer: %d returned, %d in the cloud; want 2 and 4", len(got), len(e.fake.Instances()))
	}
}

func TestLaunchErrors(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, tc := range []struct {
		code  string
		kind  error
		calls int // RunInstances calls made (the SDK may resend one whose answer it could not read)
	}{
		{"InsufficientInstanceCapacity", backend.ErrNoCapacity, 1},
		{"InsufficientCapacity", backend.ErrNoCapacity, 1},
		{"SpotMaxPriceTooLow", backend.ErrNoCapacity, 1},
		{"capacity-not-available", backend.ErrNoCapacity, 1},
		{"InstanceLimitExceeded", backend.ErrQuota, 1},
		{"VcpuLimitExceeded", backend.ErrQuota, 1},
		{"MaxSpotInstanceCountExceeded", backend.ErrQuota, 1},
		{"InsufficientFreeAddressesInSubnet", backend.ErrQuota, 1},
		{"Unsupported", backend.ErrUnsupported, 1},
		{"InvalidInstanceType", backend.ErrUnsupported, 1},
		{"UnsupportedOperation", backend.ErrUnsupported, 1},
		{"RequestLimitExceeded", backend.ErrThrottled, testAttempts}, // every attempt the SDK makes
		{"AuthFailure", backend.ErrInvalid, 1},
		{"UnauthorizedOperation", backend.ErrInvalid, 1},
		{"InvalidAMIID.NotFound", backend.ErrInvalid, 1},
		{"InvalidAMIID.Malformed", backend.ErrInvalid, 1},
		{"IdempotentParameterMismatch", backend.ErrInvalid, 1},
		{"InvalidParameterCombination", backend.ErrInvalid, 1},
		{"InvalidParameterValue", backend.ErrInvalid, invalidAttempts},
		{"InternalError", nil, testAttempts},
	} {
		t.Run(tc.code, func(t *testing.T) {
			e.fake.ClearFaults()
			before, sleeps := e.fake.Calls("RunInstances"), e.sleepCount()
			msg := "AWS says no: " + tc.code
			e.fake.Fail("RunInstances", tc.code, msg, -1)
			got, err := e.b.Launch(ctx(t), request("m5.large", true, 2))
			if len(got) != 0 {
				t.Errorf("a refused launch returned %v", got)
			}
			be := assertKind(t, err, tc.kind, tc.code)
			if be.Reason != msg || be.Op != "launch" {
				t.Errorf("error %+v: want op launch and AWS's message %q", be, msg)
			}
			if tc.kind == nil && be.Kind != nil {
				t.Errorf("%s has kind %v, want none", tc.code, be.Kind)
			}
			if n := e.fake.Calls("RunInstances") - before; n < tc.calls || (tc.calls == 1 && n > 2) || (tc.calls == testAttempts && n != testAttempts) {
				t.Errorf("RunInstances called %d times, want %d", n, tc.calls)
			}
			if tc.code == "InvalidParameterValue" && e.sleepCount()-sleeps != invalidAttempts-1 {
				t.Errorf("%d pauses between the InvalidParameterValue tries, want %d", e.sleepCount()-sleeps, invalidAttempts-1)
			}
		})
	}
}

func TestLaunchQuotaFromCloud(t *testing.T) {
	t.Parallel()
	e := setup(t, setupOpts{fake: func(o *ec2fake.Options) { o.OnDemandVCPULimit = 4 }})
	e.mustLaunch(request("m5.xlarge", false, 1))
	_, err := e.b.Launch(ctx(t), request("m5.large", false, 1))
	assertKind(t, err, backend.ErrQuota, "VcpuLimitExceeded")
}

func TestLaunchThrottled(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.fake.Throttle("RunInstances", 2)
	if got := e.mustLaunch(request("m5.large", false, 1)); len(got) != 1 {
		t.Fatalf("launched %d", len(got))
	}
	if n := e.fake.Calls("RunInstances"); n < 3 {
		t.Errorf("RunInstances called %d times through 2 throttles, want 3", n)
	}
	e.fake.Throttle("RunInstances", -1)
	_, err := e.b.Launch(ctx(t), request("m5.large", false, 1))
	assertKind(t, err, backend.ErrThrottled, "RequestLimitExceeded")
}

func TestLaunchInvalidParameterThenOK(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.fake.Fail("RunInstances", "InvalidParameterValue", "Value (dstack) for parameter iamInstanceProfile.name is invalid.", 2)
	if got := e.mustLaunch(request("m5.large", false, 1)); len(got) != 1 {
		t.Fatalf("launched %d", len(got))
	}
	if e.sleepCount() != 2 {
		t.Errorf("%d pauses, want 2", e.sleepCount())
	}
}

func TestLaunchRefusedBeforeCalling(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for name, mod := range map[string]func(*backend.LaunchRequest){
		"other backend":  func(r *backend.LaunchRequest) { r.Offer.Backend = "local" },
		"no instances":   func(r *backend.LaunchRequest) { r.Instances = nil },
		"long key":       func(r *backend.LaunchRequest) { r.IdempotencyKey = strings.Repeat("k", 65) },
		"no server":      func(r *backend.LaunchRequest) { r.ServerID = "" },
		"relative URL":   func(r *backend.LaunchRequest) { r.ServerURL = "/api" },
		"twice a record": func(r *backend.LaunchRequest) { r.Instances[1].RecordID = r.Instances[0].RecordID },
		"no token":       func(r *backend.LaunchRequest) { r.Instances[0].JoinToken = "" },
		"bad region":     func(r *backend.LaunchRequest) { r.Offer.Region = "moon" },
	} {
		req := request("m5.large", false, 2)
		mod(&req)
		_, err := e.b.Launch(ctx(t), req)
		if !errorsIsInvalid(err) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	// Sold on demand only.
	_, err := e.b.Launch(ctx(t), request("p3.2xlarge", true, 1))
	assertKind(t, err, backend.ErrUnsupported, "Unsupported")
	if n := e.fake.Calls("RunInstances"); n != 0 {
		t.Errorf("RunInstances called %d times for requests refused up front", n)
	}
}

func errorsIsInvalid(err error) bool {
	var be *backend.Error
	return errors.As(err, &be) && be.Kind == backend.ErrInvalid //nolint:errorlint // compares kinds, both sentinels
}

func TestSecurityGroupOncePerRegion(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.b.Launch(ctx(t), request("t3.micro", false, 1)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	e.mustLaunch(requestIn("eu-west-1", "t3.micro", false, 1))
	e.mustLaunch(request("t3.micro", true, 1))
	groups := func() map[string]int {
		byRegion := map[string]int{}
		for _, g := range e.fake.SecurityGroups() {
			if g.Name == testServer {
				byRegion[g.Region]++
			}
		}
		return byRegion
	}
	if g := groups(); len(g) != 2 || g["us-east-1"] != 1 || g["eu-west-1"] != 1 {
		t.Errorf("the server's groups by region: %v, want one in each of us-east-1 and eu-west-1", g)
	}
	// Another backend of the same server (a restart) finds the group.
	created := e.fake.Calls("CreateSecurityGroup")
	b := e.newBackend()
	if _, err := b.Launch(ctx(t), request("t3.micro", false, 1)); err != nil {
		t.Fatal(err)
	}
	if n := e.fake.Calls("CreateSecurityGroup"); n != created {
		t.Errorf("a restarted backend tried to create the group again (%d calls)", n-created)
	}
}

// gate lets `open` calls through at once and holds the rest until let;
// each call is announced on arrived.
type gate struct {
	tokens  chan struct{}
	arrived chan struct{}
}

func newGate(open int) *gate {
	g := &gate{tokens: make(chan struct{}, 100), arrived: make(chan struct{}, 100)}
	g.let(open)
	return g
}

func (g *gate) let(n int) {
	for range n {
		g.tokens <- struct{}{}
	}
}

func (g *gate) Wait(ctx context.Context) error {
	g.arrived <- struct{}{}
	select {
	case <-g.tokens:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestLaunchPacing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	g := newGate(0)
	e.b.limiter = g
	results := make(chan error, 8)
	for i := range 8 {
		region := "us-east-1"
		if i%2 == 1 {
			region = "eu-west-1" // one bucket for all regions
		}
		go func() {
			_, err := e.b.Launch(ctx(t), requestIn(region, "t3.micro", false, 1))
			results <- err
		}()
	}
	// All eight reach the pacer, and none calls EC2 without a token.
	for range 8 {
		<-g.arrived
	}
	if n := e.fake.Calls("RunInstances"); n != 0 {
		t.Fatalf("RunInstances called %d times with no token", n)
	}
	// A burst of five: five attempts go; each either ends its launch or,
	// should the SDK send again, comes back to the pacer.
	g.let(5)
	done := 0
	for attempts := 0; attempts < 5; attempts++ {
		select {
		case err := <-results:
			if err != nil {
				t.Fatal(err)
			}
			done++
		case <-g.arrived:
		}
	}
	if n := e.fake.Calls("RunInstances"); n != 5 {
		t.Errorf("RunInstances called %d times with 5 tokens, want 5", n)
	}
	// The rest wait, and go when tokens come: waiting, not failing.
	g.let(20)
	for ; done < 8; done++ {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if used, n := 25-len(g.tokens), e.fake.Calls("RunInstances"); used != n {
		t.Errorf("%d RunInstances calls for %d tokens taken", n, used)
	}

	// A throttled attempt's retry waits for the pacer too.
	g2 := newGate(10)
	e.b.limiter = g2
	before := e.fake.Calls("RunInstances")
	e.fake.Throttle("RunInstances", 1)
	e.mustLaunch(request("t3.micro", false, 1))
	if used, n := 10-len(g2.tokens), e.fake.Calls("RunInstances")-before; used != n || n < 2 {
		t.Errorf("%d attempts (one throttled) took %d launch tokens", n, used)
	}

	// The default pacer is EC2's bucket.
	b, err := New(Config{AccessKeyID: "a", SecretAccessKey: "b", Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if l := b.limiter.(*rate.Limiter); l.Limit() != 2 || l.Burst() != 5 {
		t.Errorf("default pacing %v/s burst %d, want 2/s burst 5", l.Limit(), l.Burst())
	}
}

func TestLaunchTagging(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// EC2 does not know a new instance for a moment: tagging tries again.
	e.fake.Fail("CreateTags", "InvalidInstanceID.NotFound", "The instance ID 'i-x' does not exist", 2)
	req := request("m5.large", false, 2)
	got := e.mustLaunch(req)
	for i, in := range got {
		if tok := e.instance(in.CloudID).Tags[TagJoinToken]; tok != req.Instances[i].JoinToken {
			t.Errorf("instance %d has token tag %q", i, tok)
		}
	}
	if e.sleepCount() != 2 {
		t.Errorf("%d pauses between tagging tries, want 2", e.sleepCount())
	}
	// Instances that cannot get their tokens could never join: they are
	// terminated and the launch fails.
	e.fake.Fail("CreateTags", "UnauthorizedOperation", "You are not authorized to perform this operation.", -1)
	got, err := e.b.Launch(ctx(t), request("m5.large", false, 2))
	assertKind(t, err, backend.ErrInvalid, "UnauthorizedOperation")
	if len(got) != 0 {
		t.Errorf("returned %v", got)
	}
	alive := 0
	for _, in := range e.fake.Instances() {
		if in.State != "terminated" && in.State != "shutting-down" {
			alive++
		}
	}
	if alive != 2 {
		t.Errorf("%d instances alive, want the first launch's 2 (the untagged ones terminated)", alive)
	}
}

// TestListNamesRecordsOfALaunchWhoseAnswerWasLost: the instances of a
// launch of several whose per-instance tags never came are still listed
// with their records, by launch index, so the server adopts them.
func TestListNamesRecordsOfALaunchWhoseAnswerWasLost(t *testing.T) {
	t.Parallel()
	e := setup(t)
	req := request("m5.xlarge", false, 3)
	e.fake.LoseResponse("RunInstances", testAttempts)
	if _, err := e.b.Launch(ctx(t), req); err == nil {
		t.Fatal("Launch succeeded with its answers lost")
	}
	listed, err := e.newBackend().List(ctx(t), req.ServerID)
	if err != nil {
		t.Fatal(err)
	}
	byRecord := map[string]string{}
	for _, in := range listed {
		byRecord[in.Tags.RecordID] = in.CloudID
	}
	for i, spec := range req.Instances {
		if byRecord[spec.RecordID] == "" {
			t.Errorf("record %d (%s) not named by any listed instance: %+v", i, spec.RecordID, listed)
		}
	}
	for _, in := range e.fake.Instances() {
		if want := req.Instances[in.LaunchIndex].RecordID; byRecord[want] != in.ID {
			t.Errorf("instance %s (launch index %d) listed as %q", in.ID, in.LaunchIndex, want)
		}
	}
}

func TestRecordsFitTheLaunchTag(t *testing.T) {
	t.Parallel()
	specs := func(n, idLen int) []backend.InstanceSpec {
		out := make([]backend.InstanceSpec, n)
		for i := range out {
			out[i].RecordID = strings.Repeat("a", idLen)
		}
		return out
	}
	for _, c := range []struct{ n, idLen, want int }{
		{1, 300, 1}, {3, 16, 3}, {15, 16, 15}, {16, 16, 15}, {40, 16, 15}, {2, 200, 1},
	} {
		if got := recordsFit(specs(c.n, c.idLen)); got != c.want {
			t.Errorf("recordsFit(%d ids of %d) = %d, want %d", c.n, c.idLen, got, c.want)
		}
	}
}

// TestLaunchRepeatedLaunchIndex: an endpoint that gives two instances of
// one answer the same AmiLaunchIndex. The first keeps the spec; the repeat
// is an extra: terminated at once, logged, never tagged with a join token
// or a record, and not returned.
func TestLaunchRepeatedLaunchIndex(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.fake.RepeatLaunchIndex(1)
	req := request("m5.large", false, 3)
	got := e.mustLaunch(req)
	if len(got) != 2 {
		t.Fatalf("Launch returned %d instances, want 2 (the repeat left out)", len(got))
	}
	returned := map[string]bool{}
	records := map[string]bool{}
	for _, in := range got {
		returned[in.CloudID] = true
		if records[in.Tags.RecordID] {
			t.Errorf("two returned instances name record %s", in.Tags.RecordID)
		}
		records[in.Tags.RecordID] = true
	}
	if !records[req.Instances[0].RecordID] || !records[req.Instances[2].RecordID] || records[req.Instances[1].RecordID] {
		t.Errorf("returned records %v; want specs 0 and 2 (the repeat took no spec)", records)
	}
	var extras []ec2fake.Instance
	tokens := map[string]string{}
	for _, fi := range e.fake.Instances() {
		if tok := fi.Tags[TagJoinToken]; tok != "" {
			if other, ok := tokens[tok]; ok {
				t.Errorf("instances %s and %s carry the same join token", other, fi.ID)
			}
			tokens[tok] = fi.ID
		}
		if !returned[fi.ID] {
			extras = append(extras, fi)
		}
	}
	if len(extras) != 1 {
		t.Fatalf("the cloud has %d instances besides those returned, want 1 (the repeat)", len(extras))
	}
	x := extras[0]
	if x.State != "terminated" && x.State != "shutting-down" {
		t.Errorf("the repeat %s is %s, want terminated", x.ID, x.State)
	}
	if x.Tags[TagJoinToken] != "" || x.Tags[backend.TagRecordID] != "" {
		t.Errorf("the repeat %s was tagged %v; want no token and no record", x.ID, x.Tags)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "same launch index") {
		t.Errorf("no warning names the repeated launch index:\n%s", logs)
	}
}

// TestSecurityGroupName: the group is named dstack-<server ID> with the
// prefix once (server IDs start with "dstack-"), whatever the server ID;
// a server that has a group of the doubled name from before keeps it.
func TestSecurityGroupName(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ server, want string }{
		{"dstack-0123abcd", "dstack-0123abcd"},
		{"srv7", "dstack-srv7"},
	} {
		if got := groupName(tt.server); got != tt.want {
			t.Errorf("groupName(%q) = %q, want %q", tt.server, got, tt.want)
		}
	}

	e := setup(t)
	fresh := request("t3.micro", false, 1)
	fi := e.instance(e.mustLaunch(fresh)[0].CloudID)
	var names []string
	for _, g := range e.fake.SecurityGroups() {
		if g.Tags[backend.TagServerID] == testServer {
			names = append(names, g.Name)
			if len(fi.SecurityGroupIDs) != 1 || fi.SecurityGroupIDs[0] != g.ID {
				t.Errorf("instance groups %v, want %s", fi.SecurityGroupIDs, g.ID)
			}
		}
	}
	if len(names) != 1 || names[0] != testServer || strings.HasPrefix(names[0], "dstack-dstack-") {
		t.Errorf("the server's groups %v, want one named %s", names, testServer)
	}

	// A group of the doubled name in another region, made by an earlier
	// version: it is used, and no second group is made.
	c := e.b.client("eu-west-1")
	out, err := c.CreateSecurityGroup(ctx(t), &ec2.CreateSecurityGroupInput{
		GroupName: awssdk.String("dstack-" + testServer), Description: awssdk.String("earlier"),
	})
	if err != nil {
		t.Fatal(err)
	}
	created := e.fake.Calls("CreateSecurityGroup")
	old := e.instance(e.mustLaunch(requestIn("eu-west-1", "t3.micro", false, 1))[0].CloudID)
	if len(old.SecurityGroupIDs) != 1 || old.SecurityGroupIDs[0] != awssdk.ToString(out.GroupId) {
		t.Errorf("instance groups %v, want the earlier group %s", old.SecurityGroupIDs, awssdk.ToString(out.GroupId))
	}
	if n := e.fake.Calls("CreateSecurityGroup"); n != created {
		t.Errorf("%d more groups created beside the earlier one", n-created)
	}
}
