-- Order.cancellation_requested / cancellation_request_reason on the read side: see
-- migrations/postgres/0008_cancellation_requested.sql (NULL: no cancellation requested).
ALTER TABLE order_details ADD COLUMN cancellation_request_reason TEXT NULL;
ALTER TABLE customer_orders ADD COLUMN cancellation_request_reason TEXT NULL;
