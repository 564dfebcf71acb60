package postgres

// ClaimLock is the statement that takes the claim lock of the session's
// schema, as a claim takes it.
var ClaimLock = claimLock
