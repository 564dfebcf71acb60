// Package backend is the vocabulary every cloud the server launches on-demand
// runners in speaks: what a region offers (Offer), how instances are launched,
// listed and terminated (Backend), and the typed errors a cloud's refusals
// become (ErrNoCapacity, ErrQuota, ErrUnsupported, ErrInvalid, ErrThrottled).
//
// This package holds no cloud's implementation: besides the vocabulary it
// has the Set of backends a server uses and WithMetrics, a decorator that
// counts any backend's calls, errors and latency. The local Docker backend
// (backend/local) and the AWS backend (backend/aws) implement Backend; the
// autoscaler's planner (autoscale/plan) chooses among Offers and the
// controller drives Launch, List and Terminate.
//
// The instance lifecycle the controller keeps, and the part a backend plays
// in it:
//
//	requested ──Launch──▶ launching ──runner registers──▶ running (busy ⇄ idle)
//	    │                    │                                 │
//	    └──── refused ───────┴───────── Terminate ─────────────┴──▶ terminating ──▶ gone
//
// A backend knows only cloud states (InstanceState); "registered", "busy"
// and "idle" are the server's knowledge of the runner on the instance.
package backend

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/dstackai/dstack/api"
)

// OfferKey names an offer: the same four fields key a user's limit, so a
// limit allows exactly the offer with its key.
type OfferKey struct {
	Backend      string // the Backend's Name, e.g. "aws" or "local"
	Region       string // e.g. "eu-west-1"; the local backend uses "local"
	InstanceType string // e.g. "m5.xlarge"
	Spot         bool   // spot (interruptible) rather than on-demand purchase
}

// String renders the key as "aws/eu-west-1/m5.xlarge/spot" (or ".../on-demand"),
// stable enough for logs, metrics labels and map keys in text form.
func (k OfferKey) String() string {
	p := "on-demand"
	if k.Spot {
		p = "spot"
	}
	return k.Backend + "/" + k.Region + "/" + k.InstanceType + "/" + p
}

// Offer is one instance type a region sells, at one purchase type, with what
// a runner on it will have and what it costs.
//
// CPUs, MemoryMiB and GPUs are what dstack-runner on the instance will report
// at registration (see package hostinfo), because the planner fits jobs to
// them and the runner claims jobs by them: memory is the usable figure (the
// nominal size less what the image's kernel and services keep), and GPU names
// and memory are nvidia-smi's ("NVIDIA A100-SXM4-40GB", 40960). An offer that
// promises more than its runner reports would be launched for a job the
// runner then cannot take.
type Offer struct {
	Backend      string
	Region       string
	InstanceType string
	Spot         bool
	CPUs         int
	MemoryMiB    int64
	GPUs         []api.GPU // one entry per GPU; nil when the type has none
	// PricePerHour is in US dollars: the on-demand list price, or the current
	// spot price for a spot offer. The planner compares offers by it only.
	PricePerHour float64
	// PerImage: an instance of the offer runs its jobs in the image it is
	// launched with (a Kubernetes runner Pod is made of the job's image),
	// so the planner launches it with the pending job's image
	// (LaunchRequest.Image) and its runner takes only jobs of that image.
	// False where the runner runs any job's image itself (the Docker
	// executor on a VM): launches carry no image.
	PerImage bool
}

// Key is the offer's identity.
func (o Offer) Key() OfferKey {
	return OfferKey{Backend: o.Backend, Region: o.Region, InstanceType: o.InstanceType, Spot: o.Spot}
}

// Resources is the offer's machine as a runner on it would report it (disk
// unknown, so zero).
func (o Offer) Resources() api.HostResources {
	return api.HostResources{CPUs: o.CPUs, MemoryMiB: o.MemoryMiB, GPUs: o.GPUs}
}

