// Package api defines the wire types of dstack's HTTP API, version 1.
//
// The server, the CLI, the web UI and the runners all speak these types; nothing
// else crosses the wire. Field names are snake_case JSON and are part of the
// public contract: add fields, never rename them.
package api

import (
	"encoding/json"
	"fmt"
	"time"
)

// PathPrefix is where every versioned endpoint lives.
const PathPrefix = "/api/v1"

// LeaseHeader carries a job's fencing token on every runner call about that job.
const LeaseHeader = "X-Dstack-Lease"

// NextCursorHeader carries, on a page of a listing (GET /api/v1/runs), the
// cursor that continues it (?after=CURSOR); it is absent on the last page.
const NextCursorHeader = "X-Dstack-Next-Cursor"

// Error is the body of every non-2xx response: {"error": {"code": ..., "message": ...}}.
type Error struct {
	// Status is the HTTP status; it is not serialised.
	Status int `json:"-"`
	// Code is a stable machine-readable word, one of the Code* constants.
	Code string `json:"code"`
	// Message says what is wrong and what to do about it, for a person.
	Message string `json:"message"`
	// Cause is the class of a server-side failure (5xx): one of the Cause*
	// constants; the server's log has the details.
	Cause string `json:"cause,omitempty"`
	// RetryAfter is the response's Retry-After: how long the server asks
	// the caller to wait before trying again (0: not said). It is not
	// serialised in the body.
	RetryAfter time.Duration `json:"-"`
}

