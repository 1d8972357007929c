-- Compensation of `for_each` steps, one undo per completed child: a child's
-- `undo` is where its undo stands (ready, running, completed, failed,
-- cancelled; NULL when it is not being undone) and `undo_attempts` the undo
-- attempts it has spent under `compensate_retry`; `ready_at` is when a ready
-- undo may be claimed (after a backoff). The parent step counts the settled
-- undos (`children_undone`, `children_undo_failed`), so no transition reads
-- its children. Same statements on SQLite and PostgreSQL.
ALTER TABLE weft_children ADD COLUMN undo TEXT;
ALTER TABLE weft_children ADD COLUMN undo_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE weft_steps ADD COLUMN children_undone BIGINT;
ALTER TABLE weft_steps ADD COLUMN children_undo_failed BIGINT;
CREATE INDEX IF NOT EXISTS weft_children_undo_ready ON weft_children (queue, ready_at) WHERE undo = 'ready';
