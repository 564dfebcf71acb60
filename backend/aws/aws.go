package aws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"golang.org/x/time/rate"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/clock"
)

// Name is the backend's name, in offers and limits.
const Name = "aws"

// Defaults of Config's zero fields.
const (
	DefaultLaunchRate       = 2.0 // RunInstances calls a second: EC2's refill rate
	DefaultLaunchBurst      = 5   // EC2's bucket for RunInstances
	DefaultRetryMaxAttempts = 5
)

// Config configures the backend. Its String, GoString, Format and LogValue
// never show the secret key.
type Config struct {
	// AccessKeyID and SecretAccessKey are the IAM user's static credentials.
	AccessKeyID, SecretAccessKey string
	// Region is the default region: limits without one use it, and Check
	// proves the credentials in it.
	Region string
	// Endpoint overrides the EC2 endpoint of every region (any
	// EC2-compatible endpoint); empty means AWS's own per region.
	Endpoint string
	// AMI and GPUAMI override the images of non-GPU and GPU instance types;
	// empty means the backend chooses (see the package doc).
	AMI, GPUAMI string
	// HTTPClient makes the calls; nil means the SDK's.
	HTTPClient *http.Client
	// Logger receives the backend's records; nothing is logged when nil.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// LaunchRate and LaunchBurst pace RunInstances calls across all
	// regions; zero means DefaultLaunchRate and DefaultLaunchBurst.
	LaunchRate  float64
	LaunchBurst int
	// RetryMaxAttempts is how many attempts the SDK makes of one call
	// (retrying throttling and transient errors); zero means
	// DefaultRetryMaxAttempts.
	RetryMaxAttempts int
}

// regionSyntax is what an AWS region name looks like: "us-east-1",
// "ap-southeast-2", "us-gov-west-1", "cn-north-1".
var regionSyntax = regexp.MustCompile(`^[a-z]{2}(-(gov|iso[a-z]?))?-[a-z]+-[0-9]{1,2}$`)

// validRegion reports whether region is spelled as an AWS region.
func validRegion(region string) bool { return regionSyntax.MatchString(region) }

// Validate says what is wrong with c, in words a user can act on.
func (c Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.AccessKeyID) == "" {
		errs = append(errs, errors.New("aws: no access key ID: set it with `dstack aws config`"))
	}
	if strings.TrimSpace(c.SecretAccessKey) == "" {
		errs = append(errs, errors.New("aws: no secret access key: set it with `dstack aws config`"))
	}
	switch {
	case c.Region == "":
		errs = append(errs, errors.New("aws: no region: set one with `dstack aws config` (e.g. us-east-1)"))
	case !validRegion(c.Region):
		errs = append(errs, fmt.Errorf("aws: %q is not an AWS region name (e.g. us-east-1, eu-west-1)", c.Region))
	}
	if c.Endpoint != "" {
		if u, err := url.Parse(c.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("aws: endpoint %q is not an absolute http(s) URL", c.Endpoint))
		}
	}
	if c.LaunchRate < 0 || c.LaunchBurst < 0 || c.RetryMaxAttempts < 0 {
		errs = append(errs, errors.New("aws: LaunchRate, LaunchBurst and RetryMaxAttempts must not be negative"))
	}
	return errors.Join(errs...)
}

// masked is the secret as it may be shown.
func (c Config) masked() string {
	if c.SecretAccessKey == "" {
		return ""
	}
	return "****"
}

// String shows c without its secret key.
func (c Config) String() string {
	return fmt.Sprintf("aws.Config{AccessKeyID: %q, SecretAccessKey: %q, Region: %q, Endpoint: %q, AMI: %q, GPUAMI: %q}",
		c.AccessKeyID, c.masked(), c.Region, c.Endpoint, c.AMI, c.GPUAMI)
}

// GoString is String, for %#v.
func (c Config) GoString() string { return c.String() }

// Format prints String for every verb, so that no verb prints the fields.
func (c Config) Format(f fmt.State, _ rune) { fmt.Fprint(f, c.String()) }

// LogValue is c without its secret key, for slog.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("access_key_id", c.AccessKeyID),
		slog.String("secret_access_key", c.masked()),
		slog.String("region", c.Region),
		slog.String("endpoint", c.Endpoint),
	)
}

// waiter paces calls (a *rate.Limiter).
type waiter interface {
	Wait(ctx context.Context) error
}

// Backend launches on-demand runners as EC2 instances. Create it with New;
// it is safe for concurrent use.
type Backend struct {
	cfg     Config // SecretAccessKey cleared: the credentials provider holds it
	creds   awssdk.CredentialsProvider
	log     *slog.Logger
	now     func() time.Time
	limiter waiter

	// Knobs tests set right after New.
	backoff       retry.BackoffDelayer                             // the SDK retryer's; nil = its own
	sleep         func(ctx context.Context, d time.Duration) error // pauses between the backend's own retries
	invalidRetry  time.Duration                                    // pause between InvalidParameterValue retries
	tagRetry      time.Duration                                    // pause between CreateTags retries
	spotOpenGrace time.Duration                                    // an open spot request younger than this is left alone
	pageSize      int32                                            // DescribeInstances page size

	mu          sync.Mutex
	clients     map[string]ec2API
	used        map[string]bool   // regions the backend has been used in
	cloudRegion map[string]string // instance ID → region
	offers      map[string]cachedOffers
	types       map[string]map[string]typeInfo // region → type → info
	images      map[string]cachedImage         // region/arch/gpu → image
	groups      map[string]string              // region/server → security group ID
	regions     *cachedRegions
	logged      map[string]bool      // one-time log lines already written
	notes       []string             // optional actions the endpoint lacks, and what is done instead
	swept       map[string]time.Time // region → last sweep of open spot requests

	sgMu sync.Mutex // serialises finding or creating security groups
}

