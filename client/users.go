package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/dstackai/dstack/api"
)

// UserList lists the server's users (admins only).
func (c *Client) UserList(ctx context.Context) ([]api.UserInfo, error) {
	var out []api.UserInfo
	return out, c.doJSON(ctx, http.MethodGet, "/users", nil, nil, &out)
}

// UserCreate adds a user; the answer holds its token, shown once.
func (c *Client) UserCreate(ctx context.Context, req api.UserCreateRequest) (*api.UserCreated, error) {
	var out api.UserCreated
	return &out, c.doJSON(ctx, http.MethodPost, "/users", nil, req, &out)
}

// UserPatch changes a user.
func (c *Client) UserPatch(ctx context.Context, name string, req api.UserPatchRequest) (*api.UserInfo, error) {
	var out api.UserInfo
	return &out, c.doJSON(ctx, http.MethodPatch, "/users/"+url.PathEscape(name), nil, req, &out)
}

// UserDelete removes a user.
func (c *Client) UserDelete(ctx context.Context, name string) (*api.UserInfo, error) {
	var out api.UserInfo
	return &out, c.doJSON(ctx, http.MethodDelete, "/users/"+url.PathEscape(name), nil, nil, &out)
}

// TokenList lists the caller's tokens.
func (c *Client) TokenList(ctx context.Context) ([]api.TokenInfo, error) {
	var out []api.TokenInfo
	return out, c.doJSON(ctx, http.MethodGet, "/tokens", nil, nil, &out)
}

// TokenCreate creates a token for the caller; the answer holds it, shown
// once.
func (c *Client) TokenCreate(ctx context.Context, req api.TokenCreateRequest) (*api.TokenCreated, error) {
	var out api.TokenCreated
	return &out, c.doJSON(ctx, http.MethodPost, "/tokens", nil, req, &out)
}

// TokenRevoke revokes one of the caller's tokens by name or ID, and with
// runners the runners registered with it.
func (c *Client) TokenRevoke(ctx context.Context, ref string, runners bool) (*api.TokenRevoked, error) {
	var q url.Values
	if runners {
		q = url.Values{"runners": {"true"}}
	}
	var out api.TokenRevoked
	return &out, c.doJSON(ctx, http.MethodDelete, "/tokens/"+url.PathEscape(ref), q, nil, &out)
}
