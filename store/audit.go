package store

import (
	"context"
	"time"
)

// The audit log: one entry for each change an admin would want to trace
// (a sign-in, a token, a user, the cloud credentials, a limit, the
// on-demand switch, a runner removed), with who made it, when, what it
// was and from where. The server's handlers write it (server/audit.go,
// which also lists the actions); the store keeps and pages it.

// AuditStore keeps the audit log; Store has it.
type AuditStore interface {
	// AuditAppend records an entry. ErrConflict when p.ID is taken.
	AuditAppend(ctx context.Context, p AuditAppendParams) (*AuditEntry, error)
	// AuditList lists entries newest first: those at or after p.Since,
	// from after p.After on, p.Limit of them at most.
	AuditList(ctx context.Context, p AuditListParams) ([]*AuditEntry, error)
	// AuditDeleteBefore deletes the oldest entries made before p.Before,
	// p.Limit of them at most (one bounded batch, so that a retention loop
	// never holds the database long), and returns how many it deleted:
	// fewer than p.Limit says none is left.
	AuditDeleteBefore(ctx context.Context, p AuditDeleteBeforeParams) (int, error)
}

// AuditEntry is one entry of the audit log.
type AuditEntry struct {
	ID string
	At time.Time
	// UserID is who made the change; empty when no user did (a refused
	// sign-in, the server's own work). UserName is their name as it was
	// then ("(server)" for the server's own work, "" when unknown).
	UserID   string
	UserName string
	// Action is what was done, one of the server's audit actions
	// ("limit.put"); Target is what it was done to (a limit, a runner's
	// name, a user's name).
	Action string
	Target string
	// Detail is a JSON object with the rest: the values set, the reason of
	// a refusal. Never a secret.
	Detail string
	// RemoteAddr is the IP address the request came from; empty for the
	// server's own work.
	RemoteAddr string
}

// AuditAppendParams are the arguments of AuditAppend.
type AuditAppendParams struct {
	ID         string
	At         time.Time
	UserID     string // empty: none
	UserName   string
	Action     string // not empty
	Target     string
	Detail     string // a JSON object; empty is {}
	RemoteAddr string
}

// AuditListParams are the arguments of AuditList.
type AuditListParams struct {
	// Since keeps the entries made at or after it; zero keeps all.
	Since time.Time
	Limit int // 0: no limit
	// After continues a listing from the entry it names, the last of the
	// previous page. Nil starts with the newest entry.
	After *AuditCursor
}

// AuditCursor is a place in the audit log, which is listed newest first:
// entries made earlier come after it, and among entries made at the same
// microsecond, those of smaller ID.
type AuditCursor struct {
	At time.Time
	ID string
}

// AuditCursorOf is the cursor that continues a listing after e.
func AuditCursorOf(e *AuditEntry) *AuditCursor { return &AuditCursor{At: e.At, ID: e.ID} }

// AuditDeleteBeforeParams are the arguments of AuditDeleteBefore.
type AuditDeleteBeforeParams struct {
	Before time.Time
	Limit  int // at least 1
}
