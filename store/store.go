// Package store is dstack's state: users, runners, runs and jobs, tags on
// runs, and the on-demand runners the server launches: limits, instances,
// unavailable offers and the autoscaler's leader lease (see ondemand.go).
//
// One interface, Store, is implemented for SQLite (store/sqlite, the embedded
// default) and PostgreSQL (store/postgres). Both pass the conformance suite in
// store/storetest. Every method that changes state does so in one transaction;
// a method either applies in full or not at all.
//
// Methods are named noun-verb and take a params struct. sql.ErrNoRows never
// escapes: a missing row is ErrNotFound.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/dstackai/dstack/api"
)

// Errors returned by every Store.
var (
	// ErrNotFound: no such row.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique key is already taken.
	ErrConflict = errors.New("already exists")
	// ErrLeaseLost: the caller's fencing token is not the job's current one:
	// the job was requeued, reassigned or finished meanwhile.
	ErrLeaseLost = errors.New("job lease lost")
	// ErrLimitReached: InstanceCreate would take a limit over its maximum,
	// or the limit is gone (then ErrNotFound too), or its user's on-demand
	// runners are disabled.
	ErrLimitReached = errors.New("limit reached")
	// ErrLastAdmin: the change would leave the server without an admin
	// (UserSetAdmin demoting, or UserDelete removing, the last one).
	ErrLastAdmin = errors.New("last admin")
	// ErrExpired: the token's expiry has passed (TokenAuthenticate).
	ErrExpired = errors.New("token expired")
	// ErrUnavailable: the database cannot answer now (busy, locked by
	// another writer, unreachable); the same call may work later. The error
	// in the chain is an *UnavailableError that says which.
	ErrUnavailable = errors.New("database unavailable")
)

// UnavailableError is a database that cannot answer now. It matches
// ErrUnavailable with errors.Is, and keeps the driver's error in the chain.
type UnavailableError struct {
	// Reason says what is wrong, for a person: "database is busy (locked
	// by another writer)", "database unreachable: connection refused".
	Reason string
	// Busy is true when the database answers but is held by another writer
	// (a short wait helps); false when it cannot be reached at all.
	Busy bool
	Err  error
}

func (e *UnavailableError) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}

func (e *UnavailableError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrUnavailable}
	}
	return []error{ErrUnavailable, e.Err}
}

