package aws

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/dstackai/dstack/backend"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := Config{AccessKeyID: "AKID", SecretAccessKey: "secret", Region: "eu-west-1"}
	if err := good.Validate(); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"no key id":       {func(c *Config) { c.AccessKeyID = "" }, "no access key ID"},
		"no secret":       {func(c *Config) { c.SecretAccessKey = " " }, "no secret access key"},
		"no region":       {func(c *Config) { c.Region = "" }, "no region"},
		"bad region":      {func(c *Config) { c.Region = "Ireland" }, `"Ireland" is not an AWS region`},
		"endpoint":        {func(c *Config) { c.Endpoint = "localhost:4566" }, "not an absolute http(s) URL"},
		"negative burst":  {func(c *Config) { c.LaunchBurst = -1 }, "must not be negative"},
		"gov region fine": {func(c *Config) { c.Region = "us-gov-west-1" }, ""},
	} {
		c := good
		tc.mod(&c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
		if _, nerr := New(c); (nerr == nil) != (err == nil) {
			t.Errorf("%s: New and Validate disagree: %v / %v", name, nerr, err)
		}
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	e := setup(t)
	if err := e.b.Check(ctx(t)); err != nil {
		t.Fatalf("Check with good credentials: %v", err)
	}
	own := e.newBackend(setupOpts{cfg: func(c *Config) { c.HTTPClient = &http.Client{} }})
	if err := own.Check(ctx(t)); err != nil {
		t.Fatalf("Check with a given HTTP client: %v", err)
	}
	for name, tc := range map[string]struct {
		cfg  func(*Config)
		code string
	}{
		"wrong secret":       {func(c *Config) { c.SecretAccessKey = "not-the-secret" }, "SignatureDoesNotMatch"},
		"unknown key":        {func(c *Config) { c.AccessKeyID = "AKIDUNKNOWN" }, "AuthFailure"},
		"region not enabled": {func(c *Config) { c.Region = "ap-southeast-2" }, "AuthFailure"},
		"no such region":     {func(c *Config) { c.Region = "xx-nowhere-1" }, "AuthFailure"},
	} {
		b := e.newBackend(setupOpts{cfg: tc.cfg})
		err := b.Check(ctx(t))
		be := assertKind(t, err, backend.ErrInvalid, tc.code)
		if be.Reason == "" || be.Op != "check" {
			t.Errorf("%s: %+v: want op check and AWS's message", name, be)
		}
	}
}

// TestSecretNeverShown runs the backend through its failure paths and
// checks that neither the secret key nor a join token shows in any error,
// log line or formatted value.
func TestSecretNeverShown(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var shown bytes.Buffer
	show := func(v any) {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
			fmt.Fprintf(&shown, verb+"\n", v)
		}
	}
	show(e.b)
	show(e.b.cfg)
	full := Config{AccessKeyID: testKeyID, SecretAccessKey: testSecret, Region: "us-east-1"}
	show(full)
	show(&full)
	show([]Config{full})
	show(struct{ C Config }{full})
	for _, h := range []slog.Handler{slog.NewTextHandler(&shown, nil), slog.NewJSONHandler(&shown, nil)} {
		slog.New(h).Info("config", "cfg", full, "ptr", &full)
	}
	if !strings.Contains(shown.String(), testKeyID) {
		t.Errorf("the formatted config does not even show the key ID:\n%s", shown.String())
	}

	ctx := ctx(t)
	var errs []error
	add := func(_ any, err error) { errs = append(errs, err) }
	wrong := e.newBackend(setupOpts{cfg: func(c *Config) { c.SecretAccessKey = testSecret + "x" }})
	errs = append(errs, wrong.Check(ctx), e.b.Check(ctx))
	add(wrong.Offers(ctx, "us-east-1"))
	add(wrong.Launch(ctx, request("m5.large", true, 2)))
	add(wrong.List(ctx, testServer))
	errs = append(errs, wrong.Terminate(ctx, []string{"i-0123456789abcdef0"}))

	e.fake.Fail("DescribeSpotPriceHistory", "AuthFailure", "no", -1)
	add(e.b.Offers(ctx, "us-east-1"))
	reqs := []backend.LaunchRequest{request("m5.large", false, 1), request("m5.large", true, 3)}
	for _, code := range []string{"InsufficientInstanceCapacity", "InvalidParameterValue", "RequestLimitExceeded", "InternalError"} {
		e.fake.Fail("RunInstances", code, "refused", -1)
		for _, r := range reqs {
			add(e.b.Launch(ctx, r))
		}
		e.fake.ClearFaults()
	}
	e.fake.LoseResponse("RunInstances", testAttempts)
	add(e.b.Launch(ctx, reqs[1]))
	add(e.b.Launch(ctx, reqs[1]))
	e.fake.Fail("CreateTags", "UnauthorizedOperation", "no tagging", -1)
	add(e.b.Launch(ctx, request("m5.large", false, 2)))
	e.fake.ClearFaults()
	e.fake.Fail("DescribeInstances", "InternalError", "oops", -1)
	add(e.b.List(ctx, testServer))
	e.fake.Fail("TerminateInstances", "UnauthorizedOperation", "no", -1)
	errs = append(errs, e.b.Terminate(ctx, []string{"i-0123456789abcdef0"}))
	for _, err := range errs {
		if err != nil {
			show(err)
			show(errors.Unwrap(err))
		}
	}
	out := shown.String() + e.logs.String()
	if strings.Contains(out, testSecret) {
		t.Errorf("the secret key shows in the output:\n%s", out)
	}
	if strings.Contains(out, "secretpart") {
		t.Errorf("a join token shows in the output:\n%s", out)
	}
	if len(errs) < 10 {
		t.Errorf("only %d failure paths taken", len(errs))
	}
}
