-- 0010 (retention, #19): the retention job deletes idempotency keys by age (updated_at), a
-- batch at a time, oldest first. Finished sagas are found through 0009's sagas_status_updated;
-- published outbox rows in id order (the oldest rows have the lowest ids).
CREATE INDEX idempotency_keys_updated ON idempotency_keys (updated_at);
