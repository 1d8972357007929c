-- Weft schema, SQLite. Kept column-for-column equal to postgres.sql so that
-- one set of queries serves both; timestamps are epoch milliseconds (BIGINT),
-- JSON documents are TEXT.
CREATE TABLE IF NOT EXISTS weft_workflows (
    name        TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    manifest    TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE IF NOT EXISTS weft_runs (
    run_id          TEXT   PRIMARY KEY,
    trace_id        TEXT   NOT NULL,
    span_id         TEXT   NOT NULL,
    parent_span_id  TEXT,
    workflow        TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    status          TEXT   NOT NULL,
    reason          TEXT,
    error           TEXT,
    input           TEXT   NOT NULL,
    output          TEXT,
    idempotency_key TEXT,
    request_id      TEXT,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS weft_runs_trace ON weft_runs (trace_id);
CREATE INDEX IF NOT EXISTS weft_runs_workflow ON weft_runs (workflow, run_id);
CREATE INDEX IF NOT EXISTS weft_runs_status ON weft_runs (status, run_id);
CREATE UNIQUE INDEX IF NOT EXISTS weft_runs_idempotency ON weft_runs (workflow, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS weft_steps (
    run_id       TEXT    NOT NULL,
    position     INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    handler      TEXT,
    status       TEXT    NOT NULL,
    reason       TEXT,
    n_attempts   INTEGER NOT NULL DEFAULT 0,
    attempt_base INTEGER NOT NULL DEFAULT 0,
    output       TEXT,
    error        TEXT,
    ready_at     BIGINT,
    due_at       BIGINT,
    updated_at   BIGINT  NOT NULL,
    PRIMARY KEY (run_id, position)
);
CREATE INDEX IF NOT EXISTS weft_steps_ready ON weft_steps (queue, ready_at) WHERE status = 'ready';
CREATE INDEX IF NOT EXISTS weft_steps_due ON weft_steps (due_at) WHERE due_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS weft_attempts (
    run_id       TEXT    NOT NULL,
    position     INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    lease_id     TEXT    NOT NULL UNIQUE,
    span_id      TEXT    NOT NULL,
    worker_id    TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    reason       TEXT,
    error        TEXT,
    ready_at     BIGINT,
    claimed_at   BIGINT  NOT NULL,
    finished_at  BIGINT,
    deadline_at  BIGINT,
    timing       TEXT,
    PRIMARY KEY (run_id, position, attempt)
);
CREATE INDEX IF NOT EXISTS weft_attempts_running ON weft_attempts (run_id) WHERE status = 'running';

CREATE TABLE IF NOT EXISTS weft_leases (
    lease_id     TEXT    PRIMARY KEY,
    run_id       TEXT    NOT NULL,
    position     INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    worker_id    TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    lease_ms     BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    deadline_at  BIGINT
);
CREATE INDEX IF NOT EXISTS weft_leases_expiry ON weft_leases (expires_at);
CREATE INDEX IF NOT EXISTS weft_leases_deadline ON weft_leases (deadline_at) WHERE deadline_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS weft_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT    NOT NULL,
    type     TEXT    NOT NULL,
    at       BIGINT  NOT NULL,
    step     TEXT,
    attempt  INTEGER,
    data     TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS weft_events_run ON weft_events (run_id, seq);

CREATE TABLE IF NOT EXISTS weft_logs (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT    NOT NULL,
    step     TEXT    NOT NULL,
    attempt  INTEGER NOT NULL,
    at       BIGINT  NOT NULL,
    line     TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS weft_logs_run ON weft_logs (run_id, seq);

CREATE TABLE IF NOT EXISTS weft_workers (
    worker_id    TEXT   PRIMARY KEY,
    queues       TEXT   NOT NULL,
    handlers     TEXT   NOT NULL,
    last_seen_at BIGINT NOT NULL
);
