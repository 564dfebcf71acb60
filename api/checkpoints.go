package api

import (
	"fmt"
	"regexp"
	"time"
)

// Checkpoints: a job's runner syncs the paths of its spec's Checkpoints to
// the server while it runs. Files are stored by content: the runner asks
// which contents the server lacks (POST .../checkpoint/missing), uploads
// those (PUT .../checkpoint/blobs/{sha256}), and then sends the manifest
// (POST .../checkpoint). The manifest is recorded last, and only when every
// content it lists is stored: that makes the checkpoint complete, the one
// the job's next attempt starts from (GET .../checkpoint).

// CheckpointFile is one file of a checkpoint.
type CheckpointFile struct {
	Path   string `json:"path"` // slash-separated, relative to the working directory
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Mode   uint32 `json:"mode,omitempty"` // permission bits; 0644 when absent
}

// CheckpointManifest is the body of POST /runner/jobs/{id}/checkpoint: every
// file of the checkpoint.
type CheckpointManifest struct {
	Files []CheckpointFile `json:"files"`
}

// Checkpoint is a job's latest complete checkpoint.
type Checkpoint struct {
	JobID     string    `json:"job_id"`
	Workflow  string    `json:"workflow,omitempty"`
	Seq       int64     `json:"seq"`     // grows with each checkpoint of the job
	Attempt   int       `json:"attempt"` // the attempt that made it, from 0 as Job.Attempt
	CreatedAt time.Time `json:"created_at"`
	Size      int64     `json:"size"` // bytes stored, each distinct content once
	Files     int       `json:"files"`
	// Manifest lists the files; left out where only the summary is asked.
	Manifest []CheckpointFile `json:"manifest,omitempty"`
}

// CheckpointMissingRequest is the body of POST
// /runner/jobs/{id}/checkpoint/missing; the answer is a
// CheckpointMissingResponse listing those of SHA256 the server lacks.
type CheckpointMissingRequest struct {
	SHA256 []string `json:"sha256"`
}

// CheckpointMissingResponse answers a CheckpointMissingRequest.
type CheckpointMissingResponse struct {
	Missing []string `json:"missing"`
}

// MaxCheckpointFiles bounds the files of one checkpoint.
const MaxCheckpointFiles = 100000

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidSHA256 reports whether s is a hex SHA-256 in lower case.
func ValidSHA256(s string) bool { return sha256Pattern.MatchString(s) }

// Check says what is wrong with a manifest, or returns nil: at most
// MaxCheckpointFiles files, each path valid (CheckArtifactPath) and listed
// once, sizes not negative, hashes well-formed.
func (m *CheckpointManifest) Check() error {
	if len(m.Files) > MaxCheckpointFiles {
		return fmt.Errorf("the checkpoint has %d files, more than %d", len(m.Files), MaxCheckpointFiles)
	}
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		if err := CheckArtifactPath(f.Path); err != nil {
			return err
		}
		if seen[f.Path] {
			return fmt.Errorf("checkpoint file %q is listed twice", f.Path)
		}
		seen[f.Path] = true
		if f.Size < 0 {
			return fmt.Errorf("checkpoint file %q has a negative size", f.Path)
		}
		if !ValidSHA256(f.SHA256) {
			return fmt.Errorf("checkpoint file %q: %q is not a hex SHA-256", f.Path, f.SHA256)
		}
		if f.Mode&^0o777 != 0 {
			return fmt.Errorf("checkpoint file %q: mode %o has more than permission bits", f.Path, f.Mode)
		}
	}
	return nil
}
