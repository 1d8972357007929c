-- A lease carries what finishing its attempt needs (span, claim and ready
-- times), so a result is taken with one `DELETE ... RETURNING`. Rows from
-- before this version have NULLs and are read from weft_attempts instead.
-- Same statements on SQLite and PostgreSQL.
ALTER TABLE weft_leases ADD COLUMN span_id TEXT;
ALTER TABLE weft_leases ADD COLUMN ready_at BIGINT;
ALTER TABLE weft_leases ADD COLUMN claimed_at BIGINT;
