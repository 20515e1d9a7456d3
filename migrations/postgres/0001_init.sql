-- Foundation: nothing yet but a marker that migrations ran; each capability adds its own files
-- (0002 event store, 0003 read models, 0004 sagas, 0005 personal-data keys).
CREATE TABLE IF NOT EXISTS service_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO service_info (key, value) VALUES ('schema', 'commerce') ON CONFLICT DO NOTHING;