// ErrorBody wraps Error on the wire.
type ErrorBody struct {
	Error *Error `json:"error"`
	// Status and Storage, on GET /healthz only: "degraded" and what is
	// wrong with the server's storage ("disk full: 0 B free in DIR").
	Status  string `json:"status,omitempty"`
	Storage string `json:"storage,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Error codes.
const (
	CodeUnauthenticated = "unauthenticated"
	CodeForbidden       = "forbidden"
	CodeNotFound        = "not_found"
	CodeInvalid         = "invalid"
	CodeConflict        = "conflict"
	CodeTooLarge        = "too_large"
	CodeLeaseLost       = "lease_lost"
	CodeInternal        = "internal"
	CodeUnavailable     = "unavailable"
	// CodeInsufficientStorage: the server's storage is full (507), or
	// below the free space it keeps for the logs of running jobs.
	CodeInsufficientStorage = "insufficient_storage"
	// CodeQuotaExceeded: the upload or run would take the user over their
	// storage quota (507); the message gives the usage and the quota.
	CodeQuotaExceeded = "quota_exceeded"
)

// Causes of server-side failures (Error.Cause).
const (
	CauseDatabase = "database" // the database is busy, locked or unreachable
	CauseStorage  = "storage"  // the artifact, code or log storage failed
	CauseCloud    = "cloud"    // a cloud backend did not answer as needed
	CauseInternal = "internal" // anything else: a bug, an unexpected state
)

// Errorf builds an *Error.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// JobStatus is the state of a job, and by aggregation of a run.
type JobStatus string

// The job states, in the order a job normally passes through them.
const (
	StatusSubmitted    JobStatus = "submitted"    // waiting for its dependencies
	StatusPending      JobStatus = "pending"      // queued for a runner or an instance
	StatusProvisioning JobStatus = "provisioning" // an instance is being started for it
	StatusDownloading  JobStatus = "downloading"  // a runner took it and fetches code and artifacts
	StatusRunning      JobStatus = "running"
	StatusUploading    JobStatus = "uploading" // artifacts are being uploaded
	StatusDone         JobStatus = "done"
	StatusFailed       JobStatus = "failed"
	StatusStopped      JobStatus = "stopped" // stopped by the user, artifacts uploaded
	StatusAborted      JobStatus = "aborted" // aborted by the user, artifacts not uploaded
	StatusInterrupted  JobStatus = "interrupted"
)

// Finished reports whether s is a final state.
func (s JobStatus) Finished() bool {
	switch s {
	case StatusDone, StatusFailed, StatusStopped, StatusAborted:
		return true
	}
	return false
}

// Active reports whether a runner holds a job in state s.
func (s JobStatus) Active() bool {
	switch s {
	case StatusDownloading, StatusRunning, StatusUploading:
		return true
	}
	return false
}

// GPURequest is what a job asks of GPUs. Zero Count means no GPU.
type GPURequest struct {
	Count     int    `json:"count"`
	Name      string `json:"name,omitempty"`       // matched case-insensitively as a substring of the GPU's name
	MemoryMiB int64  `json:"memory_mib,omitempty"` // at least this much per GPU
}

// Resources is what a job needs of the machine that runs it.
type Resources struct {
	CPU           int         `json:"cpu,omitempty"`
	MemoryMiB     int64       `json:"memory_mib,omitempty"`
	ShmSizeMiB    int64       `json:"shm_size_mib,omitempty"`
	GPU           *GPURequest `json:"gpu,omitempty"`
	Interruptible bool        `json:"interruptible,omitempty"`
}

// GPUCount is the number of GPUs asked for.
func (r Resources) GPUCount() int {
	if r.GPU == nil {
		return 0
	}
	return r.GPU.Count
}

// JobSpec is one workflow of a run, resolved: variables substituted, the
// provider turned into an image and commands.
type JobSpec struct {
	Workflow  string            `json:"workflow"`
	Provider  string            `json:"provider"` // bash | docker | python
	Image     string            `json:"image,omitempty"`
	Commands  []string          `json:"commands"`
	Env       map[string]string `json:"env,omitempty"`
	DependsOn []string          `json:"depends_on,omitempty"` // workflow names of the same run
	Artifacts []string          `json:"artifacts,omitempty"`  // paths relative to the working directory
	Resources Resources         `json:"resources"`
	Variables map[string]string `json:"variables,omitempty"` // as resolved, for display
	// DependsOnTags are dependencies on workflows of earlier runs, named by
	// the runs' tags (depends-on: [prepare:latest-data]): their artifacts are
	// placed in the working directory as those of DependsOn are.
	DependsOnTags []TaggedDependency `json:"depends_on_tags,omitempty"`
	// Checkpoints are paths relative to the working directory that the
	// runner syncs to the server every CheckpointInterval while the job
	// runs (and at once on a stop, a spot notice or its shutdown); the next
	// attempt of the job starts with the latest complete checkpoint in
	// place. KeepCheckpoints keeps them after the job is done.
	Checkpoints        []string `json:"checkpoints,omitempty"`
	CheckpointInterval Duration `json:"checkpoint_interval,omitempty"`
	KeepCheckpoints    bool     `json:"keep_checkpoints,omitempty"`
}

// RunImage is the container image the job's commands run in: Image for
// the docker and python providers (the python provider's resolution has
// made it python:VERSION), "" for bash, which runs wherever its runner is.
// A runner bound to one image (a Kubernetes runner Pod made of that image)
// takes only the jobs whose RunImage is its image.
func (s JobSpec) RunImage() string {
	if s.Provider == "bash" {
		return ""
	}
	return s.Image
}

// TaggedDependency is a dependency on the job of Workflow in the run that
// the user's tag Tag names (depends-on: [WORKFLOW:TAG]). The CLI sends
// Workflow and Tag; the server sets RunName and JobID when it accepts the
// run, to the run the tag names then: moving or deleting the tag later does
// not change what the job gets.
type TaggedDependency struct {
	Workflow string `json:"workflow"`
	Tag      string `json:"tag"`
	RunName  string `json:"run_name,omitempty"`
	JobID    string `json:"job_id,omitempty"`
}

// String is the dependency as written in a workflows file: WORKFLOW:TAG.
func (d TaggedDependency) String() string { return d.Workflow + ":" + d.Tag }

// CodeUploadResponse answers POST /code: the code archive's content address.
type CodeUploadResponse struct {
	CodeID string `json:"code_id"`
	Size   int64  `json:"size"`
}

// RunSubmitRequest is the body of POST /runs.
type RunSubmitRequest struct {
	Workflow string    `json:"workflow"` // the workflow the user asked for
	CodeID   string    `json:"code_id"`
	Jobs     []JobSpec `json:"jobs"` // the workflow and everything it depends on
}

// Run is one submission: a workflow and its dependencies.
type Run struct {
	Name        string     `json:"name"`
	Workflow    string     `json:"workflow"`
	User        string     `json:"user"`
	Status      JobStatus  `json:"status"`
	SubmittedAt time.Time  `json:"submitted_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	Jobs        []Job      `json:"jobs"` // dependencies before dependents
	// Cost is what its jobs cost on on-demand instances; absent when
	// none of them ran on one.
	Cost *Cost `json:"cost,omitempty"`
}

