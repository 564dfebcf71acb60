package aws

import (
	"sort"
	"testing"
	"time"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/ec2fake"
)

// listed is List's answer by cloud ID.
func (e *env) listed(b *Backend) map[string]backend.Instance {
	e.t.Helper()
	got, err := b.List(ctx(e.t), testServer)
	if err != nil {
		e.t.Fatalf("List: %v", err)
	}
	m := map[string]backend.Instance{}
	for _, in := range got {
		if _, dup := m[in.CloudID]; dup {
			e.t.Errorf("List returned %s twice", in.CloudID)
		}
		m[in.CloudID] = in
	}
	return m
}

func TestList(t *testing.T) {
	t.Parallel()
	e := setup(t, setupOpts{fake: func(o *ec2fake.Options) {
		o.BootDelay = time.Minute
		o.ShutdownDelay = time.Minute
	}})
	req := request("m5.large", false, 2)
	ours := e.mustLaunch(req)
	spotReq := requestIn("eu-west-1", "c5.large", true, 1)
	ours = append(ours, e.mustLaunch(spotReq)...)
	ourTags := map[string]string{backend.TagServerID: testServer, backend.TagRecordID: "planted"}
	stopped := e.fake.AddInstance(ec2fake.Instance{Region: "us-east-1", InstanceType: "t3.micro", State: "stopped", Tags: ourTags})
	e.fake.AddInstance(ec2fake.Instance{Region: "us-east-1", Tags: map[string]string{backend.TagServerID: "dstack-other"}})
	e.fake.AddInstance(ec2fake.Instance{Region: "eu-west-1", Tags: map[string]string{"Name": "someone's"}})
	e.fake.AddInstance(ec2fake.Instance{Region: "us-east-1", State: "terminated", Tags: ourTags})

	got := e.listed(e.b)
	if len(got) != 4 {
		t.Fatalf("List returned %d instances, want our 3 launched and the stopped one: %v", len(got), got)
	}
	for i, in := range ours {
		l, ok := got[in.CloudID]
		if !ok {
			t.Fatalf("List lacks %s", in.CloudID)
		}
		fi := e.instance(in.CloudID)
		if l.State != backend.StatePending || l.Offer != in.Offer || l.Tags != in.Tags || !l.LaunchedAt.Equal(fi.LaunchTime) {
			t.Errorf("instance %d listed as %+v; launched as %+v at %v, pending", i, l, in, fi.LaunchTime)
		}
	}
	if l := got[stopped]; l.State != backend.StateGone || l.Tags.RecordID != "planted" || l.Offer.InstanceType != "t3.micro" || l.Offer.Spot {
		t.Errorf("the stopped instance is listed as %+v, want gone with its tags", l)
	}
	if !got[ours[2].CloudID].Offer.Spot || got[ours[2].CloudID].Offer.Region != "eu-west-1" {
		t.Errorf("the spot instance is listed as %+v", got[ours[2].CloudID])
	}

	e.clock.Advance(2 * time.Minute)
	got = e.listed(e.b)
	for _, in := range ours {
		if got[in.CloudID].State != backend.StateRunning {
			t.Errorf("%s is %s after booting, want running", in.CloudID, got[in.CloudID].State)
		}
	}
	if err := e.b.Terminate(ctx(t), []string{ours[0].CloudID}); err != nil {
		t.Fatal(err)
	}
	if s := e.listed(e.b)[ours[0].CloudID].State; s != backend.StateTerminating {
		t.Errorf("a shutting-down instance is listed %s, want terminating", s)
	}
	e.clock.Advance(2 * time.Minute)
	if l, ok := e.listed(e.b)[ours[0].CloudID]; ok {
		t.Errorf("a terminated instance is still listed: %+v", l)
	}

	// A restarted backend looks in its default region only, until a region
	// is used again.
	b := e.newBackend()
	if _, ok := e.listed(b)[ours[2].CloudID]; ok {
		t.Error("a new backend listed eu-west-1 without having used it")
	}
	if _, err := b.Offers(ctx(t), "eu-west-1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.listed(b)[ours[2].CloudID]; !ok {
		t.Error("after Offers in eu-west-1, List does not look there")
	}

	// A region that cannot be listed fails List: its instances are not gone.
	e.fake.Fail("DescribeInstances", "UnauthorizedOperation", "You are not authorized to perform this operation.", 1)
	_, err := e.b.List(ctx(t), testServer)
	assertKind(t, err, backend.ErrInvalid, "UnauthorizedOperation")
}

func TestListPaginated(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.b.pageSize = 5
	want := map[string]bool{}
	for range 3 {
		for _, in := range e.mustLaunch(request("t3.micro", false, 4)) {
			want[in.CloudID] = true
		}
	}
	var ids []string
	for id := range e.listed(e.b) {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) != len(want) {
		t.Errorf("listed %d of %d instances", len(ids), len(want))
	}
	if n := e.fake.Calls("DescribeInstances"); n < 3 {
		t.Errorf("12 instances listed in %d pages of 5, want 3", n)
	}
}

