-- Saga compensation. A step being undone keeps its row: `undo` is where its
-- compensation stands (pending, ready, running, retrying, completed, failed,
-- skipped, cancelled; NULL when it is not being undone), `undo_base` the
-- attempt count its `compensate_retry` budget counts from, and
-- `compensate_handler` the handler its undo is dispatched to. An attempt's
-- `kind` says which handler it ran (`forward` or `compensate`) and a
-- compensation's `undoes_attempt` the forward attempt it undoes. Same
-- statements on SQLite and PostgreSQL.
ALTER TABLE weft_steps ADD COLUMN undo TEXT;
ALTER TABLE weft_steps ADD COLUMN undo_base INTEGER NOT NULL DEFAULT 0;
ALTER TABLE weft_steps ADD COLUMN compensate_handler TEXT;
ALTER TABLE weft_attempts ADD COLUMN kind TEXT NOT NULL DEFAULT 'forward';
ALTER TABLE weft_attempts ADD COLUMN undoes_attempt INTEGER;
CREATE INDEX IF NOT EXISTS weft_steps_undo_ready ON weft_steps (queue, ready_at) WHERE undo = 'ready';
-- Runs compensating count as active (`weft_runs_active{status="compensating"}`).
DROP INDEX IF EXISTS weft_runs_active;
CREATE INDEX IF NOT EXISTS weft_runs_active ON weft_runs (workflow, status) WHERE status IN ('pending', 'running', 'compensating');
