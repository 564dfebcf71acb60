-- artifact_store names the store that holds a job's artifacts, fixed when its
-- run is submitted: '' for the server's own (its data directory, or the
-- bucket of --artifacts), or a URL such as s3://bucket/dstack for the AWS
-- artifact bucket configured with `dstack aws config`. Artifacts stored
-- before a change of store stay readable where they are.
ALTER TABLE jobs ADD COLUMN artifact_store TEXT NOT NULL DEFAULT '';
