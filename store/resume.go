package store

import "time"

// RunResumeParams are the arguments of RunResume.
type RunResumeParams struct {
	Name   string
	UserID string // empty: any user's
	Now    time.Time
}

// ErrRunDone: RunResume found every job of the run done; it also matches
// ErrConflict.
var ErrRunDone = &conflictError{"every job of the run is done"}
