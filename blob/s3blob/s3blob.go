// Package s3blob is a blob.Store in an S3 bucket: AWS S3, or an
// S3-compatible store (MinIO, Ceph, R2...) reached through Config.Endpoint.
//
// Objects live under s3://bucket/prefix/key. Put streams: an object smaller
// than PartSize goes up in one PutObject, a larger one in a multipart upload
// of PartSize parts with at most Concurrency parts in flight, so a Put holds
// about PartSize*(Concurrency+1) bytes of memory whatever the object's size.
// S3 shows an object only once PutObject or CompleteMultipartUpload succeeds,
// so a failed or cancelled Put leaves the old object, or none; the parts of a
// failed multipart upload are aborted under a context of their own, so that a
// cancelled request does not leave them behind, billed and invisible.
//
// Open reads with a ranged GET from the offset on, so downloads resume. List
// pages through ListObjectsV2 and skips keys that are not blob.ValidKey
// (such as the "folder/" markers some consoles create).
//
// The credentials need s3:ListBucket (Open's HeadBucket check and List),
// s3:GetObject, s3:PutObject, s3:DeleteObject (runs deleted by `dstack rm`
// and the server's retention) and s3:AbortMultipartUpload on the bucket. A
// lifecycle rule that removes incomplete multipart uploads after a day is
// still wise: an abort can fail when S3 cannot be reached.
//
// A server opens one store and shares it:
//
//	st, err := s3blob.Open(ctx, s3blob.Config{URL: "s3://my-bucket/dstack"})
//	// S3-compatible: Config{URL: ..., Endpoint: "http://minio:9000",
//	//                       AccessKeyID: ..., SecretAccessKey: ...}
//
// Uploads go through feature/s3/manager's Uploader. That module is marked
// deprecated in favour of feature/s3/transfermanager, but it is maintained,
// small, and does what Put needs; moving is a change inside Put alone.
package s3blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dstackai/dstack/blob"
)

// Defaults for the zero values of Config's tuning fields.
const (
	DefaultPartSize    = 16 << 20 // bytes per multipart part
	DefaultConcurrency = 4        // parts of one Put in flight
	MaxListPageSize    = 1000     // S3's own ceiling for ListObjectsV2
	abortTimeout       = time.Minute
)

// Config says where the store is and how to reach it.
type Config struct {
	// URL is s3://bucket or s3://bucket/prefix.
	URL string
	// Endpoint overrides the S3 endpoint for S3-compatible stores
	// ("http://localhost:9000"); when set, requests use path-style
	// addressing and checksums are sent only where the API requires them,
	// which is what most such stores understand. Empty: AWS S3.
	Endpoint string
	// Region of the bucket. Empty: the AWS default chain (AWS_REGION, the
	// shared config); failing that "us-east-1" with an Endpoint, or the
	// region S3 reports for the bucket without one.
	Region string
	// AccessKeyID and SecretAccessKey (and optionally SessionToken) are
	// static credentials. Empty: the AWS default chain (environment, shared
	// files, SSO, instance or task role).
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string

	// PartSize is the multipart part size in bytes (at least 5 MiB).
	// Zero: DefaultPartSize.
	PartSize int64
	// Concurrency is how many parts of one Put upload at once. Zero:
	// DefaultConcurrency.
	Concurrency int
	// ListPageSize is the number of keys per ListObjectsV2 page (1 to
	// 1000). Zero: 1000.
	ListPageSize int32
	// HTTPClient, if set, sends the requests in place of the SDK's client
	// (AWS_CA_BUNDLE then does not apply). Nil: the SDK's client.
	HTTPClient *http.Client
}

// Validate checks the configuration without contacting S3.
func (c Config) Validate() error {
	if _, err := ParseURL(c.URL); err != nil {
		return err
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("S3 endpoint %q: want an http:// or https:// URL such as http://localhost:9000", c.Endpoint)
		}
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		return errors.New("S3 credentials: set both the access key ID and the secret access key, or neither to use the AWS default credential chain")
	}
	if c.SessionToken != "" && c.AccessKeyID == "" {
		return errors.New("S3 credentials: a session token needs an access key ID and a secret access key")
	}
	if c.PartSize != 0 && c.PartSize < manager.MinUploadPartSize {
		return fmt.Errorf("S3 part size %d: must be at least %d bytes (5 MiB)", c.PartSize, manager.MinUploadPartSize)
	}
	if c.Concurrency < 0 {
		return fmt.Errorf("S3 upload concurrency %d: must not be negative", c.Concurrency)
	}
	if c.ListPageSize < 0 || c.ListPageSize > MaxListPageSize {
		return fmt.Errorf("S3 list page size %d: must be between 1 and %d (0 for the default)", c.ListPageSize, MaxListPageSize)
	}
	return nil
}

