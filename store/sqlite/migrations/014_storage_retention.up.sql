-- Storage per user: code archives belong to the users who uploaded them,
-- each user has a quota, runs can be deleted, and their bytes are removed
-- through the trash.

-- storage_quota is the user's own quota in bytes; NULL takes the server's
-- default (--storage-quota).
ALTER TABLE users ADD COLUMN storage_quota BIGINT;

-- log_size is the size of the job's log as last recorded (the server records
-- it as the log grows, every MiB or so, and when the job ends), for storage
-- accounting.
ALTER TABLE jobs ADD COLUMN log_size BIGINT NOT NULL DEFAULT 0;

-- A code archive belongs to each user who uploaded it: one row per user and
-- archive (code_id is the SHA-256 of its bytes), while the bytes are kept
-- once. uploaded_at is the last upload, last_used_at the last run submitted
-- with it (NULL: none). Runs submitted before this table get a row for their
-- user and archive, of size 0 (uploading it again records its size).
CREATE TABLE code (
    user_id      TEXT NOT NULL REFERENCES users (id),
    code_id      TEXT NOT NULL,
    size         BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    uploaded_at  BIGINT NOT NULL,
    last_used_at BIGINT,
    PRIMARY KEY (user_id, code_id)
);
CREATE INDEX code_code_id ON code (code_id);
CREATE INDEX code_uploaded ON code (uploaded_at);
INSERT INTO code (user_id, code_id, size, created_at, uploaded_at, last_used_at)
    SELECT user_id, code_id, 0, MIN(submitted_at), MIN(submitted_at), MAX(submitted_at) FROM runs GROUP BY user_id, code_id;
CREATE INDEX runs_user_code ON runs (user_id, code_id);

-- The bytes of deleted runs and code to remove: the deleting transaction
-- records them, the server removes them after it commits and forgets the
-- row. kind is code (key: the code ID), log (key: the job ID) or artifacts
-- (key: the job ID, store: the job's artifact_store). claimed_until keeps two
-- servers from removing the same bytes at once; a claim that ran out (its
-- server stopped) is taken again.
CREATE TABLE trash (
    kind          TEXT NOT NULL,
    store         TEXT NOT NULL,
    key           TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    claimed_until BIGINT NOT NULL,
    PRIMARY KEY (kind, store, key)
);
CREATE INDEX trash_claim ON trash (claimed_until, created_at);
