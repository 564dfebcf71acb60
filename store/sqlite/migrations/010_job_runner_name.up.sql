-- A job keeps the name of the runner that ran it once that runner's row is
-- removed (`dstack runners rm`, or the server's --runner-retention for
-- offline self-hosted runners): runner_id is cleared then, runner_name
-- holds the name. While the runner's row exists the name is read from it.
ALTER TABLE jobs ADD COLUMN runner_name TEXT NOT NULL DEFAULT '';