// Store is the state of a dstack server.
type Store interface {
	// Migrate applies the embedded migrations not yet applied. It is safe to
	// call from several processes at once.
	Migrate(ctx context.Context) error
	// Close releases the database.
	Close() error

	// AuditStore keeps the audit log (audit.go).
	AuditStore
	// LogStore keeps jobs' output for servers whose logs live in the
	// database (logs.go).
	LogStore
	// UsageStore reads what cost and usage are computed from (usage.go).
	UsageStore

	// UserCreate records a user and, when p.TokenHash is set, its first
	// token, in one transaction. ErrConflict when the name (even a removed
	// user's), the ID or the token is taken.
	UserCreate(ctx context.Context, p UserCreateParams) (*User, error)
	// UserGetByTokenHash finds the user of a token, whatever the token's
	// expiry; ErrNotFound for an unknown token or a removed user. The server
	// authenticates with TokenAuthenticate.
	UserGetByTokenHash(ctx context.Context, tokenHash string) (*User, error)
	// UserGet finds a user by ID, a removed one too (DeletedAt set).
	UserGet(ctx context.Context, id string) (*User, error)
	// UserGetByName finds a user that is not removed by name.
	UserGetByName(ctx context.Context, name string) (*User, error)
	// UserCount counts the users, removed ones too.
	UserCount(ctx context.Context) (int, error)
	// UserList lists the users that are not removed by name, each with
	// RunningJobs set.
	UserList(ctx context.Context) ([]*User, error)
	// UserSetAdmin makes a user an admin or a member and returns it.
	// ErrNotFound for an unknown or removed user; ErrLastAdmin, with nothing
	// changed, when it would demote the last admin (checked in the same
	// transaction).
	UserSetAdmin(ctx context.Context, p UserSetAdminParams) (*User, error)
	// UserDelete removes a user (a soft delete: its runs stay, with its
	// name) and, in the same transaction, deletes its tokens and revokes
	// the credentials of its self-hosted runners. ErrNotFound for an
	// unknown or removed user; ErrLastAdmin for the last admin.
	UserDelete(ctx context.Context, p UserDeleteParams) (*User, error)

	// TokenCreate records a new token of a user. ErrConflict when the user
	// has a token of that name (or the hash is taken); ErrNotFound for an
	// unknown or removed user.
	TokenCreate(ctx context.Context, p TokenCreateParams) (*Token, error)
	// TokenList lists a user's tokens by name.
	TokenList(ctx context.Context, p TokenListParams) ([]*Token, error)
	// TokenRevoke deletes a user's token named, or else with the ID,
	// p.Ref, and with p.Runners also revokes, in the same transaction, the
	// credentials of the runners registered with it. ErrNotFound when the
	// user has no such token.
	TokenRevoke(ctx context.Context, p TokenRevokeParams) (*TokenRevokeResult, error)
	// TokenReplaceAll gives a user the new token p and, in the same
	// transaction, deletes the user's other tokens, which it returns (the
	// recovery of a lost admin token). ErrNotFound for an unknown or
	// removed user; ErrConflict when the hash is taken.
	TokenReplaceAll(ctx context.Context, p TokenCreateParams) ([]*Token, error)
	// TokenAuthenticate finds a token by hash and its user. ErrNotFound for
	// an unknown token or a removed user; ErrExpired, with the user and
	// token, when the token's expiry is not after p.Now. It records the use
	// (the token's LastUsedAt and the user's LastSeenAt) only when the
	// token was last used before p.Now-p.TouchEvery, so that most requests
	// only read.
	TokenAuthenticate(ctx context.Context, p TokenAuthenticateParams) (*User, *Token, error)
	// UserSetMaxRunning caps a user's active jobs (0: no cap); the cap
	// holds from the next claim, and jobs already running go on.
	// ErrNotFound for an unknown user.
	UserSetMaxRunning(ctx context.Context, p UserSetMaxRunningParams) (*User, error)
	// UserCapList lists the users with a cap of running jobs, each with
	// how many active jobs they have, by user ID.
	UserCapList(ctx context.Context) ([]*UserCap, error)

	// RunnerCreate records a new runner with its credential's hash.
	RunnerCreate(ctx context.Context, p RunnerCreateParams) (*Runner, error)
	// RunnerGetByTokenHash finds the runner a credential belongs to, whatever
	// its expiry; callers check TokenExpiresAt.
	RunnerGetByTokenHash(ctx context.Context, tokenHash string) (*Runner, error)
	// RunnersByTokenHash finds the runners the credentials tokenHashes
	// belong to, by hash, in one read; a hash of no runner is left out.
	RunnersByTokenHash(ctx context.Context, tokenHashes []string) (map[string]*Runner, error)
	RunnerGet(ctx context.Context, id string) (*Runner, error)
	// RunnerList lists a user's runners (all runners when UserID is empty),
	// with the job each one holds.
	RunnerList(ctx context.Context, p RunnerListParams) ([]*Runner, error)
	// RunnerTally counts every runner by what tells runners apart to a
	// reason a job waits, or to a gauge: owner, shared, on-demand,
	// resources, online, interrupted and busy. It looks at every runner,
	// as RunnerList does, but brings back one row per kind of runner,
	// however many runners are alike.
	RunnerTally(ctx context.Context) ([]*RunnerKind, error)
	// RunnerHeartbeat records that a runner was heard from; an offline runner
	// comes back online.
	RunnerHeartbeat(ctx context.Context, p RunnerHeartbeatParams) error
	// RunnerHeartbeatBatch records many heartbeats at once, as a server
	// heard them since its last flush: each runner's last heartbeat becomes
	// the later of its own and its beat's, and a runner found offline comes
	// back online. It returns the IDs of the runners that came back online;
	// beats of runners that no longer exist are skipped.
	RunnerHeartbeatBatch(ctx context.Context, p RunnerHeartbeatBatchParams) ([]string, error)
	// RunnerMarkOffline marks offline every online runner not heard from since
	// HeartbeatBefore and interrupts the jobs they hold: each such job becomes
	// pending again with a new lease (Attempt+1) while Attempt < MaxAttempts,
	// and failed otherwise. The cause in their StatusReason is the runner's
	// InterruptionReason when it has one, and its silence otherwise. It
	// returns the jobs it changed.
	RunnerMarkOffline(ctx context.Context, p RunnerMarkOfflineParams) ([]*Job, error)
	// RunnerDelete removes a self-hosted runner that is offline and holds
	// no job; the jobs it ran keep its name. ErrNotFound when there is no
	// runner p.ID, ErrConflict when it is online, holds a job or runs on an
	// on-demand instance (it goes with its instance).
	RunnerDelete(ctx context.Context, p RunnerDeleteParams) error
	// RunnerDeleteOffline removes, as RunnerDelete, every self-hosted runner
	// that is offline, holds no job and was last heard from before
	// p.HeartbeatBefore, and returns them as they were.
	RunnerDeleteOffline(ctx context.Context, p RunnerDeleteOfflineParams) ([]*Runner, error)
	// RunnerInterrupt records that the cloud is reclaiming a runner's
	// machine (a spot instance's interruption notice): from then on
	// JobClaimNext gives the runner nothing. The first report is kept; a
	// repeat changes nothing of the runner. In the same transaction the
	// active jobs the runner holds get the runner's InterruptionReason as
	// their StatusReason, for `dstack ps`; they stay the runner's, which stops
	// them and gives them back with JobInterrupt. It returns the runner after
	// the change and the jobs it changed. ErrNotFound for an unknown runner.
	RunnerInterrupt(ctx context.Context, p RunnerInterruptParams) (*Runner, []*Job, error)
	// RunnerRevokeByToken revokes the credentials of the runners registered
	// with a user token (RunnerCreateParams.TokenID) and returns them; they
	// are refused from then on, and go offline as silent runners do.
	RunnerRevokeByToken(ctx context.Context, tokenID string) ([]*Runner, error)

	// RunCreate records a run and its jobs at once. Jobs with no dependencies
	// are pending, the others submitted. Job IDs and the order of Jobs are the
	// caller's; DependsOn names workflows of the same run.
	RunCreate(ctx context.Context, p RunCreateParams) (*Run, error)
	// RunGet returns a run with its jobs (by name).
	RunGet(ctx context.Context, p RunGetParams) (*Run, error)
	// RunResume runs again the jobs of a finished run that are not done
	// (failed, stopped, aborted), as the next attempt of each: a job whose
	// dependencies are all done becomes pending at the back of the queue,
	// the others submitted; each gets a new lease and Attempt+1, and its
	// checkpoint, if any, stays for the attempt to start from. Done jobs
	// stay done. ErrNotFound when there is no such run; ErrRunUnfinished
	// when a job of it is not finished; ErrRunDone when all are done. It
	// returns the run after the change.
	RunResume(ctx context.Context, p RunResumeParams) (*Run, error)
	// RunList returns runs newest first with their jobs.
	RunList(ctx context.Context, p RunListParams) ([]*Run, error)

	JobGet(ctx context.Context, id string) (*Job, error)
	// JobClaimNext assigns a pending job that fits Free to the runner:
	// status downloading, a new lease, Attempt unchanged. A self-hosted
	// runner that is not shared takes only its user's jobs; a shared one
	// and the runner of an on-demand instance take anyone's. Of the users
	// with a job that fits and fewer active jobs than their MaxRunning,
	// the one whose last claim is the oldest (or who never had one) gets
	// it, their oldest job that fits (queue order); so free runners go to
	// users in turn. ErrNotFound when no job fits. Claims are serialised,
	// so the turn and the cap hold under concurrent claims.
	JobClaimNext(ctx context.Context, p JobClaimNextParams) (*Job, error)
	// JobSetStatus moves an active job to a new state under its lease
	// (ErrLeaseLost otherwise). A final state releases the runner and, in the
	// same transaction, queues the dependents whose dependencies are all done
	// (done) or fails them (any other final state), and records the size
	// of the job's log where the store holds it (LogAppend), as
	// JobSetLogSize would.
	JobSetStatus(ctx context.Context, p JobSetStatusParams) (*Job, error)
	// JobEndAndClaim is JobSetStatus to a final state followed, in the
	// same transaction, by JobClaimNext(next) for the runner that ended
	// the job: a runner reports its job's end and gets its next job in one
	// round. It returns the ended job and the claimed one, nil when no job
	// fits next.Free; the claim is made only when the end is, and an error
	// is the end's (JobSetStatus's errors). p.Status must be final and
	// next.RunnerID p.RunnerID.
	JobEndAndClaim(ctx context.Context, p JobSetStatusParams, next JobClaimNextParams) (ended, claimed *Job, err error)
	// JobLogStored records that the log of a finished job marked
	// incomplete (LogMissing > 0) has reached p.Size under the job's last
	// lease: LogMissing becomes what is left to LogEnd, and both are
	// cleared at 0. A job not so marked, or under another lease, is
	// ErrLeaseLost; an unknown one ErrNotFound.
	JobLogStored(ctx context.Context, p JobLogStoredParams) (*Job, error)
	// JobInterrupt gives back an active job its runner could not finish
	// because its machine is going away, under the job's lease
	// (ErrLeaseLost otherwise). The job is interrupted as RunnerMarkOffline
	// interrupts a lost runner's jobs, with Cause as the cause: pending with a
	// new lease (Attempt+1) while Attempt+1 < MaxAttempts, failed otherwise,
	// and stopped or aborted when its stop was requested (which, like
	// failing, settles its dependents). It returns the jobs it changed, the
	// job first.
	JobInterrupt(ctx context.Context, p JobInterruptParams) ([]*Job, error)
	// JobRequestStop asks every unfinished job of a run to stop: submitted and
	// pending jobs end at once (stopped or aborted), active ones are flagged
	// for their runner. It returns the run's jobs after the change.
	JobRequestStop(ctx context.Context, p JobRequestStopParams) ([]*Job, error)
	// JobCountByStatus counts jobs per state, for metrics.
	JobCountByStatus(ctx context.Context) (map[api.JobStatus]int, error)
	// JobListPending lists the pending jobs (of every user when UserID is
	// empty) in queue order, with what the autoscaler plans by: their
	// resources and when they were submitted and queued.
	JobListPending(ctx context.Context, p JobListPendingParams) ([]*PendingJob, error)
	// JobSetPendingReasons sets the StatusReason of each job of p.Reasons
	// that is still pending (why it waits, as the autoscaler sees it; ""
	// clears it), a few hundred jobs a transaction, so that a claim never
	// waits long for a job whose reason is being written. Jobs no longer
	// pending, or unknown, are left as they are. It returns how many jobs
	// changed; after a failure, the reasons written before it stay.
	// JobClaimNext clears the reason of the job it claims.
	JobSetPendingReasons(ctx context.Context, p JobSetPendingReasonsParams) (int, error)

	// ArtifactPut records an artifact file of a job as stored, with its size
	// and the SHA-256 of its content, replacing the record of an earlier
	// upload of the same path. ErrNotFound for an unknown job.
	ArtifactPut(ctx context.Context, p ArtifactPutParams) error
	// ArtifactDelete forgets the record of a job's artifact file, if any,
	// before the file is stored again: a file whose new content is not yet
	// recorded has no hash rather than a wrong one.
	ArtifactDelete(ctx context.Context, p ArtifactDeleteParams) error
	// ArtifactList returns the recorded artifact files of a job by path.
	ArtifactList(ctx context.Context, p ArtifactListParams) ([]*Artifact, error)

	// LimitPut creates the limit with p's key (backend, region, instance
	// type, spot), or sets the maximum of the one that exists, keeping its
	// ID and creator. The result says which, and the maximum before.
	// Limits are the server's, for every user's jobs.
	LimitPut(ctx context.Context, p LimitPutParams) (*LimitPutResult, error)
	// LimitDelete deletes one limit, or all of them when ID is empty, and
	// returns what it deleted. The limits' instances stay, with their
	// LimitID: the autoscaler terminates them. ErrNotFound when ID names no
	// limit.
	LimitDelete(ctx context.Context, p LimitDeleteParams) ([]*Limit, error)
	// LimitList lists the limits by key, each with its count of instances.
	LimitList(ctx context.Context, p LimitListParams) ([]*Limit, error)
	// OnDemandSetEnabled turns the server's on-demand runners on or off.
	OnDemandSetEnabled(ctx context.Context, p OnDemandSetEnabledParams) error
	// OnDemandGet says whether the server's on-demand runners are enabled
	// (they are until OnDemandSetEnabled says otherwise).
	OnDemandGet(ctx context.Context) (*OnDemand, error)

	// InstanceCreate records the intent to launch len(p.Instances) instances
	// of one limit, all launching, before the cloud is asked. In the same
	// transaction it first checks that the limit exists, that on-demand
	// runners are enabled, and that the limit's instances counted
	// against it (launching, running, terminating) plus the new ones stay
	// within its maximum; ErrLimitReached otherwise, and nothing is written.
	// Concurrent calls are serialised on the limit, so no interleaving of
	// them, and no crash after them, leaves a limit over its maximum.
	InstanceCreate(ctx context.Context, p InstanceCreateParams) ([]*Instance, error)
	// InstanceSetLaunched records the cloud IDs a launch returned, by record
	// ID, whatever the instances' states (one terminated meanwhile still
	// needs its cloud ID to be terminated); launching instances stay
	// launching until their runners register. ErrNotFound when an ID names
	// no instance, ErrConflict when one already has another cloud ID; then
	// nothing is written.
	InstanceSetLaunched(ctx context.Context, p InstanceSetLaunchedParams) ([]*Instance, error)
	// InstanceRegister registers the runner of a launching instance by the
	// hash of its join token: in one transaction it creates the runner (for
	// the instance's user, with InstanceID set), consumes the token, links
	// the runner and moves the instance to running. A token already used,
	// unknown, or of an instance no longer launching is ErrNotFound.
	InstanceRegister(ctx context.Context, p InstanceRegisterParams) (*Instance, *Runner, error)
	// InstanceBindJob records that a launching or running instance is for,
	// or runs, a job; it is no longer idle. ErrNotFound when the instance is
	// unknown or no longer launching or running, or the job is unknown.
	InstanceBindJob(ctx context.Context, p InstanceBindJobParams) (*Instance, error)
	// InstanceSetIdle unbinds a launching or running instance's job; an
	// instance already idle keeps its IdleSince. ErrNotFound as for
	// InstanceBindJob.
	InstanceSetIdle(ctx context.Context, p InstanceSetIdleParams) (*Instance, error)
	// InstanceSetState moves an instance forward to terminating, terminated
	// or gone, with a reason; a move to where the instance already is, or
	// behind it, changes nothing. Moving it, in the same transaction, cancels
	// an unused join token, marks the runner offline once the instance has
	// ended, and interrupts the jobs its runner holds as RunnerMarkOffline
	// does: each becomes pending with a new lease (Attempt+1) while Attempt+1
	// < MaxAttempts, and fails otherwise. It returns the instance and the
	// jobs it changed.
	InstanceSetState(ctx context.Context, p InstanceSetStateParams) (*Instance, []*Job, error)
	// InstanceList lists instances oldest first, filtered by p.
	InstanceList(ctx context.Context, p InstanceListParams) ([]*Instance, error)
	InstanceGet(ctx context.Context, id string) (*Instance, error)

	// OfferMarkUnavailable marks an offer unavailable until p.Until,
	// replacing an earlier mark; Since stays that of a mark not yet expired.
	OfferMarkUnavailable(ctx context.Context, p OfferMarkUnavailableParams) error
	// OfferUnavailableList lists the offers marked unavailable past now.
	OfferUnavailableList(ctx context.Context, now time.Time) ([]*OfferUnavailable, error)

	// LeaseAcquire takes the named lease for p.Holder until p.Now+p.TTL when
	// it is free, expired, or already the holder's (a renewal), and reports
	// whether the holder has it. Leases are compared against the callers'
	// clocks, which must roughly agree.
	LeaseAcquire(ctx context.Context, p LeaseAcquireParams) (bool, error)
	// LeaseRelease gives up the named lease if p.Holder has it; otherwise it
	// does nothing.
	LeaseRelease(ctx context.Context, p LeaseReleaseParams) error

	// TagPut names a run of a user with a tag, unique per user. A new tag
	// is created; a tag that names the run already is left as it is; a tag
	// that names another run is moved to this one when p.Force is set, and
	// is ErrConflict otherwise (so is losing a race to create the same tag).
	// ErrNotFound when the run is not the user's. Whether the run is
	// finished is the caller's to check.
	TagPut(ctx context.Context, p TagPutParams) (*TagPutResult, error)
	// TagGet finds a user's tag by name; ErrNotFound when there is none.
	TagGet(ctx context.Context, p TagGetParams) (*Tag, error)
	// TagDelete deletes a user's tag and returns it; the run stays.
	// ErrNotFound when there is none.
	TagDelete(ctx context.Context, p TagDeleteParams) (*Tag, error)
	// TagList lists a user's tags by name.
	TagList(ctx context.Context, p TagListParams) ([]*Tag, error)

	// SettingInit sets the named setting to p.Value unless it is set already,
	// and returns its value either way: the first caller's value stays for
	// good (the server's identity, SettingServerID).
	SettingInit(ctx context.Context, p SettingInitParams) (string, error)
	// SettingGet returns the named setting's value; ErrNotFound when it is
	// not set.
	SettingGet(ctx context.Context, name string) (string, error)
	// SettingPut sets the named setting to p.Value, replacing its value.
	SettingPut(ctx context.Context, p SettingPutParams) error
	// SettingDelete unsets the named setting; ErrNotFound when it was not
	// set.
	SettingDelete(ctx context.Context, name string) error

	// ReplicaPut records a server replica as it is now, replacing its
	// earlier record (a restart, or a renewal of SeenAt).
	ReplicaPut(ctx context.Context, r *Replica) error
	// ReplicaList lists the replicas seen at or after p.SeenSince, by ID.
	ReplicaList(ctx context.Context, p ReplicaListParams) ([]*Replica, error)
	// ReplicaDelete removes a replica's record (it stopped), and those of
	// every replica not seen since p.SeenBefore when that is not zero. It
	// returns how many it removed.
	ReplicaDelete(ctx context.Context, p ReplicaDeleteParams) (int, error)

	Storage
	Checkpoints
}

