package store

import (
	"context"
	"time"
)

// Storage is what a user's runs hold and how it is deleted: the code
// archives a user uploaded, storage accounting and quotas, deleting runs
// (`dstack rm`, the server's --retention) and the trash of bytes to remove.
//
// A code archive belongs to the users who uploaded it: one row per user and
// archive, while its bytes are kept once by content (a blob shared by every
// user who uploaded the same archive). The bytes of deleted runs and code
// are not removed in the deleting transaction: it records them in the trash,
// and the server removes them after it commits (TrashClaim, TrashDelete), so
// that a crash in between leaves them to be removed later, never lost track
// of.
type Storage interface {
	// CodePut records that a user uploaded a code archive of the given size
	// (again: its size and UploadedAt are updated). ErrConflict while the
	// archive's bytes are in the trash, being removed: the caller retries
	// once they are gone, and then stores the bytes again.
	CodePut(ctx context.Context, p CodePutParams) (*Code, error)
	// CodeGet returns a user's record of a code archive; ErrNotFound when
	// the user did not upload it (whoever else did).
	CodeGet(ctx context.Context, p CodeGetParams) (*Code, error)
	// CodeDeleteUnused deletes, up to p.Limit, the code archives no run of
	// their user uses that were uploaded before p.UploadedBefore and not
	// used since, and trashes the bytes of those no user has any more.
	CodeDeleteUnused(ctx context.Context, p CodeDeleteUnusedParams) (*Deleted, error)

	// RunDelete deletes a finished run of a user (of any user when UserID
	// is empty) with its jobs, their artifacts' records and its tags, and the
	// user's code archive when no other run of the user uses it and it was
	// not uploaded again since its last use; the jobs' logs and artifacts,
	// and the archive's bytes when no user has it any more, go to the trash.
	// ErrNotFound when there is no such run; ErrRunUnfinished when a job of
	// the run is not finished; ErrRunTagged when a tag names the run and
	// p.Force is not set (with it, the tags are deleted too).
	RunDelete(ctx context.Context, p RunDeleteParams) (*Deleted, error)
	// RunDeleteFinishedBefore deletes as RunDelete, in one transaction, up
	// to p.Limit runs, oldest first, that no tag names and whose jobs all
	// finished before p.FinishedBefore: the server's retention.
	RunDeleteFinishedBefore(ctx context.Context, p RunDeleteFinishedBeforeParams) (*Deleted, error)

	// TrashClaim takes up to p.Limit items of the trash not claimed, or
	// whose claim ended before p.Now, for the caller until p.Until, oldest
	// first.
	TrashClaim(ctx context.Context, p TrashClaimParams) ([]*TrashItem, error)
	// TrashDelete forgets trash items whose bytes are removed (by Kind,
	// Store and Key).
	TrashDelete(ctx context.Context, items []*TrashItem) error

	// JobSetLogSize records the size of a job's log, for storage
	// accounting. ErrNotFound for an unknown job.
	JobSetLogSize(ctx context.Context, p JobSetLogSizeParams) error
	// UserStorageUsed sums what a user's code archives, logs and artifacts
	// hold, by their recorded sizes.
	UserStorageUsed(ctx context.Context, userID string) (*StorageUsage, error)
	// UserStorageUsedAll is UserStorageUsed of every user holding
	// anything, by user ID (a user holding nothing is absent).
	UserStorageUsedAll(ctx context.Context) (map[string]*StorageUsage, error)
	// UserSetStorageQuota sets a user's own storage quota in bytes (nil:
	// the server's default). ErrNotFound for an unknown user.
	UserSetStorageQuota(ctx context.Context, p UserSetStorageQuotaParams) error
}

// Why RunDelete refuses a run; each also matches ErrConflict.
var (
	ErrRunUnfinished = &conflictError{"run has unfinished jobs"}
	ErrRunTagged     = &conflictError{"run is tagged"}
)

type conflictError struct{ msg string }

func (e *conflictError) Error() string        { return e.msg }
func (e *conflictError) Is(target error) bool { return target == ErrConflict }

// Code is a user's record of an uploaded code archive; CodeID is the
// SHA-256 of its bytes, in lowercase hex.
type Code struct {
	UserID     string
	CodeID     string
	Size       int64
	CreatedAt  time.Time  // first upload
	UploadedAt time.Time  // last upload
	LastUsedAt *time.Time // last run submitted with it; nil: none yet
}

// CodePutParams are the arguments of CodePut.
type CodePutParams struct {
	UserID string
	CodeID string
	Size   int64
	Now    time.Time
}

// CodeGetParams are the arguments of CodeGet.
type CodeGetParams struct {
	UserID string
	CodeID string
}

// CodeDeleteUnusedParams are the arguments of CodeDeleteUnused.
type CodeDeleteUnusedParams struct {
	UploadedBefore time.Time
	Limit          int
	// Now and ClaimUntil: the trash items made are claimed by the caller
	// until ClaimUntil, for it to remove their bytes at once.
	Now        time.Time
	ClaimUntil time.Time
}

// RunDeleteParams are the arguments of RunDelete.
type RunDeleteParams struct {
	Name   string
	UserID string // empty: any user's (an admin's delete)
	// Force deletes a tagged run, and its tags.
	Force      bool
	Now        time.Time
	ClaimUntil time.Time // as in CodeDeleteUnusedParams
}

// RunDeleteFinishedBeforeParams are the arguments of RunDeleteFinishedBefore.
type RunDeleteFinishedBeforeParams struct {
	FinishedBefore time.Time
	Limit          int
	Now            time.Time
	ClaimUntil     time.Time // as in CodeDeleteUnusedParams
}

// Deleted is what a delete removed: the runs as they were (with their
// jobs), the code records, and the trash items holding their bytes.
type Deleted struct {
	Runs  []*Run
	Codes []*Code
	Trash []*TrashItem
}

// TrashKind says what a trash item's bytes are.
type TrashKind string

// Kinds of trash.
const (
	// TrashCode: the code archive whose ID is Key, in the server's store.
	TrashCode TrashKind = "code"
	// TrashLog: the log of the job whose ID is Key.
	TrashLog TrashKind = "log"
	// TrashArtifacts: the artifacts of the job whose ID is Key, in the
	// artifact store named by Store (Job.ArtifactStore).
	TrashArtifacts TrashKind = "artifacts"
	// TrashCheckpoints: the checkpoint of the job whose ID is Key, in the
	// artifact store named by Store, deleted while the job's artifacts stay
	// (TrashArtifacts takes both).
	TrashCheckpoints TrashKind = "checkpoints"
)

// TrashItem is bytes to remove; Kind, Store and Key name it.
type TrashItem struct {
	Kind      TrashKind
	Store     string
	Key       string
	CreatedAt time.Time
}

// TrashClaimParams are the arguments of TrashClaim.
type TrashClaimParams struct {
	Now   time.Time
	Until time.Time
	Limit int
}

// JobSetLogSizeParams are the arguments of JobSetLogSize.
type JobSetLogSizeParams struct {
	ID   string
	Size int64
}

// StorageUsage is what a user's code archives, logs and artifacts hold, in
// bytes.
type StorageUsage struct {
	Code        int64
	Logs        int64
	Artifacts   int64
	Checkpoints int64
}

// Total is the sum of u's parts.
func (u *StorageUsage) Total() int64 { return u.Code + u.Logs + u.Artifacts + u.Checkpoints }

// UserSetStorageQuotaParams are the arguments of UserSetStorageQuota.
type UserSetStorageQuotaParams struct {
	UserID string
	Quota  *int64 // bytes; nil: the server's default
}
