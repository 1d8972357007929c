//! The run state machine: `apply(definition, state, event, context) -> effects`.
//!
//! It is pure: it mutates the in-memory `RunState` it is given and returns the
//! effects that the store must persist (a row update and a history event
//! each). The store loads the state under the run's lock, applies one event and
//! writes the effects in the same transaction, so a crash never leaves a
//! half-applied transition. What a claim does and how an attempt ends are
//! decided in `attempt.rs`, which hands this machine the attempt's event;
//! the text-trace tests of both are in `traces.rs`.
//!
//! Rules that are easy to miss:
//! - A `skipped` step (its `when` was false) satisfies its dependants; its
//!   output is `null`.
//! - A step that fails for good fails the run at once; every step not yet
//!   finished is cancelled with reason `upstream_failed`, and running attempts
//!   learn it from their next heartbeat.
//! - `Retry` of a failed or cancelled run re-queues the failed and cancelled
//!   steps with a fresh attempt budget; completed steps keep their outputs.
//! - A run that fails (or is cancelled under `compensate_on: [cancel]`) with
//!   completed steps that have a `compensate` handler goes `compensating`
//!   instead of ending: `compensation.rs` decides the undos, and results of
//!   undo attempts come back through the same events as any attempt's.

pub mod compensation;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::{
    Reason, RunStatus, StepStatus, UndoStatus, condition,
    definition::{Definition, StepKind, dependency_outputs},
    event::EventKind,
};

#[derive(Debug, Clone, PartialEq)]
pub struct StepState {
    pub status: StepStatus,
    pub reason: Option<Reason>,
    /// Attempts claimed so far, over the step's whole life.
    pub n_attempts: u32,
    /// `n_attempts` when the run was last retried by hand: the retry budget
    /// counts from here.
    pub attempt_base: u32,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// When a `retrying` or sleeping `waiting` step (or a retrying undo) is
    /// due, in epoch ms.
    pub due_at: Option<i64>,
    /// Where the step's compensation stands; `None` unless it is being (or
    /// was) undone.
    pub undo: Option<UndoStatus>,
    /// `n_attempts` when the step's undo began (or was last retried): the
    /// `compensate_retry` budget counts from here.
    pub undo_base: u32,
}

impl StepState {
    pub fn new() -> Self {
        Self {
            status: StepStatus::Pending,
            reason: None,
            n_attempts: 0,
            attempt_base: 0,
            output: None,
            error: None,
            due_at: None,
            undo: None,
            undo_base: 0,
        }
    }

    /// Whether the attempt out for this step is an undo (`compensate`).
    pub fn undoing(&self) -> bool {
        self.undo == Some(UndoStatus::Running)
    }
}

impl Default for StepState {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    pub status: RunStatus,
    pub reason: Option<Reason>,
    pub error: Option<String>,
    pub input: Value,
    pub output: Option<Value>,
    /// One per step, in the definition's manifest order.
    pub steps: Vec<StepState>,
}

