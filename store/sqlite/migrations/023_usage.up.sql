-- What cost and usage are computed from (store/usage.go).
--
-- The user of the job an instance was launched for: its idle time before a
-- job held it is charged to them.
ALTER TABLE instances ADD COLUMN launch_user_id TEXT;
CREATE INDEX instances_ended ON instances (ended_at);

-- Attempts of jobs that held an on-demand instance and no longer say so in
-- jobs: requeued attempts, and the jobs of deleted runs.
CREATE TABLE instance_holds (
    instance_id TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    run_id      TEXT NOT NULL,
    run_name    TEXT NOT NULL,
    workflow    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX instance_holds_instance ON instance_holds (instance_id);
CREATE INDEX instance_holds_run ON instance_holds (run_id);

-- Limits' maximums over time: a row per change, max_count 0 when deleted.
CREATE TABLE limit_history (
    limit_id      TEXT NOT NULL,
    backend       TEXT NOT NULL,
    region        TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    spot          BOOLEAN NOT NULL,
    max_count     INTEGER NOT NULL,
    at            BIGINT NOT NULL
);
CREATE INDEX limit_history_at ON limit_history (at);
CREATE INDEX limit_history_limit ON limit_history (limit_id, at);
INSERT INTO limit_history (limit_id, backend, region, instance_type, spot, max_count, at)
    SELECT id, backend, region, instance_type, spot, max_count, updated_at FROM limits;