// SettingServerID names the server installation's identity: every
// on-demand instance is tagged with it, and it outlives restarts.
const SettingServerID = "server_id"

// SettingKeyCheck names a check value of the server key the replicas
// share, derived from it by a one-way function (never the key): a replica
// started with another key is refused.
const SettingKeyCheck = "server_key_check"

// Replica is a server replica running on the database: what it said of
// itself at its start, and when it was last seen (it renews SeenAt while it
// runs).
type Replica struct {
	// ID is the replica's identity, the same across its restarts.
	ID string
	// Host is the replica's host name; URL where it listens ("" until it
	// does); ExternalURL what it gives runners and on-demand instances to
	// reach the server by ("" for its own URL).
	Host, URL, ExternalURL string
	// Storage says where its code archives and artifacts live: the same
	// value on two replicas means they see the same files.
	Storage string
	// KeyCheck is the check value of its server key (SettingKeyCheck).
	KeyCheck  string
	StartedAt time.Time
	SeenAt    time.Time
}

// ReplicaListParams are the arguments of ReplicaList.
type ReplicaListParams struct {
	SeenSince time.Time
}

// ReplicaDeleteParams are the arguments of ReplicaDelete.
type ReplicaDeleteParams struct {
	// ID is the replica to remove; "" removes none by ID.
	ID string
	// SeenBefore, when not zero, also removes every replica last seen
	// before it.
	SeenBefore time.Time
}