var _ backend.Backend = (*Backend)(nil)

// New returns a backend for c. It makes no call: Check proves the
// credentials.
func New(c Config) (*Backend, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.LaunchRate == 0 {
		c.LaunchRate = DefaultLaunchRate
	}
	if c.LaunchBurst == 0 {
		c.LaunchBurst = DefaultLaunchBurst
	}
	if c.RetryMaxAttempts == 0 {
		c.RetryMaxAttempts = DefaultRetryMaxAttempts
	}
	now := c.Now
	if now == nil {
		now = time.Now
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	creds := credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")
	c.SecretAccessKey = ""
	return &Backend{
		cfg:           c,
		creds:         awssdk.NewCredentialsCache(creds),
		log:           log.With("subsystem", "backend", "backend", Name),
		now:           now,
		limiter:       rate.NewLimiter(rate.Limit(c.LaunchRate), c.LaunchBurst),
		sleep:         clock.Sleep,
		invalidRetry:  2 * time.Second,
		tagRetry:      time.Second,
		spotOpenGrace: 5 * time.Minute,
		pageSize:      1000,
		clients:       map[string]ec2API{},
		used:          map[string]bool{c.Region: true},
		cloudRegion:   map[string]string{},
		offers:        map[string]cachedOffers{},
		types:         map[string]map[string]typeInfo{},
		images:        map[string]cachedImage{},
		groups:        map[string]string{},
		logged:        map[string]bool{},
		swept:         map[string]time.Time{},
	}, nil
}

// Name is "aws".
func (b *Backend) Name() string { return Name }

// DefaultRegion is Config.Region.
func (b *Backend) DefaultRegion() string { return b.cfg.Region }

// String names the backend and its region, never its secret.
func (b *Backend) String() string {
	return fmt.Sprintf("aws.Backend{AccessKeyID: %q, Region: %q}", b.cfg.AccessKeyID, b.cfg.Region)
}

// GoString is String, for %#v.
func (b *Backend) GoString() string { return b.String() }

// Format prints String for every verb.
func (b *Backend) Format(f fmt.State, _ rune) { fmt.Fprint(f, b.String()) }

// client returns the region's EC2 client, creating it once.
func (b *Backend) client(region string) ec2API {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.clients[region]; ok {
		return c
	}
	o := ec2.Options{
		Region:      region,
		Credentials: b.creds,
		Retryer: retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = b.cfg.RetryMaxAttempts
			if b.backoff != nil {
				so.Backoff = b.backoff
				so.RateLimiter = ratelimit.None
			}
		}),
	}
	if b.cfg.Endpoint != "" {
		o.BaseEndpoint = awssdk.String(b.cfg.Endpoint)
	}
	if b.cfg.HTTPClient != nil {
		o.HTTPClient = b.cfg.HTTPClient
	}
	c := ec2.New(o)
	b.clients[region] = c
	return c
}

// markUsed counts region as used: List and Terminate look there. Only a
// region that answered is counted, so that a misspelt one never fails List.
func (b *Backend) markUsed(region string) {
	b.mu.Lock()
	b.used[region] = true
	b.mu.Unlock()
}

// WatchRegions adds regions to those List looks in (backend.RegionWatcher):
// the server names the regions of its records and limits, so that a backend
// made anew lists instances launched before in any of them. Names that are
// not region names are ignored.
func (b *Backend) WatchRegions(regions ...string) {
	for _, r := range regions {
		if validRegion(r) {
			b.markUsed(r)
		}
	}
}

// usedRegions are the regions the backend has been used in, the default
// first.
func (b *Backend) usedRegions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.used))
	for r := range b.used {
		if r != b.cfg.Region {
			out = append(out, r)
		}
	}
	sort.Strings(out)
	return append([]string{b.cfg.Region}, out...)
}

// remember notes the region of instances.
func (b *Backend) remember(region string, ids ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range ids {
		b.cloudRegion[id] = region
	}
}

// logOnce logs msg at warn level the first time key is seen.
func (b *Backend) logOnce(key, msg string, args ...any) {
	b.mu.Lock()
	seen := b.logged[key]
	b.logged[key] = true
	b.mu.Unlock()
	if !seen {
		b.log.Warn(msg, args...)
	}
}

// noteUnsupported records, and logs once at WARN, that the endpoint does not
// support an optional action and what the backend does instead.
func (b *Backend) noteUnsupported(action, instead string) {
	note := "the endpoint does not support " + action + "; " + instead
	b.mu.Lock()
	seen := b.logged["unsupported:"+action]
	b.logged["unsupported:"+action] = true
	if !seen {
		b.notes = append(b.notes, note)
	}
	b.mu.Unlock()
	if !seen {
		b.log.Warn(note, "action", action)
	}
}

// Notes are the optional EC2 actions the endpoint was found to lack (an
// EC2-compatible endpoint may), each with what the backend does instead,
// e.g. "the endpoint does not support DescribeRegions; using the
// configured region us-east-1".
func (b *Backend) Notes() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.notes)
}
