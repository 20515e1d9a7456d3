-- 0005 (security): crypto-shredding. Each customer's personal data in events is sealed with
-- that customer's data key; the key is stored here wrapped (encrypted) by PII_MASTER_KEY.
-- Forgetting a customer deletes the row: their sealed data can never be opened again, while
-- the events themselves stay and replay (personal fields read as erased).
CREATE TABLE customer_keys (
    customer_id TEXT        PRIMARY KEY,
    key_id      UUID        NOT NULL UNIQUE,
    -- nonce || ChaCha20-Poly1305(master key, data key), AAD = customer id and key id.
    wrapped_key BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The record of each erasure (ForgetCustomer): who, when, why. It holds no personal data
-- beyond the customer id, which the erasure itself has to be provable against.
CREATE TABLE forgotten_customers (
    customer_id    TEXT        PRIMARY KEY,
    forgotten_at   TIMESTAMPTZ NOT NULL,
    forgotten_by   TEXT        NOT NULL,
    reason         TEXT        NOT NULL,
    -- Data keys destroyed by forgets of this customer so far.
    keys_destroyed BIGINT      NOT NULL DEFAULT 0
);
