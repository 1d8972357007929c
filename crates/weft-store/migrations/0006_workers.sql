-- Workers as first-class rows: what each said about itself in its polls
-- (host, pid, version, concurrency) and when it was first seen. Slots in use
-- and the last heartbeat are read from weft_leases, never written per poll.
-- Same statements on SQLite and PostgreSQL.
ALTER TABLE weft_workers ADD COLUMN host TEXT;
ALTER TABLE weft_workers ADD COLUMN pid BIGINT;
ALTER TABLE weft_workers ADD COLUMN version TEXT;
ALTER TABLE weft_workers ADD COLUMN concurrency BIGINT;
ALTER TABLE weft_workers ADD COLUMN first_seen_at BIGINT;
CREATE INDEX IF NOT EXISTS weft_workers_seen ON weft_workers (last_seen_at);
CREATE INDEX IF NOT EXISTS weft_leases_worker ON weft_leases (worker_id);
