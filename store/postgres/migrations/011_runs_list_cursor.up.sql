-- RunList pages newest first by (submitted_at, id), continuing after the
-- last run of the previous page: these indexes serve that order whole, with
-- and without a user. They replace the ones on submitted_at alone.
CREATE INDEX runs_submitted_id ON runs (submitted_at, id);
CREATE INDEX runs_user_submitted_id ON runs (user_id, submitted_at, id);
DROP INDEX runs_submitted;
DROP INDEX runs_user_submitted;
