CREATE TABLE tasks (
    id          uuid        PRIMARY KEY,
    title       text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    description text        CHECK (char_length(description) <= 10000),
    status      text        NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'in_progress', 'done')),
    due_at      timestamptz,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL DEFAULT 1 CHECK (version >= 1)
);

-- Listing by status, newest first, continues after a cursor id.
CREATE INDEX tasks_status_id_idx ON tasks (status, id DESC);
