package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store"
)

// offerBackend is a backend that only offers: one region, a catalogue, and
// launches that always find no capacity. Tests of the limits API need no
// more.
type offerBackend struct {
	name, region string
	types        []string
	err          error // Offers fails with it when set
}

func (b *offerBackend) Name() string { return b.name }

func (b *offerBackend) Offers(_ context.Context, region string) ([]backend.Offer, error) {
	if b.err != nil {
		return nil, b.err
	}
	if region != b.region {
		return nil, backend.Errorf(backend.ErrInvalid, "offers", "UnknownRegion", "no region %q", region)
	}
	var out []backend.Offer
	for i, t := range b.types {
		for _, spot := range []bool{false, true} {
			out = append(out, backend.Offer{Backend: b.name, Region: region, InstanceType: t, Spot: spot,
				CPUs: 1 << i, MemoryMiB: 1 << (10 + i), PricePerHour: 0.01 * float64(i+1)})
		}
	}
	return out, nil
}

func (b *offerBackend) Launch(context.Context, backend.LaunchRequest) ([]backend.Instance, error) {
	return nil, backend.Errorf(backend.ErrNoCapacity, "launch", "Test", "the test backend launches nothing")
}
func (b *offerBackend) Terminate(context.Context, []string) error { return nil }
func (b *offerBackend) List(context.Context, string) ([]backend.Instance, error) {
	return nil, nil
}

// regionalBackend names its default region, as the AWS backend does (the
// local one does not: its only region has its name).
type regionalBackend struct{ *offerBackend }

func (b regionalBackend) DefaultRegion() string { return b.region }

func localFake() *offerBackend {
	return &offerBackend{name: "local", region: "local", types: []string{"local.small", "local.medium", "local.large"}}
}

func withBackends(bs ...backend.Backend) servertest.Option {
	return servertest.WithConfig(func(c *server.Config) { c.Backends = bs })
}

// apiErr checks that err is an API error with the code and a message
// holding each of parts.
func apiErr(t *testing.T, what string, err error, code string, parts ...string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Errorf("%s: error %v, want an API error %s", what, err, code)
		return
	}
	if ae.Code != code {
		t.Errorf("%s: code %s, want %s (%s)", what, ae.Code, code, ae.Message)
	}
	for _, p := range parts {
		if !strings.Contains(ae.Message, p) {
			t.Errorf("%s: message %q does not say %q", what, ae.Message, p)
		}
	}
}

// addInstances records n launching instances of a limit, as the
// autoscaler would before launching them.
func addInstances(t *testing.T, srv *servertest.Server, limitID string, n int) {
	t.Helper()
	var ins []store.InstanceCreate
	for range n {
		ins = append(ins, store.InstanceCreate{ID: randomHex(t)[:16], JoinTokenHash: randomHex(t)})
	}
	if _, err := srv.Store().InstanceCreate(context.Background(), store.InstanceCreateParams{
		LimitID: limitID, LaunchKey: randomHex(t)[:16], Instances: ins, Now: time.Now(),
	}); err != nil {
		t.Fatalf("create instances: %v", err)
	}
}

func TestLimitPutListDelete(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, withBackends(localFake()))
	c, ctx := srv.Client(), context.Background()

	res, err := c.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.medium", PurchaseType: api.PurchaseSpot, Max: 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || res.Limit.Backend != "local" || res.Limit.Region != "local" || res.Limit.Max != 2 || res.Terminating != 0 {
		t.Fatalf("put: %+v", res)
	}
	if r := res.Limit.Resources; r == nil || r.CPUs != 2 || r.MemoryMiB != 2048 {
		t.Errorf("put: resources %+v, want the offer's", r)
	}
	res, err = c.LimitPut(ctx, api.LimitPutRequest{Region: "local", InstanceType: "local.medium", PurchaseType: api.PurchaseSpot, Max: 5}, false)
	if err != nil || res.Created || res.PreviousMax != 2 || res.Limit.Max != 5 {
		t.Fatalf("change: %+v %v", res, err)
	}
	if _, err := c.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.small", Max: 1}, false); err != nil {
		t.Fatal(err)
	}
	ls, err := c.LimitList(ctx)
	if err != nil || len(ls) != 2 {
		t.Fatalf("list: %+v %v", ls, err)
	}
	byType := map[string]api.Limit{}
	for _, l := range ls {
		byType[l.InstanceType+"/"+l.PurchaseType] = l
	}
	if l := byType["local.medium/spot"]; l.Max != 5 || l.ID == "" || l.Resources == nil {
		t.Errorf("listed spot limit: %+v", l)
	}
	if l := byType["local.small/on-demand"]; l.Max != 1 || l.Resources == nil || l.Resources.CPUs != 1 {
		t.Errorf("listed on-demand limit: %+v", l)
	}

	del, err := c.LimitDelete(ctx, client.LimitKey{InstanceType: "local.medium", PurchaseType: api.PurchaseSpot}, false)
	if err != nil || len(del.Deleted) != 1 || del.Deleted[0].InstanceType != "local.medium" {
		t.Fatalf("delete: %+v %v", del, err)
	}
	_, err = c.LimitDelete(ctx, client.LimitKey{InstanceType: "local.medium", PurchaseType: api.PurchaseSpot}, false)
	apiErr(t, "delete again", err, api.CodeNotFound, "no limit for local.medium (spot)")

	del, err = c.LimitDeleteAll(ctx, false)
	if err != nil || len(del.Deleted) != 1 {
		t.Fatalf("delete all: %+v %v", del, err)
	}
	if ls, err := c.LimitList(ctx); err != nil || len(ls) != 0 {
		t.Fatalf("list after delete all: %+v %v", ls, err)
	}
}

