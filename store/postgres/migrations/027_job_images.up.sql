-- Runners bound to one image. jobs.image is the image a job's commands run
-- in (api.JobSpec.RunImage: the docker and python providers' image, '' for
-- bash), copied from the spec for the claim to filter on. An instance whose
-- backend runs its jobs in the image it was launched with (a Kubernetes
-- runner Pod) has image_bound set and image the image of its Pod: its
-- runner claims only jobs of that image ('' for jobs with none). Other
-- instances take any job, as self-hosted runners do.
ALTER TABLE jobs ADD COLUMN image TEXT NOT NULL DEFAULT '';
UPDATE jobs SET image = COALESCE(spec::json ->> 'image', '')
    WHERE COALESCE(spec::json ->> 'provider', '') <> 'bash';
ALTER TABLE instances ADD COLUMN image_bound BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE instances ADD COLUMN image TEXT NOT NULL DEFAULT '';
