package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
	awsbackend "github.com/dstackai/dstack/backend/aws"
	"github.com/dstackai/dstack/blob"
	"github.com/dstackai/dstack/internal/secretbox"
	"github.com/dstackai/dstack/store"
)

// The AWS account on-demand runners run in, configured at run time with
// `dstack aws config` (PUT /aws): one per server. Its credentials are
// checked against EC2 before they are kept, and kept in the settings table
// as one value sealed under the server key (package secretbox), never in
// the clear: not in the database, not in a response, not in a log line.
//
// Once configured, the AWS backend joins the server's backends (putBackend)
// and the autoscaler launches within the users' AWS limits; cleared, it
// leaves them, and AWS limits stay but wait. Server replicas that share a
// database notice another's change within awsSyncEvery.
//
// With an artifact bucket, the artifacts of runs submitted from then on go
// to s3://BUCKET/dstack/ (aws_artifacts.go), unless the server keeps
// artifacts in a bucket of its own (--artifacts).

// AWSOptions is how the server reaches the AWS account configured at run
// time.
type AWSOptions struct {
	// Endpoint replaces EC2's endpoint in every region: any EC2-compatible
	// endpoint (--aws-endpoint-url). Empty: AWS's own.
	Endpoint string
	// HTTPClient makes the EC2 calls; nil: the SDK's.
	HTTPClient *http.Client
	// Disabled turns AWS off: no stored configuration is used and PUT /aws
	// is refused.
	Disabled bool
}

// validate checks the options without contacting AWS.
func (o AWSOptions) validate() error {
	if o.Endpoint == "" {
		return nil
	}
	u, err := url.Parse(o.Endpoint)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("--aws-endpoint-url %q: give an http:// or https:// URL, such as http://localhost:4566", o.Endpoint)
	case u.User != nil:
		return errors.New("--aws-endpoint-url must not hold credentials: give them with `dstack aws config`")
	}
	return nil
}

const (
	awsName = awsbackend.Name
	// settingAWS is the setting that holds the sealed configuration.
	settingAWS = "aws"
	// awsPurpose binds the sealed value to its use (see secretbox).
	awsPurpose = "aws-credentials"
	// awsSyncEvery is how often a server rereads a backend's stored configuration,
	// to follow a change made through another replica.
	awsSyncEvery = 30 * time.Second
	// awsCheckTimeout bounds the checks of PUT /aws against EC2 and S3.
	awsCheckTimeout = time.Minute
	// secretMask is what a masked secret starts with, as `aws configure`
	// shows it.
	secretMask = "****************"
)

// awsStored is the sealed configuration.
type awsStored struct {
	AccessKeyID     string    `json:"access_key_id"`
	SecretAccessKey string    `json:"secret_access_key"`
	Region          string    `json:"region"`
	ArtifactBucket  string    `json:"artifact_bucket,omitempty"`
	AMI             string    `json:"ami,omitempty"`
	GPUAMI          string    `json:"gpu_ami,omitempty"`
	UpdatedAt       time.Time `json:"updated_at"`
	UpdatedBy       string    `json:"updated_by"`
}

// String never shows the secret, whatever prints a value by mistake.
func (c *awsStored) String() string {
	return fmt.Sprintf("aws config %s in %s", c.AccessKeyID, c.Region)
}

// view is c for the API: the secret masked.
func (c *awsStored) view() *api.AWSConfig {
	if c == nil {
		return &api.AWSConfig{Configured: false}
	}
	t := c.UpdatedAt.UTC()
	return &api.AWSConfig{
		Configured: true, AccessKeyID: c.AccessKeyID, SecretAccessKey: maskSecret(c.SecretAccessKey),
		Region: c.Region, ArtifactBucket: c.ArtifactBucket, AMI: c.AMI, GPUAMI: c.GPUAMI,
		UpdatedAt: &t, UpdatedBy: c.UpdatedBy,
	}
}

// maskSecret shows a secret's last four characters only.
func maskSecret(s string) string {
	if len(s) <= 8 {
		return secretMask
	}
	return secretMask + s[len(s)-4:]
}

// awsState is the configuration in use.
type awsState struct {
	// change serialises changes: PUT, DELETE and the sync with the store.
	change sync.Mutex

	mu  sync.Mutex
	cfg *awsStored // nil: not configured
	// sealed is the stored value cfg comes from ("" when none), or one
	// that could not be used, so that the sync loop acts on changes only.
	sealed string
	// buckets are the artifact stores opened under cfg's credentials, by
	// URL (aws_artifacts.go).
	buckets map[string]blob.Store
}

