//! Workers' results: one attempt's end (`complete`, `fail`) or a batch of
//! them in one transaction (`finish_batch`), each under its lease and applied
//! to its run through the state machine.
//!
//! A batch locks its runs in run-id order, so two batches never wait on each
//! other in a cycle; several results of one run share its lock and state.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use weft_core::{
    AttemptStatus, Reason, RunId,
    attempt::{self, End, Report, json_size, stored_error},
    observe::Observation,
};

use crate::{
    Error, Result, Store, args,
    attempts::{Which, previous_span_id, stored_timing},
    db::{Arg, Row, Tx, placeholders},
    transition::{Applied, EndedAttempt, EventRow, LockedRun},
};

/// The parts of an attempt's time only its worker can measure, in
/// milliseconds; clamped to the server's claim → result window when stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportedTiming {
    /// Task received (claimed) → handler started.
    pub dispatch_ms: Option<i64>,
    /// The handler's run time.
    pub handler_ms: Option<i64>,
}

/// A worker's report that an attempt failed.
#[derive(Debug, Clone)]
pub struct FailReport {
    pub reason: Reason,
    pub message: String,
    pub retryable: bool,
    pub timing: Option<ReportedTiming>,
}

/// What a worker reports for one attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    Completed(Value),
    Failed(FailReport),
}

/// How a result was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Applied now, under its live lease.
    Applied,
    /// The lease's attempt had already ended with this same outcome (the
    /// answer to an earlier send was lost): nothing changed.
    AlreadyApplied,
}

/// One result, as received.
#[derive(Debug, Clone)]
pub struct WorkerResult {
    pub lease_id: String,
    pub outcome: Outcome,
    pub timing: Option<ReportedTiming>,
    /// When the server received it (epoch ms): deadlines are judged by it.
    pub received_ms: i64,
}

/// A result written in the open transaction, to report once it commits.
struct Written {
    ended: EndedAttempt,
    applied: Applied,
    /// Recorded as a timeout: it came after the deadline.
    late: bool,
}

impl Store {
    /// Records a successful attempt and moves the run on.
    pub async fn complete(
        &self,
        lease_id: &str,
        output: Value,
        timing: Option<ReportedTiming>,
        received_ms: i64,
    ) -> Result<Recorded> {
        self.finish_one(&WorkerResult {
            lease_id: lease_id.to_owned(),
            outcome: Outcome::Completed(output),
            timing,
            received_ms,
        })
        .await
    }

    /// Records a failed attempt: the step retries or fails per its policy.
    pub async fn fail(
        &self,
        lease_id: &str,
        report: FailReport,
        received_ms: i64,
    ) -> Result<Recorded> {
        let timing = report.timing;
        self.finish_one(&WorkerResult {
            lease_id: lease_id.to_owned(),
            outcome: Outcome::Failed(report),
            timing,
            received_ms,
        })
        .await
    }