impl RunState {
    pub fn new(def: &Definition, input: Value) -> Self {
        Self {
            status: RunStatus::Pending,
            reason: None,
            error: None,
            input,
            output: None,
            steps: vec![StepState::new(); def.steps.len()],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The run was created: make its root steps ready.
    Start,
    AttemptCompleted {
        step: usize,
        output: Value,
    },
    AttemptFailed {
        step: usize,
        reason: Reason,
        message: String,
        retryable: bool,
    },
    /// A worker shutting down handed a running attempt back (`release`) and
    /// the release is free (`attempt::release` decides; past its cap a
    /// release is an `AttemptFailed`): the step is ready again at once and
    /// the attempt spends none of its budget.
    AttemptReleased {
        step: usize,
    },
    /// A `retrying` step's backoff or a sleep step's duration is over.
    TimerFired {
        step: usize,
    },
    Approve {
        step: usize,
    },
    Reject {
        step: usize,
        message: String,
    },
    Cancel,
    Retry,
    /// An operator marks the step's failed undo as skipped.
    SkipCompensation {
        step: usize,
    },
}

/// What the store must persist. Each effect is also one history event.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    RunStarted,
    StepReady {
        step: usize,
    },
    StepSkipped {
        step: usize,
    },
    StepWaiting {
        step: usize,
        until: Option<i64>,
    },
    StepCompleted {
        step: usize,
    },
    StepRetrying {
        step: usize,
        due_at: i64,
        delay_ms: u64,
    },
    StepFailed {
        step: usize,
        reason: Reason,
    },
    StepCancelled {
        step: usize,
        reason: Reason,
    },
    RunCompleted,
    RunFailed {
        reason: Reason,
    },
    RunCancelled,
    RunRetried,
    CompensationStarted {
        reason: Reason,
        steps: Vec<String>,
    },
    /// The step's undo is ready to be claimed.
    StepCompensating {
        step: usize,
    },
    StepCompensated {
        step: usize,
    },
    StepCompensationFailed {
        step: usize,
        reason: Reason,
        /// The last undo attempt's error.
        error: String,
    },
    /// The run is `compensated`, keeping its original `reason`.
    CompensationCompleted {
        reason: Reason,
    },
    CompensationFailed {
        failed: Vec<String>,
        reason: Reason,
    },
    CompensationSkipped {
        step: usize,
    },
    CompensationCancelled {
        not_run: Vec<String>,
    },
}

impl Effect {
    /// The kind of history event this effect is recorded as.
    pub fn kind(&self) -> EventKind {
        match self {
            Effect::RunStarted => EventKind::RunStarted,
            Effect::StepReady { .. } => EventKind::StepReady,
            Effect::StepSkipped { .. } => EventKind::StepSkipped,
            Effect::StepWaiting { .. } => EventKind::StepWaiting,
            Effect::StepCompleted { .. } => EventKind::StepCompleted,
            Effect::StepRetrying { .. } => EventKind::StepRetrying,
            Effect::StepFailed { .. } => EventKind::StepFailed,
            Effect::StepCancelled { .. } => EventKind::StepCancelled,
            Effect::RunCompleted => EventKind::RunCompleted,
            Effect::RunFailed { .. } => EventKind::RunFailed,
            Effect::RunCancelled => EventKind::RunCancelled,
            Effect::RunRetried => EventKind::RunRetried,
            Effect::CompensationStarted { .. } => EventKind::CompensationStarted,
            Effect::StepCompensating { .. } => EventKind::StepCompensating,
            Effect::StepCompensated { .. } => EventKind::StepCompensated,
            Effect::StepCompensationFailed { .. } => EventKind::StepCompensationFailed,
            Effect::CompensationCompleted { .. } => EventKind::CompensationCompleted,
            Effect::CompensationFailed { .. } => EventKind::CompensationFailed,
            Effect::CompensationSkipped { .. } => EventKind::CompensationSkipped,
            Effect::CompensationCancelled { .. } => EventKind::CompensationCancelled,
        }
    }

    /// The step this effect changes, if any.
    pub fn step(&self) -> Option<usize> {
        match *self {
            Effect::StepReady { step }
            | Effect::StepSkipped { step }
            | Effect::StepWaiting { step, .. }
            | Effect::StepCompleted { step }
            | Effect::StepRetrying { step, .. }
            | Effect::StepFailed { step, .. }
            | Effect::StepCancelled { step, .. }
            | Effect::StepCompensating { step }
            | Effect::StepCompensated { step }
            | Effect::StepCompensationFailed { step, .. }
            | Effect::CompensationSkipped { step } => Some(step),
            _ => None,
        }
    }

