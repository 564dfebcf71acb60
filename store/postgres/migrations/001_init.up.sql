-- dstack's state on PostgreSQL. Timestamps are unix microseconds (UTC).

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE TABLE runners (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users (id),
    name             TEXT NOT NULL,
    hostname         TEXT NOT NULL,
    executor         TEXT NOT NULL,
    version          TEXT NOT NULL,
    resources        TEXT NOT NULL, -- api.HostResources as JSON
    token_hash       TEXT NOT NULL UNIQUE,
    token_expires_at BIGINT NOT NULL,
    online           BOOLEAN NOT NULL,
    registered_at    BIGINT NOT NULL,
    last_heartbeat   BIGINT NOT NULL
);
CREATE INDEX runners_user ON runners (user_id, name);
CREATE INDEX runners_heartbeat ON runners (online, last_heartbeat);

CREATE TABLE runs (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users (id),
    workflow     TEXT NOT NULL,
    code_id      TEXT NOT NULL,
    submitted_at BIGINT NOT NULL
);
CREATE INDEX runs_submitted ON runs (submitted_at);
CREATE INDEX runs_user_submitted ON runs (user_id, submitted_at);

-- queue_seq orders the queue: a job gets a new value each time it is queued
-- behind the others.
CREATE SEQUENCE jobs_queue_seq;

-- run_name, user_id and code_id are copied from the run: they never change,
-- and the claim filters on user_id and returns the others without a join.
-- cpu .. gpu_memory_mib copy the spec's resources for the claim to filter on;
-- gpu_name is lowercased.
CREATE TABLE jobs (
    id             TEXT PRIMARY KEY,
    run_id         TEXT NOT NULL REFERENCES runs (id),
    position       INTEGER NOT NULL,
    run_name       TEXT NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users (id),
    code_id        TEXT NOT NULL,
    workflow       TEXT NOT NULL,
    spec           TEXT NOT NULL, -- api.JobSpec as JSON
    cpu            INTEGER NOT NULL,
    memory_mib     BIGINT NOT NULL,
    gpu_count      INTEGER NOT NULL,
    gpu_name       TEXT NOT NULL,
    gpu_memory_mib BIGINT NOT NULL,
    status         TEXT NOT NULL,
    status_reason  TEXT NOT NULL DEFAULT '',
    runner_id      TEXT REFERENCES runners (id),
    lease          BIGINT NOT NULL DEFAULT 0,
    attempt        INTEGER NOT NULL DEFAULT 0,
    exit_code      INTEGER,
    stop_requested TEXT NOT NULL DEFAULT '',
    queue_seq      BIGINT NOT NULL,
    submitted_at   BIGINT NOT NULL,
    claimed_at     BIGINT,
    started_at     BIGINT,
    finished_at    BIGINT
);
CREATE INDEX jobs_claim ON jobs (user_id, status, queue_seq);
CREATE INDEX jobs_run ON jobs (run_id, position);
CREATE INDEX jobs_runner ON jobs (runner_id);
