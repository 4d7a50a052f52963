CREATE TABLE idempotency_keys (
    key          text        PRIMARY KEY CHECK (char_length(key) BETWEEN 1 AND 255),
    fingerprint  bytea       NOT NULL,
    status_code  smallint,
    headers      jsonb,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);

-- Expiry sweeps walk the oldest keys first.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
