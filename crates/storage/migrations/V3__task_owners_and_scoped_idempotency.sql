-- Tenant isolation: every task belongs to the principal that created it, and idempotency
-- keys are scoped per principal (see docs/adr/0009-authentication.md).
--
-- An expand-only migration, so pods of the previous release keep working during the
-- rolling update: they insert without an owner and get the default below, and they keep
-- using the old idempotency table. Rows written before authentication existed belong to
-- 'legacy:unauthenticated', a principal nobody can authenticate as: they stay in the
-- database, invisible through the API, until an operator hands them to a real principal
-- (docs/runbooks/assign-legacy-tasks.md). A later release drops the default and the old
-- table (the contract step).
ALTER TABLE tasks
    ADD COLUMN owner text NOT NULL DEFAULT 'legacy:unauthenticated'
        CHECK (char_length(owner) BETWEEN 1 AND 512);

-- Every read is scoped to one owner: newest first, optionally by status.
CREATE INDEX tasks_owner_id_idx ON tasks (owner, id DESC);
CREATE INDEX tasks_owner_status_id_idx ON tasks (owner, status, id DESC);

CREATE TABLE idempotency_answers (
    principal    text        NOT NULL CHECK (char_length(principal) BETWEEN 1 AND 512),
    key          text        NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    fingerprint  bytea       NOT NULL,
    status_code  smallint,
    headers      jsonb,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (principal, key)
);

-- Expiry sweeps walk the oldest keys first.
CREATE INDEX idempotency_answers_created_at_idx ON idempotency_answers (created_at);