func TestTerminate(t *testing.T) {
	t.Parallel()
	e := setup(t)
	spot := e.mustLaunch(request("m5.large", true, 3))
	eu := e.mustLaunch(requestIn("eu-west-1", "m5.large", false, 1))
	ids := []string{spot[0].CloudID, "i-0123456789abcdef0", eu[0].CloudID, "not-an-id", spot[0].CloudID, "i-00000000000000bad"}
	if err := e.b.Terminate(ctx(t), ids); err != nil {
		t.Fatalf("Terminate with unknown IDs mixed in: %v", err)
	}
	for _, id := range []string{spot[0].CloudID, eu[0].CloudID} {
		if s := e.instance(id).State; s != "terminated" && s != "shutting-down" {
			t.Errorf("%s is %s after Terminate", id, s)
		}
	}
	for _, in := range spot[1:] {
		if s := e.instance(in.CloudID).State; s != "running" {
			t.Errorf("%s, not asked for, is %s", in.CloudID, s)
		}
	}
	for _, r := range e.fake.SpotRequests() {
		want := "active"
		if r.InstanceID == spot[0].CloudID {
			want = "cancelled"
		}
		if r.State != want {
			t.Errorf("spot request %s of %s is %s, want %s", r.ID, r.InstanceID, r.State, want)
		}
	}
	calls := e.fake.Calls("TerminateInstances")
	if err := e.b.Terminate(ctx(t), ids); err != nil {
		t.Fatalf("Terminate again: %v", err)
	}
	if err := e.b.Terminate(ctx(t), nil); err != nil {
		t.Fatal(err)
	}
	if n := e.fake.Calls("TerminateInstances") - calls; n > 4 {
		t.Errorf("terminating again took %d calls", n)
	}

	// A backend that never saw the instances finds them in the regions it
	// has used.
	b := e.newBackend()
	if err := b.Terminate(ctx(t), []string{spot[1].CloudID, "i-0fedcba987654321f"}); err != nil {
		t.Fatal(err)
	}
	if s := e.instance(spot[1].CloudID).State; s != "terminated" {
		t.Errorf("%s is %s after a new backend terminated it", spot[1].CloudID, s)
	}
}

func TestTerminateOneByOne(t *testing.T) {
	t.Parallel()
	e := setup(t)
	got := e.mustLaunch(request("t3.micro", false, 2))
	// A NotFound whose message names no ID: each is tried alone.
	e.fake.Fail("TerminateInstances", "InvalidInstanceID.NotFound", "The instance ID does not exist", 1)
	if err := e.b.Terminate(ctx(t), []string{got[0].CloudID, got[1].CloudID}); err != nil {
		t.Fatal(err)
	}
	for _, in := range got {
		if s := e.instance(in.CloudID).State; s != "terminated" {
			t.Errorf("%s is %s", in.CloudID, s)
		}
	}
	e.fake.Fail("TerminateInstances", "UnauthorizedOperation", "You are not authorized to perform this operation.", 1)
	err := e.b.Terminate(ctx(t), []string{e.mustLaunch(request("t3.micro", false, 1))[0].CloudID})
	assertKind(t, err, backend.ErrInvalid, "UnauthorizedOperation")
}

func TestNamedIDs(t *testing.T) {
	t.Parallel()
	ids := []string{"i-1", "i-12", "i-123"}
	for msg, want := range map[string][]string{
		"The instance IDs 'i-12, i-123' do not exist": {"i-12", "i-123"},
		"The instance ID 'i-1' does not exist":        {"i-1"},
		"Invalid id: \"i-12\"":                        {"i-12"},
		"The instance ID does not exist":              nil,
	} {
		got := namedIDs(msg, ids)
		if len(got) != len(want) {
			t.Errorf("namedIDs(%q) = %v, want %v", msg, got, want)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("namedIDs(%q) = %v, want %v", msg, got, want)
			}
		}
	}
}

// TestListCancelsOpenSpotRequestsLeftBehind: a spot request of this server
// left open with no instance (no capacity; the launch gave up) is
// cancelled by List once it is older than the grace; a young one, another
// server's, and an active one are left alone.
func TestListCancelsOpenSpotRequestsLeftBehind(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ours := map[string]string{backend.TagServerID: testServer}
	orphan := e.fake.AddSpotRequest(ec2fake.SpotRequest{Region: "us-east-1", Tags: ours})
	foreign := e.fake.AddSpotRequest(ec2fake.SpotRequest{Region: "us-east-1", Tags: map[string]string{backend.TagServerID: "another-server"}})
	e.clock.Advance(10 * time.Minute)
	young := e.fake.AddSpotRequest(ec2fake.SpotRequest{Region: "us-east-1", Tags: ours})
	if _, err := e.b.List(ctx(t), testServer); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{orphan: "cancelled", foreign: "open", young: "open"}
	for _, r := range e.fake.SpotRequests() {
		if w, ok := want[r.ID]; ok && r.State != w {
			t.Errorf("spot request %s is %s, want %s", r.ID, r.State, w)
		}
	}
}
