-- 0010 (retention, #19): see migrations/postgres/0010_retention.sql.
CREATE INDEX idempotency_keys_updated ON idempotency_keys (updated_at);
