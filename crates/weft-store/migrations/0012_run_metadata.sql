-- Run metadata (a start request's `metadata`): string keys and values to
-- find runs by, like Temporal's search attributes. One row per key; the
-- (key, value, run_id) index answers `GET /v1/runs?meta.k=v` newest first
-- from the matching entries alone, so the filter stays fast at a million
-- runs. Written with the run, in its start transaction, never changed. Same
-- statements on SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS weft_run_metadata (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX IF NOT EXISTS weft_run_metadata_key_value ON weft_run_metadata (key, value, run_id);