func (a *awsState) current() *awsStored {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// set records the configuration in use; the buckets opened under the
// previous one are forgotten, and keep is kept instead when not nil.
func (a *awsState) set(cfg *awsStored, sealed, bucketAt string, keep blob.Store) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cfg, a.sealed, a.buckets = cfg, sealed, map[string]blob.Store{}
	if keep != nil {
		a.buckets[bucketAt] = keep
	}
}

func (s *Server) awsRoutes(rt *router) {
	p := api.PathPrefix
	rt.member("GET "+p+"/aws", s.handleAWSGet) // the secret key only for admins
	rt.admin("PUT "+p+"/aws", "change the server's AWS account", s.handleAWSPut)
	rt.admin("DELETE "+p+"/aws", "change the server's AWS account", s.handleAWSDelete)
}

// newAWSBackend builds the backend of c; it makes no call.
func (s *Server) newAWSBackend(c *awsStored) (*awsbackend.Backend, error) {
	return awsbackend.New(awsbackend.Config{
		AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, Region: c.Region,
		Endpoint: s.cfg.AWS.Endpoint, AMI: c.AMI, GPUAMI: c.GPUAMI,
		HTTPClient: s.cfg.AWS.HTTPClient, Logger: s.cfg.Logger, Now: s.cfg.Now,
	})
}

// applyStored applies a configuration stored in the settings (apply, under
// change): at start, where a value that cannot be used is logged and the
// backend stays off (the server starts anyway), and by followStored.
func applyStored(ctx context.Context, change *sync.Mutex, apply func(context.Context) error) error {
	change.Lock()
	defer change.Unlock()
	return apply(ctx)
}

// followStored applies, every awsSyncEvery until ctx ends, the stored
// configuration of what (a backend's), which another replica may change.
func (s *Server) followStored(ctx context.Context, what string, change *sync.Mutex, apply func(context.Context) error) {
	t := time.NewTicker(awsSyncEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := applyStored(ctx, change, apply); err != nil && ctx.Err() == nil {
			s.log.Warn("read the stored "+what+" configuration", "err", err)
		}
	}
}

// awsApplyStored makes the stored configuration the one in use, when it
// changed; s.aws.change is held. Only a failure to read the store is an
// error.
func (s *Server) awsApplyStored(ctx context.Context) error {
	sealed, err := s.store.SettingGet(ctx, settingAWS)
	switch {
	case errors.Is(err, store.ErrNotFound):
		sealed = ""
	case err != nil:
		return fmt.Errorf("read the AWS configuration: %w", err)
	}
	s.aws.mu.Lock()
	same := sealed == s.aws.sealed
	s.aws.mu.Unlock()
	if same {
		return nil
	}
	if sealed == "" {
		s.aws.set(nil, "", "", nil)
		s.removeBackend(awsName)
		s.log.Info("AWS configuration cleared (by another server replica)")
		return nil
	}
	cfg, err := s.awsOpen(sealed)
	var b *awsbackend.Backend
	if err == nil {
		b, err = s.newAWSBackend(cfg)
	}
	if err != nil {
		s.log.Error(err.Error())
		s.aws.set(nil, sealed, "", nil)
		s.removeBackend(awsName)
		return nil
	}
	s.aws.set(cfg, sealed, "", nil)
	s.putBackend(b)
	s.log.Info("AWS configured: on-demand runners may run in this account", "access_key_id", cfg.AccessKeyID,
		"region", cfg.Region, "artifact_bucket", cfg.ArtifactBucket, "updated_by", cfg.UpdatedBy)
	return nil
}

// awsOpen opens a stored value, with an error that says what to do when
// it cannot be.
func (s *Server) awsOpen(sealed string) (*awsStored, error) {
	plain, err := s.box.Open(sealed, awsPurpose)
	if err != nil {
		return nil, fmt.Errorf("the stored AWS credentials cannot be decrypted with this server's encryption key (key id %s): "+
			"start the server with %s set to the key they were saved with, or run `dstack aws config` again; "+
			"until then AWS on-demand runners are off", s.box.ID(), secretbox.EnvKey)
	}
	var c awsStored
	if err := json.Unmarshal(plain, &c); err != nil || c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return nil, errors.New("the stored AWS configuration is damaged: run `dstack aws config` again; until then AWS on-demand runners are off")
	}
	return &c, nil
}