// SettingInitParams are the arguments of SettingInit.
type SettingInitParams struct {
	Name  string
	Value string // not empty
}

// SettingPutParams are the arguments of SettingPut.
type SettingPutParams struct {
	Name  string
	Value string // not empty
}

// User is an account; its tokens are stored hashed (Token).
type User struct {
	ID        string
	Name      string
	Admin     bool
	CreatedAt time.Time
	// LastSeenAt is when a token of the user was last used (to the
	// minute), nil if never.
	LastSeenAt *time.Time
	// DeletedAt is when the user was removed, nil while it is not.
	DeletedAt *time.Time
	// RunningJobs counts the user's active jobs; only UserList sets it.
	RunningJobs int
	// StorageQuota is the user's own storage quota in bytes; nil: the
	// server's default (--storage-quota).
	StorageQuota *int64
	// MaxRunning caps the user's active jobs: a claim gives the user no
	// more while they have that many (0: no cap).
	MaxRunning int
}

// UserCap is a user's cap of running jobs and how many they run.
type UserCap struct {
	UserID     string
	MaxRunning int
	// Running is how many active jobs (downloading, running, uploading)
	// the user has.
	Running int
}

// UserSetMaxRunningParams are the arguments of UserSetMaxRunning.
type UserSetMaxRunningParams struct {
	UserID     string
	MaxRunning int // 0: no cap
}

