-- On-demand runners: limits, the instances launched under them, offers the
-- cloud refused lately, and the autoscaler's leader lease. Also what the
-- autoscaler reads of pending jobs.

-- A limit allows a user up to max_count instances of one offer, its key.
CREATE TABLE limits (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id),
    backend       TEXT NOT NULL,
    region        TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    spot          BOOLEAN NOT NULL,
    max_count     INTEGER NOT NULL CHECK (max_count >= 0),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX limits_key ON limits (user_id, backend, region, instance_type, spot);

-- A user without a row has on-demand runners enabled.
CREATE TABLE on_demand_settings (
    user_id    TEXT PRIMARY KEY REFERENCES users (id),
    enabled    BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL
);

-- limit_id has no foreign key: a limit can be deleted while its instances
-- terminate. The offer key is copied from the limit for that reason. job_id
-- has none either (the store checks it): on PostgreSQL its check would lock
-- the job, which a claim may hold while it waits for this instance's row.
-- join_token_hash is NULL once used or cancelled.
CREATE TABLE instances (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id),
    limit_id        TEXT NOT NULL,
    backend         TEXT NOT NULL,
    region          TEXT NOT NULL,
    instance_type   TEXT NOT NULL,
    spot            BOOLEAN NOT NULL,
    price_per_hour  DOUBLE PRECISION NOT NULL,
    state           TEXT NOT NULL,
    launch_key      TEXT NOT NULL,
    cloud_id        TEXT NOT NULL DEFAULT '',
    job_id          TEXT,
    runner_id       TEXT REFERENCES runners (id),
    join_token_hash TEXT UNIQUE,
    created_at      BIGINT NOT NULL,
    launched_at     BIGINT,
    registered_at   BIGINT,
    idle_since      BIGINT,
    terminating_at  BIGINT,
    ended_at        BIGINT,
    reason          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX instances_limit_state ON instances (limit_id, state);
CREATE INDEX instances_user ON instances (user_id, created_at);
CREATE INDEX instances_state ON instances (state);

ALTER TABLE runners ADD COLUMN instance_id TEXT REFERENCES instances (id);
CREATE INDEX runners_instance ON runners (instance_id);

CREATE TABLE offers_unavailable (
    backend           TEXT NOT NULL,
    region            TEXT NOT NULL,
    instance_type     TEXT NOT NULL,
    spot              BOOLEAN NOT NULL,
    since             BIGINT NOT NULL,
    unavailable_until BIGINT NOT NULL,
    reason            TEXT NOT NULL,
    PRIMARY KEY (backend, region, instance_type, spot)
);

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- resources is the spec's resources as JSON, read for every pending job
-- without decoding the spec; queued_at is when the job last joined the back
-- of the queue. Jobs queued before this migration take their submission.
ALTER TABLE jobs ADD COLUMN resources TEXT NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN queued_at BIGINT NOT NULL DEFAULT 0;
UPDATE jobs SET resources = COALESCE(json_extract(spec, '$.resources'), '{}'), queued_at = submitted_at;
CREATE INDEX jobs_status_queue ON jobs (status, queue_seq);