// Job is one workflow of a run as scheduled.
type Job struct {
	ID           string     `json:"id"`
	RunName      string     `json:"run_name"`
	Workflow     string     `json:"workflow"`
	Status       JobStatus  `json:"status"`
	StatusReason string     `json:"status_reason,omitempty"`
	RunnerID     string     `json:"runner_id,omitempty"`
	RunnerName   string     `json:"runner_name,omitempty"`
	Attempt      int        `json:"attempt"`
	ExitCode     *int       `json:"exit_code,omitempty"`
	SubmittedAt  time.Time  `json:"submitted_at"`
	StartedAt    *time.Time `json:"started_at,omitempty"`
	// UploadingAt is when the job began uploading its artifacts.
	UploadingAt *time.Time `json:"uploading_at,omitempty"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	Spec        JobSpec    `json:"spec"`
	// LogMissing is how many bytes of the job's output its log lacks:
	// the runner could not store them (the server's disk was full) by the
	// time it reported the job's end. It keeps sending them; the count
	// falls to 0 (and is left out) once they are all stored.
	LogMissing int64 `json:"log_missing,omitempty"`
	// Checkpoint is the job's latest complete checkpoint, without its
	// manifest, when it has one.
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	// Cost is what the job cost on on-demand instances; absent when it
	// never ran on one.
	Cost *Cost `json:"cost,omitempty"`
}

// StopRequest is the body of POST /runs/{name}/stop.
type StopRequest struct {
	Abort bool `json:"abort"`
}

// RunDeleteResponse answers DELETE /runs/{name}: the run deleted and how
// many bytes of logs, artifacts and code its deletion freed.
type RunDeleteResponse struct {
	Name       string `json:"name"`
	FreedBytes int64  `json:"freed_bytes"`
}

// ArtifactFile is one file of a job's artifacts.
type ArtifactFile struct {
	Workflow string `json:"workflow"`
	JobID    string `json:"job_id"`
	Path     string `json:"path"` // slash-separated, relative to the job's working directory
	Size     int64  `json:"size"`
	// SHA256 is the hex SHA-256 of the file's content, computed by the
	// server when it was uploaded; empty for files uploaded before servers
	// recorded it.
	SHA256 string `json:"sha256,omitempty"`
}

// User is who a token belongs to.
type User struct {
	Name  string `json:"name"`
	Admin bool   `json:"admin"`
}

// GPU is one GPU of a runner's host.
type GPU struct {
	Name      string `json:"name"`
	MemoryMiB int64  `json:"memory_mib"`
}

// HostResources is what a runner's machine has, or has free.
type HostResources struct {
	CPUs      int   `json:"cpus"`
	MemoryMiB int64 `json:"memory_mib"`
	DiskMiB   int64 `json:"disk_mib"`
	GPUs      []GPU `json:"gpus,omitempty"`
}

// RunnerStatus says whether a runner is heard from.
type RunnerStatus string

// Runner states.
const (
	RunnerOnline  RunnerStatus = "online"
	RunnerOffline RunnerStatus = "offline"
)

// Runner is a machine that runs jobs.
type Runner struct {
	ID        string        `json:"id"`
	Name      string        `json:"name"`
	Hostname  string        `json:"hostname"`
	Status    RunnerStatus  `json:"status"`
	Executor  string        `json:"executor"`
	Version   string        `json:"version"`
	Resources HostResources `json:"resources"`
	JobID     string        `json:"job_id,omitempty"`
	RunName   string        `json:"run_name,omitempty"`
	// Shared: a self-hosted runner that takes any user's jobs.
	Shared        bool      `json:"shared,omitempty"`
	RegisteredAt  time.Time `json:"registered_at"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	// Backend .. InstanceState describe the on-demand instance the runner
	// runs on; all are empty for a self-hosted runner.
	Backend       string `json:"backend,omitempty"`
	Region        string `json:"region,omitempty"`
	InstanceType  string `json:"instance_type,omitempty"`
	PurchaseType  string `json:"purchase_type,omitempty"`  // PurchaseSpot or PurchaseOnDemand
	InstanceState string `json:"instance_state,omitempty"` // launching, running, terminating, terminated or gone
	// InterruptedAt is when the runner reported that the cloud reclaims its
	// machine (POST /runner/interruption); it takes no job since.
	// InterruptionReason says so in words.
	InterruptedAt      *time.Time `json:"interrupted_at,omitempty"`
	InterruptionReason string     `json:"interruption_reason,omitempty"`
}

