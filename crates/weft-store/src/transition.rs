//! Applying one state-machine event to a locked run and persisting the
//! effects: the single path by which runs and steps change state (the claim
//! of a ready step is the one exception, see `claim.rs`). Attempts still out
//! when their run ends are ended here, through `attempts.rs`.

use std::{collections::BTreeSet, sync::Arc};

use serde_json::Value;
use weft_core::{
    AttemptKind, AttemptStatus, Definition, EventKind, Reason, RunId, RunState, RunStatus, SpanId,
    StepState, StepStatus, TraceId, UndoStatus, attempt,
    machine::{self, Context, Effect, Event},
    observe::{AttemptRecord, ConditionRecord, Observation, RunRecord, Timing},
    redact::TextMasker,
};

use crate::{
    Error, Problem, Result, Store, args,
    attempts::Which,
    db::{Arg, Dialect, Tx},
};

/// A run loaded under its row lock, with its definition and machine state.
pub(crate) struct LockedRun {
    pub run_id: RunId,
    pub trace_id: TraceId,
    /// The run span's id, and the caller's span it joined, if any.
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub created_at: i64,
    pub workflow: String,
    pub version: i64,
    pub def: Arc<Definition>,
    pub state: RunState,
    /// False for a run being started: its step rows are inserted, whole, by
    /// the first `apply_event` instead of updated one by one.
    pub steps_stored: bool,
    /// Fields added to the data of every event `apply_event` writes for its
    /// effects: who acted (`actor`, `on_behalf_of`, `comment`).
    pub stamp: Option<serde_json::Map<String, Value>>,
}

impl LockedRun {
    /// What the children's functions read of this run.
    pub(crate) fn view(&self) -> crate::children::RunView<'_> {
        crate::children::RunView {
            run_id: self.run_id,
            def: &self.def,
            state: &self.state,
        }
    }
}

/// What a committed transition means for the rest of the process.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub effects: Vec<Effect>,
    pub made_ready: bool,
    /// Attempts that were still out when the run ended, now `cancelled`.
    pub cancelled_attempts: Vec<EndedAttempt>,
    /// The `when` conditions this transition decided: (step position,
    /// condition_ms, result `true` / `false` / `error`).
    pub conditions: Vec<(usize, u64, &'static str)>,
}

/// An attempt that ended, as its span and metrics need it.
#[derive(Debug)]
pub(crate) struct EndedAttempt {
    pub position: usize,
    pub attempt: i64,
    /// A `for_each` child's index, for a child's attempt.
    pub index: Option<i64>,
    pub span_id: SpanId,
    pub previous_span_id: Option<SpanId>,
    pub worker_id: String,
    pub claimed_at: i64,
    pub status: AttemptStatus,
    pub reason: Option<Reason>,
    pub error: Option<String>,
    pub timing: Timing,
    /// Whether it ran the step's handler or its `compensate` handler.
    pub kind: AttemptKind,
}

impl EndedAttempt {
    pub(crate) fn record<'a>(&'a self, run: &'a LockedRun, now: i64) -> AttemptRecord<'a> {
        let step = &run.def.steps[self.position];
        AttemptRecord {
            run_id: run.run_id,
            trace_id: run.trace_id,
            run_span_id: run.span_id,
            run_parent_span_id: run.parent_span_id,
            span_id: self.span_id,
            previous_span_id: self.previous_span_id,
            workflow: &run.workflow,
            version: run.version,
            step: &step.name,
            attempt: self.attempt,
            index: self.index,
            queue: &step.queue,
            worker_id: &self.worker_id,
            claimed_at_ms: self.claimed_at,
            finished_at_ms: now,
            status: self.status,
            reason: self.reason,
            error: self.error.as_deref(),
            timing: self.timing,
            kind: self.kind,
        }
    }
}

fn parse_json(text: Option<String>, what: &str, run_id: RunId) -> Result<Option<Value>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|err| {
            Error::corrupt(
                what,
                Some(run_id.to_string()),
                Problem::BadJson(err.to_string()),
            )
        })
    })
    .transpose()
}