func TestLimitValidation(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, withBackends(localFake()))
	c, ctx := srv.Client(), context.Background()
	for _, tc := range []struct {
		name  string
		req   api.LimitPutRequest
		parts []string
	}{
		{"unknown type", api.LimitPutRequest{InstanceType: "m5.xlarge", Max: 1}, []string{`"m5.xlarge" is not offered`, "local.small, local.medium, local.large"}},
		{"unknown region", api.LimitPutRequest{Region: "eu-west-1", InstanceType: "local.small", Max: 1}, []string{`region "eu-west-1"`, "default region is local"}},
		{"unknown backend", api.LimitPutRequest{Backend: "aws", InstanceType: "local.small", Max: 1}, []string{`no backend "aws"`, "local (region local)"}},
		{"negative max", api.LimitPutRequest{InstanceType: "local.small", Max: -1}, []string{"max -1", "0 to 1000"}},
		{"huge max", api.LimitPutRequest{InstanceType: "local.small", Max: 1001}, []string{"max 1001"}},
		{"no type", api.LimitPutRequest{Max: 1}, []string{"instance_type is missing"}},
		{"bad purchase", api.LimitPutRequest{InstanceType: "local.small", PurchaseType: "reserved", Max: 1}, []string{`"reserved"`, "spot"}},
	} {
		for _, dry := range []bool{false, true} {
			_, err := c.LimitPut(ctx, tc.req, dry)
			apiErr(t, fmt.Sprintf("%s (dry run %v)", tc.name, dry), err, api.CodeInvalid, tc.parts...)
		}
	}
	if ls, _ := c.LimitList(ctx); len(ls) != 0 {
		t.Errorf("refused puts left limits: %+v", ls)
	}
	_, err := c.LimitDelete(ctx, client.LimitKey{}, false)
	apiErr(t, "delete without a key", err, api.CodeInvalid, "all=true")

	rp := do(t, srv.URL, req{method: http.MethodPut, path: api.PathPrefix + "/limits", token: srv.AdminToken, body: `{"instance_type":"local.small","max":1,"maxx":2}`})
	wantError(t, "unknown field", rp, http.StatusBadRequest, api.CodeInvalid, "maxx")
	rp = do(t, srv.URL, req{method: http.MethodPut, path: api.PathPrefix + "/limits?dry_run=maybe", token: srv.AdminToken, body: `{"instance_type":"local.small","max":1}`})
	wantError(t, "bad dry_run", rp, http.StatusBadRequest, api.CodeInvalid, "dry_run")
	rp = do(t, srv.URL, req{method: http.MethodGet, path: api.PathPrefix + "/limits"})
	wantError(t, "no token", rp, http.StatusUnauthorized, api.CodeUnauthenticated)
}

func TestLimitsNeedABackend(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	c, ctx := srv.Client(), context.Background()
	_, err := c.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.small", Max: 1}, false)
	apiErr(t, "put", err, api.CodeInvalid, "need a backend", "dstack server", "dstack aws config")
	_, err = c.OfferList(ctx, "", "")
	apiErr(t, "offers", err, api.CodeInvalid, "need a backend")
	st, err := c.OnDemandGet(ctx)
	if err != nil || !st.Enabled || len(st.Backends) != 0 {
		t.Fatalf("status: %+v %v", st, err)
	}
}

