-- When a job's current attempt moved to uploading its artifacts, for the
-- run's timeline (running until then, uploading from then to the end).
ALTER TABLE jobs ADD COLUMN uploading_at BIGINT;
