-- checkpoints holds each job's latest complete checkpoint (workflow key
-- checkpoints:): the files the job saved while it ran, stored by content
-- hash under the job's checkpoint prefix of its artifact store. A row is
-- written only after every file it lists is stored, so a sync cut short
-- leaves the previous checkpoint in place. size counts each distinct
-- content once, and is counted in the user's storage.
CREATE TABLE checkpoints (
    job_id     TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    attempt    INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    size       BIGINT NOT NULL,
    files      INTEGER NOT NULL,
    manifest   TEXT NOT NULL
);
