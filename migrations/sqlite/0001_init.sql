-- Foundation: see migrations/postgres/0001_init.sql.
CREATE TABLE IF NOT EXISTS service_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT OR IGNORE INTO service_info (key, value) VALUES ('schema', 'commerce');
