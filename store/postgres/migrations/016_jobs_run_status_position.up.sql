-- The jobs of a run in one state, in the run's order: the waiting jobs a
-- finished job settles, read without scanning the rest of a large run.
DROP INDEX jobs_run_status;
CREATE INDEX jobs_run_status ON jobs (run_id, status, position);
