// Package plan is the autoscaler's decision, as a pure function: given the
// pending jobs, the free self-hosted runners, the on-demand instances, the
// users' limits, the clouds' offers and which offers are unavailable, Plan
// says which instances to launch and which to terminate. It does no I/O and
// reads no clock; the controller gathers a Snapshot, calls Plan, and carries
// out the Decision (recording instances before launching them, so a crash
// never leaves a limit over its maximum).
//
// Plan's rules, in the order it applies them:
//
//  1. Instances of a deleted or disabled limit are terminated.
//  2. A limit with more instances than its maximum (launching and running
//     ones; terminating ones are already going) has the extras terminated:
//     free ones first (idle, or launching for no pending job), then ones
//     launching for a pending job, then the most recently started busy ones,
//     whose jobs the controller requeues.
//  3. Pending jobs are taken round-robin by user (users in the order of
//     their first job), each user's in queue order (QueuedAt, then ID). A
//     job of a user at their cap of running jobs waits. A job that an
//     instance is already launching for keeps it. Otherwise it takes the
//     first that fits of: a free self-hosted runner of its user or shared
//     (smallest first); an idle instance of any limit (cheapest first); an
//     instance launching for no pending job (cheapest first); a new
//     instance of the cheapest offer that fits, among the enabled limits
//     with room whose offer is not marked unavailable. Spot
//     instances are for interruptible jobs only; an interruptible job takes
//     an on-demand one when it is cheaper or spot has no room. Jobs of one
//     limit are launched together, one Launch with a count. The count of a
//     limit, launching and terminating instances included, never exceeds
//     its maximum. A job nothing can take waits, with a reason for `dstack
//     ps`.
//  4. A job that waits for room in a limit whose free instances are idle
//     but bound to another image (see below) has one of them terminated,
//     so that its instance is launched once that one is gone.
//  5. Idle instances that took no job and have been idle for IdleTimeout are
//     terminated.
//
// Images: an instance of an offer that is PerImage (a Kubernetes runner
// Pod, whose image is fixed) is launched with its job's image and takes only
// jobs of that image; jobs of two images get two instances (within the
// limit). Instances of other offers take any job, and their launches carry
// no image.
//
// What Plan leaves to the controller: timeouts of launching instances that
// never register, instances the cloud has and the server does not know
// (garbage collection), and which offers are unavailable until when.
//
// The same Snapshot, in any order, gives the same Decision: every list of
// the Decision is sorted.
//
// One pass is cheap enough to run every few seconds: shapes of jobs (user,
// resources, purchase types) are fitted once, and each shape walks its sorted
// candidates with a cursor that only moves forward, because within one pass
// runners and instances are only taken and room only shrinks.
//
// WaitingWithoutBackend, with the same fit, says why jobs wait on a server
// with no backend (and so nothing to plan).
package plan

import (
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
)

// DefaultIdleTimeout is how long an on-demand instance may sit idle when
// Snapshot.IdleTimeout is zero.
const DefaultIdleTimeout = 5 * time.Minute

// Snapshot is everything Plan looks at. IDs are unique within their kind.
type Snapshot struct {
	// Now is the time the snapshot was taken.
	Now time.Time
	// IdleTimeout is how long an idle instance lives; zero or less means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Jobs are the pending jobs: queued, waiting for a runner or an instance.
	Jobs []Job
	// Runners are the free self-hosted runners: online and running no job.
	// On-demand instances are Instances, never Runners.
	Runners []Runner
	// Registered are every self-hosted runner, busy or free, online or
	// not, with its whole resources. Plan gives them no job: they only say
	// why a job waits (the runners that fit it are busy, or none could
	// ever take it).
	Registered []RegisteredRunner
	// Instances are the on-demand instances the server has a record of and
	// the cloud has not reported gone.
	Instances []Instance
	// Limits are the server's limits, for any user's jobs.
	Limits []Limit
	// Users are the users with a cap of running jobs (MaxRunning > 0),
	// with how many they run; a user not listed has no cap.
	Users []User
	// Offers are what the backends sell. A limit whose offer is missing
	// cannot launch (its instances still count, idle ones still take jobs).
	// Of two offers with one key the cheaper is used.
	Offers []backend.Offer
	// Unavailable holds the offers the cloud recently refused for lack of
	// capacity or quota, each until the time it may be tried again.
	Unavailable map[backend.OfferKey]time.Time
	// Backends are the names of the backends the server has now, for
	// saying why a limit of another one (AWS not configured) allows
	// nothing; nil when not known.
	Backends []string
	// Budget, when set, says that the monthly budget of on-demand runners
	// is spent: nothing is launched, instances up still take jobs, and a
	// job that only a launch could serve waits (WaitBudget) with Budget as
	// its message.
	Budget string
}

// Job is a pending job.
type Job struct {
	ID     string
	UserID string
	// Resources is what the job needs; Resources.Interruptible allows spot.
	Resources api.Resources
	// QueuedAt orders the queue: earlier jobs are planned first.
	QueuedAt time.Time
	// Image is the image the job runs in (api.JobSpec.RunImage), "" for
	// none: an instance bound to an image takes only jobs of that image.
	Image string
}

// Runner is a free self-hosted runner: it takes one job of its user that
// fits Free, or of any user when it is Shared.
type Runner struct {
	ID     string
	UserID string
	Free   api.HostResources
	Shared bool
}

// User is a user's cap of running jobs.
type User struct {
	ID string
	// MaxRunning caps the user's active jobs; 0 is no cap.
	MaxRunning int
	// Running is how many active jobs the user has.
	Running int
}

// InstanceState is where an on-demand instance is in its life.
type InstanceState string