/// A row's nullable `reason`: a word the closed set does not know is corrupt.
/// A row's `reason` column, `None` when NULL; an unknown reason is corrupt.
pub(crate) fn opt_reason(row: &crate::db::Row) -> Result<Option<Reason>> {
    row.opt_text("reason")?
        .map(|text| {
            Reason::parse(&text).ok_or_else(|| row.corrupt("reason", Problem::UnknownValue(text)))
        })
        .transpose()
}

impl Store {
    /// Locks a run's row for the rest of the transaction and loads its state.
    pub(crate) async fn lock_run(&self, tx: &mut Tx, run_id: RunId) -> Result<LockedRun> {
        self.lock_run_where(tx, "run_id = $1", run_id.into())
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "run",
                id: run_id.to_string(),
            })
    }

    /// Locks and loads the run a lease belongs to, in one round trip; `None`
    /// when the lease is gone.
    pub(crate) async fn lock_run_of_lease(
        &self,
        tx: &mut Tx,
        lease_id: &str,
    ) -> Result<Option<LockedRun>> {
        self.lock_run_where(
            tx,
            "run_id = (SELECT run_id FROM weft_leases WHERE lease_id = $1)",
            lease_id.into(),
        )
        .await
    }

    async fn lock_run_where(
        &self,
        tx: &mut Tx,
        condition: &str,
        key: Arg,
    ) -> Result<Option<LockedRun>> {
        let lock = match tx.dialect() {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "SELECT run_id, trace_id, span_id, parent_span_id, created_at, workflow, version, status, reason, error, input, output \
             FROM weft_runs WHERE {condition}{lock}"
        );
        let Some(row) = tx.fetch_optional(&sql, vec![key]).await? else {
            return Ok(None);
        };
        let run_id: RunId = row.id("run_id")?;
        let workflow = row.text("workflow")?;
        let version = row.int("version")?;
        let def = self.definition_in(tx, &workflow, version).await?;
        let step_rows = tx
            .fetch_all(
                &format!(
                    "SELECT position, status, reason, n_attempts, attempt_base, output, error, due_at, undo, undo_base, {} \
                     FROM weft_steps WHERE run_id = $1 ORDER BY position",
                    crate::children::COUNT_COLUMNS
                ),
                args![run_id],
            )
            .await?;
        if step_rows.len() != def.steps.len() {
            return Err(Error::corrupt(
                "weft_steps",
                Some(run_id.to_string()),
                Problem::StepCount {
                    rows: step_rows.len(),
                    defined: def.steps.len(),
                },
            ));
        }
        let mut steps = Vec::with_capacity(step_rows.len());
        for r in step_rows {
            steps.push(StepState {
                status: r.status("status", StepStatus::parse)?,
                reason: opt_reason(&r)?,
                n_attempts: r.int("n_attempts")? as u32,
                attempt_base: r.int("attempt_base")? as u32,
                output: parse_json(r.opt_text("output")?, "step output", run_id)?,
                error: r.opt_text("error")?,
                due_at: r.opt_int("due_at")?,
                condition_ms: None,
                children: crate::children::counts(&r)?,
                undo: r
                    .opt_text("undo")?
                    .map(|text| {
                        UndoStatus::parse(&text)
                            .ok_or_else(|| r.corrupt("undo", Problem::UnknownValue(text)))
                    })
                    .transpose()?,
                undo_base: r.int("undo_base")? as u32,
            });
        }
        let state = RunState {
            status: row.status("status", RunStatus::parse)?,
            reason: opt_reason(&row)?,
            error: row.opt_text("error")?,
            input: parse_json(Some(row.text("input")?), "run input", run_id)?
                .unwrap_or(Value::Null),
            output: parse_json(row.opt_text("output")?, "run output", run_id)?,
            steps,
        };
        Ok(Some(LockedRun {
            run_id,
            trace_id: row.id("trace_id")?,
            span_id: row.id("span_id")?,
            parent_span_id: row.opt_id("parent_span_id")?,
            created_at: row.int("created_at")?,
            workflow,
            version,
            def,
            state,
            steps_stored: true,
            stamp: None,
        }))
    }

    /// Applies `event` to a locked run and writes every effect (step rows, the
    /// run row, one history event each) into `tx`. `events` are history rows
    /// the caller wants written first, in the same statement as the effects'.
    pub(crate) async fn apply_event(
        &self,
        tx: &mut Tx,
        run: &mut LockedRun,
        event: Event,
        now: i64,
        mut events: Vec<EventRow>,
    ) -> Result<Applied> {
        if run
            .def
            .steps
            .iter()
            .any(|s| s.fan_out.is_some() || s.compensate.is_some())
        {
            // Children or undos may come of it: claims look for them.
            self.inner.saga_hint.note(now);
        }
        let status_before = run.state.status;
        let run_before = (
            run.state.status,
            run.state.reason,
            run.state.error.clone(),
            run.state.output.is_some(),
        );
        let steps_before = run.state.steps.clone();
        let cx = Context {
            now_ms: now,
            random: rand::random::<f64>(),
        };
        // `when` conditions are evaluated on their own pool, with a time
        // limit, while this thread lets the runtime's other tasks move on.
        let effects = if run
            .def
            .steps
            .iter()
            .any(|s| s.when.is_some() || s.fan_out.is_some())
        {
            crate::conditions::blocking(|| {
                machine::apply_with(
                    &run.def,
                    &mut run.state,
                    event,
                    cx,
                    &crate::conditions::Pooled::default(),
                )
            })
        } else {
            machine::apply(&run.def, &mut run.state, event, cx)
        }
        .map_err(|rejected| Error::Conflict {
            code: rejected.code(),
            message: rejected.to_string(),
        })?;
        if effects.is_empty() {
            if !run.steps_stored {
                insert_steps(tx, run, now).await?;
                run.steps_stored = true;
            }
            insert_events(tx, &events).await?;
            return Ok(Applied::default());
        }
        let mut made_ready = false;
        let mut ready_queues = BTreeSet::new();
        // Every step the event changed, with or without an effect of its own:
        // `Retry` puts failed and cancelled steps back to `pending` silently.
        let touched: BTreeSet<usize> = effects
            .iter()
            .filter_map(Effect::step)
            .chain((0..steps_before.len()).filter(|&i| steps_before[i] != run.state.steps[i]))
            .collect();
        for effect in &effects {
            if let Effect::StepFannedOut { step, .. }
            | Effect::ChildrenReady { step, .. }
            | Effect::ChildRetrying { step, .. }
            | Effect::ChildReleased { step, .. }
            | Effect::ChildrenRetried { step, .. }
            | Effect::ChildCompensating { step, .. }
            | Effect::ChildCompensationRetrying { step, .. } = effect
            {
                made_ready = true;
                ready_queues.insert(run.def.steps[*step].queue.clone());
            }
        }
        for &position in &touched {
            let s = &run.state.steps[position];
            if s.status == StepStatus::Ready || s.undo == Some(attempt::READY_UNDO) {
                made_ready = true;
                ready_queues.insert(run.def.steps[position].queue.clone());
            }
        }
        // Children rows before step rows, in the claim's order (it locks
        // ready children, then their step's row).
        crate::children::write_effects(tx, run.view(), &effects, now).await?;
        if run.steps_stored {
            for &position in &touched {
                let s = &run.state.steps[position];
                let output = s.output.as_ref().map(Value::to_string);
                tx.execute(
                    &format!(
                        "UPDATE weft_steps SET status = $3, reason = $4, n_attempts = $5, attempt_base = $6, output = $7, \
                         error = $8, due_at = $9, updated_at = $10, undo = $11, undo_base = $12, \
                         compensate_handler = COALESCE($13, compensate_handler), \
                         ready_at = CASE WHEN $3 = '{ready}' OR $11 = '{undo_ready}' THEN $10 ELSE ready_at END, \
                         children_total = $14, children_dispatched = $15, children_in_flight = $16, \
                         children_completed = $17, children_failed = $18, children_undone = $19, \
                         children_undo_failed = $20 \
                         WHERE run_id = $1 AND position = $2",
                        ready = StepStatus::Ready.as_str(),
                        undo_ready = attempt::READY_UNDO.as_str()
                    ),
                    {
                        let mut values = args![
                        &run.run_id,
                        position,
                        s.status.as_str(),
                        s.reason.map(|r| r.as_str()),
                        s.n_attempts,
                        s.attempt_base,
                        output,
                        s.error.clone(),
                        s.due_at,
                        now,
                        s.undo.map(|u| u.as_str()),
                        s.undo_base,
                        run.def.steps[position].compensate.as_deref()
                    ];
                        values.extend(crate::children::count_args(s.children));
                        values
                    },
                )
                .await?;
            }
        } else {
            insert_steps(tx, run, now).await?;
            run.steps_stored = true;
        }
        let status = run.state.status;
        let terminal = status.is_terminal();
        let run_after = (
            run.state.status,
            run.state.reason,
            run.state.error.clone(),
            run.state.output.is_some(),
        );
        // Most step transitions leave the run as it was: no write, no index churn.
        if run_after != run_before {
            tx.execute(
                &format!(
                    "UPDATE weft_runs SET status = $2, reason = $3, error = $4, output = $5, updated_at = $6, \
                     started_at = CASE WHEN started_at IS NULL AND $2 <> '{pending}' THEN $6 ELSE started_at END, \
                     finished_at = CASE WHEN $7 = 1 THEN COALESCE(finished_at, $6) ELSE NULL END \
                     WHERE run_id = $1",
                    pending = RunStatus::Pending.as_str()
                ),
                args![
                    &run.run_id,
                    status.as_str(),
                    run.state.reason.map(|r| r.as_str()),
                    run.state.error.clone(),
                    run.state.output.as_ref().map(Value::to_string),
                    now,
                    i64::from(terminal)
                ],
            )
            .await?;
        }
        let mut cancelled_attempts = Vec::new();
        // Attempts still out stop counting when their run ends (or, in a run
        // that begins compensating, when their step is cancelled); their
        // leases stay so that the next heartbeat answers `cancel_requested`.
        // They are read first: each ends here, and its span with it.
        let mut ends: Vec<(Option<usize>, attempt::End)> = Vec::new();
        if let Some(end) = attempt::run_ended(status_before, status) {
            ends.push((None, end));
        } else {
            for &position in &touched {
                if let Some(end) =
                    attempt::step_ended(&steps_before[position], &run.state.steps[position])
                {
                    ends.push((Some(position), end));
                }
            }
        }
        for (position, end) in ends {
            let (filter, which) = match position {
                None => (String::new(), Which::RunningIn(run.run_id)),
                Some(p) => (
                    format!(" AND position = {p}"),
                    Which::RunningAt(run.run_id, p),
                ),
            };
            for row in tx
                .fetch_all(
                    &format!(
                        "SELECT position, attempt, span_id, worker_id, ready_at, claimed_at, item_index, kind FROM weft_attempts \
                         WHERE run_id = $1 AND status = '{}'{filter}",
                        AttemptStatus::Running.as_str()
                    ),
                    args![&run.run_id],
                )
                .await?
            {
                let claimed_at = row.int("claimed_at")?;
                let ready_at = row.opt_int("ready_at")?.unwrap_or(claimed_at);
                cancelled_attempts.push(EndedAttempt {
                    position: row.position("position", run.def.steps.len())?,
                    attempt: row.int("attempt")?,
                    index: row.opt_int("item_index")?,
                    span_id: row.id("span_id")?,
                    previous_span_id: None,
                    worker_id: row.text("worker_id")?,
                    claimed_at,
                    status: end.status,
                    reason: end.reason,
                    error: end.error.clone(),
                    timing: Timing {
                        queue_wait_ms: (claimed_at - ready_at).max(0),
                        total_ms: (now - claimed_at).max(0),
                        ..Timing::default()
                    },
                    kind: row.status("kind", AttemptKind::parse)?,
                });
            }
            self.end_attempts(tx, which, &end, now, None).await?;
        }
        for effect in &effects {
            let (step, attempt) = match effect.step() {
                Some(p) => (
                    Some(run.def.steps[p].name.clone()),
                    effect_attempt(run, effect, p),
                ),
                None => (None, None),
            };
            let mut data = effect.data();
            if let (Some(stamp), Some(map)) = (&run.stamp, data.as_object_mut()) {
                map.extend(stamp.clone());
            }
            // The time a `when` took, on the event of the step's decision.
            if let (Some(p), Some(map)) = (effect.step(), data.as_object_mut())
                && let Some(ms) = run.state.steps[p].condition_ms
                && matches!(
                    effect,
                    Effect::StepReady { .. }
                        | Effect::StepWaiting { .. }
                        | Effect::StepSkipped { .. }
                        | Effect::StepFailed { .. }
                )
            {
                map.insert("condition_ms".into(), ms.into());
            }
            if matches!(effect, Effect::RunFailed { .. })
                && let (Some(map), Some(error)) = (data.as_object_mut(), &run.state.error)
            {
                map.insert("error".into(), error.clone().into());
            }
            events.push(EventRow {
                run_id: run.run_id,
                kind: effect.kind(),
                at: now,
                step,
                attempt,
                data,
            });
        }
        insert_events(tx, &events).await?;
        if tx.dialect() == Dialect::Postgres {
            for queue in &ready_queues {
                tx.execute("SELECT pg_notify('weft_ready', $1)", args![queue])
                    .await?;
            }
        }
        if effects.iter().any(|e| {
            matches!(
                e,
                Effect::RunFailed { .. } | Effect::StepFailed { .. } | Effect::StepRetrying { .. }
            )
        }) {
            // Failures are logged with their error, the secret values of the
            // run's input and outputs and the patterns masked (one masker per
            // transition).
            let masker = self.settings().redactor.run_masker(&run.state);
            for effect in &effects {
                log_effect(run, effect, Some(&masker));
            }
        } else {
            for effect in &effects {
                log_effect(run, effect, None);
            }
        }
        let conditions = effects
            .iter()
            .filter_map(|effect| {
                let p = effect.step()?;
                let ms = run.state.steps[p].condition_ms?;
                let result = match effect {
                    Effect::StepReady { .. } | Effect::StepWaiting { .. } => "true",
                    Effect::StepSkipped { .. } => "false",
                    Effect::StepFailed { .. } => "error",
                    _ => return None,
                };
                Some((p, ms, result))
            })
            .collect();
        Ok(Applied {
            effects,
            made_ready,
            cancelled_attempts,
            conditions,
        })
    }
}