// Purchase types of on-demand instances.
const (
	PurchaseSpot     = "spot"
	PurchaseOnDemand = "on-demand"
)

// RunnerRegisterRequest is the body of POST /runners/register, sent with a
// user's token; the answer carries the runner's own credential.
type RunnerRegisterRequest struct {
	Name      string        `json:"name"`
	Hostname  string        `json:"hostname"`
	Executor  string        `json:"executor"`
	Version   string        `json:"version"`
	Resources HostResources `json:"resources"`
	// Shared asks for a runner that takes any user's jobs; only an admin's
	// token may register one. A runner not shared takes only its user's.
	Shared bool `json:"shared,omitempty"`
}

// RunnerRegisterResponse answers a registration.
type RunnerRegisterResponse struct {
	RunnerID  string    `json:"runner_id"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	// HeartbeatInterval is how often the server wants to hear from the runner.
	HeartbeatInterval Duration `json:"heartbeat_interval"`
	// ClaimBeats says that a claim the runner keeps open (its long poll
	// for a job) stands for its heartbeats: the server hears the runner
	// for as long as the request is open, and a runner waiting for a job
	// need not heartbeat. A server that does not say so needs the beats.
	ClaimBeats bool `json:"claim_beats,omitempty"`
}

// RunnerJoinRequest is the body of POST /runners/join, sent without any
// Authorization header by the runner of an on-demand instance: JoinToken, the
// single-use credential the server gave the instance at launch, stands in for
// a user's token. The server consumes the token, registers the runner for the
// instance's user and answers as for a registration (RunnerRegisterResponse,
// 201). An unknown, used or cancelled token is 401 unauthenticated.
type RunnerJoinRequest struct {
	RunnerRegisterRequest
	JoinToken string `json:"join_token"`
}

// HeartbeatRequest is the body of POST /runner/heartbeat.
type HeartbeatRequest struct {
	Resources *HostResources `json:"resources,omitempty"`
	JobID     string         `json:"job_id,omitempty"`
}

// RunnerInterruptionRequest is the body of POST /runner/interruption: the
// cloud announced that it reclaims the runner's machine (an EC2 spot
// instance's interruption notice). From then on the server gives the runner
// no job; the runner stops the job it holds and gives it back (status
// interrupted), and the server requeues it.
type RunnerInterruptionRequest struct {
	// Action is what the cloud will do to the machine: "terminate", "stop"
	// or "hibernate".
	Action string `json:"action"`
	// Time is when it will.
	Time time.Time `json:"time"`
}

// RunnerInterruptionResponse answers POST /runner/interruption with the
// interruption as the server keeps it: the first report's.
type RunnerInterruptionResponse struct {
	InterruptedAt time.Time `json:"interrupted_at"`
	Reason        string    `json:"reason"`
}

// Describe says what the notice means, for people, as runners and jobs show
// it; noticedAt is when the notice came.
func (r RunnerInterruptionRequest) Describe(noticedAt time.Time) string {
	return fmt.Sprintf("spot instance reclaimed by the cloud (notice at %s; %s at %s)",
		noticedAt.UTC().Format(time.TimeOnly), r.Action, r.Time.UTC().Format(time.TimeOnly+" MST"))
}

// ClaimRequest is the body of POST /runner/claim: the runner's free resources.
type ClaimRequest struct {
	Free HostResources `json:"free"`
	// Wait is how long the server may hold the request open waiting for a job.
	Wait Duration `json:"wait"`
}

// Assignment answers a successful claim.
type Assignment struct {
	Job   Job   `json:"job"`
	Lease int64 `json:"lease"`
}

// JobStatusUpdate is the body of POST /runner/jobs/{id}/status. Besides the
// states a job moves through, a runner may report StatusInterrupted: it gives
// the job back because its machine is going away, and the server requeues it
// (Reason is then the cause).
type JobStatusUpdate struct {
	Status   JobStatus `json:"status"`
	ExitCode *int      `json:"exit_code,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	// LogUnsent, with a final status, is how many bytes of the attempt's
	// output the server has not acknowledged yet: the runner goes on
	// sending them after the report. LogEnd is the size the job's log
	// has with them, when the runner knows where its output starts in
	// the log (0 when it does not: the server has none of it then).
	LogUnsent int64 `json:"log_unsent,omitempty"`
	LogEnd    int64 `json:"log_end,omitempty"`
	// Next, with a final status, asks for the runner's next job in the
	// same request: the server claims a pending job that fits Next.Free at
	// once (Next.Wait is not used: with none pending, the runner claims as
	// usual) and returns it in JobStatusResult.Next. A runner that claims
	// right after each job saves a round trip a job.
	Next *ClaimRequest `json:"next,omitempty"`
}

