package sqlcore

// The statements over many rows, as PostgreSQL runs them.
var (
	AssignJobsSQL       = assignJobs.set
	ChangeStatusesSQL   = changeStatuses.set
	CandidatesJoinedSQL = candidatesJoinedSQL
	UsersWithPendingSQL = usersWithPendingSQL
	MaxClaimBatch       = maxClaimBatch
)
