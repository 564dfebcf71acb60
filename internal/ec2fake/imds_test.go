package ec2fake

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func imdsClient(url string) *imds.Client {
	return imds.New(imds.Options{Endpoint: url, ClientEnableState: imds.ClientEnabled})
}

func metadata(t *testing.T, c *imds.Client, path string) (string, error) {
	t.Helper()
	out, err := c.GetMetadata(context.Background(), &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", err
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	return string(b), err
}

func TestIMDS(t *testing.T) {
	t.Parallel()
	boots := make(chan string, 8)
	f := setup(t, func(o *Options) {
		o.Boot = func(in Instance, url string) { boots <- in.ID + " " + url }
	})
	out := runOne(t, f, map[string]string{"dstack:runner": "r1"}, func(in *ec2.RunInstancesInput) {
		in.MaxCount = aws.Int32(2)
		in.UserData = aws.String(base64.StdEncoding.EncodeToString([]byte("#cloud-config\n")))
		in.MetadataOptions = &types.InstanceMetadataOptionsRequest{
			HttpTokens: types.HttpTokensStateRequired, InstanceMetadataTags: types.InstanceMetadataTagsStateEnabled,
		}
		in.InstanceMarketOptions = &types.InstanceMarketOptionsRequest{MarketType: types.MarketTypeSpot}
	})
	second := out.Instances[1]
	id := aws.ToString(second.InstanceId)
	url := f.srv.IMDSURL(id)
	if url == "" {
		t.Fatal("no IMDS URL")
	}
	for range 2 {
		select {
		case b := <-boots:
			if strings.HasPrefix(b, id+" ") && !strings.HasSuffix(b, " "+url) {
				t.Errorf("Boot got %q, want URL %s", b, url)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Boot not called")
		}
	}

	c := imdsClient(url)
	want := map[string]string{
		"instance-id":                 id,
		"ami-launch-index":            "1",
		"instance-type":               "m5.large",
		"placement/region":            "eu-west-1",
		"placement/availability-zone": "eu-west-1a",
		"instance-life-cycle":         "spot",
		"tags/instance/dstack:runner": "r1",
	}
	for path, w := range want {
		got, err := metadata(t, c, path)
		if err != nil || got != w {
			t.Errorf("%s = %q, %v; want %q", path, got, err, w)
		}
	}
	ud, err := c.GetUserData(context.Background(), &imds.GetUserDataInput{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(ud.Content)
	ud.Content.Close()
	if string(b) != "#cloud-config\n" {
		t.Errorf("user data %q", b)
	}
	region, err := c.GetRegion(context.Background(), &imds.GetRegionInput{})
	if err != nil || region.Region != "eu-west-1" {
		t.Errorf("GetRegion = %+v, %v", region, err)
	}
	if _, err := metadata(t, c, "tags/instance/missing"); err == nil {
		t.Error("a missing tag was found")
	}

	// IMDSv1 is refused when tokens are required.
	resp, err := http.Get(url + "/latest/meta-data/instance-id")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET without a token: %d, want 401", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, url+"/latest/meta-data/instance-id", nil)
	req.Header.Set("X-aws-ec2-metadata-token", "forged")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET with a wrong token: %d, want 401", resp.StatusCode)
	}

	// Spot interruption: announced, then carried out at its time.
	if _, err := metadata(t, c, "spot/instance-action"); err == nil {
		t.Error("spot/instance-action before any interruption")
	}
	f.srv.Interrupt(id, 2*time.Minute)
	action, err := metadata(t, c, "spot/instance-action")
	if err != nil {
		t.Fatal(err)
	}
	var notice struct{ Action, Time string }
	if err := json.Unmarshal([]byte(action), &notice); err != nil {
		t.Fatalf("instance-action %q: %v", action, err)
	}
	if wantTime := f.clock.Now().Add(2 * time.Minute).UTC().Format(time.RFC3339); notice.Action != "terminate" || notice.Time != wantTime {
		t.Errorf("instance-action %+v, want terminate at %s", notice, wantTime)
	}
	if got := describeOne(t, f, id).State.Name; got != types.InstanceStateNameRunning {
		t.Errorf("before the interruption time: %s", got)
	}
	f.clock.Advance(2 * time.Minute)
	got := describeOne(t, f, id)
	if got.State.Name != types.InstanceStateNameTerminated || aws.ToString(got.StateReason.Code) != "Server.SpotInstanceTermination" {
		t.Errorf("after the interruption time: %s %v", got.State.Name, got.StateReason)
	}
	if u := f.srv.IMDSURL(id); u != "" {
		t.Errorf("terminated instance still has IMDS at %s", u)
	}
	first := describeOne(t, f, aws.ToString(out.Instances[0].InstanceId))
	if first.State.Name != types.InstanceStateNameRunning {
		t.Errorf("the other instance: %s", first.State.Name)
	}
}

func TestIMDSOptional(t *testing.T) {
	t.Parallel()
	f := setup(t)
	id := aws.ToString(runOne(t, f, map[string]string{"a": "b"}).Instances[0].InstanceId)
	url := f.srv.IMDSURL(id)
	resp, err := http.Get(url + "/latest/meta-data/instance-life-cycle")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "on-demand" {
		t.Errorf("IMDSv1 GET: %d %q", resp.StatusCode, b)
	}
	// Tags are served only when InstanceMetadataTags is enabled.
	if _, err := metadata(t, imdsClient(url), "tags/instance/a"); err == nil {
		t.Error("tags served with InstanceMetadataTags disabled")
	}
}
