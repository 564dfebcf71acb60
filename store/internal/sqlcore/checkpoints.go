package sqlcore

import (
	"context"
	"errors"
	"fmt"

	"github.com/dstackai/dstack/store"
)

const checkpointColumns = `job_id, seq, attempt, created_at, size, files`

func scanCheckpoint(row Row, withManifest bool) (*store.Checkpoint, error) {
	var (
		c        store.Checkpoint
		created  int64
		manifest string
	)
	dest := []any{&c.JobID, &c.Seq, &c.Attempt, &created, &c.Size, &c.Files}
	if withManifest {
		dest = append(dest, &manifest)
	}
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	c.CreatedAt = fromMicros(created)
	if withManifest {
		c.Manifest = []byte(manifest)
	}
	return &c, nil
}

// CheckpointPut records a job's latest checkpoint under its lease.
func (s *Store) CheckpointPut(ctx context.Context, p store.CheckpointPutParams) (cur, prev *store.Checkpoint, err error) {
	if p.JobID == "" || len(p.Manifest) == 0 {
		return nil, nil, fmt.Errorf("record checkpoint: a job and a manifest are required")
	}
	err = s.write.Tx(ctx, func(q Querier) error {
		cur, prev = nil, nil
		var (
			lease   int64
			attempt int
			status  string
		)
		err := q.QueryRow(ctx, `SELECT lease, attempt, status FROM jobs WHERE id = $1`+s.d.ForUpdate, p.JobID).Scan(&lease, &attempt, &status)
		if err != nil {
			return err
		}
		if lease != p.Lease || !isActive(status) {
			return store.ErrLeaseLost
		}
		prev, err = scanCheckpoint(q.QueryRow(ctx, `SELECT `+checkpointColumns+`, manifest FROM checkpoints WHERE job_id = $1`, p.JobID), true)
		switch {
		case errors.Is(err, store.ErrNotFound):
			prev = nil
		case err != nil:
			return err
		}
		seq := int64(1)
		if prev != nil {
			seq = prev.Seq + 1
		}
		cur, err = scanCheckpoint(q.QueryRow(ctx, `INSERT INTO checkpoints (job_id, seq, attempt, created_at, size, files, manifest)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (job_id) DO UPDATE SET seq = excluded.seq, attempt = excluded.attempt, created_at = excluded.created_at,
				size = excluded.size, files = excluded.files, manifest = excluded.manifest
			RETURNING `+checkpointColumns+`, manifest`,
			p.JobID, seq, attempt, micros(p.Now), p.Size, p.Files, string(p.Manifest)), true)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("record checkpoint of job %s: %w", p.JobID, err)
	}
	return cur, prev, nil
}

func isActive(status string) bool {
	switch status {
	case "downloading", "running", "uploading":
		return true
	}
	return false
}

// CheckpointGet returns a job's checkpoint with its manifest.
func (s *Store) CheckpointGet(ctx context.Context, jobID string) (*store.Checkpoint, error) {
	c, err := scanCheckpoint(s.read.QueryRow(ctx, `SELECT `+checkpointColumns+`, manifest FROM checkpoints WHERE job_id = $1`, jobID), true)
	if err != nil {
		return nil, fmt.Errorf("checkpoint of job %s: %w", jobID, err)
	}
	return c, nil
}

// CheckpointList lists the checkpoints of the jobs of some runs.
func (s *Store) CheckpointList(ctx context.Context, p store.CheckpointListParams) ([]*store.Checkpoint, error) {
	if len(p.RunIDs) == 0 {
		return nil, nil
	}
	args := make([]any, len(p.RunIDs))
	for i, id := range p.RunIDs {
		args[i] = id
	}
	rows, err := s.read.Query(ctx, `SELECT `+checkpointColumns+` FROM checkpoints
		WHERE job_id IN (SELECT id FROM jobs WHERE run_id IN (`+placeholders(1, len(args))+`)) ORDER BY job_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	defer rows.Close()
	var out []*store.Checkpoint
	for rows.Next() {
		c, err := scanCheckpoint(rows, false)
		if err != nil {
			return nil, fmt.Errorf("list checkpoints: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	return out, nil
}

// CheckpointDelete forgets a job's checkpoint and trashes its bytes.
func (s *Store) CheckpointDelete(ctx context.Context, p store.CheckpointDeleteParams) (*store.Deleted, error) {
	out := &store.Deleted{}
	err := s.write.Tx(ctx, func(q Querier) error {
		out.Trash = nil
		var artifactStore string
		if err := q.QueryRow(ctx, `SELECT artifact_store FROM jobs WHERE id = $1`, p.JobID).Scan(&artifactStore); err != nil {
			return err
		}
		n, err := q.Exec(ctx, `DELETE FROM checkpoints WHERE job_id = $1`, p.JobID)
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		return s.trash(ctx, q, store.TrashCheckpoints, artifactStore, p.JobID, micros(p.Now), micros(p.ClaimUntil), out)
	})
	if err != nil {
		return nil, fmt.Errorf("delete the checkpoint of job %s: %w", p.JobID, err)
	}
	return out, nil
}