// Tag keys a backend puts on every instance it launches (as cloud tags,
// container labels or whatever the backend has), so that List finds the
// server's instances and the server can tell which record each one is.
const (
	TagServerID  = "dstack:server-id"  // the server installation's identity
	TagLimitID   = "dstack:limit-id"   // the limit the instance counts against
	TagRecordID  = "dstack:record-id"  // the server's instance record
	TagLaunchKey = "dstack:launch-key" // the LaunchRequest's IdempotencyKey
)

// Tags are the server's marks on one instance.
type Tags struct {
	ServerID  string
	LimitID   string
	RecordID  string
	LaunchKey string
}

// InstanceSpec is one instance of a launch as the server wants it.
type InstanceSpec struct {
	// RecordID is the server's record of the instance, written before the
	// launch; the instance is tagged with it (TagRecordID).
	RecordID string
	// JoinToken is the credential dstack-runner on this instance, and only on
	// this instance, registers with. The backend hands it to the instance's
	// boot (user data, container environment); it must not be visible to the
	// other instances of the launch. A cloud whose one launch call gives every
	// instance the same boot input (EC2's RunInstances with a count) delivers
	// it after the call, e.g. bound to the cloud ID the call returned.
	JoinToken string
}

// LaunchRequest asks for len(Instances) instances of one offer, in one cloud
// call where the cloud has one (EC2: MinCount/MaxCount), so that a burst of
// pending jobs costs one call against the cloud's rate limit.
type LaunchRequest struct {
	// Offer is what to launch; its Region and InstanceType and Spot are used,
	// its price is not.
	Offer Offer
	// IdempotencyKey makes a retried call (after a timeout or a crash) launch
	// nothing more: a backend passes it to the cloud's own idempotency
	// mechanism (EC2's ClientToken) where there is one, and tags every
	// instance with it (TagLaunchKey) so List finds the launch either way.
	// At most 64 ASCII characters.
	IdempotencyKey string
	// ServerID is the server installation's identity (TagServerID).
	ServerID string
	// LimitID is the limit the instances count against (TagLimitID).
	LimitID string
	// ServerURL is where dstack-runner reaches the server. A backend may
	// rewrite the host where its instances see the server elsewhere (the local
	// backend's containers reach the host through the Docker bridge).
	ServerURL string
	// Instances are the instances to launch, one spec each; at least one.
	Instances []InstanceSpec
	// Image, for an offer that is PerImage, is the image the instances'
	// jobs run in (api.JobSpec.RunImage): the backend makes the instances
	// of it. Empty for jobs with no image, and for other offers, whose
	// backends ignore it.
	Image string
}

