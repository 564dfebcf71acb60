package client

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/dstackai/dstack/api"
)

// JobCheckpointMissing asks which of the contents (hex SHA-256) the server
// lacks for the job's checkpoints.
func (c *Client) JobCheckpointMissing(ctx context.Context, jobID string, lease int64, sums []string) ([]string, error) {
	b, err := json.Marshal(api.CheckpointMissingRequest{SHA256: sums})
	if err != nil {
		return nil, err
	}
	var out api.CheckpointMissingResponse
	return out.Missing, c.runnerJSON(ctx, request{method: http.MethodPost, path: jobPath(jobID, "/checkpoint/missing"),
		body: bytes.NewReader(b), ctype: "application/json", headers: leaseHeader(lease)}, &out)
}

// JobCheckpointBlobUpload stores one content of the job's checkpoints; the
// server checks it against sum and size.
func (c *Client) JobCheckpointBlobUpload(ctx context.Context, jobID string, lease int64, sum string, body io.Reader, size int64) error {
	r := request{method: http.MethodPut, path: jobPath(jobID, "/checkpoint/blobs/"+url.PathEscape(sum)), body: body, ctype: "application/octet-stream", headers: leaseHeader(lease)}
	r.headers["X-Dstack-Size"] = strconv.FormatInt(size, 10)
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// JobCheckpointCommit records a complete checkpoint of the job: every
// content its manifest lists must be stored.
func (c *Client) JobCheckpointCommit(ctx context.Context, jobID string, lease int64, m api.CheckpointManifest) (*api.Checkpoint, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out api.Checkpoint
	return &out, c.runnerJSON(ctx, request{method: http.MethodPost, path: jobPath(jobID, "/checkpoint"),
		body: bytes.NewReader(b), ctype: "application/json", headers: leaseHeader(lease)}, &out)
}

// JobCheckpoint returns the job's latest complete checkpoint with its
// manifest; an *api.Error with CodeNotFound when it has none.
func (c *Client) JobCheckpoint(ctx context.Context, jobID string, lease int64) (*api.Checkpoint, error) {
	var out api.Checkpoint
	return &out, c.runnerJSON(ctx, request{method: http.MethodGet, path: jobPath(jobID, "/checkpoint"), headers: leaseHeader(lease)}, &out)
}

// JobCheckpointBlob reads one content of the job's checkpoint.
func (c *Client) JobCheckpointBlob(ctx context.Context, jobID string, lease int64, sum string) (io.ReadCloser, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: jobPath(jobID, "/checkpoint/blobs/"+url.PathEscape(sum)), headers: leaseHeader(lease)})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// RunCheckpoints lists the latest checkpoint of each job of a run, with
// their manifests.
func (c *Client) RunCheckpoints(ctx context.Context, run string) ([]api.Checkpoint, error) {
	var out []api.Checkpoint
	return out, c.doJSON(ctx, http.MethodGet, "/runs/"+url.PathEscape(run)+"/checkpoints", nil, nil, &out)
}

// RunResume runs again the jobs of a stopped or failed run that are not
// done, each from its latest checkpoint.
func (c *Client) RunResume(ctx context.Context, run string) (*api.Run, error) {
	var out api.Run
	return &out, c.doJSON(ctx, http.MethodPost, "/runs/"+url.PathEscape(run)+"/resume", nil, nil, &out)
}

func (c *Client) runnerJSON(ctx context.Context, r request, out any) error {
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}