impl Store {
    /// Reports a committed transition's effects to the observer.
    pub(crate) fn observe_applied(&self, run: &LockedRun, applied: &Applied, now: i64) {
        let observer = self.observer();
        // Attempts end before their run: their spans are the run span's children.
        for cancelled in &applied.cancelled_attempts {
            observer.observe(&Observation::AttemptFinished(cancelled.record(run, now)));
        }
        for &(position, condition_ms, result) in &applied.conditions {
            observer.observe(&Observation::ConditionDecided(ConditionRecord {
                run_id: run.run_id,
                trace_id: run.trace_id,
                run_span_id: run.span_id,
                run_parent_span_id: run.parent_span_id,
                workflow: &run.workflow,
                version: run.version,
                step: &run.def.steps[position].name,
                decided_at_ms: now,
                condition_ms,
                result,
            }));
        }
        for effect in &applied.effects {
            match effect {
                Effect::RunCompleted
                | Effect::RunFailed { .. }
                | Effect::RunCancelled
                | Effect::CompensationCompleted { .. } => {
                    let error = self.masked_for_people(run, run.state.error.as_deref());
                    let mut record = self::run_record(run, now);
                    record.error = error.as_deref();
                    observer.observe(&Observation::RunFinished(record));
                    self.inner.run_waiters.finished(run.run_id);
                }
                Effect::RunRetried => {
                    observer.observe(&Observation::RunRetried {
                        workflow: &run.workflow,
                    });
                }
                Effect::StepRetrying { step, .. } => {
                    observer.observe(&Observation::StepRetrying {
                        workflow: &run.workflow,
                        step: &run.def.steps[*step].name,
                    });
                }
                _ => {}
            }
        }
    }
}