// JobStatusResult answers POST /runner/jobs/{id}/status: the job after the
// change and, when the update asked for it (JobStatusUpdate.Next) and a job
// was pending, the runner's next assignment.
type JobStatusResult struct {
	Job
	Next *Assignment `json:"next,omitempty"`
}

// StopSignal answers GET /runner/jobs/{id}/stop: what the user asked for.
type StopSignal struct {
	Stop  bool `json:"stop"`
	Abort bool `json:"abort"`
}

// LogAppendResponse answers a log upload with the job's log length after it.
type LogAppendResponse struct {
	Size int64 `json:"size"`
}

// Dependency is one finished dependency of a job and its artifact files.
type Dependency struct {
	Workflow string `json:"workflow"`
	JobID    string `json:"job_id"`
	// RunName is the dependency's run: the job's own, or for a tagged
	// dependency the run the tag named (Tag) when the job's run was submitted.
	RunName string         `json:"run_name,omitempty"`
	Tag     string         `json:"tag,omitempty"`
	Files   []ArtifactFile `json:"files"`
}

// Tag names a finished (done) run of a user, so that workflows of later runs
// can use its artifacts (depends-on: [WORKFLOW:TAG]). A tag's name is unique
// per user.
type Tag struct {
	Name    string `json:"name"`
	RunName string `json:"run_name"`
	// Workflow is the tagged run's workflow; Workflows all of its jobs'.
	Workflow  string    `json:"workflow"`
	Workflows []string  `json:"workflows"`
	CreatedAt time.Time `json:"created_at"` // when the tag was put on its run
}

// TagPutRequest is the body of PUT /tags/{name}: tag the run RunName, which
// must be done. A tag that names another run is moved only with Force.
type TagPutRequest struct {
	RunName string `json:"run_name"`
	Force   bool   `json:"force,omitempty"`
}

// TagPutResponse answers PUT /tags/{name}.
type TagPutResponse struct {
	Tag     Tag  `json:"tag"`
	Created bool `json:"created"`
	// PreviousRunName is the run the tag named before it was moved.
	PreviousRunName string `json:"previous_run_name,omitempty"`
}

// Duration is a time.Duration that travels as a Go duration string ("30s").
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// On-demand runners: a user's limits, the on-demand switch, and the offers
// limits are checked against. Changes that terminate instances (a lower
// maximum, a deleted limit, disabling) take ?dry_run=true, which answers
// what the change would do, Terminating included, and changes nothing.

// Limit allows the server to run up to Max on-demand instances of one offer
// for the user: (backend, region, instance type, purchase type) is its key.
type Limit struct {
	ID           string `json:"id"`
	Backend      string `json:"backend"`
	Region       string `json:"region"`
	InstanceType string `json:"instance_type"`
	PurchaseType string `json:"purchase_type"` // PurchaseSpot or PurchaseOnDemand
	Max          int    `json:"max"`
	// Running is how many of the limit's instances count against Max:
	// launching, running and terminating ones.
	Running int `json:"running"`
	// Resources and PricePerHour describe the instance type, when its
	// backend offers it now.
	Resources    *HostResources `json:"resources,omitempty"`
	PricePerHour float64        `json:"price_per_hour,omitempty"`
	// UnavailableSince is set while the cloud refuses to launch the offer
	// (no capacity, no quota): since when, and the cloud's words.
	UnavailableSince  *time.Time `json:"unavailable_since,omitempty"`
	UnavailableReason string     `json:"unavailable_reason,omitempty"`
	CreatedAt         time.Time  `json:"created_at"`
	UpdatedAt         time.Time  `json:"updated_at"`
}

