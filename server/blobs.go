package server

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"github.com/dstackai/dstack/blob"
	"github.com/dstackai/dstack/blob/s3blob"
)

// s3OpenTimeout bounds the check that the bucket is reachable at start, so
// that an endpoint that never answers fails the start instead of hanging it.
const s3OpenTimeout = time.Minute

// s3Config is the S3 store Artifacts names. It carries no credentials: the
// AWS default chain supplies them, so they appear in no flag, no Config
// and no log line.
func (c *Config) s3Config() s3blob.Config {
	return s3blob.Config{URL: c.Artifacts, Endpoint: c.S3Endpoint, Region: c.S3Region}
}

// validateArtifacts checks Artifacts, S3Endpoint and S3Region without
// contacting S3.
//
// --s3-endpoint also serves the artifact bucket of `dstack aws config`, so
// it may come without --artifacts while AWS is on.
func (c *Config) validateArtifacts() error {
	if u, err := url.Parse(c.S3Endpoint); err == nil && u.User != nil {
		return errors.New("--s3-endpoint must not hold credentials: give the access key through the AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or the shared credentials file")
	}
	if c.Artifacts == "" {
		switch {
		case c.S3Region != "":
			return errors.New("--s3-region applies to an S3 artifact store: add --artifacts s3://bucket/prefix, or leave it out (the bucket of `dstack aws config` is in the configured region)")
		case c.S3Endpoint != "" && c.AWS.Disabled:
			return errors.New("--s3-endpoint applies to an S3 artifact store: add --artifacts s3://bucket/prefix, or leave it out")
		case c.S3Endpoint != "":
			if err := (s3blob.Config{URL: "s3://bucket", Endpoint: c.S3Endpoint}).Validate(); err != nil {
				return fmt.Errorf("--s3-endpoint: %w", err)
			}
		}
		return nil
	}
	if _, err := s3blob.ParseURL(c.Artifacts); err != nil {
		return fmt.Errorf("--artifacts: %w", err)
	}
	// With the URL good, what else Validate checks is the endpoint.
	if err := c.s3Config().Validate(); err != nil {
		return fmt.Errorf("--s3-endpoint: %w", err)
	}
	return nil
}

// openBlobs opens the store of artifacts and code archives: files under
// DataDir, or the S3 bucket Artifacts names, checked to be reachable.
func openBlobs(ctx context.Context, cfg Config) (blob.Store, error) {
	if cfg.Artifacts == "" {
		return blob.NewLocal(filepath.Join(cfg.DataDir, "blobs"))
	}
	ctx, cancel := context.WithTimeout(ctx, s3OpenTimeout)
	defer cancel()
	st, err := s3blob.Open(ctx, cfg.s3Config())
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w: no answer within %s; check --s3-endpoint and the network", err, s3OpenTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open the artifact store: %w", err)
	}
	return st, nil
}