    /// The event's payload fields beyond type, step and time.
    pub fn data(&self) -> Value {
        let mut map = Map::new();
        match self {
            Effect::StepWaiting {
                until: Some(until), ..
            } => {
                map.insert("until_ms".into(), (*until).into());
            }
            Effect::StepRetrying {
                due_at, delay_ms, ..
            } => {
                map.insert("due_at_ms".into(), (*due_at).into());
                map.insert("delay_ms".into(), (*delay_ms).into());
            }
            Effect::StepFailed { reason, .. }
            | Effect::StepCancelled { reason, .. }
            | Effect::RunFailed { reason }
            | Effect::CompensationCompleted { reason } => {
                map.insert("reason".into(), reason.as_str().into());
            }
            Effect::StepCompensationFailed { reason, error, .. } => {
                map.insert("error".into(), error.clone().into());
                map.insert("reason".into(), reason.as_str().into());
            }
            Effect::CompensationStarted { reason, steps } => {
                map.insert("reason".into(), reason.as_str().into());
                map.insert("steps".into(), steps.clone().into());
            }
            Effect::CompensationFailed { failed, reason } => {
                map.insert("failed".into(), failed.clone().into());
                map.insert("reason".into(), reason.as_str().into());
            }
            Effect::CompensationCancelled { not_run } => {
                map.insert("not_run".into(), not_run.clone().into());
            }
            _ => {}
        }
        Value::Object(map)
    }
}

/// The outside facts an event is applied with: the time and a random number in
/// `[0, 1)` for backoff jitter.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub now_ms: i64,
    pub random: f64,
}

/// Why an event does not apply to the state it was given. The store turns
/// these into conflicts; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("run is {0}, not {1}")]
    RunStatus(RunStatus, &'static str),
    #[error("step `{step}` is {status}, not {expected}")]
    StepStatus {
        step: String,
        status: StepStatus,
        expected: &'static str,
    },
    #[error("step index {0} is out of range")]
    NoSuchStep(usize),
    #[error("step `{0}` is not an approval step")]
    NotApproval(String),
    /// `Retry` of a run that was compensated (or whose compensation was
    /// cancelled): its undos ran, so its forward steps must not run again.
    #[error("run is {0} and its compensation began: it cannot be retried")]
    Compensated(RunStatus),
    #[error("step `{0}` has no failed compensation to skip")]
    NoFailedUndo(String),
}

impl Rejected {
    /// The stable error code the API answers with (409).
    pub fn code(&self) -> &'static str {
        match self {
            Rejected::Compensated(_) => "run_compensated",
            Rejected::NoFailedUndo(_) => "no_failed_compensation",
            _ => "invalid_state",
        }
    }
}

/// [`apply_with`] evaluating `when` conditions on the calling thread.
pub fn apply(
    def: &Definition,
    state: &mut RunState,
    event: Event,
    cx: Context,
) -> Result<Vec<Effect>, Rejected> {
    apply_with(def, state, event, cx, &condition::Inline)
}