/// The attempt a step effect's history event names: the attempt that just
/// ran for most, the next one for `step.ready` (the attempt it is ready
/// for); none for a step that never ran and is not about to.
fn effect_attempt(run: &LockedRun, effect: &Effect, position: usize) -> Option<i64> {
    let n = i64::from(run.state.steps[position].n_attempts);
    match effect {
        Effect::StepReady { .. } | Effect::StepCompensating { .. } => Some(n + 1),
        _ => (n > 0).then_some(n),
    }
}

impl Store {
    /// A run's or attempt's error as people may see it (in span attributes
    /// and events): the secrets of the run's input and outputs and the
    /// configured patterns masked. The stored row keeps the clear text.
    pub(crate) fn masked_for_people(&self, run: &LockedRun, error: Option<&str>) -> Option<String> {
        error.map(|error| {
            self.settings()
                .redactor
                .run_masker(&run.state)
                .mask(error)
                .into_owned()
        })
    }
}

/// A step's or run's error for a log line, secret values masked.
fn masked_error(error: Option<&str>, masker: Option<&TextMasker>) -> String {
    let error = error.unwrap_or("");
    match masker {
        Some(masker) => masker.mask(error).into_owned(),
        None => error.to_owned(),
    }
}

fn log_effect(run: &LockedRun, effect: &Effect, secrets: Option<&TextMasker>) {
    let run_id = tracing::field::display(run.run_id);
    let workflow = run.workflow.as_str();
    let trace_id = tracing::field::display(run.trace_id);
    match effect {
        Effect::RunCompleted => {
            tracing::info!(
                component = "engine",
                run_id,
                trace_id,
                workflow,
                "run completed"
            )
        }
        Effect::RunFailed { reason } => {
            tracing::info!(
                component = "engine",
                run_id,
                trace_id,
                workflow,
                reason = reason.as_str(),
                error = %masked_error(run.state.error.as_deref(), secrets),
                "run failed"
            )
        }
        Effect::RunCancelled => {
            tracing::info!(
                component = "engine",
                run_id,
                trace_id,
                workflow,
                "run cancelled"
            )
        }
        Effect::RunRetried => tracing::info!(
            component = "engine",
            run_id,
            trace_id,
            workflow,
            "run retried"
        ),
        Effect::StepRetrying { step, delay_ms, .. } => tracing::info!(
            component = "engine",
            run_id,
            trace_id,
            workflow,
            step = run.def.steps[*step].name.as_str(),
            attempt = run.state.steps[*step].n_attempts,
            delay_ms,
            reason = run.state.steps[*step].reason.map_or("", |r| r.as_str()),
            error = %masked_error(run.state.steps[*step].error.as_deref(), secrets),
            "step will retry"
        ),
        Effect::StepFailed { step, reason } => tracing::info!(
            component = "engine",
            run_id,
            trace_id,
            workflow,
            step = run.def.steps[*step].name.as_str(),
            attempt = run.state.steps[*step].n_attempts,
            reason = reason.as_str(),
            error = %masked_error(run.state.steps[*step].error.as_deref(), secrets),
            "step failed"
        ),
        Effect::CompensationStarted { reason, steps } => tracing::info!(
            component = "engine",
            run_id,
            trace_id,
            workflow,
            reason = reason.as_str(),
            steps = %steps.join(","),
            "compensation started"
        ),
        Effect::StepCompensationFailed {
            step,
            reason,
            error,
        } => tracing::info!(
            component = "engine",
            run_id,
            trace_id,
            workflow,
            step = run.def.steps[*step].name.as_str(),
            reason = reason.as_str(),
            error = %masked_error(Some(error), secrets),
            "step compensation failed"
        ),
        Effect::CompensationCompleted { reason } => tracing::info!(
            component = "engine",
            run_id,
            trace_id,
            workflow,
            reason = reason.as_str(),
            "run compensated"
        ),
        Effect::CompensationFailed { failed, reason } => tracing::info!(
            component = "engine",
            run_id,
            trace_id,
            workflow,
            reason = reason.as_str(),
            failed = %failed.join(","),
            "compensation failed"
        ),
        Effect::CompensationCancelled { not_run } => tracing::info!(
            component = "engine",
            run_id,
            trace_id,
            workflow,
            not_run = %not_run.join(","),
            "compensation cancelled"
        ),
        other => tracing::debug!(
            component = "engine",
            run_id,
            trace_id,
            workflow,
            event = other.kind().as_str(),
            "transition"
        ),
    }
}