// UserCreateParams are the arguments of UserCreate.
type UserCreateParams struct {
	ID   string
	Name string
	// TokenHash, when set, is the hash of the user's first token, which
	// is named TokenName ("default" when empty) and has the ID TokenID (the
	// user's ID when empty).
	TokenHash string
	TokenName string
	TokenID   string
	Admin     bool
	Now       time.Time
}

// UserSetAdminParams are the arguments of UserSetAdmin.
type UserSetAdminParams struct {
	Name  string
	Admin bool
}

// UserDeleteParams are the arguments of UserDelete.
type UserDeleteParams struct {
	Name string
	Now  time.Time
}

// Token is a user's API token; only its hash is stored.
type Token struct {
	ID         string
	UserID     string
	Name       string
	CreatedAt  time.Time
	LastUsedAt *time.Time // nil: never used
	ExpiresAt  *time.Time // nil: never expires
}

// TokenCreateParams are the arguments of TokenCreate.
type TokenCreateParams struct {
	ID        string
	UserID    string
	Name      string
	Hash      string
	ExpiresAt *time.Time // nil: never
	Now       time.Time
}

// TokenListParams are the arguments of TokenList.
type TokenListParams struct {
	UserID string
}

// TokenRevokeParams are the arguments of TokenRevoke.
type TokenRevokeParams struct {
	UserID string
	// Ref is the token's name or ID.
	Ref string
	// Runners also revokes the runners registered with the token.
	Runners bool
}

