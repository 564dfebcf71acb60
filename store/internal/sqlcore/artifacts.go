package sqlcore

import (
	"context"
	"fmt"

	"github.com/dstackai/dstack/store"
)

// ArtifactPut inserts or replaces the record of one artifact file.
func (s *Store) ArtifactPut(ctx context.Context, p store.ArtifactPutParams) error {
	if p.JobID == "" || p.Path == "" || p.SHA256 == "" {
		return fmt.Errorf("record artifact %q: a job, a path and a hash are required", p.Path)
	}
	_, err := s.write.Exec(ctx, `INSERT INTO artifacts (job_id, path, size, sha256) VALUES ($1, $2, $3, $4)
		ON CONFLICT (job_id, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256`,
		p.JobID, p.Path, p.Size, p.SHA256)
	if err != nil {
		return fmt.Errorf("record artifact %s of job %s: %w", p.Path, p.JobID, err)
	}
	return nil
}

// ArtifactDelete deletes the record of one artifact file, if there is one.
func (s *Store) ArtifactDelete(ctx context.Context, p store.ArtifactDeleteParams) error {
	if _, err := s.write.Exec(ctx, `DELETE FROM artifacts WHERE job_id = $1 AND path = $2`, p.JobID, p.Path); err != nil {
		return fmt.Errorf("forget artifact %s of job %s: %w", p.Path, p.JobID, err)
	}
	return nil
}

// ArtifactList lists the records of a job's artifact files by path.
func (s *Store) ArtifactList(ctx context.Context, p store.ArtifactListParams) ([]*store.Artifact, error) {
	rows, err := s.read.Query(ctx, `SELECT job_id, path, size, sha256 FROM artifacts WHERE job_id = $1 ORDER BY path`, p.JobID)
	if err != nil {
		return nil, fmt.Errorf("list artifacts of job %s: %w", p.JobID, err)
	}
	defer rows.Close()
	var out []*store.Artifact
	for rows.Next() {
		var a store.Artifact
		if err := rows.Scan(&a.JobID, &a.Path, &a.Size, &a.SHA256); err != nil {
			return nil, fmt.Errorf("list artifacts of job %s: %w", p.JobID, err)
		}
		out = append(out, &a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list artifacts of job %s: %w", p.JobID, err)
	}
	return out, nil
}