/// Applies `event` to `state`, returning the effects to persist; `conditions`
/// evaluates the `when` of each step the event makes runnable (a condition
/// that cannot decide fails its step with reason `condition_error`).
pub fn apply_with(
    def: &Definition,
    state: &mut RunState,
    event: Event,
    cx: Context,
    conditions: &dyn condition::Evaluate,
) -> Result<Vec<Effect>, Rejected> {
    let mut effects = Vec::new();
    if let Some(step) = event_step(&event)
        && (step >= state.steps.len() || step >= def.steps.len())
    {
        return Err(Rejected::NoSuchStep(step));
    }
    match event {
        Event::Start => {
            expect_run(state, &[RunStatus::Pending], RunStatus::Pending.as_str())?;
            advance(def, state, cx, conditions, &mut effects);
        }
        Event::AttemptCompleted { step, .. } if undo_out(state, step) => {
            compensation::completed(def, state, step, &mut effects);
        }
        Event::AttemptFailed {
            step,
            reason,
            message,
            retryable,
        } if undo_out(state, step) => {
            compensation::failed(
                def,
                state,
                step,
                (reason, message, retryable),
                cx,
                &mut effects,
            );
        }
        Event::AttemptReleased { step } if undo_out(state, step) => {
            compensation::released(state, step, &mut effects);
        }
        Event::AttemptCompleted { step, output } if drained_out(state, step) => {
            compensation::drained_completed(def, state, step, output, &mut effects);
        }
        Event::AttemptFailed { step, .. } | Event::AttemptReleased { step }
            if drained_out(state, step) =>
        {
            compensation::drained_ended(def, state, step, &mut effects);
        }
        Event::TimerFired { step } if state.status == RunStatus::Compensating => {
            compensation::timer(state, step, cx, &mut effects);
        }
        Event::AttemptCompleted { step, output } => {
            expect_active(state)?;
            expect_step(def, state, step, StepStatus::Running)?;
            complete_step(state, step, output, &mut effects);
            advance(def, state, cx, conditions, &mut effects);
        }
        Event::AttemptFailed {
            step,
            reason,
            message,
            retryable,
        } => {
            expect_active(state)?;
            expect_step(def, state, step, StepStatus::Running)?;
            let policy = &def.steps[step].retry;
            let s = &mut state.steps[step];
            let used = s.n_attempts.saturating_sub(s.attempt_base);
            s.error = Some(message.clone());
            s.reason = Some(reason);
            if retryable && used < policy.max_attempts {
                let delay_ms = policy.delay_ms(used.max(1), cx.random);
                let due_at = cx.now_ms + delay_ms as i64;
                s.status = StepStatus::Retrying;
                s.due_at = Some(due_at);
                effects.push(Effect::StepRetrying {
                    step,
                    due_at,
                    delay_ms,
                });
            } else {
                s.status = StepStatus::Failed;
                s.due_at = None;
                effects.push(Effect::StepFailed { step, reason });
                fail_run(def, state, step, reason, message, &mut effects);
            }
        }
        Event::AttemptReleased { step } => {
            expect_active(state)?;
            expect_step(def, state, step, StepStatus::Running)?;
            let s = &mut state.steps[step];
            // The released attempt keeps its number but not its cost.
            s.attempt_base += 1;
            s.status = StepStatus::Ready;
            s.due_at = None;
            effects.push(Effect::StepReady { step });
        }
        Event::TimerFired { step } => {
            expect_active(state)?;
            let s = &mut state.steps[step];
            let due = s.due_at.is_some_and(|due| due <= cx.now_ms);
            match s.status {
                StepStatus::Retrying if due => {
                    s.status = StepStatus::Ready;
                    s.due_at = None;
                    effects.push(Effect::StepReady { step });
                }
                StepStatus::Waiting if due => {
                    s.due_at = None;
                    complete_step(state, step, Value::Null, &mut effects);
                    advance(def, state, cx, conditions, &mut effects);
                }
                // A timer that fired twice (two engines, or a restart) is a no-op.
                _ => {}
            }
        }
        Event::Approve { step } => {
            expect_active(state)?;
            expect_approval(def, step)?;
            expect_step(def, state, step, StepStatus::Waiting)?;
            complete_step(
                state,
                step,
                serde_json::json!({"approved": true}),
                &mut effects,
            );
            advance(def, state, cx, conditions, &mut effects);
        }
        Event::Reject { step, message } => {
            expect_active(state)?;
            expect_approval(def, step)?;
            expect_step(def, state, step, StepStatus::Waiting)?;
            let s = &mut state.steps[step];
            s.status = StepStatus::Failed;
            s.reason = Some(Reason::Rejected);
            s.error = Some(message.clone());
            effects.push(Effect::StepFailed {
                step,
                reason: Reason::Rejected,
            });
            fail_run(def, state, step, Reason::Rejected, message, &mut effects);
        }
        Event::Cancel if state.status == RunStatus::Compensating => {
            compensation::cancel(def, state, &mut effects);
        }
        Event::Cancel => {
            expect_active(state)?;
            let compensates = def.compensate_on_cancel && compensation::will_compensate(def, state);
            for step in 0..state.steps.len() {
                if compensates && compensation::drains(def, state, step) {
                    continue;
                }
                let s = &mut state.steps[step];
                if !s.status.is_terminal() {
                    s.status = StepStatus::Cancelled;
                    s.reason = Some(Reason::Cancelled);
                    s.due_at = None;
                    effects.push(Effect::StepCancelled {
                        step,
                        reason: Reason::Cancelled,
                    });
                }
            }
            state.reason = Some(Reason::Cancelled);
            if compensates && compensation::begin(def, state, Reason::Cancelled, &mut effects) {
                return Ok(effects);
            }
            state.status = RunStatus::Cancelled;
            effects.push(Effect::RunCancelled);
        }
        Event::Retry if compensation::is_compensation_failed(state) => {
            compensation::retry(def, state, &mut effects);
        }
        Event::Retry if state.steps.iter().any(|s| s.undo.is_some()) => {
            return Err(Rejected::Compensated(state.status));
        }
        Event::SkipCompensation { step } => {
            if state.steps[step].undo != Some(UndoStatus::Failed) {
                return Err(Rejected::NoFailedUndo(def.steps[step].name.clone()));
            }
            compensation::skip(def, state, step, &mut effects);
        }
        Event::Retry => {
            expect_run(
                state,
                &[RunStatus::Failed, RunStatus::Cancelled],
                "failed or cancelled",
            )?;
            for s in state.steps.iter_mut() {
                if matches!(s.status, StepStatus::Failed | StepStatus::Cancelled) {
                    s.status = StepStatus::Pending;
                    s.reason = None;
                    s.error = None;
                    s.due_at = None;
                    s.attempt_base = s.n_attempts;
                }
            }
            state.status = RunStatus::Running;
            state.reason = None;
            state.error = None;
            effects.push(Effect::RunRetried);
            advance(def, state, cx, conditions, &mut effects);
        }
    }
    Ok(effects)
}