// LimitPutRequest is the body of PUT /limits: it creates the limit with the
// key or sets its maximum. An empty Backend is the one that offers Region;
// an empty Region the backend's default region; an empty PurchaseType is
// PurchaseOnDemand.
type LimitPutRequest struct {
	Backend      string `json:"backend,omitempty"`
	Region       string `json:"region,omitempty"`
	InstanceType string `json:"instance_type"`
	PurchaseType string `json:"purchase_type,omitempty"`
	Max          int    `json:"max"`
}

// LimitPutResponse answers PUT /limits.
type LimitPutResponse struct {
	Limit       Limit `json:"limit"`
	Created     bool  `json:"created"`
	PreviousMax int   `json:"previous_max"`
	// Terminating is how many running or launching instances the change
	// terminates (a lower maximum).
	Terminating int  `json:"terminating"`
	DryRun      bool `json:"dry_run"`
}

// LimitDeleteResponse answers DELETE /limits.
type LimitDeleteResponse struct {
	Deleted     []Limit `json:"deleted"`
	Terminating int     `json:"terminating"`
	DryRun      bool    `json:"dry_run"`
}

// OnDemandRequest is the body of PUT /on-demand.
type OnDemandRequest struct {
	Enabled bool `json:"enabled"`
}

// OnDemandStatus answers GET and PUT /on-demand.
type OnDemandStatus struct {
	Enabled bool `json:"enabled"`
	// UpdatedAt is when the switch was last turned; absent if never.
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	Limits    int        `json:"limits"`
	// Running counts the instances of the user's limits (launching,
	// running, terminating).
	Running int `json:"running"`
	// Backends are the backends this server launches instances on.
	Backends []string `json:"backends"`
	// Terminating is how many instances the change terminates (disabling).
	Terminating int  `json:"terminating"`
	DryRun      bool `json:"dry_run"`
	// Budget is the monthly budget, when one is set.
	Budget *Budget `json:"budget,omitempty"`
}

// Offer is one instance type a backend's region sells at one purchase type.
type Offer struct {
	Backend      string        `json:"backend"`
	Region       string        `json:"region"`
	InstanceType string        `json:"instance_type"`
	PurchaseType string        `json:"purchase_type"`
	Resources    HostResources `json:"resources"`
	PricePerHour float64       `json:"price_per_hour"`
}

// SessionRequest is the body of POST /session: sign in with a user's token.
// The answer sets the session cookie (HttpOnly, SameSite=Strict) that
// browsers then send instead of the token; see Session.
type SessionRequest struct {
	Token string `json:"token"`
}

// Session answers POST /session. With the session cookie instead of a
// bearer token, every request other than GET and HEAD must carry
// CSRFToken in the X-CSRF-Token header (CSRFHeader).
type Session struct {
	User      User      `json:"user"`
	CSRFToken string    `json:"csrf_token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CSRFHeader carries a session's CSRF token on requests authenticated by
// the session cookie.
const CSRFHeader = "X-CSRF-Token"

// EventKind names what changed, in the stream of GET /events: the client
// refetches what it shows of it.
type EventKind string

// The kinds of change GET /events sends.
const (
	EventRuns      EventKind = "runs"      // runs and jobs: submitted, stopped, their states
	EventRunners   EventKind = "runners"   // runners: registered, online, offline, their jobs
	EventLimits    EventKind = "limits"    // limits and the on-demand switch
	EventInstances EventKind = "instances" // on-demand instances launched, joined, terminated
	EventTick      EventKind = "tick"      // sent every 10 seconds: refetch anyway
)

// KubernetesConfig answers GET and PUT /kubernetes: the cluster the server
// launches on-demand runners in as Pods, as `dstack kubernetes config` set
// it. The kubeconfig never leaves the server.
type KubernetesConfig struct {
	Configured bool `json:"configured"`
	// Context is the kubeconfig context used; it is the backend's region
	// ("in-cluster" with InCluster).
	Context     string `json:"context,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	InCluster   bool   `json:"in_cluster,omitempty"`
	RunnerImage string `json:"runner_image,omitempty"`
	// Server is the API server's URL, from the kubeconfig.
	Server string `json:"server,omitempty"`
	// ScheduleTimeoutSeconds is how long a runner Pod may wait for a node
	// before its launch counts as refused for capacity.
	ScheduleTimeoutSeconds int `json:"schedule_timeout_seconds,omitempty"`
	// ReserveMilliCPU and ReserveMemoryMiB are kept back of each node's
	// allocatable resources; a runner Pod requests the rest.
	ReserveMilliCPU  int64 `json:"reserve_millicpu,omitempty"`
	ReserveMemoryMiB int64 `json:"reserve_memory_mib,omitempty"`
	// InstanceTypes are the cluster's types, as the last check saw them.
	InstanceTypes string     `json:"instance_types,omitempty"`
	UpdatedAt     *time.Time `json:"updated_at,omitempty"`
	UpdatedBy     string     `json:"updated_by,omitempty"`
}

