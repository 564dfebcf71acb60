package aws

import (
	"errors"
	"strings"
	"testing"

	"github.com/dstackai/dstack/backend"
)

// TestEndpointWithoutOptionalActions: an EC2-compatible endpoint that
// lacks an optional action (it answers InvalidAction) is named as such,
// once, and the backend carries on where it can.
func TestEndpointWithoutOptionalActions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		action string
		// run does what needs the action and returns the backend that
		// did it.
		run func(t *testing.T, e *env) *Backend
		// note is what Notes says the backend does instead.
		note string
	}{
		{"DescribeRegions", func(t *testing.T, e *env) *Backend {
			if err := e.b.Check(ctx(t)); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if offers, err := e.b.Offers(ctx(t), "us-east-1"); err != nil || len(offers) == 0 {
				t.Fatalf("Offers: %d offers, %v", len(offers), err)
			}
			return e.b
		}, "using the configured region us-east-1"},
		{"DescribeImages", func(t *testing.T, e *env) *Backend {
			// Found while the endpoint still had it.
			ami := e.instance(e.newBackend().mustLaunchOne(t, request("m5.large", false, 1))).ImageID
			e.fake.RemoveAction("DescribeImages")
			_, err := e.b.Launch(ctx(t), request("m5.large", false, 1))
			be := assertKind(t, err, backend.ErrUnsupported, "InvalidAction")
			if !strings.Contains(be.Reason, "does not support DescribeImages") || !strings.Contains(be.Reason, "dstack aws config --ami") {
				t.Errorf("launch without an image: %v; want it to name DescribeImages and --ami", err)
			}
			b := e.newBackend(setupOpts{cfg: func(c *Config) { c.AMI = ami }})
			if got := e.instance(b.mustLaunchOne(t, request("m5.large", false, 1))).ImageID; got != ami {
				t.Errorf("launched with image %s, want the configured %s", got, ami)
			}
			return b
		}, "using the configured image"},
		{"DescribeSpotPriceHistory", func(t *testing.T, e *env) *Backend {
			offers, err := e.b.Offers(ctx(t), "us-east-1")
			if err != nil {
				t.Fatalf("Offers: %v", err)
			}
			spot := 0
			for _, o := range offers {
				if o.Spot {
					spot++
					if o.PricePerHour <= 0 {
						t.Errorf("spot offer %s has no price", o.Key())
					}
				}
			}
			if spot == 0 {
				t.Fatal("no spot offers")
			}
			return e.b
		}, "of the on-demand price table"},
		{"CancelSpotInstanceRequests", func(t *testing.T, e *env) *Backend {
			id := e.b.mustLaunchOne(t, request("m5.large", true, 1))
			e.fake.RemoveAction("CancelSpotInstanceRequests")
			if err := e.b.Terminate(ctx(t), []string{id}); err != nil {
				t.Fatalf("Terminate: %v", err)
			}
			if st := e.instance(id).State; st != "terminated" && st != "shutting-down" {
				t.Errorf("instance %s is %s after Terminate", id, st)
			}
			return e.b
		}, "terminating spot instances without cancelling their requests"},
	}
	for _, tt := range tests {
		t.Run(tt.action, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			if tt.action != "DescribeImages" && tt.action != "CancelSpotInstanceRequests" {
				e.fake.RemoveAction(tt.action)
			}
			b := tt.run(t, e)
			notes := b.Notes()
			want := "the endpoint does not support " + tt.action + "; "
			if len(notes) != 1 || !strings.HasPrefix(notes[0], want) || !strings.Contains(notes[0], tt.note) {
				t.Errorf("Notes() = %q; want one starting %q and saying %q", notes, want, tt.note)
			}
			logs := e.logs.String()
			if n := strings.Count(logs, "does not support "+tt.action); n != 1 || !strings.Contains(logs, "level=WARN") {
				t.Errorf("the log names the missing %s %d times (want once, as a warning):\n%s", tt.action, n, logs)
			}
			if strings.Contains(logs, "refused") {
				t.Errorf("the log calls the missing action a refusal:\n%s", logs)
			}
		})
	}
}

// TestCheckWithoutDescribeRegionsStillRefusesABadKey: without
// DescribeRegions the check proves the key with another call: a bad key is
// still refused, with AWS's code once and no word of InvalidAction.
func TestCheckWithoutDescribeRegionsStillRefusesABadKey(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.fake.RemoveAction("DescribeRegions")
	b := e.newBackend(setupOpts{cfg: func(c *Config) { c.SecretAccessKey = "wrong-secret" }})
	err := b.Check(ctx(t))
	assertKind(t, err, backend.ErrInvalid, "SignatureDoesNotMatch")
	if msg := backend.Reason(err); strings.Contains(msg, "InvalidAction") || strings.Count(msg, "SignatureDoesNotMatch") != 1 {
		t.Errorf("refusal %q: want AWS's code once and no InvalidAction", msg)
	}
	if len(b.Notes()) != 0 {
		t.Errorf("notes %q for a refused key", b.Notes())
	}
}

// TestInvalidActionIsNoRefusal: an InvalidAction answer is of kind
// ErrUnsupported, never ErrInvalid (the key's refusal).
func TestInvalidActionIsNoRefusal(t *testing.T) {
	t.Parallel()
	for _, code := range []string{"InvalidAction", "UnsupportedOperation"} {
		if k := kindOf(code); !errors.Is(k, backend.ErrUnsupported) {
			t.Errorf("kindOf(%s) = %v, want ErrUnsupported", code, k)
		}
	}
}

// mustLaunchOne launches req on b and returns its instance's ID.
func (b *Backend) mustLaunchOne(t *testing.T, req backend.LaunchRequest) string {
	t.Helper()
	got, err := b.Launch(ctx(t), req)
	if err != nil || len(got) != 1 {
		t.Fatalf("Launch: %v, %d instances", err, len(got))
	}
	return got[0].CloudID
}

// TestErrorCodeSaidOnce: an endpoint whose message repeats the code has it
// said once.
func TestErrorCodeSaidOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.fake.Fail("DescribeRegions", "AuthFailure", "AuthFailure: AWS was not able to validate the provided access credentials", 1)
	err := e.b.Check(ctx(t))
	assertKind(t, err, backend.ErrInvalid, "AuthFailure")
	if got, want := backend.Reason(err), "AuthFailure: AWS was not able to validate the provided access credentials"; got != want {
		t.Errorf("Reason = %q, want %q", got, want)
	}
}
