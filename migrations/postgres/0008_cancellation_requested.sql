-- Order.cancellation_requested / cancellation_request_reason on the read side (GetOrder,
-- ListOrders, WatchOrder): the reason of the first accepted CancelOrder of an order a saga
-- drives (its CancellationRequested event), NULL when no cancellation was requested. One
-- nullable column says both "requested" and "why", so the two cannot disagree. The reason is
-- kept after the order ends: CANCELLED, or CONFIRMED when the request came too late to stop
-- the capture. Rows projected before this column read NULL until `commerce
-- rebuild-projections` folds their CancellationRequested events again.
ALTER TABLE order_details ADD COLUMN cancellation_request_reason TEXT NULL;
ALTER TABLE customer_orders ADD COLUMN cancellation_request_reason TEXT NULL;
