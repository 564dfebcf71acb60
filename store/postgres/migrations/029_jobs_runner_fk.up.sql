-- A job's runner_id is no longer a foreign key. Its check ran for every job
-- a claim assigns (a quarter of the claim's UPDATE) and guarded nothing the
-- claim lock does not: a claim sets runner_id only under the claim lock,
-- after reading the runner, and removing a runner takes the claim lock
-- before it reads whether the runner holds a job, clears runner_id on its
-- jobs and deletes it. SQLite keeps the key: it cannot drop one without
-- rebuilding the table, and its check is a lookup within the process.
ALTER TABLE jobs DROP CONSTRAINT jobs_runner_id_fkey;
