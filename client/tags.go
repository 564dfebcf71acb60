package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/dstackai/dstack/api"
)

// TagList lists the user's tags by name.
func (c *Client) TagList(ctx context.Context) ([]api.Tag, error) {
	var ts []api.Tag
	return ts, c.doJSON(ctx, http.MethodGet, "/tags", nil, nil, &ts)
}

// TagPut tags a done run; force moves a tag that names another run.
func (c *Client) TagPut(ctx context.Context, name, run string, force bool) (*api.TagPutResponse, error) {
	var out api.TagPutResponse
	return &out, c.doJSON(ctx, http.MethodPut, "/tags/"+url.PathEscape(name), nil, api.TagPutRequest{RunName: run, Force: force}, &out)
}

// TagDelete deletes a tag and returns it.
func (c *Client) TagDelete(ctx context.Context, name string) (*api.Tag, error) {
	var out api.Tag
	return &out, c.doJSON(ctx, http.MethodDelete, "/tags/"+url.PathEscape(name), nil, nil, &out)
}
