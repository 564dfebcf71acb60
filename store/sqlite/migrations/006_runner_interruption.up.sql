-- A runner whose machine the cloud is reclaiming (a spot instance's
-- interruption notice) is given no more jobs. interrupted_at is when the
-- server heard of it (NULL: never), interruption_reason what it was told, in
-- words for people; both keep the first report.
ALTER TABLE runners ADD COLUMN interrupted_at BIGINT;
ALTER TABLE runners ADD COLUMN interruption_reason TEXT NOT NULL DEFAULT '';