// KubernetesConfigRequest is the body of PUT /kubernetes: a kubeconfig's
// content (or InCluster), checked against the API server before it is
// saved, sealed. No kubeconfig, where one is stored, keeps the stored one
// (and its context unless Context is given).
type KubernetesConfigRequest struct {
	Kubeconfig             string `json:"kubeconfig,omitempty"`
	Context                string `json:"context,omitempty"`
	Namespace              string `json:"namespace,omitempty"`
	InCluster              bool   `json:"in_cluster,omitempty"`
	RunnerImage            string `json:"runner_image,omitempty"`
	ScheduleTimeoutSeconds int    `json:"schedule_timeout_seconds,omitempty"`
	// ReserveMilliCPU and ReserveMemoryMiB: kept back of each node's
	// allocatable resources; 0 takes the defaults (100m, 256 MiB), -1 none.
	ReserveMilliCPU  int64 `json:"reserve_millicpu,omitempty"`
	ReserveMemoryMiB int64 `json:"reserve_memory_mib,omitempty"`
}

// AWSConfig answers GET and PUT /aws: the AWS account the server launches
// on-demand runners in, as `dstack aws config` set it. The secret access
// key never leaves the server: SecretAccessKey is masked as `aws configure`
// shows it, "****************" and its last four characters.
type AWSConfig struct {
	Configured      bool   `json:"configured"`
	AccessKeyID     string `json:"access_key_id,omitempty"`
	SecretAccessKey string `json:"secret_access_key,omitempty"`
	Region          string `json:"region,omitempty"`
	// ArtifactBucket, when set, is the S3 bucket the artifacts of runs
	// submitted since go to (under the prefix dstack/), unless the server
	// keeps artifacts elsewhere by its own --artifacts.
	ArtifactBucket string `json:"artifact_bucket,omitempty"`
	// AMI and GPUAMI override the images of instances without and with
	// GPUs; empty: the backend's choice.
	AMI       string     `json:"ami,omitempty"`
	GPUAMI    string     `json:"gpu_ami,omitempty"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	UpdatedBy string     `json:"updated_by,omitempty"`
	// Notes, in the answer to PUT /aws only, are the optional EC2 actions
	// the endpoint was found to lack while the credentials were checked,
	// each with what the server does instead.
	Notes []string `json:"notes,omitempty"`
}

// AWSConfigRequest is the body of PUT /aws. An empty SecretAccessKey keeps
// the stored one when AccessKeyID is the stored one too, so that a client
// changes the region or bucket without the secret.
type AWSConfigRequest struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key,omitempty"`
	Region          string `json:"region"`
	ArtifactBucket  string `json:"artifact_bucket,omitempty"`
	AMI             string `json:"ami,omitempty"`
	GPUAMI          string `json:"gpu_ami,omitempty"`
}

// ServerInfo is the body of GET /version, which needs no token: what a
// client learns of the server before it sends anything large.
type ServerInfo struct {
	// Version is the server's build (version.Version): "dev" for an
	// unstamped build.
	Version string `json:"version"`
	// MaxCodeSize is the largest code archive POST /code accepts, in bytes.
	MaxCodeSize int64 `json:"max_code_size"`
}