/// Inserts every step row of a run being started, as the machine left them.
async fn insert_steps(tx: &mut Tx, run: &LockedRun, now: i64) -> Result<()> {
    const COLUMNS: usize = 19;
    let steps: Vec<(usize, &StepState)> = run.state.steps.iter().enumerate().collect();
    for chunk in steps.chunks(100) {
        let mut sql = String::from(
            "INSERT INTO weft_steps (run_id, updated_at, position, name, queue, handler, status, reason, \
             n_attempts, attempt_base, output, error, due_at, ready_at, children_total, children_dispatched, \
             children_in_flight, children_completed, children_failed, children_undone, children_undo_failed) VALUES ",
        );
        let mut values: Vec<Arg> = args![&run.run_id, now];
        for (i, (position, s)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let first = 3 + i * COLUMNS;
            sql.push_str("($1, $2, ");
            let mut tuple = String::new();
            crate::db::push_tuple(&mut tuple, first, COLUMNS);
            sql.push_str(&tuple[1..]);
            let def = &run.def.steps[*position];
            values.extend(args![
                *position,
                &def.name,
                &def.queue,
                def.handler(),
                s.status.as_str(),
                s.reason.map(|r| r.as_str()),
                s.n_attempts,
                s.attempt_base,
                s.output.as_ref().map(Value::to_string),
                s.error.clone(),
                s.due_at,
                (s.status == StepStatus::Ready).then_some(now)
            ]);
            values.extend(crate::children::count_args(s.children));
        }
        tx.execute(&sql, values).await?;
    }
    Ok(())
}

