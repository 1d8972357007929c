//! The one place an attempt's row is ended: [`Store::end_attempts`] writes
//! the [`End`] that `weft_core::attempt` decided (a result, a lapsed lease, a
//! release, its run's end), plus the lease and span reads every end needs.
//!
//! Invariant: no other statement in the store changes a `weft_attempts`
//! row's status; the claim inserts the rows, this ends them.

use weft_core::{AttemptStatus, RunId, SpanId, attempt::End, observe::Timing};

use crate::{
    Error, Result, Store, StoredTiming, args,
    db::{Arg, Row, Tx},
};

/// Which attempt rows an end applies to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Which<'a> {
    /// The attempt of this lease.
    Lease(&'a str),
    /// Every attempt of this run still running (its run just ended).
    RunningIn(RunId),
    /// The attempt of this run's step (by position) still running (its step
    /// was just cancelled).
    RunningAt(RunId, usize),
}

impl Store {
    /// Ends attempt rows as `end` says, at `now`, with their timing buckets
    /// (stored as JSON) when known. Returns how many rows changed.
    pub(crate) async fn end_attempts(
        &self,
        tx: &mut Tx,
        which: Which<'_>,
        end: &End,
        now: i64,
        timing: Option<&StoredTiming>,
    ) -> Result<u64> {
        let (condition, key) = match which {
            Which::Lease(lease_id) => ("lease_id = $1".to_owned(), Arg::from(lease_id)),
            Which::RunningIn(run_id) => (
                format!(
                    "run_id = $1 AND status = '{}'",
                    AttemptStatus::Running.as_str()
                ),
                Arg::from(run_id),
            ),
            Which::RunningAt(run_id, position) => (
                format!(
                    "run_id = $1 AND position = {position} AND status = '{}'",
                    AttemptStatus::Running.as_str()
                ),
                Arg::from(run_id),
            ),
        };
        tx.execute(
            &format!(
                "UPDATE weft_attempts SET status = $2, reason = $3, error = $4, finished_at = $5, timing = $6 \
                 WHERE {condition}"
            ),
            args![
                key,
                end.status.as_str(),
                end.reason.map(|r| r.as_str()),
                end.error.clone(),
                now,
                timing.map(|t| serde_json::to_string(t).expect("timing serializes"))
            ],
        )
        .await
    }

    /// Deletes a lease (its run locked) and returns what its attempt's end
    /// needs: position, attempt, span id, worker, ready, claim and deadline
    /// times. Fails with `stale_lease` when the lease is gone.
    pub(crate) async fn take_lease(&self, tx: &mut Tx, lease_id: &str) -> Result<Row> {
        let row = tx
            .fetch_optional(
                "DELETE FROM weft_leases WHERE lease_id = $1 \
                 RETURNING position, attempt, span_id, worker_id, ready_at, claimed_at, deadline_at, item_index",
                args![lease_id],
            )
            .await?
            .ok_or_else(|| Error::stale_lease(lease_id))?;
        if row.opt_id::<SpanId>("span_id")?.is_some() {
            return Ok(row);
        }
        // A lease written before its row carried the attempt's details.
        tx.fetch_optional(
            "SELECT position, attempt, span_id, worker_id, ready_at, claimed_at, deadline_at, item_index \
             FROM weft_attempts WHERE lease_id = $1",
            args![lease_id],
        )
        .await?
        .ok_or_else(|| Error::stale_lease(lease_id))
    }
}

/// The span id of the attempt before `attempt` of the same step, if any: a
/// retry's span links to it. A compensation's span links to the forward
/// attempt it undoes instead.
pub(crate) async fn previous_span_id(
    tx: &mut Tx,
    run_id: RunId,
    position: i64,
    attempt: i64,
) -> Result<Option<SpanId>> {
    if attempt <= 1 {
        return Ok(None);
    }
    let row = tx
        .fetch_optional(
            "SELECT span_id FROM weft_attempts WHERE run_id = $1 AND position = $2 AND attempt = \
             COALESCE((SELECT undoes_attempt FROM weft_attempts WHERE run_id = $1 AND position = $2 AND attempt = $3), $4)",
            args![run_id, position, attempt, attempt - 1],
        )
        .await?;
    row.map(|r| r.id("span_id")).transpose()
}

/// Timing buckets as the attempt row and its history event keep them.
pub(crate) fn stored_timing(timing: &Timing) -> StoredTiming {
    StoredTiming::from(timing)
}