// Validate checks what every backend needs of a request: instances with
// distinct record IDs and join tokens, an idempotency key of 1 to 64
// printable ASCII characters, a server ID, and an absolute http(s) server
// URL. A refusal is an *Error of kind ErrInvalid.
func (req LaunchRequest) Validate() error {
	bad := func(format string, args ...any) error {
		return Errorf(ErrInvalid, "launch", "InvalidRequest", format, args...)
	}
	switch {
	case len(req.Instances) == 0:
		return bad("no instances to launch")
	case req.IdempotencyKey == "" || len(req.IdempotencyKey) > 64 || !isASCII(req.IdempotencyKey):
		return bad("the idempotency key %q must be 1 to 64 ASCII characters", req.IdempotencyKey)
	case req.ServerID == "":
		return bad("no server ID")
	case strings.ContainsFunc(req.Image, unicode.IsSpace) || len(req.Image) > 512:
		return bad("image %q is not an image reference", req.Image)
	}
	if u, err := url.Parse(req.ServerURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("server URL %q is not an absolute http(s) URL", req.ServerURL)
	}
	seen := map[string]bool{}
	for _, s := range req.Instances {
		switch {
		case s.RecordID == "":
			return bad("an instance has no record ID")
		case seen[s.RecordID]:
			return bad("record ID %q is given twice", s.RecordID)
		case s.JoinToken == "":
			return bad("instance %s has no join token", s.RecordID)
		}
		seen[s.RecordID] = true
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// InstanceState is what the cloud says of an instance.
type InstanceState string

// Instance states, as a backend maps its cloud's own onto them.
const (
	StatePending     InstanceState = "pending"     // accepted, booting
	StateRunning     InstanceState = "running"     // up; its runner may or may not have registered
	StateTerminating InstanceState = "terminating" // shutting down; still counted and billed
	StateGone        InstanceState = "gone"        // terminated, or the cloud no longer knows it
)

// Instance is one cloud instance carrying the server's tags.
type Instance struct {
	CloudID    string // the cloud's own ID ("i-0abc…", a container ID)
	Offer      OfferKey
	Tags       Tags
	State      InstanceState
	LaunchedAt time.Time
	// Failure, set only with StateGone, is why the cloud gave the instance
	// up after accepting its launch: a Kubernetes Pod no node can take is
	// ErrNoCapacity. The controller treats an Unavailable failure as a
	// launch refused for the offer (marked unavailable, the next tried).
	Failure error
	// Host is the machine the instance runs on, where it differs from the
	// instance itself (a Pod's node); empty otherwise.
	Host string
}

// Backend is one cloud the server launches on-demand runners in.
//
// Every method is safe for concurrent use, honours ctx's cancellation and
// deadline, and returns errors that are, or wrap, one of this package's
// sentinels whenever the cloud's refusal has a meaning the server acts on
// (see *Error). Methods never retry a throttled call themselves beyond what
// the cloud's SDK does: they return ErrThrottled and the caller paces itself.
type Backend interface {
	// Name is the backend's constant name ("aws", "local"), as in
	// Offer.Backend and in limits.
	Name() string

	// Offers lists the instance types region sells, with prices, for both
	// purchase types the backend supports. An unknown region is ErrInvalid; a
	// backend without the notion returns its offers for any region it accepts.
	// The result may be cached by the backend for a few minutes.
	Offers(ctx context.Context, region string) ([]Offer, error)

	// Launch starts the instances of req with one cloud call where possible,
	// tagged with TagServerID, TagLimitID, TagLaunchKey and each one's
	// TagRecordID, and returns them with their cloud IDs, each with its
	// Tags.RecordID saying which spec it is.
	//
	// It launches all of req.Instances or, when the cloud grants only part
	// of the count, as many as it could (at least one) without an error; the
	// specs without an instance are the caller's to release. When it launches
	// nothing it returns an error: ErrNoCapacity or ErrQuota when the cloud
	// has no room for the offer (the caller marks the offer unavailable for a
	// while and tries the next), ErrUnsupported when the region does not sell
	// it, ErrInvalid for a request the cloud rejects as malformed, ErrThrottled
	// when the call was rate-limited (nothing launched; retry later).
	//
	// A call repeated with the same IdempotencyKey launches nothing new and
	// returns the instances of the first call, where the cloud allows it; the
	// caller's List finds them by TagLaunchKey otherwise.
	Launch(ctx context.Context, req LaunchRequest) ([]Instance, error)

	// Terminate ends the instances with the given cloud IDs. It is
	// idempotent: an ID already terminating, terminated or unknown to the
	// cloud is not an error. An empty list does nothing.
	Terminate(ctx context.Context, cloudIDs []string) error

	// List returns every instance, in any region the backend is configured
	// for, tagged with TagServerID = serverID and not yet gone, including
	// instances the server has no record of (the garbage collector's input).
	// Instances that are gone may be returned with StateGone.
	List(ctx context.Context, serverID string) ([]Instance, error)
}

// RegionWatcher is a Backend whose List looks only in the regions it knows
// to be in use (EC2 is listed region by region). Before every List, the
// controller names the regions of the server's instance records and limits,
// so that a backend made anew (a restart, changed credentials) lists the
// instances it launched before in every region they run in.
type RegionWatcher interface {
	WatchRegions(regions ...string)
}

// The sentinel errors a backend's refusals wrap. Test with errors.Is.
var (
	// ErrNoCapacity: the cloud has no room for this offer now (EC2's
	// InsufficientInstanceCapacity, a spot request with no capacity).
	ErrNoCapacity = errors.New("no capacity")
	// ErrQuota: the account's quota for this offer is used up (EC2's
	// InstanceLimitExceeded, VcpuLimitExceeded, MaxSpotInstanceCountExceeded).
	ErrQuota = errors.New("quota exceeded")
	// ErrUnsupported: the region or account does not offer this instance type
	// or purchase type (EC2's Unsupported, InvalidInstanceType).
	ErrUnsupported = errors.New("not offered")
	// ErrInvalid: the request is malformed or refers to something that does
	// not exist (a bad region, image or parameter); retrying will not help.
	ErrInvalid = errors.New("invalid request")
	// ErrThrottled: the cloud refused the call for its rate limit (EC2's
	// RequestLimitExceeded); nothing happened, retry after a pause.
	ErrThrottled = errors.New("throttled")
)

// Error is a cloud's refusal: one of the sentinels, the operation, and the
// cloud's own code and message, kept for the user to read (the limit's
// capacity note, the logs).
type Error struct {
	// Kind is one of the package's sentinels, or nil when the refusal has no
	// meaning the server acts on.
	Kind error
	// Op is what was being done: "launch", "terminate", "list", "offers".
	Op string
	// Code is the cloud's error code ("InsufficientInstanceCapacity").
	Code string
	// Reason is the cloud's message, as it gave it.
	Reason string
	// Err is the underlying error (the SDK's), if any.
	Err error
	// RetryAfter, for ErrThrottled, is how long the cloud asked the caller
	// to wait (Kubernetes' Retry-After); zero when it did not say.
	RetryAfter time.Duration
}

// AsIs reports whether a backend returns err as it is rather than
// classifying it into an *Error: nil, a context's end (the outcome of the
// call is unknown), or an *Error already.
func AsIs(err error) bool {
	var be *Error
	return err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &be)
}

// Errorf builds an *Error of kind for op, with the cloud's code and a reason
// formatted from format and args.
func Errorf(kind error, op, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Op: op, Code: code, Reason: fmt.Sprintf(format, args...)}
}

