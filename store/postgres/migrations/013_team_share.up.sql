-- Teams share a server: on-demand limits and the on-demand switch are the
-- server's (admins change them), not each user's; an admin may register a
-- self-hosted runner as shared (it takes anyone's jobs); a user's running
-- jobs may be capped; and free runners go to users in turn.

-- A limit's key no longer has a user: user_id is who created it. Of limits
-- of several users with one key, the one of the smallest ID stays.
DELETE FROM limits WHERE EXISTS (SELECT 1 FROM limits k
    WHERE k.backend = limits.backend AND k.region = limits.region
    AND k.instance_type = limits.instance_type AND k.spot = limits.spot AND k.id < limits.id);
DROP INDEX limits_key;
CREATE UNIQUE INDEX limits_key ON limits (backend, region, instance_type, spot);

-- The on-demand switch: one row, none meaning enabled. It takes the switch
-- of the first admin, the one user of a server before teams.
CREATE TABLE on_demand_switch (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    enabled    BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO on_demand_switch (id, enabled, updated_at)
    SELECT 1, o.enabled, o.updated_at FROM on_demand_settings o JOIN users u ON u.id = o.user_id
    ORDER BY u.admin DESC, u.created_at LIMIT 1;
DROP TABLE on_demand_settings;

-- A shared runner takes any user's jobs; any other self-hosted runner only
-- its user's.
ALTER TABLE runners ADD COLUMN shared BOOLEAN NOT NULL DEFAULT FALSE;

-- max_running caps a user's active jobs (0: no cap). claim_seq orders the
-- users for claims: a claim gives the job of the user whose last claim is
-- the oldest (the smallest claim_seq) and sets it to the largest.
ALTER TABLE users ADD COLUMN max_running INTEGER NOT NULL DEFAULT 0 CHECK (max_running >= 0);
ALTER TABLE users ADD COLUMN claim_seq BIGINT NOT NULL DEFAULT 0;