fn event_step(event: &Event) -> Option<usize> {
    match *event {
        Event::AttemptCompleted { step, .. }
        | Event::AttemptFailed { step, .. }
        | Event::AttemptReleased { step, .. }
        | Event::TimerFired { step }
        | Event::Approve { step }
        | Event::Reject { step, .. }
        | Event::SkipCompensation { step } => Some(step),
        Event::Start | Event::Cancel | Event::Retry => None,
    }
}

/// Whether the attempt out for `step` is its undo, in a compensating run.
fn undo_out(state: &RunState, step: usize) -> bool {
    state.status == RunStatus::Compensating && state.steps[step].undoing()
}

/// Whether the attempt out for `step` is a forward attempt drained by a
/// compensating run.
fn drained_out(state: &RunState, step: usize) -> bool {
    state.status == RunStatus::Compensating
        && state.steps[step].status == StepStatus::Running
        && state.steps[step].undo.is_none()
}

fn expect_run(
    state: &RunState,
    allowed: &[RunStatus],
    expected: &'static str,
) -> Result<(), Rejected> {
    if allowed.contains(&state.status) {
        Ok(())
    } else {
        Err(Rejected::RunStatus(state.status, expected))
    }
}

fn expect_active(state: &RunState) -> Result<(), Rejected> {
    expect_run(
        state,
        &[RunStatus::Pending, RunStatus::Running],
        "pending or running",
    )
}

fn expect_step(
    def: &Definition,
    state: &RunState,
    step: usize,
    status: StepStatus,
) -> Result<(), Rejected> {
    let actual = state.steps[step].status;
    if actual == status {
        Ok(())
    } else {
        Err(Rejected::StepStatus {
            step: def.steps[step].name.clone(),
            status: actual,
            expected: status.as_str(),
        })
    }
}

fn expect_approval(def: &Definition, step: usize) -> Result<(), Rejected> {
    match def.steps[step].kind {
        StepKind::Approval => Ok(()),
        _ => Err(Rejected::NotApproval(def.steps[step].name.clone())),
    }
}

fn complete_step(state: &mut RunState, step: usize, output: Value, effects: &mut Vec<Effect>) {
    let s = &mut state.steps[step];
    s.status = StepStatus::Completed;
    s.reason = None;
    s.error = None;
    s.output = Some(output);
    effects.push(Effect::StepCompleted { step });
    mark_started(state, effects);
}

fn mark_started(state: &mut RunState, effects: &mut Vec<Effect>) {
    if state.status == RunStatus::Pending {
        state.status = RunStatus::Running;
        effects.push(Effect::RunStarted);
    }
}

