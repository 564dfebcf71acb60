-- settings are the server installation's own values, set once: server_id is
-- the identity every on-demand instance is tagged with.
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
