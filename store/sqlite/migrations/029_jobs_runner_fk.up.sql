-- PostgreSQL drops the foreign key of jobs.runner_id here (see its 029).
-- SQLite keeps it: dropping it would mean rebuilding the jobs table, and
-- its check is a lookup within the process.
SELECT 1;
