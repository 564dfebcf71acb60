package client

import (
	"context"
	"net/url"
	"strconv"
	"time"

	"github.com/dstackai/dstack/api"
)

// AuditListOptions select a page of the audit log.
type AuditListOptions struct {
	Since time.Time // only entries made at or after it; zero: all
	Limit int       // at most this many; 0 is the server's page size (1000, its most)
	After string    // continue after the page whose next cursor this is
}

// AuditListPage lists one page of the audit log, newest first (admins
// only), and returns the cursor of the next page: "" when no more entries
// follow.
func (c *Client) AuditListPage(ctx context.Context, o AuditListOptions) ([]api.AuditEntry, string, error) {
	q := url.Values{}
	if !o.Since.IsZero() {
		q.Set("since", o.Since.UTC().Format(time.RFC3339Nano))
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.After != "" {
		q.Set("after", o.After)
	}
	return getPage[api.AuditEntry](ctx, c, "/audit", q)
}

// AuditList lists the audit log since a time (zero: all of it), newest
// first; it reads every page.
func (c *Client) AuditList(ctx context.Context, since time.Time) ([]api.AuditEntry, error) {
	var out []api.AuditEntry
	o := AuditListOptions{Since: since}
	for {
		page, next, err := c.AuditListPage(ctx, o)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if next == "" {
			return out, nil
		}
		o.After = next
	}
}