// Error renders "launch: no capacity: InsufficientInstanceCapacity: We
// currently do not have sufficient capacity…", leaving out what is empty.
func (e *Error) Error() string {
	s := e.Op
	add := func(part string) {
		if part == "" {
			return
		}
		if s != "" {
			s += ": "
		}
		s += part
	}
	if e.Kind != nil {
		add(e.Kind.Error())
	}
	add(e.Code)
	add(e.Reason)
	if e.Err != nil && (e.Reason == "" || e.Err.Error() != e.Reason) {
		add(e.Err.Error())
	}
	if s == "" {
		return "backend error"
	}
	return s
}

// Unwrap lets errors.Is and errors.As see both the kind and the cause.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Reason is the cloud's own words about err, for a capacity note or a job's
// status reason: the Code and Reason of the first *Error in err's chain, or
// err's text when there is none, or "" for a nil err.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) && (e.Code != "" || e.Reason != "") {
		switch {
		case e.Code == "":
			return e.Reason
		case e.Reason == "":
			return e.Code
		}
		return e.Code + ": " + e.Reason
	}
	return err.Error()
}

// Unavailable reports whether err says the offer cannot be had now, so that
// the caller marks it unavailable and tries the next (ErrNoCapacity,
// ErrQuota, ErrUnsupported).
func Unavailable(err error) bool {
	return errors.Is(err, ErrNoCapacity) || errors.Is(err, ErrQuota) || errors.Is(err, ErrUnsupported)
}