    /// Hands a running attempt back: its worker is shutting down. The lease
    /// is deleted and the attempt ends `released` with reason
    /// `worker_shutdown`; the step is ready again at once and the attempt
    /// spends none of its budget, for the first [`MAX_RELEASES`] releases of
    /// a step; past that the release is recorded as a failed attempt (reason
    /// `worker_shutdown`, retried per the step's policy). Fails with
    /// `stale_lease` when the lease is gone, `attempt_not_running` when its
    /// attempt no longer counts (the lease is dropped then too), and
    /// `deadline_exceeded` after the step's start-to-close deadline (the
    /// attempt is recorded as timed out, as a late result would be).
    ///
    /// [`MAX_RELEASES`]: weft_core::attempt::MAX_RELEASES
    pub async fn release(
        &self,
        lease_id: &str,
        message: Option<String>,
        received_ms: i64,
    ) -> Result<Recorded> {
        let started = std::time::Instant::now();
        let mut tx = self.begin().await?;
        let Some(mut run) = self.lock_run_of_lease(&mut tx, lease_id).await? else {
            // Sent again after its answer was lost: the attempt ended by a
            // release already.
            let row = tx
                .fetch_optional(
                    "SELECT status, reason FROM weft_attempts WHERE lease_id = $1",
                    args![lease_id],
                )
                .await?;
            tx.commit().await?;
            let released = match row {
                Some(row) => {
                    row.opt_text("reason")?.as_deref() == Some(Reason::WorkerShutdown.as_str())
                        && matches!(
                            AttemptStatus::parse(&row.text("status")?),
                            Some(AttemptStatus::Released | AttemptStatus::Failed)
                        )
                }
                None => false,
            };
            return if released {
                Ok(Recorded::AlreadyApplied)
            } else {
                Err(Error::stale_lease(lease_id))
            };
        };
        let now = self.now_ms();
        let lease = self.take_lease(&mut tx, lease_id).await?;
        let position = lease.position("position", run.def.steps.len())?;
        let attempt = lease.int("attempt")?;
        if let Err(err) = lease_still_counts(&mut tx, &run, &lease, position, attempt).await {
            tx.commit().await?; // the lease's release stands
            return Err(err);
        }
        // Past its start-to-close deadline the attempt timed out: a release
        // then is the timeout the reaper would record, not a free retry, and
        // the step's earlier releases do not matter.
        let deadline_at = lease.opt_int("deadline_at")?;
        let late = deadline_at.is_some_and(|deadline| received_ms > deadline);
        let releases = if late {
            0
        } else {
            tx.fetch_optional(
                &format!(
                    "SELECT COUNT(*) AS n FROM weft_attempts WHERE run_id = $1 AND position = $2 AND status = '{}' \
                     AND COALESCE(item_index, -1) = $3",
                    AttemptStatus::Released.as_str()
                ),
                // A `for_each` child's releases are its own.
                args![
                    &run.run_id,
                    position,
                    lease.opt_int("item_index")?.unwrap_or(-1)
                ],
            )
            .await?
            .map(|row| row.opt_int("n"))
            .transpose()?
            .flatten()
            .unwrap_or(0) as u32
        };
        let end = attempt::release(position, releases, message, received_ms, deadline_at);
        let written = self
            .write_end(
                &mut tx,
                &mut run,
                lease_id,
                &lease,
                end,
                None,
                received_ms,
                now,
            )
            .await?;
        tx.commit().await?;
        if !written.late {
            tracing::info!(
                component = "engine",
                run_id = %run.run_id,
                trace_id = %run.trace_id,
                workflow = %run.workflow,
                step = %run.def.steps[position].name,
                attempt,
                releases = releases + 1,
                counted = written.ended.status != AttemptStatus::Released,
                "attempt released"
            );
        }
        self.report_written(&run, &written, now, started);
        written_outcome(&run, &written)
    }

    async fn finish_one(&self, result: &WorkerResult) -> Result<Recorded> {
        let started = std::time::Instant::now();
        let mut tx = self.begin().await?;
        let Some(mut run) = self.lock_run_of_lease(&mut tx, &result.lease_id).await? else {
            // The lease is gone: this may be a result sent again after its
            // first answer was lost.
            let found = self
                .already_applied(&mut tx, std::slice::from_ref(result))
                .await?;
            tx.commit().await?;
            return match found.as_slice() {
                [true] => Ok(Recorded::AlreadyApplied),
                _ => Err(Error::stale_lease(&result.lease_id)),
            };
        };
        let now = self.now_ms();
        let written = self.write_result(&mut tx, &mut run, result, now).await;
        // A refused result may still have released its lease: keep that.
        if written.is_ok() || matches!(written, Err(Error::Conflict { .. })) {
            tx.commit().await?;
        }
        let written = written?;
        self.report_written(&run, &written, now, started);
        written_outcome(&run, &written)
    }

