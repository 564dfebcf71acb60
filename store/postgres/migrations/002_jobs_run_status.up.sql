-- The waiting jobs of a run, read each time one of its jobs ends.
CREATE INDEX jobs_run_status ON jobs (run_id, status);