/// One history row, written later with its neighbours in one statement.
#[derive(Debug)]
pub(crate) struct EventRow {
    pub run_id: RunId,
    pub kind: EventKind,
    pub at: i64,
    pub step: Option<String>,
    pub attempt: Option<i64>,
    pub data: Value,
}

/// Writes history rows in order, as few statements as bind limits allow
/// (the sequence numbers follow the order of `rows`).
pub(crate) async fn insert_events(tx: &mut Tx, rows: &[EventRow]) -> Result<()> {
    const COLUMNS: usize = 6;
    for chunk in rows.chunks(500) {
        let mut sql = String::with_capacity(80 + chunk.len() * 40);
        sql.push_str("INSERT INTO weft_events (run_id, type, at, step, attempt, data) VALUES ");
        let mut values = Vec::with_capacity(chunk.len() * COLUMNS);
        for (i, row) in chunk.iter().enumerate() {
            tx.wrote_history(row.run_id);
            if i > 0 {
                sql.push_str(", ");
            }
            crate::db::push_tuple(&mut sql, 1 + i * COLUMNS, COLUMNS);
            values.extend(args![
                &row.run_id,
                row.kind.as_str(),
                row.at,
                row.step.as_deref(),
                row.attempt,
                row.data.to_string()
            ]);
        }
        tx.execute(&sql, values).await?;
    }
    Ok(())
}

/// The run's row as a finished run, for its span and metrics.
pub(crate) fn run_record(run: &LockedRun, finished_at_ms: i64) -> RunRecord<'_> {
    RunRecord {
        run_id: run.run_id,
        trace_id: run.trace_id,
        span_id: run.span_id,
        parent_span_id: run.parent_span_id,
        workflow: &run.workflow,
        version: run.version,
        created_at_ms: run.created_at,
        finished_at_ms,
        status: run.state.status,
        reason: run.state.reason,
        error: run.state.error.as_deref(),
    }
}