    /// Records a batch of results in one transaction. Each result gets its
    /// own answer, as `complete`/`fail` would have given it; an error of the
    /// database fails the whole batch and changes nothing.
    pub async fn finish_batch(&self, results: &[WorkerResult]) -> Result<Vec<Result<Recorded>>> {
        let started = std::time::Instant::now();
        let mut answers: Vec<Option<Result<Recorded>>> = results.iter().map(|_| None).collect();
        if results.is_empty() {
            return Ok(Vec::new());
        }
        // One result: its run is found and locked through its lease at once.
        if let [one] = results {
            return match self.finish_one(one).await {
                Ok(recorded) => Ok(vec![Ok(recorded)]),
                Err(err @ (Error::Conflict { .. } | Error::NotFound { .. })) => Ok(vec![Err(err)]),
                Err(err) => Err(err),
            };
        }
        let mut tx = self.begin().await?;
        // Which run each lease belongs to; a lease not found is stale, or
        // its result was already applied.
        let mut by_run: BTreeMap<RunId, Vec<usize>> = BTreeMap::new();
        let mut gone: Vec<usize> = Vec::new();
        for chunk in (0..results.len()).collect::<Vec<_>>().chunks(500) {
            let sql = format!(
                "SELECT lease_id, run_id FROM weft_leases WHERE lease_id IN ({})",
                placeholders(1, chunk.len())
            );
            let values = chunk
                .iter()
                .map(|&i| Arg::from(&results[i].lease_id))
                .collect();
            let runs: HashMap<String, RunId> = tx
                .fetch_all(&sql, values)
                .await?
                .into_iter()
                .map(|r| Ok((r.text("lease_id")?, r.id("run_id")?)))
                .collect::<Result<_>>()?;
            for &i in chunk {
                match runs.get(&results[i].lease_id) {
                    Some(run_id) => by_run.entry(*run_id).or_default().push(i),
                    None => gone.push(i),
                }
            }
        }
        if !gone.is_empty() {
            let sent: Vec<WorkerResult> = gone.iter().map(|&i| results[i].clone()).collect();
            let found = self.already_applied(&mut tx, &sent).await?;
            for (&i, applied) in gone.iter().zip(found) {
                answers[i] = Some(if applied {
                    Ok(Recorded::AlreadyApplied)
                } else {
                    Err(Error::stale_lease(&results[i].lease_id))
                });
            }
        }
        let now = self.now_ms();
        let mut done: Vec<(LockedRun, Vec<(usize, Written)>)> = Vec::with_capacity(by_run.len());
        // Run-id order: concurrent batches lock runs in the same order.
        for (run_id, indexes) in by_run {
            let mut run = match self.lock_run(&mut tx, run_id).await {
                Ok(run) => run,
                Err(Error::NotFound { .. }) => {
                    for i in indexes {
                        answers[i] = Some(Err(Error::stale_lease(&results[i].lease_id)));
                    }
                    continue;
                }
                Err(err) => return Err(err),
            };
            let mut written = Vec::with_capacity(indexes.len());
            for i in indexes {
                match self.write_result(&mut tx, &mut run, &results[i], now).await {
                    Ok(w) => written.push((i, w)),
                    // Refusals write nothing but the lease's release.
                    Err(err @ Error::Conflict { .. }) => answers[i] = Some(Err(err)),
                    Err(err) => return Err(err),
                }
            }
            done.push((run, written));
        }
        tx.commit().await?;
        for (run, written) in &done {
            for (i, w) in written {
                self.report_written(run, w, now, started);
                answers[*i] = Some(written_outcome(run, w));
            }
        }
        Ok(answers
            .into_iter()
            .map(|a| a.expect("every result answered"))
            .collect())
    }

    /// For results whose lease is gone: whether each one's attempt already
    /// ended with the same outcome (completed with an equal output; failed
    /// with the same reason and message; an output over the limit matches
    /// the `invalid_output` failure it was recorded as). An attempt that ended
    /// otherwise (reaped, timed out, cancelled, released) does not match.
    async fn already_applied(&self, tx: &mut Tx, sent: &[WorkerResult]) -> Result<Vec<bool>> {
        let mut ended: HashMap<String, Row> = HashMap::new();
        for chunk in sent.chunks(500) {
            let sql = format!(
                "SELECT a.lease_id, a.status, a.reason, a.error, s.output FROM weft_attempts a \
                 JOIN weft_steps s ON s.run_id = a.run_id AND s.position = a.position \
                 WHERE a.lease_id IN ({})",
                placeholders(1, chunk.len())
            );
            let values = chunk.iter().map(|r| Arg::from(&r.lease_id)).collect();
            for row in tx.fetch_all(&sql, values).await? {
                // A completed attempt's output is its step's (a completed
                // step never runs again).
                ended.insert(row.text("lease_id")?, row);
            }
        }
        let limit = self.settings().max_output_bytes;
        sent.iter()
            .map(|result| match ended.get(&result.lease_id) {
                Some(row) => same_outcome(row, &result.outcome, limit),
                None => Ok(false),
            })
            .collect()
    }