// API is the part of the S3 client that Store uses.
type API interface {
	manager.UploadAPIClient // PutObject and the multipart calls
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	HeadBucket(context.Context, *s3.HeadBucketInput, ...func(*s3.Options)) (*s3.HeadBucketOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// Store is a blob.Store in an S3 bucket. It is safe for concurrent use.
type Store struct {
	api      API
	loc      Location
	where    string            // endpoint or region, for messages
	uploader *manager.Uploader //nolint:staticcheck // transfermanager is another API; moving to it is a change of its own
	pageSize int32
}

var _ blob.Store = (*Store)(nil)

// Open connects to the bucket cfg.URL names and checks that it is reachable
// with the credentials at hand.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	loc, _ := ParseURL(cfg.URL)

	var opts []func(*config.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)))
	}
	if cfg.Endpoint != "" {
		opts = append(opts,
			config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
			config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("S3 %s: load AWS configuration: %w", loc, err)
	}
	s3opts := func(o *s3.Options) {
		if cfg.HTTPClient != nil {
			o.HTTPClient = cfg.HTTPClient
		}
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
			o.UsePathStyle = true
		}
	}
	where := cfg.Endpoint
	if awsCfg.Region == "" {
		if cfg.Endpoint != "" {
			awsCfg.Region = "us-east-1"
		} else {
			probe := s3.NewFromConfig(awsCfg, s3opts, func(o *s3.Options) { o.Region = "us-east-1" })
			region, err := manager.GetBucketRegion(ctx, probe, loc.Bucket)
			if err != nil {
				return nil, fmt.Errorf("S3 %s: find the bucket's region: %w; set the region (or AWS_REGION)", loc, err)
			}
			awsCfg.Region = region
		}
	}
	if where == "" {
		where = "AWS region " + awsCfg.Region
	}
	s, err := New(s3.NewFromConfig(awsCfg, s3opts), loc, cfg)
	if err != nil {
		return nil, err
	}
	s.where = where
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// New returns a store on an S3 client built by the caller; it does not
// contact S3. Only cfg's tuning fields (PartSize, Concurrency, ListPageSize)
// are used.
func New(api API, loc Location, cfg Config) (*Store, error) {
	if err := validBucket(loc.Bucket); err != nil {
		return nil, err
	}
	if loc.Prefix != "" && (!strings.HasSuffix(loc.Prefix, "/") || !blob.ValidKey(strings.TrimSuffix(loc.Prefix, "/"))) {
		return nil, fmt.Errorf("S3 prefix %q must be a clean relative path ending with /", loc.Prefix)
	}
	tuning := Config{URL: loc.String(), PartSize: cfg.PartSize, Concurrency: cfg.Concurrency, ListPageSize: cfg.ListPageSize}
	if err := tuning.Validate(); err != nil {
		return nil, err
	}
	u := manager.NewUploader(api, func(u *manager.Uploader) { //nolint:staticcheck // see Store.uploader
		u.PartSize = orDefault(cfg.PartSize, DefaultPartSize)
		u.Concurrency = int(orDefault(int64(cfg.Concurrency), DefaultConcurrency))
		// Put aborts the upload itself, under a context that outlives a
		// cancelled request (the uploader would abort under the cancelled one).
		u.LeavePartsOnError = true
	})
	return &Store{
		api:      api,
		loc:      loc,
		where:    "S3",
		uploader: u,
		pageSize: int32(orDefault(int64(cfg.ListPageSize), MaxListPageSize)), //nolint:gosec // orDefault caps it at MaxListPageSize
	}, nil
}

func orDefault(v, def int64) int64 {
	if v == 0 {
		return def
	}
	return v
}

// Location returns the bucket and prefix the store keeps its objects under.
func (s *Store) Location() Location { return s.loc }