func (s *Server) handleAWSGet(w http.ResponseWriter, _ *http.Request, u *store.User) error {
	v := s.aws.current().view()
	if !u.Admin && v.SecretAccessKey != "" {
		// Only those who may change the secret see its last characters
		// (to tell which one is saved); others see that there is one.
		v.SecretAccessKey = secretMask
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// errNotAdmin refuses a change of the server's AWS account to a user who
// is not an admin.
var errNotAdmin = api.Errorf(http.StatusForbidden, api.CodeForbidden,
	"only an admin can change the server's AWS account: ask an admin (such as the user `dstack server` created) to run `dstack aws config` or `dstack aws clear`")

// bucketName is what an S3 bucket's name looks like.
var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// normalizeAWSRequest trims req and reads its bucket: "name" or
// "s3://name", "" or "None" for none.
func normalizeAWSRequest(req *api.AWSConfigRequest) error {
	for _, f := range []*string{&req.AccessKeyID, &req.SecretAccessKey, &req.Region, &req.ArtifactBucket, &req.AMI, &req.GPUAMI} {
		*f = strings.TrimSpace(*f)
	}
	b := strings.TrimSuffix(strings.TrimPrefix(req.ArtifactBucket, "s3://"), "/")
	if strings.EqualFold(b, "none") {
		b = ""
	}
	if b != "" && !bucketName.MatchString(b) {
		if strings.Contains(b, "/") {
			return invalid("artifact_bucket %q: give the bucket's name only; artifacts go under dstack/ in it", req.ArtifactBucket)
		}
		return invalid("artifact_bucket %q is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens)", req.ArtifactBucket)
	}
	req.ArtifactBucket = b
	return nil
}

func (s *Server) handleAWSPut(w http.ResponseWriter, r *http.Request, u *store.User) error {
	if !u.Admin {
		return errNotAdmin
	}
	if s.cfg.AWS.Disabled {
		return invalid("AWS is turned off on this server")
	}
	var req api.AWSConfigRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := normalizeAWSRequest(&req); err != nil {
		return err
	}
	s.aws.change.Lock()
	defer s.aws.change.Unlock()
	ctx := r.Context()
	prev := s.aws.current()
	if req.SecretAccessKey == "" {
		if prev == nil || prev.AccessKeyID != req.AccessKeyID {
			return invalid("secret_access_key is missing: give the secret of access key %q", req.AccessKeyID)
		}
		req.SecretAccessKey = prev.SecretAccessKey
	}
	// Another access key may be of another account, where the instances
	// launched under the previous one would run unseen. The previous one
	// is unknown when none is configured or the stored one cannot be
	// opened: then too no AWS instance may be left. The AWS backend is
	// taken out of the set first, so that the autoscaler launches nothing
	// with it while the new key is checked, and put back if the change
	// fails.
	saved := false
	if prev == nil || prev.AccessKeyID != req.AccessKeyID {
		old := s.backends.Get(awsName)
		s.removeBackend(awsName)
		if old != nil {
			defer func() {
				if !saved {
					s.putBackend(old)
				}
			}()
		}
		from := ""
		if prev != nil {
			from = prev.AccessKeyID
		}
		if err := s.awsInstancesGone(ctx, &awsKeySwitch{from: from, to: req.AccessKeyID}); err != nil {
			return err
		}
	}
	cfg := &awsStored{
		AccessKeyID: req.AccessKeyID, SecretAccessKey: req.SecretAccessKey, Region: req.Region,
		ArtifactBucket: req.ArtifactBucket, AMI: req.AMI, GPUAMI: req.GPUAMI, UpdatedAt: s.cfg.Now().UTC(), UpdatedBy: u.Name,
	}
	b, err := s.newAWSBackend(cfg)
	if err != nil {
		return invalid("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	cctx, cancel := context.WithTimeout(ctx, awsCheckTimeout)
	defer cancel()
	if err := b.Check(cctx); err != nil {
		return s.awsRefused(err, cfg)
	}
	bucketAt, bucket, err := s.awsCheckBucket(cctx, cfg)
	if err != nil {
		return err
	}
	plain, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	sealed, err := s.box.Seal(plain, awsPurpose)
	if err != nil {
		return fmt.Errorf("seal the AWS credentials: %w", err)
	}
	if err := s.store.SettingPut(ctx, store.SettingPutParams{Name: settingAWS, Value: sealed}); err != nil {
		return fmt.Errorf("save the AWS configuration: %w", err)
	}
	saved = true
	s.aws.set(cfg, sealed, bucketAt, bucket)
	s.putBackend(b)
	s.log.Info("AWS configured", "user", u.Name, "access_key_id", cfg.AccessKeyID, "region", cfg.Region,
		"artifact_bucket", cfg.ArtifactBucket, "ami", cfg.AMI, "gpu_ami", cfg.GPUAMI)
	detail := map[string]any{"region": cfg.Region, "artifact_bucket": cfg.ArtifactBucket, "ami": cfg.AMI, "gpu_ami": cfg.GPUAMI,
		"secret_changed": prev == nil || prev.SecretAccessKey != cfg.SecretAccessKey}
	if prev != nil {
		detail["previous_access_key_id"] = prev.AccessKeyID
	}
	if err := s.audit(r, u, auditAWSPut, cfg.AccessKeyID, detail); err != nil {
		return err
	}
	view := cfg.view()
	view.Notes = b.Notes()
	writeJSON(w, http.StatusOK, view)
	return nil
}

// awsRefused turns a failed check of credentials into the API's answer:
// AWS's refusal as 400 with its code and reason, anything else (no
// answer, throttling) as 503.
func (s *Server) awsRefused(err error, cfg *awsStored) error {
	reason := backend.Reason(err)
	if errors.Is(err, backend.ErrInvalid) {
		return invalid("AWS refused access key %s in region %s: %s; nothing was saved", cfg.AccessKeyID, cfg.Region, reason)
	}
	s.log.Warn("check AWS credentials", "access_key_id", cfg.AccessKeyID, "region", cfg.Region, "err", reason)
	return unavailable(api.CauseCloud,
		"cannot check access key %s against EC2 in region %s: %s; nothing was saved: try again", cfg.AccessKeyID, cfg.Region, reason)
}

// awsKeySwitch is a change of the access key in use: from is "" when the
// previous one is not known (none is configured, or the stored one cannot
// be opened).
type awsKeySwitch struct{ from, to string }

// awsInstancesGone refuses (409) while AWS instances are not gone, saying
// how to end them; sw is the change of key that would be refused, nil for
// clearing the configuration.
func (s *Server) awsInstancesGone(ctx context.Context, sw *awsKeySwitch) error {
	ins, err := s.store.InstanceList(ctx, store.InstanceListParams{
		Backend: awsName, States: []store.InstanceState{store.InstanceLaunching, store.InstanceRunning, store.InstanceTerminating},
	})
	if err != nil {
		return fmt.Errorf("list AWS instances: %w", err)
	}
	live := 0
	for _, in := range ins {
		if in.State != store.InstanceTerminating {
			live++
		}
	}
	next := "`dstack aws clear`"
	if sw != nil {
		next = "`dstack aws config`"
	}
	switch {
	case live > 0:
		what := "are running"
		if live == 1 {
			what = "is running"
		}
		if sw == nil {
			return api.Errorf(http.StatusConflict, api.CodeConflict,
				"%s %s: run `dstack on-demand disable` (or delete the limits) to terminate them, then %s again",
				plural(live, "AWS instance"), what, next)
		}
		under := "under the access key configured before"
		if sw.from != "" {
			under = "under access key " + sw.from
		}
		msg := fmt.Sprintf("%s %s %s, which switching to access key %s would leave running unseen if the new key is of another account; "+
			"a new key of the same account needs them stopped first too: "+
			"run `dstack on-demand disable` (or delete the limits) to terminate them, then %s again",
			plural(live, "AWS instance"), what, under, sw.to, next)
		if sw.from != "" {
			msg += fmt.Sprintf(" (to change only the secret, keep access key ID %s: that is allowed while instances run)", sw.from)
		}
		return api.Errorf(http.StatusConflict, api.CodeConflict, "%s", msg)
	case len(ins) > 0:
		return api.Errorf(http.StatusConflict, api.CodeConflict,
			"%s still terminating: wait for %s to end, then %s again", plural(len(ins), "AWS instance is"), pronoun(len(ins)), next)
	}
	return nil
}

// plural is "1 thing" or "3 things"; a what of "thing is" becomes "3
// things are".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if w, ok := strings.CutSuffix(what, " is"); ok {
		return fmt.Sprintf("%d %ss are", n, w)
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func pronoun(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

func (s *Server) handleAWSDelete(w http.ResponseWriter, r *http.Request, u *store.User) error {
	if !u.Admin {
		return errNotAdmin
	}
	dry, err := dryRun(r)
	if err != nil {
		return err
	}
	s.aws.change.Lock()
	defer s.aws.change.Unlock()
	ctx := r.Context()
	if err := s.awsInstancesGone(ctx, nil); err != nil {
		return err
	}
	if dry {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if err := s.store.SettingDelete(ctx, settingAWS); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("delete the AWS configuration: %w", err)
	}
	prev := s.aws.current()
	s.aws.set(nil, "", "", nil)
	s.removeBackend(awsName)
	target := ""
	if prev != nil {
		s.log.Info("AWS configuration cleared", "user", u.Name, "access_key_id", prev.AccessKeyID)
		target = prev.AccessKeyID
	}
	if err := s.audit(r, u, auditAWSDelete, target, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
