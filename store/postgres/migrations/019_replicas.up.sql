-- The server replicas running on this database, each as it said at its
-- start and renews while it runs (seen_at): its identity (stable across its
-- restarts), the host and where it listens, the URL runners and on-demand
-- instances are given (external_url, '' for none), where its code archives
-- and artifacts live (storage: the bucket, or an identity of its local
-- directory), and a check value of its server key (never the key). A
-- replica compares itself with those seen lately, and refuses to start
-- where they could not serve as one server. Rows of replicas not seen for a
-- while are removed.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    url          TEXT NOT NULL,
    external_url TEXT NOT NULL,
    storage      TEXT NOT NULL,
    key_check    TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    seen_at      BIGINT NOT NULL
);
