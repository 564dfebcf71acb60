package store

import "time"

// RunResumeParams are the arguments of RunResume.
type RunResumeParams struct {
	Name   string
	UserID string // empty: any user's
	Now    time.Time
}

// ErrRunDone is what RunResume returns when every job of the run is done;
// it also matches ErrConflict.
var ErrRunDone = &conflictError{"every job of the run is done"}
