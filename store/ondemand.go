package store

import (
	"time"

	"github.com/dstackai/dstack/api"
)

// The state of on-demand runners: what each user allows the server to launch
// (limits and the on-demand switch), the instances it launched, the offers a
// cloud refused lately, and the autoscaler's leader lease.
//
// An instance's life, as the store records it:
//
//	InstanceCreate ──▶ launching ──InstanceRegister──▶ running (busy ⇄ idle)
//	                       │                              │
//	                       └────── InstanceSetState ──────┴──▶ terminating ──▶ terminated | gone
//
// An instance is recorded before the cloud is asked for it, so a crash
// between the two leaves a record (which the autoscaler terminates or finds
// in the cloud by its tags), never an instance the limit does not count.

// Limit allows the server up to Max instances of one offer, for any
// user's jobs: (backend, region, instance type, spot) is its key.
type Limit struct {
	ID string
	// UserID is the user who created the limit.
	UserID       string
	Backend      string
	Region       string
	InstanceType string
	Spot         bool
	Max          int
	// Instances is how many of the limit's instances count against Max:
	// launching, running and terminating ones.
	Instances int
	// OnDemandEnabled is the server's on-demand switch (OnDemandGet), read
	// with the limit so that one list says which limits may launch.
	OnDemandEnabled bool
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// LimitPutParams are the arguments of LimitPut.
type LimitPutParams struct {
	// ID is the new limit's ID; unused when the key has a limit already.
	ID string
	// UserID is who creates it; unused when the key has a limit already.
	UserID       string
	Backend      string
	Region       string
	InstanceType string
	Spot         bool
	Max          int // zero or more
	Now          time.Time
}

// LimitPutResult is what LimitPut did.
type LimitPutResult struct {
	Limit *Limit
	// Created is true when no limit had the key before.
	Created bool
	// PrevMax is the maximum before the call; 0 when Created.
	PrevMax int
}

// LimitDeleteParams are the arguments of LimitDelete.
type LimitDeleteParams struct {
	ID  string // empty: all limits
	Now time.Time
}

// LimitListParams are the arguments of LimitList.
type LimitListParams struct{}

// OnDemand is the server's on-demand switch.
type OnDemand struct {
	Enabled bool
	// UpdatedAt is when OnDemandSetEnabled last changed it; zero if never.
	UpdatedAt time.Time
}

// OnDemandSetEnabledParams are the arguments of OnDemandSetEnabled.
type OnDemandSetEnabledParams struct {
	Enabled bool
	Now     time.Time
}

// InstanceState is where an on-demand instance is in its life.
type InstanceState string

// Instance states, in the order an instance goes through them; terminated
// and gone are both final.
const (
	// InstanceLaunching: recorded, asked of the cloud or booting; its
	// runner has not registered.
	InstanceLaunching InstanceState = "launching"
	// InstanceRunning: its runner registered; busy or idle.
	InstanceRunning InstanceState = "running"
	// InstanceTerminating: asked to terminate; it still counts against its
	// limit until the cloud reports it terminated or gone.
	InstanceTerminating InstanceState = "terminating"
	// InstanceTerminated: terminated by the server.
	InstanceTerminated InstanceState = "terminated"
	// InstanceGone: the cloud no longer has it, or never launched it.
	InstanceGone InstanceState = "gone"
)

// Counted reports whether an instance in state st counts against its limit.
func (st InstanceState) Counted() bool {
	return st == InstanceLaunching || st == InstanceRunning || st == InstanceTerminating
}

// Ended reports whether st is final.
func (st InstanceState) Ended() bool { return st == InstanceTerminated || st == InstanceGone }

// Instance is the server's record of one on-demand instance.
type Instance struct {
	ID     string
	UserID string
	// LimitID is the limit the instance counts against. The limit may have
	// been deleted since: the offer fields below keep its key.
	LimitID      string
	Backend      string
	Region       string
	InstanceType string
	Spot         bool
	// PricePerHour is the offer's price when the instance was recorded
	// (for spot, the spot price then), in api.Currency.
	PricePerHour float64
	// LaunchUserID is the user of the job the instance was launched for;
	// empty when it was launched for none (or recorded before it was
	// kept).
	LaunchUserID string
	State        InstanceState
	// LaunchKey is the idempotency key of the launch call for the instance,
	// shared by the instances of one call.
	LaunchKey string
	// CloudID is the cloud's ID of the instance; empty until the launch
	// call returns.
	CloudID string
	// JobID is the job the instance was launched for or is bound to; empty
	// when it is idle.
	JobID string
	// RunnerID is the runner that registered on the instance, if any.
	RunnerID      string
	CreatedAt     time.Time
	LaunchedAt    *time.Time // when its cloud ID was recorded
	RegisteredAt  *time.Time
	IdleSince     *time.Time // when a running instance last became idle
	TerminatingAt *time.Time
	EndedAt       *time.Time // when it became terminated or gone
	// Reason says why the instance is terminating or ended.
	Reason string
	// ImageBound: the instance's backend runs its jobs in the image it
	// was launched with (a Kubernetes runner Pod made of Image), so its
	// runner claims only jobs whose image (api.JobSpec.RunImage) is Image,
	// "" meaning jobs with none. False: it takes any job.
	ImageBound bool
	Image      string
}

// InstanceCreateParams are the arguments of InstanceCreate.
type InstanceCreateParams struct {
	// LimitID is the limit the instances count against; they copy its user
	// and offer key.
	LimitID      string
	PricePerHour float64
	// LaunchKey is the idempotency key of the launch call that will start
	// them.
	LaunchKey string
	// ImageBound and Image are the instances' (Instance's fields of the
	// same names): one launch is of one image.
	ImageBound bool
	Image      string
	Instances  []InstanceCreate // at least one
	Now        time.Time
}

// InstanceCreate is one instance of InstanceCreate.
type InstanceCreate struct {
	ID    string
	JobID string // the job it is launched for; empty for none
	// JoinTokenHash is the hash of the instance's single-use credential,
	// which its runner registers with (InstanceRegister).
	JoinTokenHash string
}

// InstanceSetLaunchedParams are the arguments of InstanceSetLaunched.
type InstanceSetLaunchedParams struct {
	CloudIDs map[string]string // cloud ID by instance ID
	Now      time.Time
}

// InstanceRegisterParams are the arguments of InstanceRegister.
type InstanceRegisterParams struct {
	JoinTokenHash string
	// Runner is the runner to create; its UserID and InstanceID are the
	// instance's, whatever they are set to here.
	Runner RunnerCreateParams
}

// InstanceBindJobParams are the arguments of InstanceBindJob.
type InstanceBindJobParams struct {
	ID    string
	JobID string
}

// InstanceSetIdleParams are the arguments of InstanceSetIdle.
type InstanceSetIdleParams struct {
	ID  string
	Now time.Time
}

// InstanceSetStateParams are the arguments of InstanceSetState.
type InstanceSetStateParams struct {
	ID string
	// State is InstanceTerminating, InstanceTerminated or InstanceGone.
	State  InstanceState
	Reason string
	// MaxAttempts is how many times a job may run, as in RunnerMarkOffline.
	MaxAttempts int
	Now         time.Time
}

// InstanceListParams are the arguments of InstanceList; empty fields do not
// filter.
type InstanceListParams struct {
	UserID  string
	LimitID string
	States  []InstanceState
	Backend string
}

// PendingJob is a pending job as the autoscaler plans for it.
type PendingJob struct {
	ID        string
	RunID     string
	RunName   string
	UserID    string
	Workflow  string
	Resources api.Resources
	// Image is the image the job runs in (api.JobSpec.RunImage), "" for
	// none.
	Image   string
	Attempt int
	// LastInterruption is why the previous attempt ended, for a requeued
	// job ("" for a first attempt).
	LastInterruption string
	// SubmittedAt is when the run was submitted; QueuedAt when the job last
	// joined the back of the queue (at submission, or when its dependencies
	// were done). A requeued job keeps its place.
	SubmittedAt time.Time
	QueuedAt    time.Time
}

// JobListPendingParams are the arguments of JobListPending.
type JobListPendingParams struct {
	UserID string // empty: every user's
}

// JobSetPendingReasonsParams are the arguments of JobSetPendingReasons.
type JobSetPendingReasonsParams struct {
	// Reasons maps job IDs to their new StatusReason.
	Reasons map[string]string
}

// OfferUnavailable is an offer a cloud refused for lack of capacity or quota,
// not to be tried again before Until.
type OfferUnavailable struct {
	Backend      string
	Region       string
	InstanceType string
	Spot         bool
	// Since is when the offer was first refused in the current stretch of
	// marks ("No capacity since 10:42").
	Since  time.Time
	Until  time.Time
	Reason string
}

// OfferMarkUnavailableParams are the arguments of OfferMarkUnavailable.
type OfferMarkUnavailableParams struct {
	Backend      string
	Region       string
	InstanceType string
	Spot         bool
	Until        time.Time
	Reason       string
	Now          time.Time
}

// LeaseAcquireParams are the arguments of LeaseAcquire.
type LeaseAcquireParams struct {
	Name   string
	Holder string
	TTL    time.Duration // more than zero
	Now    time.Time
}

// LeaseReleaseParams are the arguments of LeaseRelease.
type LeaseReleaseParams struct {
	Name   string
	Holder string
}
