-- Dynamic fan-out (`for_each`): one row per child of a fan-out step, keyed
-- by (run, step position, index), with its own status, retry counter and
-- output. The queue and handler are the parent's, copied so the claim
-- filters children as it filters steps. The parent step row holds the
-- counts, so no transition reads its children; attempts and leases of a
-- child carry its index (`item_index`, NULL for a plain step). Same
-- statements on SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS weft_children (
    run_id     TEXT    NOT NULL,
    position   BIGINT  NOT NULL,
    idx        BIGINT  NOT NULL,
    queue      TEXT    NOT NULL,
    handler    TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    reason     TEXT,
    item       TEXT    NOT NULL,
    output     TEXT,
    error      TEXT,
    n_attempts BIGINT  NOT NULL DEFAULT 0,
    ready_at   BIGINT,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (run_id, position, idx)
);
CREATE INDEX IF NOT EXISTS weft_children_ready ON weft_children (queue, ready_at) WHERE status = 'ready';
ALTER TABLE weft_steps ADD COLUMN children_total BIGINT;
ALTER TABLE weft_steps ADD COLUMN children_dispatched BIGINT;
ALTER TABLE weft_steps ADD COLUMN children_in_flight BIGINT;
ALTER TABLE weft_steps ADD COLUMN children_completed BIGINT;
ALTER TABLE weft_steps ADD COLUMN children_failed BIGINT;
ALTER TABLE weft_attempts ADD COLUMN item_index BIGINT;
ALTER TABLE weft_leases ADD COLUMN item_index BIGINT;
-- The attempt numbers of a fan-out step's children: one sequence per step,
-- advanced only by the claim (transitions write the other counts under the
-- run lock), so each child attempt row keeps a unique (run, position, attempt).
ALTER TABLE weft_steps ADD COLUMN children_claimed BIGINT;