// TokenRevokeResult is what TokenRevoke did.
type TokenRevokeResult struct {
	Token   *Token
	Runners []*Runner // revoked with it
}

// TokenAuthenticateParams are the arguments of TokenAuthenticate.
type TokenAuthenticateParams struct {
	Hash string
	Now  time.Time
	// TouchEvery is how stale LastUsedAt may get before a use is recorded.
	TouchEvery time.Duration
}

// Runner is a registered runner.
type Runner struct {
	ID        string
	UserID    string
	Name      string
	Hostname  string
	Executor  string
	Version   string
	Resources api.HostResources
	Online    bool
	// Shared: a self-hosted runner an admin registered for everyone, which
	// takes any user's jobs; any other self-hosted runner takes only its
	// user's. The runner of an on-demand instance takes anyone's jobs too,
	// though it is not marked shared.
	Shared         bool
	RegisteredAt   time.Time
	LastHeartbeat  time.Time
	TokenExpiresAt time.Time
	// JobID and RunName are the job the runner holds, if any.
	JobID   string
	RunName string
	// InstanceID is the on-demand instance the runner runs on; empty for a
	// self-hosted runner. The other fields are the instance's.
	InstanceID    string
	Backend       string
	Region        string
	InstanceType  string
	Spot          bool
	InstanceState InstanceState
	// TokenID is the user token the runner was registered with; empty for
	// on-demand runners and runners registered before tokens had IDs.
	TokenID string
	// InterruptedAt is when the server heard that the runner's machine is
	// being reclaimed (RunnerInterrupt), nil if never; InterruptionReason
	// says so in words.
	InterruptedAt      *time.Time
	InterruptionReason string
}

