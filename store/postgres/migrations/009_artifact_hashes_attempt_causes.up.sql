-- artifacts records each artifact file a runner uploaded, with the SHA-256 of
-- its content computed by the server while storing it: `dstack artifacts
-- download` skips a file already there only when its hash matches, and
-- checks every file it receives. Files uploaded before this table have no
-- row: they are listed without a hash and always downloaded whole.
CREATE TABLE artifacts (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    path   TEXT NOT NULL,
    size   BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (job_id, path)
);

-- last_interruption is why the job's previous attempt ended when it was
-- requeued (its runner stopped responding, its spot instance was reclaimed):
-- the line the server writes at the start of the next attempt's log names it.
ALTER TABLE jobs ADD COLUMN last_interruption TEXT NOT NULL DEFAULT '';
