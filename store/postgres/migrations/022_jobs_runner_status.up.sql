-- A runner's jobs in one state: the ones it holds (a claim gives back the
-- job a runner never started, a runner's removal requeues its jobs), read
-- without going through every job the runner ever ran.
DROP INDEX jobs_runner;
CREATE INDEX jobs_runner ON jobs (runner_id, status);