// Instance states. A state Plan does not know is taken as InstanceRunning.
const (
	// InstanceLaunching: requested from the cloud or booting; its runner
	// has not registered yet.
	InstanceLaunching InstanceState = "launching"
	// InstanceRunning: its runner registered; busy or idle.
	InstanceRunning InstanceState = "running"
	// InstanceTerminating: asked to terminate; it still counts against its
	// limit until the cloud reports it gone.
	InstanceTerminating InstanceState = "terminating"
)

// Instance is an on-demand instance.
type Instance struct {
	ID      string
	LimitID string
	// Offer is what the instance was launched as; its resources say which
	// jobs it can take. Instances of one limit share one instance type.
	Offer backend.Offer
	State InstanceState
	// JobID is the job the instance runs (busy) or was launched for. A
	// launching instance whose JobID is not a pending job of its limit's
	// user, or is empty, is free to take another job; so is a running one
	// with no JobID (idle).
	JobID string
	// IdleSince is when a running instance last became idle; zero means
	// StartedAt.
	IdleSince time.Time
	// StartedAt is when the instance was launched.
	StartedAt time.Time
	// ImageBound: the instance runs its jobs in Image, the image it was
	// launched with (its offer is PerImage), and takes only jobs of that
	// image ("" meaning jobs with none). False: it takes any job.
	ImageBound bool
	Image      string
}

// takes reports whether the instance's image binding lets it take j.
func (in Instance) takes(j Job) bool { return !in.ImageBound || in.Image == j.Image }

// Limit allows up to Max instances of one offer, for any user's jobs.
type Limit struct {
	ID           string
	UserID       string
	Backend      string
	Region       string
	InstanceType string
	Spot         bool
	Max          int
	// Enabled is false when the limit, or the server's on-demand runners
	// as a whole, are disabled: its instances are terminated.
	Enabled bool
}

// OfferKey is the offer the limit allows.
func (l Limit) OfferKey() backend.OfferKey {
	return backend.OfferKey{Backend: l.Backend, Region: l.Region, InstanceType: l.InstanceType, Spot: l.Spot}
}

// Decision is what to do. Every pending job appears exactly once in
// Bindings, in one Launch's JobIDs, or in Waiting.
type Decision struct {
	Launches     []Launch      // sorted by LimitID and Image, at most one per limit and image
	Terminations []Termination // sorted by InstanceID
	Bindings     []Binding     // sorted by JobID
	Waiting      []Waiting     // sorted by JobID
}

// Launch is Count new instances of one limit's offer, one for each of JobIDs.
// For an offer that is PerImage, a launch is of one image, the jobs'.
type Launch struct {
	LimitID string
	Offer   backend.Offer
	// Image is the image of the instances when the offer is PerImage (the
	// jobs' image, "" for jobs with none); "" otherwise.
	Image string
	Count int
	// JobIDs are the jobs the instances are for, in queue order; len(JobIDs)
	// is Count.
	JobIDs []string
}

// Reason says why an instance is terminated.
type Reason string

// Termination reasons.
const (
	ReasonIdle          Reason = "idle_timeout"   // idle for IdleTimeout
	ReasonOverLimit     Reason = "over_limit"     // its limit's maximum went down
	ReasonLimitDeleted  Reason = "limit_deleted"  // its limit is gone
	ReasonLimitDisabled Reason = "limit_disabled" // its limit is disabled
	// ReasonImage: an idle instance bound to one image, in a limit at its
	// maximum, makes room for a pending job of another image.
	ReasonImage Reason = "image_replaced"
)

// Termination is one instance to terminate.
type Termination struct {
	InstanceID string
	LimitID    string
	Reason     Reason
	// JobID is the job the instance runs or was launched for, if any.
	JobID string
	// Requeue is true when the instance was running JobID: the controller
	// requeues it (as interrupted). A job an instance was only launched for
	// is still pending and needs nothing; Plan has planned it anew.
	Requeue bool
}

// Binding says which existing runner or instance a pending job goes to; one
// of RunnerID and InstanceID is set. The controller records a binding to a
// launching instance (its JobID), so that the next pass keeps it.
type Binding struct {
	JobID      string
	RunnerID   string
	InstanceID string
}

// WaitCode classifies why a job waits.
type WaitCode string

// Wait codes.
const (
	// WaitNoLimit: no enabled limit of the user allows an offer that fits.
	WaitNoLimit WaitCode = "no_limit"
	// WaitNoRoom: limits allow an offer that fits, but all are at their
	// maximum; the job starts when an instance frees up or room appears.
	WaitNoRoom WaitCode = "no_room"
	// WaitUnavailable: every allowed offer that fits is marked unavailable.
	WaitUnavailable WaitCode = "unavailable"
	// WaitNoRunner: with no backend, no registered runner that fits is
	// free (WaitingWithoutBackend).
	WaitNoRunner WaitCode = "no_runner"
	// WaitUserLimit: the job's user runs as many jobs as their cap allows.
	WaitUserLimit WaitCode = "user_limit"
	// WaitBudget: a limit would launch an instance for it, but the month's
	// on-demand budget is spent (Snapshot.Budget).
	WaitBudget WaitCode = "budget"
)

// Waiting is a pending job nothing can take in this pass.
type Waiting struct {
	JobID string
	Code  WaitCode
	// Message says why, for a person: "no limit allows an on-demand instance
	// with 4 GPUs".
	Message string
	// Busy: on a server with no backend (WaitingWithoutBackend), the job
	// waits only for a runner that fits, and is busy, to be free: the
	// ordinary wait of a queue, not a problem to fix.
	Busy bool
}

// Plan decides. It is a pure function of s.
func Plan(s Snapshot) Decision {
	p := newPlanner(s)
	p.terminateForLimits()
	p.assign()
	p.replaceForImages()
	p.terminateIdle()
	return p.decision()
}
