-- The audit log: who did what to the server's users, tokens, cloud
-- credentials, limits, on-demand switch and runners, when, and from where.
-- user_id is NULL when no user did it (a refused sign-in, the server's own
-- removal of old runners); user_name is the name as it was then, so that an
-- entry reads the same after the user is renamed or removed, and user_id
-- has no foreign key for the same reason: the log outlives what it names.
-- detail is a JSON object; remote_addr the client's IP address ("" for the
-- server's own actions). Entries are listed newest first by (at, id) and
-- deleted oldest first under the retention: the index serves both.
CREATE TABLE audit (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    user_id     TEXT,
    user_name   TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    remote_addr TEXT NOT NULL
);
CREATE INDEX audit_at_id ON audit (at, id);
