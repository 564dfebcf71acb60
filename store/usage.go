package store

import (
	"context"
	"time"
)

// The records cost and usage are computed from (package cost): the
// instances, with their price and the time they were up, and the
// stretches of time jobs held them.
//
// A job's current attempt holds its instance from its claim until it ends
// (jobs.claimed_at to jobs.finished_at, on the runner of the instance).
// An attempt that is requeued, and the attempts of a run that is deleted,
// leave a row in instance_holds, so that what an instance did is never
// forgotten while the instance is.

// UsageStore reads what cost and usage are computed from.
type UsageStore interface {
	// UsageList returns the on-demand instances that were up at some time
	// in [p.From, p.To) (recorded before p.To and not ended by p.From)
	// and every hold of them; with p.RunIDs, instead, the holds of those
	// runs' jobs and the instances they held.
	UsageList(ctx context.Context, p UsageListParams) (*Usage, error)
	// LimitHistoryList returns the changes of limits' maximums made
	// before p.To, oldest first: the last change before p.From of each
	// limit, then every change in [p.From, p.To). LimitPut and
	// LimitDelete record them.
	LimitHistoryList(ctx context.Context, p LimitHistoryListParams) ([]*LimitChange, error)
}

// UsageListParams are the arguments of UsageList.
type UsageListParams struct {
	From, To time.Time
	RunIDs   []string
}

// Usage is what UsageList returns.
type Usage struct {
	Instances []*Instance
	Holds     []*Hold
}

// Hold is a stretch of time one attempt of a job held an on-demand
// instance.
type Hold struct {
	InstanceID string
	JobID      string
	RunID      string
	RunName    string
	Workflow   string
	UserID     string
	Attempt    int
	From       time.Time
	// To is when the attempt ended; nil while it goes on.
	To *time.Time
}

// LimitHistoryListParams are the arguments of LimitHistoryList.
type LimitHistoryListParams struct {
	From, To time.Time
}

// LimitChange is a limit's maximum from At on; Max 0 when it was deleted.
type LimitChange struct {
	LimitID      string
	Backend      string
	Region       string
	InstanceType string
	Spot         bool
	Max          int
	At           time.Time
}
