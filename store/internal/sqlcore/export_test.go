package sqlcore

// The statements over many rows, as PostgreSQL runs them.
var (
	AssignJobsSQL       = assignJobs.set
	ChangeStatusesSQL   = changeStatuses.set
	PendingOfUsersSQL   = pendingOfUsersSQL
	UsersWithPendingSQL = usersWithPendingSQL
	MaxClaimBatch       = maxClaimBatch
)
