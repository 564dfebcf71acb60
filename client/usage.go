package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/dstackai/dstack/api"
)

// UsageQuery is the period and grouping of a usage report: Since back
// from now, or From (and To, now when zero).
type UsageQuery struct {
	Since    string // "30d", "12h"
	From, To time.Time
	By       string // api.UsageByUser, ...
}

func (q UsageQuery) values() url.Values {
	v := url.Values{}
	if !q.From.IsZero() {
		v.Set("from", q.From.UTC().Format(time.RFC3339))
	} else if q.Since != "" {
		v.Set("since", q.Since)
	}
	if !q.To.IsZero() {
		v.Set("to", q.To.UTC().Format(time.RFC3339))
	}
	if q.By != "" {
		v.Set("by", q.By)
	}
	return v
}

// Usage reads the user's usage (everyone's for an admin).
func (c *Client) Usage(ctx context.Context, q UsageQuery) (*api.UsageReport, error) {
	var out api.UsageReport
	return &out, c.doJSON(ctx, http.MethodGet, "/usage", q.values(), nil, &out)
}

// RunCost reads what a run cost, job by job.
func (c *Client) RunCost(ctx context.Context, run string) (*api.RunCost, error) {
	var out api.RunCost
	return &out, c.doJSON(ctx, http.MethodGet, "/runs/"+url.PathEscape(run)+"/cost", nil, nil, &out)
}

// Budget reads the monthly on-demand budget.
func (c *Client) Budget(ctx context.Context) (*api.Budget, error) {
	var out api.Budget
	return &out, c.doJSON(ctx, http.MethodGet, "/on-demand/budget", nil, nil, &out)
}

// BudgetSet sets the monthly on-demand budget (0 removes it).
func (c *Client) BudgetSet(ctx context.Context, monthly float64) (*api.Budget, error) {
	var out api.Budget
	return &out, c.doJSON(ctx, http.MethodPut, "/on-demand/budget", nil, api.BudgetRequest{Monthly: monthly}, &out)
}

// UsageDaily reads the cost per day, stacked by api.UsageByUser or
// api.UsageByInstanceType (q.By).
func (c *Client) UsageDaily(ctx context.Context, q UsageQuery) (*api.UsageDaily, error) {
	v := q.values()
	if q.By != "" {
		v.Del("by")
		v.Set("stack", q.By)
	}
	var out api.UsageDaily
	return &out, c.doJSON(ctx, http.MethodGet, "/usage/daily", v, nil, &out)
}

// UsageInstances reads each limit's instances over time against its
// maximum (q.By is unused).
func (c *Client) UsageInstances(ctx context.Context, q UsageQuery) (*api.InstanceSeries, error) {
	v := q.values()
	v.Del("by")
	var out api.InstanceSeries
	return &out, c.doJSON(ctx, http.MethodGet, "/usage/instances", v, nil, &out)
}