    /// Writes one result into `tx`, its run locked: takes the lease, ends
    /// the attempt, applies the event. Refusals (`stale_lease`,
    /// `attempt_not_running`) are conflicts that wrote only the lease's release.
    async fn write_result(
        &self,
        tx: &mut Tx,
        run: &mut LockedRun,
        result: &WorkerResult,
        now: i64,
    ) -> Result<Written> {
        let lease_id = result.lease_id.as_str();
        // Taken under the run lock: the reaper may have taken it meanwhile.
        let lease = self.take_lease(tx, lease_id).await?;
        let position = lease.position("position", run.def.steps.len())?;
        let attempt = lease.int("attempt")?;
        // The run ended (cancelled or failed elsewhere) while this attempt
        // was out, or it was retried since: release the lease, record
        // nothing else.
        lease_still_counts(tx, run, &lease, position, attempt).await?;
        let report = match &result.outcome {
            Outcome::Completed(output) => Report::Completed(output.clone()),
            Outcome::Failed(report) => Report::Failed {
                reason: report.reason,
                message: report.message.clone(),
                retryable: report.retryable,
            },
        };
        let end = attempt::result(
            position,
            report,
            result.received_ms,
            lease.opt_int("deadline_at")?,
            self.settings().max_output_bytes,
        );
        self.write_end(
            tx,
            run,
            lease_id,
            &lease,
            end,
            result.timing.as_ref(),
            result.received_ms,
            now,
        )
        .await
    }

    /// Writes an attempt's end as the core decided it (its lease taken, its
    /// run locked): the attempt row, its history event, and the run's
    /// transition. `worker` is the worker's own timing, if it sent one.
    #[allow(clippy::too_many_arguments)]
    async fn write_end(
        &self,
        tx: &mut Tx,
        run: &mut LockedRun,
        lease_id: &str,
        lease: &Row,
        end: End,
        worker: Option<&ReportedTiming>,
        received_ms: i64,
        now: i64,
    ) -> Result<Written> {
        let position = lease.position("position", run.def.steps.len())?;
        let attempt = lease.int("attempt")?;
        let claimed_at = lease.int("claimed_at")?;
        let ready_at = lease.opt_int("ready_at")?.unwrap_or(claimed_at);
        let timing = attempt::timing(
            ready_at,
            claimed_at,
            received_ms,
            now,
            worker.and_then(|w| w.dispatch_ms),
            worker.and_then(|w| w.handler_ms),
        );
        let stored = stored_timing(&timing);
        self.end_attempts(tx, Which::Lease(lease_id), &end, now, Some(&stored))
            .await?;
        let item_index = lease.opt_int("item_index")?;
        let mut data = end.data(serde_json::to_value(stored).expect("timing serializes"));
        if let (Some(index), Some(map)) = (item_index, data.as_object_mut()) {
            map.insert("index".into(), index.into());
        }
        let attempt_event = EventRow {
            run_id: run.run_id,
            kind: end.kind.expect("a worker's result has an event"),
            at: now,
            step: Some(run.def.steps[position].name.clone()),
            attempt: Some(attempt),
            data,
        };
        let event = end.event.expect("a worker's result is told to the run");
        let kind = match item_index {
            None => attempt_kind(run, position),
            Some(index) => crate::children::attempt_kind(tx, run.view(), position, index).await?,
        };
        let (previous_span_id, event) = match item_index {
            None => (
                previous_span_id(tx, run.run_id, position as i64, attempt).await?,
                Some(event),
            ),
            // A child's attempts are numbered across its step: the one before
            // is a sibling's.
            Some(index) => (
                None,
                crate::children::child_event(
                    tx,
                    run.view(),
                    position,
                    index,
                    event,
                    self.settings().max_output_bytes,
                )
                .await?,
            ),
        };
        let applied = match event {
            Some(event) => {
                self.apply_event(tx, run, event, now, vec![attempt_event])
                    .await?
            }
            None => {
                crate::transition::insert_events(tx, &[attempt_event]).await?;
                Applied::default()
            }
        };
        Ok(Written {
            ended: EndedAttempt {
                position,
                attempt,
                index: item_index,
                span_id: lease.id("span_id")?,
                previous_span_id,
                worker_id: lease.text("worker_id")?,
                claimed_at,
                status: end.status,
                reason: end.reason,
                error: end.error,
                timing,
                kind,
            },
            applied,
            late: end.late,
        })
    }

