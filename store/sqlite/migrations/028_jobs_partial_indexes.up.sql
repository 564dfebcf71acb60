-- The queue's indexes hold only the jobs each lookup is for. A job's row is
-- rewritten at each change of its state, and each index holding the new row
-- gets an entry for it: with an index on status, every claim and every end
-- of a job added an entry to six indexes, though the queue looks up only
-- pending jobs (by user and in queue order), the active jobs of a user (her
-- cap) and the waiting jobs of a run (its dependencies). Partial indexes
-- take entries only for jobs in those states, so a job that ends adds
-- entries to its primary key, jobs_run and jobs_runner alone.
DROP INDEX jobs_claim;
DROP INDEX jobs_status_queue;
DROP INDEX jobs_run_status;
CREATE INDEX jobs_pending ON jobs (user_id, queue_seq) WHERE status = 'pending';
CREATE INDEX jobs_queue ON jobs (queue_seq) WHERE status = 'pending';
CREATE INDEX jobs_user_active ON jobs (user_id) WHERE status IN ('downloading', 'running', 'uploading');
CREATE INDEX jobs_run_waiting ON jobs (run_id, position) WHERE status = 'submitted';