// RunnerRemoveResponse answers DELETE /runners/{ref}, where ref is a
// runner's ID or name: the runners removed, and those of that name kept
// with why (online, running a job, or on an on-demand instance, which goes
// with its instance).
type RunnerRemoveResponse struct {
	Removed []RunnerRef `json:"removed"`
	Kept    []RunnerRef `json:"kept,omitempty"`
}

// RunnerRef names one runner, and why it was kept.
type RunnerRef struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Reason string `json:"reason,omitempty"`
}

// UserInfo is one user of GET /users (admins only).
type UserInfo struct {
	Name       string     `json:"name"`
	Admin      bool       `json:"admin"`
	CreatedAt  time.Time  `json:"created_at"`
	LastSeenAt *time.Time `json:"last_seen_at,omitempty"`
	// RunningJobs counts the user's jobs a runner holds now.
	RunningJobs int `json:"running_jobs"`
	// MaxRunning caps the user's running jobs; 0: no cap.
	MaxRunning int `json:"max_running"`
	// StorageUsed is the bytes the user's code, logs and artifacts take.
	StorageUsed int64 `json:"storage_used"`
	// StorageQuota is the user's own storage quota in bytes (0: none);
	// absent when the server's default (StorageQuotaDefault) applies.
	StorageQuota *int64 `json:"storage_quota,omitempty"`
	// StorageQuotaDefault is the server's default quota (0: none), which
	// applies when the user has no quota of their own.
	StorageQuotaDefault int64 `json:"storage_quota_default"`
}

// UserCreateRequest is the body of POST /users.
type UserCreateRequest struct {
	Name  string `json:"name"`
	Admin bool   `json:"admin"`
}

// UserCreated answers POST /users: the user and its first token, named
// "default", shown this once.
type UserCreated struct {
	User  UserInfo `json:"user"`
	Token string   `json:"token"`
}

// UserPatchRequest is the body of PATCH /users/{name}: the fields to
// change, the others left out.
type UserPatchRequest struct {
	Admin *bool `json:"admin,omitempty"`
	// MaxRunning caps the user's running jobs; 0 lifts the cap.
	MaxRunning *int `json:"max_running,omitempty"`
	// StorageQuota sets the user's own storage quota in bytes; 0: none.
	StorageQuota *int64 `json:"storage_quota,omitempty"`
	// StorageQuotaDefault puts the user back on the server's default
	// quota; it cannot come with StorageQuota.
	StorageQuotaDefault bool `json:"storage_quota_default,omitempty"`
}

// TokenInfo is one token of GET /tokens; its value is never shown again.
type TokenInfo struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	// Current is true for the token (or the session's token) the request
	// was made with.
	Current bool `json:"current,omitempty"`
}

// TokenCreateRequest is the body of POST /tokens.
type TokenCreateRequest struct {
	// Name is the token's name, unique among the user's tokens; empty for
	// a generated one ("token-YYYYMMDD-HHMMSS").
	Name string `json:"name,omitempty"`
	// ExpiresIn is how long the token works, as "30d", "12h" or "90m";
	// empty for a token that does not expire.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// TokenCreated answers POST /tokens: the token, shown this once.
type TokenCreated struct {
	TokenInfo
	Token string `json:"token"`
}

// TokenRevoked answers DELETE /tokens/{ref}: the token revoked and the
// runners revoked with it (?runners=true).
type TokenRevoked struct {
	Token   TokenInfo `json:"token"`
	Runners []string  `json:"runners"`
}

// AuditEntry is one entry of the audit log (GET /audit): who changed what
// on the server, when, and from where.
type AuditEntry struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
	// User is who did it, by their name then: "(server)" for the server's
	// own work (removing runners offline past --runner-retention), "" when
	// no user is known (a refused sign-in).
	User string `json:"user"`
	// Action is what was done: "session.create", "limit.put"... (the list
	// is in docs/audit.md).
	Action string `json:"action"`
	// Target is what it was done to: a user's name, a limit, a runner.
	Target string `json:"target"`
	// Detail is a JSON object with the rest: the values set, the reason a
	// sign-in was refused. It never holds a secret.
	Detail json.RawMessage `json:"detail"`
	// RemoteAddr is the IP address the request came from: the peer of the
	// server's connection (behind a reverse proxy, the proxy's); "" for the
	// server's own work.
	RemoteAddr string `json:"remote_addr"`
}
