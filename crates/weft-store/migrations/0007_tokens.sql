-- API tokens and the token that claimed each lease. A token is
-- `weft_<token_id>_<secret>`; only a per-token salt and
-- HMAC-SHA256(pepper, salt || secret) are stored, never the secret. Names
-- are unique among tokens not revoked (a revoked name may be reused).
-- Same statements on SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS weft_tokens (
    token_id     TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    queues       TEXT,
    salt         TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    created_by   TEXT    NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS weft_tokens_live_name ON weft_tokens (name) WHERE revoked_at IS NULL;
ALTER TABLE weft_leases ADD COLUMN token_id TEXT;
