//! The engine's sweeps over the store: due timers (retry backoffs, sleeps,
//! approval timeouts) and lapsed leases (the reaper). Each row is judged again under its run's
//! lock, so any number of engines may sweep at once; a corrupt run is
//! skipped (logged once) and the others go on.

use weft_core::{
    AttemptStatus, EventKind, Reason, RunId, StepStatus, attempt, machine::Event,
    observe::Observation,
};

use crate::{
    Error, Problem, Result, Store, args,
    attempts::{Which, previous_span_id, stored_timing},
    db::Arg,
    transition::{EndedAttempt, EventRow},
};

/// The `actor` of the events an approval's `timeout` writes when it decides.
pub(crate) const TIMEOUT_ACTOR: &str = "timeout";

struct LeaseRow {
    run_id: RunId,
    position: i64,
    attempt: i64,
}

impl Store {
    /// Fires due timers: retry backoffs and sleeps. Idempotent, so any number
    /// of engines may run it. Returns how many were fired.
    pub async fn fire_due_timers(&self, limit: u32) -> Result<usize> {
        let now = self.now_ms();
        let (skip, mut values) = self.not_corrupt("run_id", 2);
        values.insert(0, Arg::from(now));
        let due = self
            .pool()
            .fetch_all(
                &format!(
                    "SELECT run_id, position FROM weft_steps WHERE due_at <= $1 AND (status IN ('{}', '{}') OR undo = '{}'){skip} ORDER BY due_at LIMIT {limit}",
                    StepStatus::Retrying.as_str(),
                    StepStatus::Waiting.as_str(),
                    weft_core::UndoStatus::Retrying.as_str()
                ),
                values,
            )
            .await?;
        let mut fired = 0;
        for row in due {
            match self.fire_timer(&row, now).await {
                Ok(n) => fired += n,
                // A corrupt run is skipped (logged once); the others fire.
                Err(err @ Error::Corrupt(_)) => {
                    let err = match row.run_id() {
                        Some(run_id) => err.in_run(&run_id),
                        None => err,
                    };
                    self.skip_corrupt("timers", &err);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(fired)
    }

    /// Fires one due timer row; returns 1 if it changed the run.
    async fn fire_timer(&self, row: &crate::db::Row, now: i64) -> Result<usize> {
        let mut tx = self.begin().await?;
        let mut run = match self.lock_run(&mut tx, row.id("run_id")?).await {
            Ok(run) => run,
            Err(Error::NotFound { .. }) => return Ok(0),
            Err(err) => return Err(err),
        };
        if run.state.status.is_terminal() {
            return Ok(0);
        }
        let step = usize::try_from(row.int("position")?)
            .ok()
            .filter(|&p| p < run.state.steps.len())
            .ok_or_else(|| {
                row.corrupt(
                    "position",
                    Problem::WrongType {
                        expected: "a step of the run's definition",
                    },
                )
            })?;
        if matches!(run.def.steps[step].kind, weft_core::StepKind::Approval) {
            // An approval's timeout decides in the place of a person.
            let mut stamp = serde_json::Map::new();
            stamp.insert("actor".into(), TIMEOUT_ACTOR.into());
            run.stamp = Some(stamp);
        }
        let applied = self
            .apply_event(
                &mut tx,
                &mut run,
                Event::TimerFired { step },
                now,
                Vec::new(),
            )
            .await?;
        tx.commit().await?;
        // A fired sleep may finish the run.
        self.observe_applied(&run, &applied, now);
        if applied.made_ready {
            self.wake_pollers();
        }
        Ok(usize::from(!applied.effects.is_empty()))
    }

    /// Ends attempts whose lease lapsed (worker gone: `lease_expired`, or
    /// `heartbeat_timeout` when the step declared one) or whose start-to-close
    /// deadline passed (`timeout`). Idempotent. Returns how many were reaped.
    pub async fn reap(&self, limit: u32) -> Result<usize> {
        let now = self.now_ms();
        let (skip, mut values) = self.not_corrupt("run_id", 2);
        values.insert(0, Arg::from(now));
        let rows = self
            .pool()
            .fetch_all(
                &format!(
                    "SELECT lease_id, run_id FROM weft_leases WHERE (expires_at <= $1 OR deadline_at <= $1){skip} ORDER BY expires_at LIMIT {limit}"
                ),
                values,
            )
            .await?;
        let mut reaped = 0;
        for row in rows {
            match self.reap_lease(&row, now).await {
                Ok(n) => reaped += n,
                // A corrupt run is skipped (logged once); the others are reaped.
                Err(err @ Error::Corrupt(_)) => {
                    let err = match row.run_id() {
                        Some(run_id) => err.in_run(&run_id),
                        None => err,
                    };
                    self.skip_corrupt("reaper", &err);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(reaped)
    }

    /// Reaps one lapsed lease row; returns 1 if its attempt was ended.
    async fn reap_lease(&self, row: &crate::db::Row, now: i64) -> Result<usize> {
        {
            let lease_id = row.text("lease_id")?;
            let mut tx = self.begin().await?;
            let Some(mut run) = self.lock_run_of_lease(&mut tx, &lease_id).await? else {
                return Ok(0); // finished or reaped meanwhile
            };
            // Read again under the run lock: a heartbeat or a result may have come.
            let check = tx
                .fetch_optional(
                    "SELECT l.position, l.attempt, l.expires_at, l.deadline_at, a.status, a.span_id, a.worker_id, \
                     a.claimed_at, a.ready_at, a.item_index \
                     FROM weft_leases l JOIN weft_attempts a ON a.lease_id = l.lease_id WHERE l.lease_id = $1",
                    args![&lease_id],
                )
                .await?;
            let Some(check) = check else { return Ok(0) };
            let lease = LeaseRow {
                run_id: run.run_id,
                position: check.int("position")?,
                attempt: check.int("attempt")?,
            };
            let position = usize::try_from(lease.position)
                .ok()
                .filter(|&p| p < run.state.steps.len() && p < run.def.steps.len())
                .ok_or_else(|| {
                    check.corrupt(
                        "position",
                        Problem::WrongType {
                            expected: "a step of the run's definition",
                        },
                    )
                })?;
            let step_def = &run.def.steps[position];
            let Some(end) = attempt::lapse(
                step_def,
                position,
                check.int("expires_at")?,
                check.opt_int("deadline_at")?,
                now,
            ) else {
                return Ok(0); // renewed by a heartbeat in the meantime
            };
            tx.execute(
                "DELETE FROM weft_leases WHERE lease_id = $1",
                args![&lease_id],
            )
            .await?;
            let item_index = check.opt_int("item_index")?;
            let child_stopped = match item_index {
                Some(index) => {
                    !crate::children::is_running(&mut tx, run.view(), position, index).await?
                }
                None => false,
            };
            if check.status("status", AttemptStatus::parse)? != AttemptStatus::Running
                || (item_index.is_none()
                    && !(run.state.steps[position].status == StepStatus::Running
                        || run.state.steps[position].undoing()))
                || child_stopped
            {
                tx.commit().await?; // an attempt of an ended run: just drop its lease
                return Ok(0);
            }
            let step_name = step_def.name.clone();
            let step_def_queue = step_def.queue.clone();
            let claimed_at = check.int("claimed_at")?;
            let timing = attempt::timing(
                check.opt_int("ready_at")?.unwrap_or(claimed_at),
                claimed_at,
                now,
                now,
                None,
                None,
            );
            let stored = stored_timing(&timing);
            self.end_attempts(&mut tx, Which::Lease(&lease_id), &end, now, Some(&stored))
                .await?;
            let mut events = Vec::with_capacity(2);
            if end.lease_expired {
                events.push(EventRow {
                    run_id: lease.run_id,
                    kind: EventKind::LeaseExpired,
                    at: now,
                    step: Some(step_name.clone()),
                    attempt: Some(lease.attempt),
                    data: end.lease_expired_data(),
                });
            }
            if let Some(kind) = end.kind {
                let mut data = end.data(serde_json::to_value(stored).expect("timing serializes"));
                if let (Some(index), Some(map)) = (item_index, data.as_object_mut()) {
                    map.insert("index".into(), index.into());
                }
                events.push(EventRow {
                    run_id: lease.run_id,
                    kind,
                    at: now,
                    step: Some(step_name.clone()),
                    attempt: Some(lease.attempt),
                    data,
                });
            }
            let reason = end.reason.unwrap_or(Reason::LeaseExpired);
            let message = end.error.clone().unwrap_or_default();
            tracing::info!(component = "engine", run_id = %lease.run_id, trace_id = %run.trace_id, workflow = %run.workflow, step = %step_name, attempt = lease.attempt, reason = reason.as_str(), error = %message, "attempt reaped");
            let event = end.event.clone().expect("a lapse is told to the run");
            let kind = match item_index {
                None => crate::results::attempt_kind(&run, position),
                Some(index) => {
                    crate::children::attempt_kind(&mut tx, run.view(), position, index).await?
                }
            };
            let (previous_span_id, event) = match item_index {
                None => (
                    previous_span_id(&mut tx, lease.run_id, lease.position, lease.attempt).await?,
                    event,
                ),
                Some(index) => (
                    None,
                    crate::children::child_event(
                        &mut tx,
                        run.view(),
                        position,
                        index,
                        event,
                        self.settings().max_output_bytes,
                    )
                    .await?
                    .expect("a running child's attempt ends as its child's event"),
                ),
            };
            let applied = self
                .apply_event(&mut tx, &mut run, event, now, events)
                .await?;
            tx.commit().await?;
            if end.lease_expired {
                self.observer().observe(&Observation::LeaseExpired {
                    queue: &step_def_queue,
                });
            }
            let ended = EndedAttempt {
                position,
                attempt: lease.attempt,
                index: item_index,
                span_id: check.id("span_id")?,
                previous_span_id,
                worker_id: check.text("worker_id")?,
                claimed_at,
                status: end.status,
                reason: end.reason,
                error: end.error,
                timing,
                kind,
            };
            self.observer()
                .observe(&Observation::AttemptFinished(ended.record(&run, now)));
            self.observe_applied(&run, &applied, now);
            if applied.made_ready {
                self.wake_pollers();
            }
            Ok(1)
        }
    }
}
