-- A job whose runner reported its end before the server stored all of its
-- output (the server's disk was full) keeps the size its log must reach,
-- log_end, and how many bytes of it are still missing, log_missing. The
-- runner goes on sending them; each one stored lowers log_missing, and at
-- 0 both are cleared: the log is complete.
ALTER TABLE jobs ADD COLUMN log_end BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN log_missing BIGINT NOT NULL DEFAULT 0;