/// The one point where the machine decides a run has failed: the steps not
/// finished are cancelled, then the run either starts compensating (some
/// completed step has a `compensate` handler) or ends `failed`.
fn fail_run(
    def: &Definition,
    state: &mut RunState,
    failed_step: usize,
    reason: Reason,
    message: String,
    effects: &mut Vec<Effect>,
) {
    let compensates = compensation::will_compensate(def, state);
    for step in 0..state.steps.len() {
        if compensates && compensation::drains(def, state, step) {
            continue;
        }
        let s = &mut state.steps[step];
        if step != failed_step && !s.status.is_terminal() {
            s.status = StepStatus::Cancelled;
            s.reason = Some(Reason::UpstreamFailed);
            s.due_at = None;
            effects.push(Effect::StepCancelled {
                step,
                reason: Reason::UpstreamFailed,
            });
        }
    }
    state.reason = Some(reason);
    state.error = Some(message);
    if compensation::begin(def, state, reason, effects) {
        return;
    }
    state.status = RunStatus::Failed;
    effects.push(Effect::RunFailed { reason });
}

/// Moves every pending step whose dependencies are satisfied forward, in
/// topological order so that a skipped step unblocks its dependants at once,
/// then completes the run when every step is done.
fn advance(
    def: &Definition,
    state: &mut RunState,
    cx: Context,
    conditions: &dyn condition::Evaluate,
    effects: &mut Vec<Effect>,
) {
    if state.status.is_terminal() {
        return;
    }
    for &step in &def.topo_order {
        if state.steps[step].status != StepStatus::Pending {
            continue;
        }
        let step_def = &def.steps[step];
        if !step_def
            .deps
            .iter()
            .all(|&dep| state.steps[dep].status.satisfies_dependants())
        {
            continue;
        }
        if let Some(expression) = &step_def.when {
            let outputs = completed_outputs(def, state);
            let steps = dependency_outputs_all(&outputs);
            match conditions.evaluate(expression, &state.input, &steps) {
                Ok(true) => {}
                Ok(false) => {
                    state.steps[step].status = StepStatus::Skipped;
                    effects.push(Effect::StepSkipped { step });
                    continue;
                }
                Err(condition::EvalError(message)) => {
                    let s = &mut state.steps[step];
                    s.status = StepStatus::Failed;
                    s.reason = Some(Reason::ConditionError);
                    let message = format!("`when` could not be evaluated: {message}");
                    s.error = Some(message.clone());
                    effects.push(Effect::StepFailed {
                        step,
                        reason: Reason::ConditionError,
                    });
                    fail_run(def, state, step, Reason::ConditionError, message, effects);
                    return;
                }
            }
        }
        let s = &mut state.steps[step];
        match step_def.kind {
            StepKind::Task { .. } => {
                s.status = StepStatus::Ready;
                effects.push(Effect::StepReady { step });
            }
            StepKind::Sleep { duration_ms } => {
                let until = cx.now_ms + duration_ms as i64;
                s.status = StepStatus::Waiting;
                s.due_at = Some(until);
                effects.push(Effect::StepWaiting {
                    step,
                    until: Some(until),
                });
                mark_started(state, effects);
            }
            StepKind::Approval => {
                s.status = StepStatus::Waiting;
                effects.push(Effect::StepWaiting { step, until: None });
                mark_started(state, effects);
            }
        }
    }
    if state.steps.iter().all(|s| s.status.satisfies_dependants()) {
        let mut output = Map::new();
        for leaf in def.leaves() {
            output.insert(
                def.steps[leaf].name.clone(),
                state.steps[leaf].output.clone().unwrap_or(Value::Null),
            );
        }
        state.output = Some(Value::Object(output));
        mark_started(state, effects);
        state.status = RunStatus::Completed;
        effects.push(Effect::RunCompleted);
    }
}

fn completed_outputs(def: &Definition, state: &RunState) -> BTreeMap<String, Value> {
    def.steps
        .iter()
        .zip(&state.steps)
        .filter(|(_, s)| s.status == StepStatus::Completed)
        .map(|(d, s)| (d.name.clone(), s.output.clone().unwrap_or(Value::Null)))
        .collect()
}

fn dependency_outputs_all(outputs: &BTreeMap<String, Value>) -> Value {
    Value::Object(
        outputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// The input a task step receives: `{"input": ..., "steps": {dependency: output}}`.
pub fn task_input(
    def: &Definition,
    step: usize,
    run_input: &Value,
    outputs: &BTreeMap<String, Value>,
) -> Value {
    serde_json::json!({
        "input": run_input,
        "steps": dependency_outputs(def, step, outputs),
    })
}
