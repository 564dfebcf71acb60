package server

import (
	"context"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/blob"
	"github.com/dstackai/dstack/blob/s3blob"
	"github.com/dstackai/dstack/store"
)

// Artifacts in the AWS artifact bucket. Each job records, when its run is
// submitted, which store holds its artifacts (store.Job.ArtifactStore):
// "" for the server's own (the data directory, or --artifacts), or the
// bucket's URL when AWS was configured with one and the server has no
// --artifacts. Reads and writes go where the job says, so artifacts stored
// before the bucket was configured, changed or dropped stay readable where
// they are, and a job's dependencies may be in another store than itself.
// Code archives stay in the server's own store.

// awsArtifactPrefix is where in the bucket artifacts go.
const awsArtifactPrefix = "dstack"

// bucketURL is the artifact store URL of a bucket.
func bucketURL(bucket string) string { return "s3://" + bucket + "/" + awsArtifactPrefix }

// runArtifactStore is the artifact store of a run submitted now.
func (s *Server) runArtifactStore() string {
	if s.cfg.Artifacts != "" {
		return ""
	}
	if c := s.aws.current(); c != nil && c.ArtifactBucket != "" {
		return bucketURL(c.ArtifactBucket)
	}
	return ""
}

// bucketConfig is how the bucket of url is reached with c's credentials:
// in c's region, through --s3-endpoint when the server has one.
func (s *Server) bucketConfig(c *awsStored, url string) s3blob.Config {
	return s3blob.Config{URL: url, Endpoint: s.cfg.S3Endpoint, Region: c.Region,
		AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey}
}

// awsCheckBucket opens c's artifact bucket, which checks that c's
// credentials reach it, and answers S3's refusal as 400. It returns the
// bucket's URL and store, or nothing without a bucket.
func (s *Server) awsCheckBucket(ctx context.Context, c *awsStored) (string, blob.Store, error) {
	if c.ArtifactBucket == "" {
		return "", nil, nil
	}
	url := bucketURL(c.ArtifactBucket)
	st, err := s3blob.Open(ctx, s.bucketConfig(c, url))
	if err != nil {
		if ctx.Err() != nil {
			return "", nil, unavailable(api.CauseStorage,
				"artifact bucket %s did not answer in time; nothing was saved: check the bucket, then try again", c.ArtifactBucket)
		}
		return "", nil, invalid("artifact bucket %s cannot be used with access key %s: %v; nothing was saved",
			c.ArtifactBucket, c.AccessKeyID, err)
	}
	return url, st, nil
}

// jobBlobs is the store that holds j's artifacts.
func (s *Server) jobBlobs(ctx context.Context, j *store.Job) (blob.Store, error) {
	if j.ArtifactStore == "" {
		return s.blobs, nil
	}
	return s.awsBucket(ctx, j.ArtifactStore)
}

// awsBucket is the bucket store of url under the AWS credentials in use,
// opened once per configuration.
func (s *Server) awsBucket(ctx context.Context, url string) (blob.Store, error) {
	s.aws.mu.Lock()
	c, st := s.aws.cfg, s.aws.buckets[url]
	s.aws.mu.Unlock()
	if st != nil {
		return st, nil
	}
	if c == nil {
		return nil, unavailable(api.CauseStorage,
			"this job's artifacts are in %s, and AWS is not configured on this server: "+
				"an admin runs `dstack aws config` with credentials that reach that bucket", url)
	}
	ctx, cancel := context.WithTimeout(ctx, s3OpenTimeout)
	defer cancel()
	opened, err := s3blob.Open(ctx, s.bucketConfig(c, url))
	if err != nil {
		s.log.Warn("open the artifact bucket", "url", url, "access_key_id", c.AccessKeyID, "err", err)
		return nil, unavailable(api.CauseStorage,
			"this job's artifacts are in %s, which access key %s cannot reach now: %v", url, c.AccessKeyID, err)
	}
	s.aws.mu.Lock()
	defer s.aws.mu.Unlock()
	if s.aws.cfg != c {
		return opened, nil // the configuration changed meanwhile: do not keep it
	}
	if have := s.aws.buckets[url]; have != nil {
		return have, nil
	}
	if s.aws.buckets == nil {
		s.aws.buckets = map[string]blob.Store{}
	}
	s.aws.buckets[url] = opened
	return opened, nil
}