// RunnerCreateParams are the arguments of RunnerCreate.
type RunnerCreateParams struct {
	ID             string
	UserID         string
	Name           string
	Hostname       string
	Executor       string
	Version        string
	Resources      api.HostResources
	TokenHash      string
	TokenExpiresAt time.Time
	Now            time.Time
	// InstanceID is the on-demand instance the runner runs on; empty for a
	// self-hosted runner. InstanceRegister sets it.
	InstanceID string
	// TokenID is the user token that registered the runner, if any.
	TokenID string
	// Shared marks a self-hosted runner as taking any user's jobs.
	Shared bool
}

// RunnerKind is Count runners alike to RunnerTally.
type RunnerKind struct {
	UserID string
	Shared bool
	// OnDemand: they run on instances the server launched.
	OnDemand    bool
	Resources   api.HostResources
	Online      bool
	Interrupted bool
	// Busy: each holds a job (Runner.JobID is set).
	Busy  bool
	Count int
}

// RunnerListParams are the arguments of RunnerList.
type RunnerListParams struct {
	UserID string // empty: every user's
}

// RunnerHeartbeatParams are the arguments of RunnerHeartbeat.
type RunnerHeartbeatParams struct {
	ID        string
	Now       time.Time
	Resources *api.HostResources // nil: unchanged
}

// RunnerHeartbeatBatchParams are the arguments of RunnerHeartbeatBatch.
type RunnerHeartbeatBatchParams struct {
	Beats []RunnerBeat
}

// RunnerBeat is one runner's latest heartbeat.
type RunnerBeat struct {
	ID string
	At time.Time
}

// RunnerMarkOfflineParams are the arguments of RunnerMarkOffline.
type RunnerMarkOfflineParams struct {
	HeartbeatBefore time.Time
	// RunnerID, when set, also marks that runner offline whatever its last
	// heartbeat: a runner that says it is shutting down.
	RunnerID    string
	MaxAttempts int
	Now         time.Time
}

// RunnerDeleteParams are the arguments of RunnerDelete.
type RunnerDeleteParams struct {
	ID string
}

// RunnerDeleteOfflineParams are the arguments of RunnerDeleteOffline.
type RunnerDeleteOfflineParams struct {
	HeartbeatBefore time.Time
}

// RunnerInterruptParams are the arguments of RunnerInterrupt.
type RunnerInterruptParams struct {
	ID string
	// Reason says what is happening, for people: "spot instance reclaimed by
	// the cloud (notice at 10:42:07; terminate at 10:44:07 UTC)".
	Reason string
	Now    time.Time
}

// Run is a submission with its jobs.
type Run struct {
	ID          string
	Name        string
	UserID      string
	UserName    string
	Workflow    string
	CodeID      string
	SubmittedAt time.Time
	Jobs        []*Job // in the order given to RunCreate
}

// RunCreateParams are the arguments of RunCreate.
type RunCreateParams struct {
	ID       string
	Name     string // unique; ErrConflict when taken
	UserID   string
	Workflow string
	CodeID   string
	Now      time.Time
	Jobs     []JobCreate
	// ArtifactStore is where the jobs' artifacts are kept (Job's field of
	// the name); empty for the server's own store.
	ArtifactStore string
	// RequireCode makes the code archive CodeID one the user uploaded
	// (CodePut), checked in the transaction: ErrNotFound otherwise. Its
	// LastUsedAt becomes Now either way.
	RequireCode bool
}

// JobCreate is one job of RunCreate.
type JobCreate struct {
	ID   string
	Spec api.JobSpec
}

// RunGetParams are the arguments of RunGet.
type RunGetParams struct {
	Name   string
	UserID string // empty: any user's
}

// RunListParams are the arguments of RunList.
type RunListParams struct {
	UserID string // empty: any user's
	// FinishedAfter keeps only runs with an unfinished job or a job finished
	// after it; zero keeps all.
	FinishedAfter time.Time
	Limit         int // 0: no limit
	// After continues a listing from the run it names, the last of the
	// previous page: only runs after it in the listing's order are listed.
	// Nil starts with the newest run.
	After *RunCursor
}

// RunCursor is a place in a listing of runs, which is newest first: runs
// submitted earlier come after it, and among runs submitted at the same
// time (to the microsecond), those of smaller ID.
type RunCursor struct {
	SubmittedAt time.Time
	ID          string
}

// CursorOf is the cursor that continues a listing after r.
func CursorOf(r *Run) *RunCursor { return &RunCursor{SubmittedAt: r.SubmittedAt, ID: r.ID} }

