//! A worker's calls under a lease it holds: heartbeats (renewing the lease,
//! or telling the worker to stop as `weft_core::attempt::heartbeat` decides)
//! and the attempt's log lines.
//!
//! Fencing: every call names its lease. The lease row exists only while its
//! attempt is out; reaping or a timeout deletes it, so a late worker's call
//! finds no lease and is refused (`stale_lease`) without touching state.

use weft_core::{AttemptStatus, RunId};

use crate::{Error, Result, Store, args, db::Arg};

/// What a heartbeat answers (the server turns it into `Heartbeat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The run ended or the attempt no longer counts: the worker should stop;
    /// the lease was not renewed.
    pub cancel_requested: bool,
}

impl Store {
    /// Renews a lease. Answers `cancel_requested` when the run has ended or
    /// the attempt no longer counts; a lease that is gone is a conflict.
    pub async fn heartbeat(&self, lease_id: &str) -> Result<Heartbeat> {
        let now = self.now_ms();
        // Its own pool: see `Store::lease_pool`. It writes no history, so
        // no follower needs telling of its commit.
        let mut tx = self.lease_pool().begin().await?;
        let row = tx
            .fetch_optional(
                "SELECT l.lease_ms, l.deadline_at, a.status AS attempt_status, a.kind, r.status AS run_status FROM weft_leases l \
                 JOIN weft_attempts a ON a.lease_id = l.lease_id JOIN weft_runs r ON r.run_id = l.run_id \
                 WHERE l.lease_id = $1",
                args![lease_id],
            )
            .await?
            .ok_or_else(|| Error::stale_lease(lease_id))?;
        let beat = weft_core::attempt::heartbeat(
            row.status("run_status", weft_core::RunStatus::parse)?,
            row.status("kind", weft_core::AttemptKind::parse)?,
            row.status("attempt_status", AttemptStatus::parse)?,
            row.opt_int("deadline_at")?,
            row.int("lease_ms")?,
            now,
        );
        if let Some(expires_at) = beat.renew_until {
            tx.execute(
                "UPDATE weft_leases SET expires_at = $2 WHERE lease_id = $1",
                args![lease_id, expires_at],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Heartbeat {
            cancel_requested: beat.cancel_requested,
        })
    }

    /// Keeps a worker's log lines for an attempt (stderr of exec handlers).
    pub async fn append_logs(&self, lease_id: &str, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let row = self
            .pool()
            .fetch_optional(
                "SELECT l.run_id, l.attempt, s.name FROM weft_leases l JOIN weft_steps s ON s.run_id = l.run_id AND s.position = l.position \
                 WHERE l.lease_id = $1",
                args![lease_id],
            )
            .await?
            .ok_or_else(|| Error::stale_lease(lease_id))?;
        let now = self.now_ms();
        let mut tx = self.begin().await?;
        for chunk in lines.chunks(200) {
            let mut sql =
                String::from("INSERT INTO weft_logs (run_id, step, attempt, at, line) VALUES ");
            let mut values = args![
                row.id::<RunId>("run_id")?,
                row.text("name")?,
                row.int("attempt")?,
                now
            ];
            for (i, line) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("($1, $2, $3, $4, ${})", 5 + i));
                // Lines are capped so one chatty handler cannot bloat the store.
                values.push(Arg::from(weft_core::attempt::truncate(line, 8192)));
            }
            tx.execute(&sql, values).await?;
        }
        tx.commit().await
    }
}
