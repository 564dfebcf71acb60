package client

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/dstackai/dstack/api"
)

// The calls of this file are a runner's. Register takes a user's token, Join
// an on-demand instance's join token; the others take the runner credential it returns (see WithToken), and calls
// about a job carry the job's lease.

// RunnerRegister exchanges a user's token for a runner credential.
func (c *Client) RunnerRegister(ctx context.Context, req api.RunnerRegisterRequest) (*api.RunnerRegisterResponse, error) {
	var out api.RunnerRegisterResponse
	return &out, c.doJSON(ctx, http.MethodPost, "/runners/register", nil, req, &out)
}

// RunnerJoin exchanges an on-demand instance's single-use join token for a
// runner credential. It sends no Authorization header, whatever token c has:
// the join token in the body is the only credential.
func (c *Client) RunnerJoin(ctx context.Context, req api.RunnerJoinRequest) (*api.RunnerRegisterResponse, error) {
	var out api.RunnerRegisterResponse
	return &out, c.WithToken("").doJSON(ctx, http.MethodPost, "/runners/join", nil, req, &out)
}

// RunnerHeartbeat tells the server the runner is alive.
func (c *Client) RunnerHeartbeat(ctx context.Context, req api.HeartbeatRequest) error {
	return c.doJSON(ctx, http.MethodPost, "/runner/heartbeat", nil, req, nil)
}

// RunnerOffline tells the server the runner is shutting down: it is offline
// at once instead of after the heartbeat timeout.
func (c *Client) RunnerOffline(ctx context.Context) error {
	return c.doJSON(ctx, http.MethodPost, "/runner/offline", nil, nil, nil)
}

// RunnerInterruption tells the server that the cloud reclaims the runner's
// machine (a spot interruption notice): the runner is given no more jobs. A
// repeat is harmless: the answer is the first report as the server keeps it.
func (c *Client) RunnerInterruption(ctx context.Context, req api.RunnerInterruptionRequest) (*api.RunnerInterruptionResponse, error) {
	var out api.RunnerInterruptionResponse
	return &out, c.doJSON(ctx, http.MethodPost, "/runner/interruption", nil, req, &out)
}

// RunnerClaim asks for a job that fits the free resources, waiting up to
// req.Wait on the server for one. It returns nil, nil when none came.
func (c *Client) RunnerClaim(ctx context.Context, req api.ClaimRequest) (*api.Assignment, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, request{method: http.MethodPost, path: "/runner/claim", body: bytes.NewReader(b), ctype: "application/json"})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil, nil
	}
	var a api.Assignment
	return &a, json.NewDecoder(resp.Body).Decode(&a)
}

func leaseHeader(lease int64) map[string]string {
	return map[string]string{api.LeaseHeader: strconv.FormatInt(lease, 10)}
}

func jobPath(jobID, rest string) string { return "/runner/jobs/" + url.PathEscape(jobID) + rest }

// JobCode downloads the code archive of a job.
func (c *Client) JobCode(ctx context.Context, jobID string, lease int64) (io.ReadCloser, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: jobPath(jobID, "/code"), headers: leaseHeader(lease)})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// JobSetStatus reports a job's new state. With u.Next and a final state,
// the result's Next is the runner's next assignment, when a job was pending.
func (c *Client) JobSetStatus(ctx context.Context, jobID string, lease int64, u api.JobStatusUpdate) (*api.JobStatusResult, error) {
	b, err := json.Marshal(u)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, request{method: http.MethodPost, path: jobPath(jobID, "/status"), body: bytes.NewReader(b), ctype: "application/json", headers: leaseHeader(lease)})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var res api.JobStatusResult
	return &res, json.NewDecoder(resp.Body).Decode(&res)
}

// JobLogAppend sends output that starts at byte offset of the job's log. The
// server keeps each byte once: a chunk it already has is acknowledged and
// dropped, so a retry is always safe. It returns the log's length after.
func (c *Client) JobLogAppend(ctx context.Context, jobID string, lease, offset int64, data []byte) (int64, error) {
	q := url.Values{"offset": {strconv.FormatInt(offset, 10)}}
	resp, err := c.do(ctx, request{method: http.MethodPost, path: jobPath(jobID, "/logs"), query: q, body: bytes.NewReader(data), ctype: "application/octet-stream", headers: leaseHeader(lease)})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out api.LogAppendResponse
	return out.Size, json.NewDecoder(resp.Body).Decode(&out)
}

// JobWaitStop waits up to wait for the user to stop the job.
func (c *Client) JobWaitStop(ctx context.Context, jobID string, lease int64, wait time.Duration) (*api.StopSignal, error) {
	q := url.Values{"wait": {wait.String()}}
	resp, err := c.do(ctx, request{method: http.MethodGet, path: jobPath(jobID, "/stop"), query: q, headers: leaseHeader(lease)})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var s api.StopSignal
	return &s, json.NewDecoder(resp.Body).Decode(&s)
}

// JobArtifactUpload uploads one artifact file (path relative to the job's
// working directory, slash-separated).
func (c *Client) JobArtifactUpload(ctx context.Context, jobID string, lease int64, path string, body io.Reader, size int64) error {
	r := request{method: http.MethodPut, path: jobPath(jobID, "/artifacts/"+escapePath(path)), body: body, ctype: "application/octet-stream", headers: leaseHeader(lease)}
	r.headers["X-Dstack-Size"] = strconv.FormatInt(size, 10)
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// JobDependencies lists the job's dependencies and their artifact files.
func (c *Client) JobDependencies(ctx context.Context, jobID string, lease int64) ([]api.Dependency, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: jobPath(jobID, "/dependencies"), headers: leaseHeader(lease)})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var ds []api.Dependency
	return ds, json.NewDecoder(resp.Body).Decode(&ds)
}

// JobDependencyArtifact downloads one artifact file of one of the job's
// dependencies.
func (c *Client) JobDependencyArtifact(ctx context.Context, jobID string, lease int64, depJobID, path string) (io.ReadCloser, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: jobPath(jobID, "/dependencies/"+url.PathEscape(depJobID)+"/artifacts/"+escapePath(path)), headers: leaseHeader(lease)})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}