// Job is one workflow of a run.
type Job struct {
	ID           string
	RunID        string
	RunName      string
	UserID       string
	CodeID       string
	Workflow     string
	Spec         api.JobSpec
	Status       api.JobStatus
	StatusReason string
	RunnerID     string
	RunnerName   string
	// Lease is the fencing token of the current assignment; it grows with
	// every claim and requeue.
	Lease         int64
	Attempt       int
	ExitCode      *int
	StopRequested string // "", "stop" or "abort"
	SubmittedAt   time.Time
	// QueuedAt is when the job last joined the back of the queue: when it
	// was submitted, or when the jobs it depends on were done.
	QueuedAt  time.Time
	ClaimedAt *time.Time
	// Redelivered: JobClaimNext gave the job again, under its lease, to
	// the runner it was assigned to (JobClaimNextParams.Redeliver).
	Redelivered bool
	StartedAt   *time.Time
	// UploadingAt is when the current attempt began uploading its
	// artifacts (nil before).
	UploadingAt *time.Time
	FinishedAt  *time.Time
	// ArtifactStore names the store that holds the job's artifacts, fixed
	// when the run is submitted: empty for the server's own (its data
	// directory or --artifacts bucket), or the URL of another, such as the
	// AWS artifact bucket ("s3://bucket/dstack").
	ArtifactStore string
	// LogEnd is the size the job's log must reach, and LogMissing how many
	// bytes of it are not stored yet, when the runner reported the job's
	// end before the server stored all its output (both 0 otherwise; see
	// JobLogStored).
	LogEnd     int64
	LogMissing int64
	// LastInterruption is why the previous attempt ended when the job was
	// requeued ("runner r1 stopped responding"); empty for a first attempt.
	LastInterruption string
	// Unblocks, on the job JobSetStatus or JobEndAndClaim ended, says that
	// the end may let a pending job be claimed that could not be claimed
	// before: it queued jobs that waited for it, or its user has a cap on
	// active jobs (UserSetMaxRunning), of which it frees a place. An end
	// that does neither leaves every claim as it was.
	Unblocks bool
}

// JobClaimNextParams are the arguments of JobClaimNext.
type JobClaimNextParams struct {
	RunnerID string
	UserID   string
	Free     api.HostResources
	Now      time.Time
	// Redeliver: the runner says it holds no job, so a job it holds that
	// has not started (downloading) never reached it (the answer to its
	// claim was lost with a replica or a connection): that job is
	// returned again, under the same lease, instead of a new one.
	Redeliver bool
}

// JobSetStatusParams are the arguments of JobSetStatus.
type JobSetStatusParams struct {
	ID       string
	RunnerID string
	Lease    int64
	Status   api.JobStatus
	ExitCode *int
	Reason   string
	Now      time.Time
	// LogEnd and LogMissing, with a final status, mark the job's log
	// incomplete (Job's fields of the same names); 0 for a complete log.
	LogEnd     int64
	LogMissing int64
}

// JobLogStoredParams are the arguments of JobLogStored.
type JobLogStoredParams struct {
	ID    string
	Lease int64
	// Size is the job's log size now.
	Size int64
}

// JobInterruptParams are the arguments of JobInterrupt.
type JobInterruptParams struct {
	ID       string
	RunnerID string
	Lease    int64
	// Cause says why, for people; the job's StatusReason is built from it
	// ("interrupted: CAUSE; requeued for attempt 2 of 3").
	Cause       string
	MaxAttempts int
	Now         time.Time
}

// JobRequestStopParams are the arguments of JobRequestStop.
type JobRequestStopParams struct {
	RunID string
	Abort bool
	Now   time.Time
}

// Tag names a run of a user (`dstack tag RUN NAME`), for workflows of later
// runs to depend on (depends-on: [WORKFLOW:NAME]).
type Tag struct {
	UserID    string
	Name      string
	RunID     string
	RunName   string
	Workflow  string    // the run's
	CreatedAt time.Time // when the tag was put on this run
}

// TagPutParams are the arguments of TagPut.
type TagPutParams struct {
	UserID string
	Name   string
	RunID  string
	// Force moves a tag that names another run.
	Force bool
	Now   time.Time
}

// TagPutResult is what TagPut did.
type TagPutResult struct {
	Tag     *Tag
	Created bool
	// Previous is the tag as it was before it was moved; nil when it was
	// created or already named the run.
	Previous *Tag
}

// TagGetParams are the arguments of TagGet.
type TagGetParams struct {
	UserID string
	Name   string
}

// TagDeleteParams are the arguments of TagDelete.
type TagDeleteParams struct {
	UserID string
	Name   string
}

// TagListParams are the arguments of TagList.
type TagListParams struct {
	UserID string
}

// Artifact is the record of one artifact file of a job, as uploaded.
type Artifact struct {
	JobID  string
	Path   string // slash-separated, relative to the job's working directory
	Size   int64
	SHA256 string // lowercase hex
}

// ArtifactPutParams are the arguments of ArtifactPut.
type ArtifactPutParams struct {
	JobID  string
	Path   string
	Size   int64
	SHA256 string
}

// ArtifactDeleteParams are the arguments of ArtifactDelete.
type ArtifactDeleteParams struct {
	JobID string
	Path  string
}

// ArtifactListParams are the arguments of ArtifactList.
type ArtifactListParams struct {
	JobID string
}
