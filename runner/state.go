package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// state is what a runner keeps across restarts, in <data-dir>/state.json:
// its identity, and the job it holds so that a restart in the middle of one
// is recognised.
type state struct {
	Server            string        `json:"server"`
	Name              string        `json:"name"`
	RunnerID          string        `json:"runner_id"`
	Token             string        `json:"token"`
	RegisteredAt      time.Time     `json:"registered_at"`
	ExpiresAt         time.Time     `json:"expires_at"`
	HeartbeatInterval time.Duration `json:"heartbeat_interval"`
	// ClaimBeats: the server hears the runner while it waits in a claim,
	// so the runner does not heartbeat then (api.RunnerRegisterResponse).
	ClaimBeats bool `json:"claim_beats,omitempty"`
	// JobID is the job in progress, if any.
	JobID string `json:"job_id,omitempty"`
}

func statePath(dataDir string) string { return filepath.Join(dataDir, "state.json") }

// loadState reads the state; a missing or unreadable file is no state.
func loadState(dataDir string) (*state, error) {
	b, err := os.ReadFile(statePath(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read runner state: %w", err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("runner state %s is corrupt: %w", statePath(dataDir), err)
	}
	return &s, nil
}

// saveState writes the state file; durable makes sure it is on disk (the
// identity), otherwise a crash may lose the change (the job marker, written
// on the way to starting a job, where every millisecond counts).
func saveState(dataDir string, s *state, durable bool) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(statePath(dataDir), b, 0o600, durable); err != nil {
		return fmt.Errorf("save runner state: %w", err)
	}
	return nil
}

// reusable reports whether s is an identity this configuration may go on
// with: same server and name, a credential valid for a while longer, and no
// job left half done (a runner that died in a job registers anew, so that
// the server sees the old identity go silent and requeues the job).
func (s *state) reusable(cfg Config, now time.Time) bool {
	return s != nil && s.Server == cfg.Server && s.Name == cfg.Name && s.Token != "" && s.RunnerID != "" &&
		s.JobID == "" && now.Before(s.renewAt())
}

// renewAt is when an idle runner replaces its credential: a tenth of its
// lifetime, at most a day, before it expires.
func (s *state) renewAt() time.Time {
	life := s.ExpiresAt.Sub(s.RegisteredAt)
	return s.ExpiresAt.Add(-min(24*time.Hour, life/10))
}
