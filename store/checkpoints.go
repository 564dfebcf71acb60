package store

import (
	"context"
	"time"
)

// Checkpoints are the state a job saves while it runs (workflow key
// checkpoints:), kept across its attempts: the runner stores the files'
// content by hash in the job's artifact store, then records a checkpoint
// whose manifest lists them. A checkpoint is complete once recorded; a job
// has at most one, its latest, which its next attempt starts from. The
// bytes live under the job's checkpoint prefix of its artifact store; a
// deleted checkpoint's bytes go to the trash (TrashCheckpoints).
type Checkpoints interface {
	// CheckpointPut records a complete checkpoint of an active job under
	// its lease (ErrLeaseLost otherwise; ErrNotFound for an unknown job),
	// replacing the job's previous one, which it returns (nil when there
	// was none). Seq grows with every checkpoint of the job.
	CheckpointPut(ctx context.Context, p CheckpointPutParams) (cur, prev *Checkpoint, err error)
	// CheckpointGet returns a job's checkpoint with its manifest;
	// ErrNotFound when it has none.
	CheckpointGet(ctx context.Context, jobID string) (*Checkpoint, error)
	// CheckpointList returns the checkpoints of the jobs of the given runs,
	// without their manifests, by job ID.
	CheckpointList(ctx context.Context, p CheckpointListParams) ([]*Checkpoint, error)
	// CheckpointDelete forgets a job's checkpoint and, in the same
	// transaction, puts its bytes in the trash, claimed until p.ClaimUntil
	// for the caller to remove. ErrNotFound when the job has none.
	CheckpointDelete(ctx context.Context, p CheckpointDeleteParams) (*Deleted, error)
}

// Checkpoint is the latest complete checkpoint of a job.
type Checkpoint struct {
	JobID     string
	Seq       int64
	Attempt   int // the job's attempt that made it, from 0
	CreatedAt time.Time
	Size      int64 // bytes stored: each distinct content once
	Files     int
	// Manifest is the checkpoint's manifest as the server encoded it
	// (api.CheckpointManifest in JSON); empty from CheckpointList.
	Manifest []byte
}

// CheckpointPutParams are the arguments of CheckpointPut.
type CheckpointPutParams struct {
	JobID    string
	Lease    int64
	Size     int64
	Files    int
	Manifest []byte
	Now      time.Time
}

// CheckpointListParams are the arguments of CheckpointList.
type CheckpointListParams struct {
	RunIDs []string
}

// CheckpointDeleteParams are the arguments of CheckpointDelete.
type CheckpointDeleteParams struct {
	JobID      string
	Now        time.Time
	ClaimUntil time.Time
}
