-- Completed attempts by the time they finished: the throughput per queue of
-- `weft queues` (attempts completed in the last minute) reads the newest
-- entries only, with no counter written on the result path. Same statement
-- on SQLite and PostgreSQL.
CREATE INDEX IF NOT EXISTS weft_attempts_completed ON weft_attempts (finished_at) WHERE status = 'completed';