func TestBackendFailureIsUnavailable(t *testing.T) {
	t.Parallel()
	b := localFake()
	b.err = errors.New("docker daemon is not running")
	srv := servertest.Start(t, withBackends(b))
	_, err := srv.Client().LimitPut(context.Background(), api.LimitPutRequest{InstanceType: "local.small", Max: 1}, false)
	apiErr(t, "put", err, api.CodeUnavailable, "docker daemon is not running", "try again")
}

func TestLimitChangesCountTerminations(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, withBackends(localFake()))
	c, ctx := srv.Client(), context.Background()
	spot := api.LimitPutRequest{InstanceType: "local.small", PurchaseType: api.PurchaseSpot, Max: 3}
	res, err := c.LimitPut(ctx, spot, false)
	if err != nil {
		t.Fatal(err)
	}
	addInstances(t, srv, res.Limit.ID, 3)
	other, err := c.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.large", Max: 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	addInstances(t, srv, other.Limit.ID, 1)

	// A new limit in a dry run terminates nothing and is not kept.
	p, err := c.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.medium", Max: 1}, true)
	if err != nil || !p.DryRun || !p.Created || p.Terminating != 0 {
		t.Fatalf("dry-run add: %+v %v", p, err)
	}
	// Lowering 3 to 1 would terminate 2; raising terminates none.
	spot.Max = 1
	p, err = c.LimitPut(ctx, spot, true)
	if err != nil || !p.DryRun || p.Terminating != 2 || p.PreviousMax != 3 || p.Limit.Max != 1 || p.Limit.Running != 3 {
		t.Fatalf("dry-run lower: %+v %v", p, err)
	}
	spot.Max = 10
	if p, err = c.LimitPut(ctx, spot, true); err != nil || p.Terminating != 0 {
		t.Fatalf("dry-run raise: %+v %v", p, err)
	}
	d, err := c.LimitDelete(ctx, client.LimitKey{InstanceType: "local.small", PurchaseType: api.PurchaseSpot}, true)
	if err != nil || !d.DryRun || d.Terminating != 3 || len(d.Deleted) != 1 {
		t.Fatalf("dry-run delete: %+v %v", d, err)
	}
	if d, err = c.LimitDeleteAll(ctx, true); err != nil || d.Terminating != 4 || len(d.Deleted) != 2 {
		t.Fatalf("dry-run delete all: %+v %v", d, err)
	}
	od, err := c.OnDemandSet(ctx, false, true)
	if err != nil || !od.DryRun || od.Enabled || od.Terminating != 4 {
		t.Fatalf("dry-run disable: %+v %v", od, err)
	}
	// Nothing of the dry runs stuck.
	ls, err := c.LimitList(ctx)
	if err != nil || len(ls) != 2 {
		t.Fatalf("limits after dry runs: %+v %v", ls, err)
	}
	for _, l := range ls {
		if l.InstanceType == "local.small" && (l.Max != 3 || l.Running != 3) {
			t.Errorf("after dry runs: %+v", l)
		}
	}
	if st, err := c.OnDemandGet(ctx); err != nil || !st.Enabled || st.Running != 4 || st.Limits != 2 {
		t.Fatalf("status after dry runs: %+v %v", st, err)
	}

	// The real changes say the same.
	spot.Max = 1
	if p, err = c.LimitPut(ctx, spot, false); err != nil || p.DryRun || p.Terminating != 2 {
		t.Fatalf("lower: %+v %v", p, err)
	}
	od, err = c.OnDemandSet(ctx, false, false)
	if err != nil || od.Enabled || od.UpdatedAt == nil {
		t.Fatalf("disable: %+v %v", od, err)
	}
	if st, err := c.OnDemandGet(ctx); err != nil || st.Enabled {
		t.Fatalf("status after disable: %+v %v", st, err)
	}
	if od, err = c.OnDemandSet(ctx, false, true); err != nil || od.Terminating != 0 {
		t.Fatalf("disable twice: %+v %v", od, err)
	}
	if od, err = c.OnDemandSet(ctx, true, false); err != nil || !od.Enabled {
		t.Fatalf("enable: %+v %v", od, err)
	}
}

func TestLimitCapacityNote(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, withBackends(localFake()))
	c, ctx := srv.Client(), context.Background()
	if _, err := c.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.large", PurchaseType: api.PurchaseSpot, Max: 1}, false); err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-time.Minute).Truncate(time.Second)
	if err := srv.Store().OfferMarkUnavailable(ctx, store.OfferMarkUnavailableParams{
		Backend: "local", Region: "local", InstanceType: "local.large", Spot: true,
		Until: time.Now().Add(time.Hour), Reason: "InsufficientInstanceCapacity", Now: since,
	}); err != nil {
		t.Fatal(err)
	}
	ls, err := c.LimitList(ctx)
	if err != nil || len(ls) != 1 {
		t.Fatalf("list: %+v %v", ls, err)
	}
	if l := ls[0]; l.UnavailableSince == nil || !l.UnavailableSince.Equal(since) || l.UnavailableReason != "InsufficientInstanceCapacity" {
		t.Errorf("note: %+v", l)
	}
}

