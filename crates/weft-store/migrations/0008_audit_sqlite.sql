-- The audit log: actions by people that have no run (registrations, token
-- changes). Column for column the same as 0008_audit_postgres.sql.
CREATE TABLE IF NOT EXISTS weft_audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           BIGINT NOT NULL,
    actor        TEXT   NOT NULL,
    on_behalf_of TEXT,
    action       TEXT   NOT NULL,
    target       TEXT   NOT NULL,
    detail       TEXT   NOT NULL
);
CREATE INDEX IF NOT EXISTS weft_audit_action ON weft_audit (action, id);
CREATE INDEX IF NOT EXISTS weft_audit_actor ON weft_audit (actor, id);
