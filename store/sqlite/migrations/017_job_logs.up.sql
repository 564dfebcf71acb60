-- Jobs' output, for servers whose logs live in the database (every replica
-- reads them): one row per chunk appended, the chunk's first byte at off of
-- the job's log and size bytes long, written at at (unix microseconds).
-- Chunks follow each other without a gap, so the last one's off + size is
-- the log's size. No foreign key to jobs: a deleted run's logs are removed
-- with its trash, after the run's rows.
CREATE TABLE job_logs (
    job_id TEXT NOT NULL,
    off    BIGINT NOT NULL,
    size   BIGINT NOT NULL,
    at     BIGINT NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (job_id, off)
);