func TestMembersCannotChangeLimitsOrTheSwitch(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, withBackends(localFake()))
	admin, ctx := srv.Client(), context.Background()
	res, err := admin.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.small", Max: 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	addInstances(t, srv, res.Limit.ID, 2)
	bob := newUser(t, srv, "bob")
	if ls, err := bob.LimitList(ctx); err != nil || len(ls) != 0 {
		t.Fatalf("bob sees %+v %v", ls, err)
	}
	// Limits and the on-demand switch are an admin's to change.
	_, err = bob.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.small", Max: 5}, false)
	apiErr(t, "bob puts a limit", err, api.CodeForbidden)
	_, err = bob.LimitDelete(ctx, client.LimitKey{InstanceType: "local.small"}, false)
	apiErr(t, "bob deletes the admin's", err, api.CodeForbidden)
	_, err = bob.LimitDeleteAll(ctx, false)
	apiErr(t, "bob deletes all", err, api.CodeForbidden)
	_, err = bob.OnDemandSet(ctx, false, false)
	apiErr(t, "bob disables", err, api.CodeForbidden)
	if st, err := admin.OnDemandGet(ctx); err != nil || !st.Enabled || st.Running != 2 {
		t.Fatalf("admin's status after bob's changes: %+v %v", st, err)
	}
	if ls, err := admin.LimitList(ctx); err != nil || len(ls) != 1 || ls[0].Running != 2 {
		t.Fatalf("admin's limits after bob's changes: %+v %v", ls, err)
	}
}

func TestOffersAndBackendChoice(t *testing.T) {
	t.Parallel()
	aws := regionalBackend{&offerBackend{name: "aws", region: "eu-west-1", types: []string{"m5.xlarge"}}}
	srv := servertest.Start(t, withBackends(localFake(), aws))
	c, ctx := srv.Client(), context.Background()
	os, err := c.OfferList(ctx, "", "")
	if err != nil || len(os) != 6 || os[0].Backend != "local" || os[0].Region != "local" {
		t.Fatalf("default offers: %+v %v", os, err)
	}
	if os, err = c.OfferList(ctx, "", "eu-west-1"); err != nil || len(os) != 2 || os[1].InstanceType != "m5.xlarge" || os[1].PurchaseType != api.PurchaseSpot {
		t.Fatalf("offers of eu-west-1: %+v %v", os, err)
	}
	res, err := c.LimitPut(ctx, api.LimitPutRequest{Region: "eu-west-1", InstanceType: "m5.xlarge", PurchaseType: api.PurchaseSpot, Max: 1}, false)
	if err != nil || res.Limit.Backend != "aws" {
		t.Fatalf("put in eu-west-1: %+v %v", res, err)
	}
	_, err = c.LimitPut(ctx, api.LimitPutRequest{Region: "us-east-1", InstanceType: "m5.xlarge", Max: 1}, false)
	apiErr(t, "unknown region", err, api.CodeInvalid, `no backend of this server offers region "us-east-1"`, "aws (region eu-west-1)")
	// With neither backend nor region, the backend whose default region
	// offers the type is taken.
	res, err = c.LimitPut(ctx, api.LimitPutRequest{InstanceType: "m5.xlarge", Max: 1}, false)
	if err != nil || res.Limit.Backend != "aws" || res.Limit.Region != "eu-west-1" || res.Limit.PurchaseType != api.PurchaseOnDemand {
		t.Fatalf("type of the other backend: %+v %v", res, err)
	}
	if res, err = c.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.small", PurchaseType: api.PurchaseSpot, Max: 1}, false); err != nil || res.Limit.Backend != "local" {
		t.Fatalf("type of the local backend: %+v %v", res, err)
	}
	_, err = c.LimitPut(ctx, api.LimitPutRequest{InstanceType: "m5.xlargee", Max: 1}, false)
	apiErr(t, "type no backend offers", err, api.CodeInvalid, `"m5.xlargee" is not offered`,
		"region local (on-demand/spot) of backend local", "local.small, local.medium, local.large",
		"region eu-west-1 (on-demand/spot) of backend aws", "m5.xlarge")
	if os, err = c.OfferList(ctx, "aws", ""); err != nil || len(os) != 2 || os[0].Region != "eu-west-1" {
		t.Fatalf("offers of aws in its default region: %+v %v", os, err)
	}
}
