//! Schema migrations, embedded in the binary and applied on connect (and by
//! `weft migrate`). Each backend has its own script; versions are recorded in
//! `weft_schema`. On Postgres an advisory lock keeps servers starting together
//! from migrating at once.

use crate::{Error, Problem, Result, Store, db::Pool};

const POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres.sql")),
    (2, include_str!("../migrations/0002_gauges.sql")),
    (3, include_str!("../migrations/0003_baggage.sql")),
    (4, include_str!("../migrations/0004_lease_attempt.sql")),
    (
        5,
        include_str!("../migrations/0005_runs_by_workflow_status.sql"),
    ),
    (6, include_str!("../migrations/0006_workers.sql")),
    (7, include_str!("../migrations/0007_tokens.sql")),
    (8, include_str!("../migrations/0008_audit_postgres.sql")),
    (9, include_str!("../migrations/0009_attempts_finished.sql")),
    (10, include_str!("../migrations/0010_compensation.sql")),
    (11, include_str!("../migrations/0011_children.sql")),
    (12, include_str!("../migrations/0012_run_metadata.sql")),
    (
        13,
        include_str!("../migrations/0013_child_compensation.sql"),
    ),
    (14, include_str!("../migrations/0014_children_indexes.sql")),
];
const SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite.sql")),
    (2, include_str!("../migrations/0002_gauges.sql")),
    (3, include_str!("../migrations/0003_baggage.sql")),
    (4, include_str!("../migrations/0004_lease_attempt.sql")),
    (
        5,
        include_str!("../migrations/0005_runs_by_workflow_status.sql"),
    ),
    (6, include_str!("../migrations/0006_workers.sql")),
    (7, include_str!("../migrations/0007_tokens.sql")),
    (8, include_str!("../migrations/0008_audit_sqlite.sql")),
    (9, include_str!("../migrations/0009_attempts_finished.sql")),
    (10, include_str!("../migrations/0010_compensation.sql")),
    (11, include_str!("../migrations/0011_children.sql")),
    (12, include_str!("../migrations/0012_run_metadata.sql")),
    (
        13,
        include_str!("../migrations/0013_child_compensation.sql"),
    ),
    (14, include_str!("../migrations/0014_children_indexes.sql")),
];

/// The schema version this build expects: the last script's.
pub const LATEST: i64 = 14;
const _: () = assert!(
    POSTGRES[POSTGRES.len() - 1].0 == LATEST && SQLITE[SQLITE.len() - 1].0 == LATEST,
    "LATEST must be the last migration's version"
);

/// An arbitrary constant naming Weft's migration advisory lock.
const LOCK_KEY: i64 = 0x0077_6566_746d_6967;

impl Store {
    pub async fn migrate(&self) -> Result<()> {
        let pool = self.pool();
        let scripts = match pool {
            Pool::Postgres(_) => POSTGRES,
            Pool::Sqlite { .. } => SQLITE,
        };
        let mut tx = pool.begin().await?;
        if let Pool::Postgres(_) = pool {
            tx.execute("SELECT pg_advisory_xact_lock($1)", crate::args![LOCK_KEY])
                .await?;
        }
        tx.execute(
            "CREATE TABLE IF NOT EXISTS weft_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            Vec::new(),
        )
        .await?;
        let applied = tx
            .fetch_optional(
                "SELECT MAX(version) AS version FROM weft_schema",
                Vec::new(),
            )
            .await?
            .map(|row| row.opt_int("version"))
            .transpose()?
            .flatten()
            .unwrap_or(0);
        for &(version, script) in scripts {
            if version <= applied {
                continue;
            }
            tx.execute_script(script).await?;
            tx.execute(
                "INSERT INTO weft_schema (version, applied_at) VALUES ($1, $2)",
                crate::args![version, crate::now_ms()],
            )
            .await?;
            tracing::info!(component = "engine", version, "applied schema migration");
        }
        tx.commit().await?;
        Ok(())
    }

    /// The applied schema version, for readiness checks.
    pub async fn schema_version(&self) -> Result<i64> {
        let row = self
            .pool()
            .fetch_optional(
                "SELECT MAX(version) AS version FROM weft_schema",
                Vec::new(),
            )
            .await?;
        row.map(|r| r.opt_int("version"))
            .transpose()?
            .flatten()
            .ok_or_else(|| Error::corrupt("weft_schema version", None, Problem::Absent))
    }

    pub fn expected_schema_version() -> i64 {
        LATEST
    }
}
