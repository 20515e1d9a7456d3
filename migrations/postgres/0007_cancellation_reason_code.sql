-- Order.cancellation_reason_code: why an order was cancelled, as a commerce.v1.ErrorReason
-- name ('' unless CANCELLED). Rows projected before this column read as '' until
-- `commerce rebuild-projections` folds their (upcast) OrderCancelled events again.
ALTER TABLE order_details ADD COLUMN cancellation_reason_code TEXT NOT NULL DEFAULT '';
ALTER TABLE customer_orders ADD COLUMN cancellation_reason_code TEXT NOT NULL DEFAULT '';
