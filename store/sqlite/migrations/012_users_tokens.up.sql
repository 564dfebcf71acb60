-- A user has several named tokens, each optionally expiring; revoking one
-- deletes its row. The token each user had until now becomes its token named
-- "default" (the token ID is the user's), so that it keeps working.
-- users.token_hash is no longer read: it holds 'tokens:' || id from now on,
-- which keeps its NOT NULL UNIQUE and matches no token's hash.
CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT
);
CREATE UNIQUE INDEX tokens_user_name ON tokens (user_id, name);
INSERT INTO tokens (id, user_id, name, hash, created_at)
    SELECT id, id, 'default', token_hash, created_at FROM users;
UPDATE users SET token_hash = 'tokens:' || id;

-- last_seen_at is when a token of the user was last used (updated at most
-- once a minute); deleted_at marks a removed user: its runs stay, its tokens
-- are gone and it signs in no more.
ALTER TABLE users ADD COLUMN last_seen_at BIGINT;
ALTER TABLE users ADD COLUMN deleted_at BIGINT;

-- The user token a self-hosted runner was registered with, for `dstack
-- tokens revoke --runners`; NULL for on-demand runners and runners from
-- before. A revoked runner credential's token_hash becomes 'revoked:' || id.
ALTER TABLE runners ADD COLUMN token_id TEXT;
CREATE INDEX runners_token ON runners (token_id);
