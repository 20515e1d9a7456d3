-- 0009 (saga search, #19): the columns ListSagas filters on that a saga did not keep
-- (whose order it is; why it failed or compensates, as a commerce.v1.ErrorReason name), and
-- the indexes behind the filters and the retention purge. ListSagas pages newest first by
-- (created_at, saga_id): each filter index ends in that key so a filtered page is an index scan.
ALTER TABLE sagas
    ADD COLUMN customer_id         TEXT NULL,
    ADD COLUMN failure_reason_code TEXT NULL;

-- Sagas started before this migration: the customer from the order's CreateOrder idempotency
-- record (every order has one), the code from the stored step outcomes by the rule of
-- store::saga::failure_code (written by the saga itself from now on).
UPDATE sagas s SET customer_id = k.customer_id FROM idempotency_keys k WHERE k.order_id = s.order_id;
UPDATE sagas s SET failure_reason_code = CASE
    WHEN s.status = 'FAILED' THEN COALESCE((
        SELECT CASE
            WHEN st.last_grpc_code = 'DEADLINE_EXCEEDED' THEN 'DEADLINE_EXCEEDED'
            WHEN st.last_grpc_code IS NULL OR st.last_grpc_code NOT IN
                ('FAILED_PRECONDITION', 'INVALID_ARGUMENT', 'NOT_FOUND', 'OUT_OF_RANGE')
                THEN 'DEPENDENCY_UNAVAILABLE'
            WHEN st.step = 'authorize_payment' THEN 'PAYMENT_DECLINED'
            WHEN st.step = 'reserve_inventory' THEN 'OUT_OF_STOCK'
            WHEN st.step = 'create_shipment' THEN 'ADDRESS_UNSHIPPABLE'
            ELSE 'FULFILLMENT_REFUSED' END
        FROM saga_steps st WHERE st.saga_id = s.saga_id AND st.status = 'FAILED' AND NOT st.compensation
        LIMIT 1), 'DEPENDENCY_UNAVAILABLE')
    ELSE COALESCE((
        SELECT CASE st.step WHEN 'authorize_payment' THEN 'PAYMENT_DECLINED'
            WHEN 'reserve_inventory' THEN 'OUT_OF_STOCK' WHEN 'create_shipment' THEN 'ADDRESS_UNSHIPPABLE'
            ELSE 'FULFILLMENT_REFUSED' END
        FROM saga_steps st WHERE st.saga_id = s.saga_id AND st.status = 'REFUSED' AND NOT st.compensation
        LIMIT 1),
        CASE WHEN s.cancel_requested THEN 'CANCELLATION_REQUESTED' ELSE 'ORDER_TIMED_OUT' END)
    END
WHERE s.status IN ('FAILED', 'COMPENSATING', 'COMPENSATED', 'COMPENSATION_FAILED');

CREATE INDEX sagas_customer_newest ON sagas (customer_id, created_at DESC, saga_id DESC);
CREATE INDEX sagas_failure_newest ON sagas (failure_reason_code, created_at DESC, saga_id DESC)
    WHERE failure_reason_code IS NOT NULL;
CREATE INDEX sagas_step_newest ON sagas (current_step, created_at DESC, saga_id DESC);
-- The updated_at range filter, and retention: finished sagas by age.
CREATE INDEX sagas_status_updated ON sagas (status, updated_at);
