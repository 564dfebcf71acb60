package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/dstackai/dstack/api"
)

// On-demand runners: limits, the on-demand switch and offers. Calls that
// may terminate instances take dryRun: the server then answers what the
// call would do (how many instances it terminates) and changes nothing.

func dryRunQuery(dryRun bool) url.Values {
	q := url.Values{}
	if dryRun {
		q.Set("dry_run", "true")
	}
	return q
}

// LimitList lists the user's limits.
func (c *Client) LimitList(ctx context.Context) ([]api.Limit, error) {
	var ls []api.Limit
	return ls, c.doJSON(ctx, http.MethodGet, "/limits", nil, nil, &ls)
}

// LimitPut adds a limit or changes its maximum.
func (c *Client) LimitPut(ctx context.Context, req api.LimitPutRequest, dryRun bool) (*api.LimitPutResponse, error) {
	var out api.LimitPutResponse
	return &out, c.doJSON(ctx, http.MethodPut, "/limits", dryRunQuery(dryRun), req, &out)
}

// LimitKey selects the limit LimitDelete deletes: InstanceType and
// PurchaseType, and Region and Backend where the user has several limits
// that match.
type LimitKey struct {
	Backend      string
	Region       string
	InstanceType string
	PurchaseType string
}

// LimitDelete deletes one limit of the user.
func (c *Client) LimitDelete(ctx context.Context, k LimitKey, dryRun bool) (*api.LimitDeleteResponse, error) {
	q := dryRunQuery(dryRun)
	q.Set("instance_type", k.InstanceType)
	for name, v := range map[string]string{"purchase_type": k.PurchaseType, "region": k.Region, "backend": k.Backend} {
		if v != "" {
			q.Set(name, v)
		}
	}
	var out api.LimitDeleteResponse
	return &out, c.doJSON(ctx, http.MethodDelete, "/limits", q, nil, &out)
}

// LimitDeleteAll deletes every limit of the user.
func (c *Client) LimitDeleteAll(ctx context.Context, dryRun bool) (*api.LimitDeleteResponse, error) {
	q := dryRunQuery(dryRun)
	q.Set("all", "true")
	var out api.LimitDeleteResponse
	return &out, c.doJSON(ctx, http.MethodDelete, "/limits", q, nil, &out)
}

// OnDemandGet says whether the user's on-demand runners are enabled.
func (c *Client) OnDemandGet(ctx context.Context) (*api.OnDemandStatus, error) {
	var out api.OnDemandStatus
	return &out, c.doJSON(ctx, http.MethodGet, "/on-demand", nil, nil, &out)
}

// OnDemandSet enables or disables the user's on-demand runners.
func (c *Client) OnDemandSet(ctx context.Context, enabled, dryRun bool) (*api.OnDemandStatus, error) {
	var out api.OnDemandStatus
	return &out, c.doJSON(ctx, http.MethodPut, "/on-demand", dryRunQuery(dryRun), api.OnDemandRequest{Enabled: enabled}, &out)
}

// OfferList lists what a backend sells in a region; empty backend and
// region take the server's defaults.
func (c *Client) OfferList(ctx context.Context, backend, region string) ([]api.Offer, error) {
	q := url.Values{}
	if backend != "" {
		q.Set("backend", backend)
	}
	if region != "" {
		q.Set("region", region)
	}
	var out []api.Offer
	return out, c.doJSON(ctx, http.MethodGet, "/offers", q, nil, &out)
}