    /// Reports a committed result: its attempt, its run's transition.
    fn report_written(
        &self,
        run: &LockedRun,
        written: &Written,
        now: i64,
        started: std::time::Instant,
    ) {
        // The span carries the error as people may see it.
        let error = self.masked_for_people(run, written.ended.error.as_deref());
        let mut record = written.ended.record(run, now);
        record.error = error.as_deref();
        self.observer()
            .observe(&Observation::AttemptFinished(record));
        self.observe_applied(run, &written.applied, now);
        self.observe_operation(
            match written.ended.status {
                AttemptStatus::Completed => "complete",
                AttemptStatus::Released => "release",
                _ => "fail",
            },
            started,
        );
        if written.applied.made_ready {
            self.wake_pollers();
        }
    }
}

/// Whether an ended attempt's row (`status`, `reason`, `error`) records
/// `outcome`: see [`Store::already_applied`].
fn same_outcome(row: &Row, outcome: &Outcome, max_output_bytes: u64) -> Result<bool> {
    let reason = row.opt_text("reason")?;
    Ok(
        match (AttemptStatus::parse(&row.text("status")?), outcome) {
            (Some(AttemptStatus::Completed), Outcome::Completed(output)) => row
                .opt_text("output")?
                .and_then(|stored| serde_json::from_str::<Value>(&stored).ok())
                .is_some_and(|stored| stored == *output),
            (Some(AttemptStatus::Failed), Outcome::Completed(output)) => {
                reason.as_deref() == Some(Reason::InvalidOutput.as_str())
                    && json_size(output) > max_output_bytes
            }
            (Some(AttemptStatus::Failed), Outcome::Failed(report)) => {
                reason.as_deref() == Some(report.reason.as_str())
                    && row.opt_text("error")?
                        == Some(crate::db::storable_text(stored_error(
                            report.message.clone(),
                        )))
            }
            _ => false,
        },
    )
}

/// [`attempt_still_counts`] for a lease's attempt: a child's (the lease
/// names its `item_index`) counts while its step and the child run.
async fn lease_still_counts(
    tx: &mut Tx,
    run: &LockedRun,
    lease: &Row,
    position: usize,
    attempt: i64,
) -> Result<()> {
    let Some(index) = lease.opt_int("item_index")? else {
        return attempt_still_counts(run, position, attempt);
    };
    if crate::children::is_running(tx, run.view(), position, index).await? {
        Ok(())
    } else {
        Err(Error::Conflict {
            code: weft_core::ErrorCode::AttemptNotRunning,
            message: format!(
                "attempt {attempt} of `{}` no longer counts: its run is {}",
                weft_core::fan_out::child_name(&run.def.steps[position].name, index as u32),
                run.state.status
            ),
        })
    }
}

/// The answer to a written result: a late one was recorded as a timeout.
/// `Conflict` `attempt_not_running` unless attempt `attempt` is the one step
/// `position` is running now.
fn attempt_still_counts(run: &LockedRun, position: usize, attempt: i64) -> Result<()> {
    if !attempt::still_counts(&run.state.steps[position], attempt) {
        return Err(Error::Conflict {
            code: weft_core::ErrorCode::AttemptNotRunning,
            message: format!(
                "attempt {attempt} of step `{}` no longer counts: its run is {}",
                run.def.steps[position].name, run.state.status
            ),
        });
    }
    Ok(())
}

fn written_outcome(run: &LockedRun, written: &Written) -> Result<Recorded> {
    if written.late {
        return Err(Error::Conflict {
            code: weft_core::ErrorCode::DeadlineExceeded,
            message: format!(
                "attempt {} of step `{}` reported after its deadline; it was recorded as timed out",
                written.ended.attempt, run.def.steps[written.ended.position].name
            ),
        });
    }
    Ok(Recorded::Applied)
}

/// What the attempt out for step `position` runs, judged before its end is
/// applied: its `compensate` handler while the step's undo is running.
pub(crate) fn attempt_kind(run: &LockedRun, position: usize) -> weft_core::AttemptKind {
    if run.state.steps[position].undoing() {
        weft_core::AttemptKind::Compensate
    } else {
        weft_core::AttemptKind::Forward
    }
}
