-- 0009 (retention, #19): see migrations/postgres/0009_retention.sql.
CREATE INDEX idempotency_keys_updated ON idempotency_keys (updated_at);