// check makes sure the bucket exists and the credentials may use it.
func (s *Store) check(ctx context.Context) error {
	_, err := s.api.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.loc.Bucket)})
	if err == nil {
		return nil
	}
	return bucketError(s.loc, s.where, err)
}

func (s *Store) objectKey(key string) (string, error) {
	if !blob.ValidKey(key) {
		return "", fmt.Errorf("%w %q", blob.ErrInvalidKey, key)
	}
	return s.loc.Prefix + key, nil
}

// Put implements blob.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	k, err := s.objectKey(key)
	if err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}
	body := &countingReader{ctx: ctx, r: r}
	_, err = s.uploader.Upload(ctx, &s3.PutObjectInput{ //nolint:staticcheck // see Store.uploader
		Bucket: aws.String(s.loc.Bucket),
		Key:    aws.String(k),
		Body:   body,
	})
	if err == nil {
		return body.n, nil
	}
	var mu manager.MultiUploadFailure
	if errors.As(err, &mu) {
		if aerr := s.abort(ctx, k, mu.UploadID()); aerr != nil {
			err = errors.Join(err, aerr)
		}
	}
	return body.n, fmt.Errorf("put %s: %w", key, err)
}

// abort removes the parts of a failed multipart upload.
func (s *Store) abort(ctx context.Context, k, uploadID string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	_, err := s.api.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket:   aws.String(s.loc.Bucket),
		Key:      aws.String(k),
		UploadId: aws.String(uploadID),
	})
	if err != nil {
		return fmt.Errorf("abort multipart upload %s: %w (its parts stay until removed, e.g. by a lifecycle rule for incomplete multipart uploads)", uploadID, err)
	}
	return nil
}

// Open implements blob.Store. An offset at or past the end yields no bytes.
func (s *Store) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, int64, error) {
	k, err := s.objectKey(key)
	if err != nil {
		return nil, 0, err
	}
	if offset < 0 {
		offset = 0
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(k)}
	if offset > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := s.api.GetObject(ctx, in)
	if err != nil {
		if offset > 0 && isInvalidRange(err) {
			// Nothing follows the offset; the object may still be missing.
			if _, err := s.Stat(ctx, key); err != nil {
				return nil, 0, err
			}
			return io.NopCloser(strings.NewReader("")), 0, nil
		}
		return nil, 0, objectError("open", key, err)
	}
	return out.Body, aws.ToInt64(out.ContentLength), nil
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, key string) (blob.Object, error) {
	k, err := s.objectKey(key)
	if err != nil {
		return blob.Object{}, err
	}
	out, err := s.api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(k)})
	if err != nil {
		return blob.Object{}, objectError("stat", key, err)
	}
	return blob.Object{Key: key, Size: aws.ToInt64(out.ContentLength)}, nil
}

// List implements blob.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]blob.Object, error) {
	if !blob.ValidPrefix(prefix) {
		return nil, fmt.Errorf("invalid prefix %q", prefix)
	}
	p := s3.NewListObjectsV2Paginator(s.api, &s3.ListObjectsV2Input{
		Bucket:  aws.String(s.loc.Bucket),
		Prefix:  aws.String(s.loc.Prefix + prefix),
		MaxKeys: aws.Int32(s.pageSize),
	})
	var out []blob.Object
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, bucketError(s.loc, s.where, err))
		}
		for _, o := range page.Contents {
			key := strings.TrimPrefix(aws.ToString(o.Key), s.loc.Prefix)
			if !blob.ValidKey(key) {
				continue
			}
			out = append(out, blob.Object{Key: key, Size: aws.ToInt64(o.Size)})
		}
	}
	// S3 lists in UTF-8 byte order, which is Go's string order; sorting
	// again costs little and keeps the contract with stores that do not.
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements blob.Store. S3 answers a delete of a missing key with
// success, as the contract wants.
func (s *Store) Delete(ctx context.Context, key string) error {
	k, err := s.objectKey(key)
	if err != nil {
		return err
	}
	_, err = s.api.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(k)})
	if err != nil {
		if err := objectError("delete", key, err); errors.Is(err, blob.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", key, bucketError(s.loc, s.where, err))
	}
	return nil
}

// countingReader counts what the uploader reads and stops at cancellation.
type countingReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
