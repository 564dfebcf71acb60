package postgres

import "fmt"

// ClaimLock is the statement that takes the claim lock of the session's
// schema, as a claim takes it.
var ClaimLock = fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d, hashtext(current_schema()))`, claimLockKey)
