package client

import (
	"context"
	"net/http"

	"github.com/dstackai/dstack/api"
)

// The server's AWS account (`dstack aws config`): any user reads it, with
// the secret masked; only an admin changes it.

// AWSGet returns the server's AWS configuration; Configured is false when
// there is none.
func (c *Client) AWSGet(ctx context.Context) (*api.AWSConfig, error) {
	var out api.AWSConfig
	return &out, c.doJSON(ctx, http.MethodGet, "/aws", nil, nil, &out)
}

// AWSPut checks the credentials against AWS and, when AWS accepts them,
// saves them. An empty SecretAccessKey keeps the stored secret of the same
// access key ID.
func (c *Client) AWSPut(ctx context.Context, req api.AWSConfigRequest) (*api.AWSConfig, error) {
	var out api.AWSConfig
	return &out, c.doJSON(ctx, http.MethodPut, "/aws", nil, req, &out)
}

// AWSDelete clears the server's AWS configuration. The server refuses
// (api.CodeConflict) while AWS instances run. With dryRun it only says
// whether it would refuse.
func (c *Client) AWSDelete(ctx context.Context, dryRun bool) error {
	return c.doJSON(ctx, http.MethodDelete, "/aws", dryRunQuery(dryRun), nil, nil)
}
