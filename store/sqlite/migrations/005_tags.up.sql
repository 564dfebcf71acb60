-- A tag names a run of its user (`dstack tag RUN NAME`), for workflows of
-- later runs to depend on (depends-on: [WORKFLOW:NAME]). A name is unique per
-- user; moving a tag changes its run_id and created_at.
CREATE TABLE tags (
    user_id    TEXT NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL,
    run_id     TEXT NOT NULL REFERENCES runs (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, name)
);
CREATE INDEX tags_run ON tags (run_id);
