//! The run state machine: `apply(definition, state, event, context) -> effects`.
//!
//! It is pure: it mutates the in-memory `RunState` it is given and returns the
//! effects that the store must persist (a row update and a history event
//! each). The store loads the state under the run's lock, applies one event and
//! writes the effects in the same transaction, so a crash never leaves a
//! half-applied transition.
//!
//! Rules that are easy to miss:
//! - A `skipped` step (its `when` was false) satisfies its dependants; its
//!   output is `null`.
//! - A step that fails for good fails the run at once; every step not yet
//!   finished is cancelled with reason `upstream_failed`, and running attempts
//!   learn it from their next heartbeat.
//! - `Retry` of a failed or cancelled run re-queues the failed and cancelled
//!   steps with a fresh attempt budget; completed steps keep their outputs.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::{
    Reason, RunStatus, StepStatus, condition,
    definition::{Definition, StepKind, dependency_outputs},
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
    /// When a `retrying` or sleeping `waiting` step is due, in epoch ms.
    pub due_at: Option<i64>,
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
        }
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
    /// A worker claimed a ready step. The store performs this transition in
    /// its claim query (it is the hot path and takes no run lock); it is here so
    /// that traces and tests show the whole life of a step.
    Claimed {
        step: usize,
    },
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
    /// A worker shutting down handed a running attempt back (`release`).
    /// `releases` is how many earlier attempts of the step were released;
    /// under [`MAX_RELEASES`] the step is ready again at once and the attempt
    /// spends none of its budget, past it the release is an
    /// `AttemptFailed` with reason `worker_shutdown`.
    AttemptReleased {
        step: usize,
        releases: u32,
        message: String,
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
}

/// Most releases one step may have (over its whole life) before a release
/// counts as a failed attempt, so a crash-looping worker cannot cycle a step
/// for ever.
pub const MAX_RELEASES: u32 = 3;

/// What the store must persist. Each effect is also one history event.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    RunStarted,
    StepReady {
        step: usize,
    },
    StepClaimed {
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
}

impl Effect {
    /// The history event type this effect is recorded as.
    pub fn event_type(&self) -> &'static str {
        match self {
            Effect::RunStarted => "run.started",
            Effect::StepReady { .. } => "step.ready",
            Effect::StepClaimed { .. } => "step.running",
            Effect::StepSkipped { .. } => "step.skipped",
            Effect::StepWaiting { .. } => "step.waiting",
            Effect::StepCompleted { .. } => "step.completed",
            Effect::StepRetrying { .. } => "step.retrying",
            Effect::StepFailed { .. } => "step.failed",
            Effect::StepCancelled { .. } => "step.cancelled",
            Effect::RunCompleted => "run.completed",
            Effect::RunFailed { .. } => "run.failed",
            Effect::RunCancelled => "run.cancelled",
            Effect::RunRetried => "run.retried",
        }
    }

    /// The step this effect changes, if any.
    pub fn step(&self) -> Option<usize> {
        match *self {
            Effect::StepReady { step }
            | Effect::StepClaimed { step }
            | Effect::StepSkipped { step }
            | Effect::StepWaiting { step, .. }
            | Effect::StepCompleted { step }
            | Effect::StepRetrying { step, .. }
            | Effect::StepFailed { step, .. }
            | Effect::StepCancelled { step, .. } => Some(step),
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
            | Effect::RunFailed { reason } => {
                map.insert("reason".into(), reason.as_str().into());
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
            expect_run(state, &[RunStatus::Pending], "pending")?;
            advance(def, state, cx, conditions, &mut effects);
        }
        Event::Claimed { step } => {
            expect_active(state)?;
            expect_step(def, state, step, StepStatus::Ready, "ready")?;
            let s = &mut state.steps[step];
            s.status = StepStatus::Running;
            s.n_attempts += 1;
            effects.push(Effect::StepClaimed { step });
            mark_started(state, &mut effects);
        }
        Event::AttemptCompleted { step, output } => {
            expect_active(state)?;
            expect_step(def, state, step, StepStatus::Running, "running")?;
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
            expect_step(def, state, step, StepStatus::Running, "running")?;
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
                fail_run(state, step, reason, message, &mut effects);
            }
        }
        Event::AttemptReleased {
            step,
            releases,
            message,
        } => {
            expect_active(state)?;
            expect_step(def, state, step, StepStatus::Running, "running")?;
            if releases < MAX_RELEASES {
                let s = &mut state.steps[step];
                // The released attempt keeps its number but not its cost.
                s.attempt_base += 1;
                s.status = StepStatus::Ready;
                s.due_at = None;
                effects.push(Effect::StepReady { step });
            } else {
                let message = format!(
                    "released {releases} times already (at most {MAX_RELEASES}), so this release counts as a failed attempt: {message}"
                );
                return apply_with(
                    def,
                    state,
                    Event::AttemptFailed {
                        step,
                        reason: Reason::WorkerShutdown,
                        message,
                        retryable: true,
                    },
                    cx,
                    conditions,
                );
            }
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
            expect_step(def, state, step, StepStatus::Waiting, "waiting")?;
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
            expect_step(def, state, step, StepStatus::Waiting, "waiting")?;
            let s = &mut state.steps[step];
            s.status = StepStatus::Failed;
            s.reason = Some(Reason::Rejected);
            s.error = Some(message.clone());
            effects.push(Effect::StepFailed {
                step,
                reason: Reason::Rejected,
            });
            fail_run(state, step, Reason::Rejected, message, &mut effects);
        }
        Event::Cancel => {
            expect_active(state)?;
            for (step, s) in state.steps.iter_mut().enumerate() {
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
            state.status = RunStatus::Cancelled;
            state.reason = Some(Reason::Cancelled);
            effects.push(Effect::RunCancelled);
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
        Event::Claimed { step }
        | Event::AttemptCompleted { step, .. }
        | Event::AttemptFailed { step, .. }
        | Event::AttemptReleased { step, .. }
        | Event::TimerFired { step }
        | Event::Approve { step }
        | Event::Reject { step, .. } => Some(step),
        Event::Start | Event::Cancel | Event::Retry => None,
    }
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
    expected: &'static str,
) -> Result<(), Rejected> {
    let actual = state.steps[step].status;
    if actual == status {
        Ok(())
    } else {
        Err(Rejected::StepStatus {
            step: def.steps[step].name.clone(),
            status: actual,
            expected,
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

fn fail_run(
    state: &mut RunState,
    failed_step: usize,
    reason: Reason,
    message: String,
    effects: &mut Vec<Effect>,
) {
    for (step, s) in state.steps.iter_mut().enumerate() {
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
    state.status = RunStatus::Failed;
    state.reason = Some(reason);
    state.error = Some(message);
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
                    fail_run(state, step, Reason::ConditionError, message, effects);
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

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use std::fmt::Write;

    /// Applies events in order and renders each with its effects and the step
    /// statuses after it, one line per event.
    fn trace(manifest: &str, input: Value, events: &[(i64, Event)], expected: Expect) {
        let def = Definition::parse(manifest).unwrap();
        let mut state = RunState::new(&def, input);
        let mut out = String::new();
        for (now_ms, event) in events {
            let label = format!("{event:?}");
            let result = apply(
                &def,
                &mut state,
                event.clone(),
                Context {
                    now_ms: *now_ms,
                    random: 0.5,
                },
            );
            let effects = match result {
                Ok(effects) => effects
                    .iter()
                    .map(|e| match e.step() {
                        Some(i) => format!("{}({})", e.event_type(), def.steps[i].name),
                        None => e.event_type().to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(err) => format!("REJECTED: {err}"),
            };
            let steps: Vec<String> = def
                .steps
                .iter()
                .zip(&state.steps)
                .map(|(d, s)| format!("{}={}", d.name, s.status))
                .collect();
            writeln!(
                out,
                "t={now_ms} {label}\n  -> {effects}\n  run={} {}",
                state.status,
                steps.join(" ")
            )
            .unwrap();
        }
        expected.assert_eq(&out);
    }

    const LINEAR: &str = "name: etl\nsteps:\n  - {name: extract, handler: h, retry: {max_attempts: 2, initial: 1s, jitter: false}}\n  - {name: load, handler: h, depends_on: [extract]}\n";

    #[test]
    fn linear_with_one_retry() {
        trace(
            LINEAR,
            serde_json::json!({}),
            &[
                (0, Event::Start),
                (10, Event::Claimed { step: 0 }),
                (
                    20,
                    Event::AttemptFailed {
                        step: 0,
                        reason: Reason::HandlerError,
                        message: "boom".into(),
                        retryable: true,
                    },
                ),
                (500, Event::TimerFired { step: 0 }),
                (1020, Event::TimerFired { step: 0 }),
                (1030, Event::Claimed { step: 0 }),
                (
                    1040,
                    Event::AttemptCompleted {
                        step: 0,
                        output: serde_json::json!(1),
                    },
                ),
                (1050, Event::Claimed { step: 1 }),
                (
                    1060,
                    Event::AttemptCompleted {
                        step: 1,
                        output: serde_json::json!(2),
                    },
                ),
                (1070, Event::Cancel),
            ],
            expect![[r#"
                t=0 Start
                  -> step.ready(extract)
                  run=pending extract=ready load=pending
                t=10 Claimed { step: 0 }
                  -> step.running(extract) run.started
                  run=running extract=running load=pending
                t=20 AttemptFailed { step: 0, reason: HandlerError, message: "boom", retryable: true }
                  -> step.retrying(extract)
                  run=running extract=retrying load=pending
                t=500 TimerFired { step: 0 }
                  -> 
                  run=running extract=retrying load=pending
                t=1020 TimerFired { step: 0 }
                  -> step.ready(extract)
                  run=running extract=ready load=pending
                t=1030 Claimed { step: 0 }
                  -> step.running(extract)
                  run=running extract=running load=pending
                t=1040 AttemptCompleted { step: 0, output: Number(1) }
                  -> step.completed(extract) step.ready(load)
                  run=running extract=completed load=ready
                t=1050 Claimed { step: 1 }
                  -> step.running(load)
                  run=running extract=completed load=running
                t=1060 AttemptCompleted { step: 1, output: Number(2) }
                  -> step.completed(load) run.completed
                  run=completed extract=completed load=completed
                t=1070 Cancel
                  -> REJECTED: run is completed, not pending or running
                  run=completed extract=completed load=completed
            "#]],
        );
    }

    #[test]
    fn retries_exhausted_fail_the_run_and_retry_resumes_it() {
        trace(
            LINEAR,
            serde_json::json!({}),
            &[
                (0, Event::Start),
                (1, Event::Claimed { step: 0 }),
                (
                    2,
                    Event::AttemptFailed {
                        step: 0,
                        reason: Reason::Timeout,
                        message: "slow".into(),
                        retryable: true,
                    },
                ),
                (1002, Event::TimerFired { step: 0 }),
                (1003, Event::Claimed { step: 0 }),
                (
                    1004,
                    Event::AttemptFailed {
                        step: 0,
                        reason: Reason::LeaseExpired,
                        message: "gone".into(),
                        retryable: true,
                    },
                ),
                (1005, Event::Retry),
                (1006, Event::Claimed { step: 0 }),
                (
                    1007,
                    Event::AttemptCompleted {
                        step: 0,
                        output: Value::Null,
                    },
                ),
            ],
            expect![[r#"
                t=0 Start
                  -> step.ready(extract)
                  run=pending extract=ready load=pending
                t=1 Claimed { step: 0 }
                  -> step.running(extract) run.started
                  run=running extract=running load=pending
                t=2 AttemptFailed { step: 0, reason: Timeout, message: "slow", retryable: true }
                  -> step.retrying(extract)
                  run=running extract=retrying load=pending
                t=1002 TimerFired { step: 0 }
                  -> step.ready(extract)
                  run=running extract=ready load=pending
                t=1003 Claimed { step: 0 }
                  -> step.running(extract)
                  run=running extract=running load=pending
                t=1004 AttemptFailed { step: 0, reason: LeaseExpired, message: "gone", retryable: true }
                  -> step.failed(extract) step.cancelled(load) run.failed
                  run=failed extract=failed load=cancelled
                t=1005 Retry
                  -> run.retried step.ready(extract)
                  run=running extract=ready load=pending
                t=1006 Claimed { step: 0 }
                  -> step.running(extract)
                  run=running extract=running load=pending
                t=1007 AttemptCompleted { step: 0, output: Null }
                  -> step.completed(extract) step.ready(load)
                  run=running extract=completed load=ready
            "#]],
        );
    }

    const FAN: &str = r#"
name: fan
steps:
  - {name: split, handler: h}
  - {name: a, handler: h, depends_on: [split]}
  - {name: b, handler: h, depends_on: [split], when: "input.with_b"}
  - {name: join, handler: h, depends_on: [a, b]}
"#;

    #[test]
    fn fan_out_fan_in_with_a_skipped_branch() {
        trace(
            FAN,
            serde_json::json!({"with_b": false}),
            &[
                (0, Event::Start),
                (1, Event::Claimed { step: 0 }),
                (
                    2,
                    Event::AttemptCompleted {
                        step: 0,
                        output: Value::Null,
                    },
                ),
                (3, Event::Claimed { step: 1 }),
                (
                    4,
                    Event::AttemptCompleted {
                        step: 1,
                        output: Value::Null,
                    },
                ),
                (
                    5,
                    Event::AttemptCompleted {
                        step: 1,
                        output: Value::Null,
                    },
                ),
                (6, Event::Claimed { step: 3 }),
                (
                    7,
                    Event::AttemptCompleted {
                        step: 3,
                        output: serde_json::json!("done"),
                    },
                ),
            ],
            expect![[r#"
                t=0 Start
                  -> step.ready(split)
                  run=pending split=ready a=pending b=pending join=pending
                t=1 Claimed { step: 0 }
                  -> step.running(split) run.started
                  run=running split=running a=pending b=pending join=pending
                t=2 AttemptCompleted { step: 0, output: Null }
                  -> step.completed(split) step.ready(a) step.skipped(b)
                  run=running split=completed a=ready b=skipped join=pending
                t=3 Claimed { step: 1 }
                  -> step.running(a)
                  run=running split=completed a=running b=skipped join=pending
                t=4 AttemptCompleted { step: 1, output: Null }
                  -> step.completed(a) step.ready(join)
                  run=running split=completed a=completed b=skipped join=ready
                t=5 AttemptCompleted { step: 1, output: Null }
                  -> REJECTED: step `a` is completed, not running
                  run=running split=completed a=completed b=skipped join=ready
                t=6 Claimed { step: 3 }
                  -> step.running(join)
                  run=running split=completed a=completed b=skipped join=running
                t=7 AttemptCompleted { step: 3, output: String("done") }
                  -> step.completed(join) run.completed
                  run=completed split=completed a=completed b=skipped join=completed
            "#]],
        );
    }

    #[test]
    fn non_retryable_failure_and_cancel() {
        trace(
            FAN,
            serde_json::json!({"with_b": true}),
            &[
                (0, Event::Start),
                (1, Event::Claimed { step: 0 }),
                (
                    2,
                    Event::AttemptCompleted {
                        step: 0,
                        output: Value::Null,
                    },
                ),
                (3, Event::Claimed { step: 1 }),
                (4, Event::Claimed { step: 2 }),
                (
                    5,
                    Event::AttemptFailed {
                        step: 2,
                        reason: Reason::InvalidOutput,
                        message: "bad".into(),
                        retryable: false,
                    },
                ),
            ],
            expect![[r#"
                t=0 Start
                  -> step.ready(split)
                  run=pending split=ready a=pending b=pending join=pending
                t=1 Claimed { step: 0 }
                  -> step.running(split) run.started
                  run=running split=running a=pending b=pending join=pending
                t=2 AttemptCompleted { step: 0, output: Null }
                  -> step.completed(split) step.ready(a) step.ready(b)
                  run=running split=completed a=ready b=ready join=pending
                t=3 Claimed { step: 1 }
                  -> step.running(a)
                  run=running split=completed a=running b=ready join=pending
                t=4 Claimed { step: 2 }
                  -> step.running(b)
                  run=running split=completed a=running b=running join=pending
                t=5 AttemptFailed { step: 2, reason: InvalidOutput, message: "bad", retryable: false }
                  -> step.failed(b) step.cancelled(a) step.cancelled(join) run.failed
                  run=failed split=completed a=cancelled b=failed join=cancelled
            "#]],
        );
        trace(
            FAN,
            serde_json::json!({"with_b": true}),
            &[(0, Event::Start), (1, Event::Cancel), (2, Event::Retry)],
            expect![[r#"
                t=0 Start
                  -> step.ready(split)
                  run=pending split=ready a=pending b=pending join=pending
                t=1 Cancel
                  -> step.cancelled(split) step.cancelled(a) step.cancelled(b) step.cancelled(join) run.cancelled
                  run=cancelled split=cancelled a=cancelled b=cancelled join=cancelled
                t=2 Retry
                  -> run.retried step.ready(split)
                  run=running split=ready a=pending b=pending join=pending
            "#]],
        );
    }

    #[test]
    fn sleep_and_approval() {
        let manifest = "name: s\nsteps:\n  - {name: nap, kind: sleep, duration: 1s}\n  - {name: ok, kind: approval, depends_on: [nap]}\n  - {name: go, handler: h, depends_on: [ok]}\n";
        trace(
            manifest,
            Value::Null,
            &[
                (0, Event::Start),
                (999, Event::TimerFired { step: 0 }),
                (1000, Event::TimerFired { step: 0 }),
                (1001, Event::Approve { step: 2 }),
                (1002, Event::Approve { step: 1 }),
            ],
            expect![[r#"
                t=0 Start
                  -> step.waiting(nap) run.started
                  run=running nap=waiting ok=pending go=pending
                t=999 TimerFired { step: 0 }
                  -> 
                  run=running nap=waiting ok=pending go=pending
                t=1000 TimerFired { step: 0 }
                  -> step.completed(nap) step.waiting(ok)
                  run=running nap=completed ok=waiting go=pending
                t=1001 Approve { step: 2 }
                  -> REJECTED: step `go` is not an approval step
                  run=running nap=completed ok=waiting go=pending
                t=1002 Approve { step: 1 }
                  -> step.completed(ok) step.ready(go)
                  run=running nap=completed ok=completed go=ready
            "#]],
        );
    }

    #[test]
    fn releases_spend_no_attempt_until_the_cap() {
        let manifest = "name: r\nsteps:\n  - {name: work, handler: h, retry: {max_attempts: 2, initial: 1s, jitter: false}}\n";
        let released = |releases| Event::AttemptReleased {
            step: 0,
            releases,
            message: "shutting down".into(),
        };
        trace(
            manifest,
            Value::Null,
            &[
                (0, Event::Start),
                (1, Event::Claimed { step: 0 }),
                (2, released(0)),
                (3, Event::Claimed { step: 0 }),
                (4, released(1)),
                (5, Event::Claimed { step: 0 }),
                (6, released(2)),
                (7, released(3)),
                (8, Event::Claimed { step: 0 }),
                (9, released(3)),
                (1009, Event::TimerFired { step: 0 }),
                (1010, Event::Claimed { step: 0 }),
                (1011, released(3)),
            ],
            expect![[r#"
                t=0 Start
                  -> step.ready(work)
                  run=pending work=ready
                t=1 Claimed { step: 0 }
                  -> step.running(work) run.started
                  run=running work=running
                t=2 AttemptReleased { step: 0, releases: 0, message: "shutting down" }
                  -> step.ready(work)
                  run=running work=ready
                t=3 Claimed { step: 0 }
                  -> step.running(work)
                  run=running work=running
                t=4 AttemptReleased { step: 0, releases: 1, message: "shutting down" }
                  -> step.ready(work)
                  run=running work=ready
                t=5 Claimed { step: 0 }
                  -> step.running(work)
                  run=running work=running
                t=6 AttemptReleased { step: 0, releases: 2, message: "shutting down" }
                  -> step.ready(work)
                  run=running work=ready
                t=7 AttemptReleased { step: 0, releases: 3, message: "shutting down" }
                  -> REJECTED: step `work` is ready, not running
                  run=running work=ready
                t=8 Claimed { step: 0 }
                  -> step.running(work)
                  run=running work=running
                t=9 AttemptReleased { step: 0, releases: 3, message: "shutting down" }
                  -> step.retrying(work)
                  run=running work=retrying
                t=1009 TimerFired { step: 0 }
                  -> step.ready(work)
                  run=running work=ready
                t=1010 Claimed { step: 0 }
                  -> step.running(work)
                  run=running work=running
                t=1011 AttemptReleased { step: 0, releases: 3, message: "shutting down" }
                  -> step.failed(work) run.failed
                  run=failed work=failed
            "#]],
        );
        // Three releases cost nothing: five claims, two of them counted.
        let def = Definition::parse(manifest).unwrap();
        let mut state = RunState::new(&def, Value::Null);
        let cx = Context {
            now_ms: 0,
            random: 0.0,
        };
        apply(&def, &mut state, Event::Start, cx).unwrap();
        for releases in 0..3 {
            apply(&def, &mut state, Event::Claimed { step: 0 }, cx).unwrap();
            apply(&def, &mut state, released(releases), cx).unwrap();
        }
        assert_eq!(
            (state.steps[0].n_attempts, state.steps[0].attempt_base),
            (3, 3)
        );
        apply(&def, &mut state, Event::Claimed { step: 0 }, cx).unwrap();
        apply(&def, &mut state, released(3), cx).unwrap();
        assert_eq!(state.steps[0].reason, Some(Reason::WorkerShutdown));
        assert_eq!(state.steps[0].status, StepStatus::Retrying);
    }

    #[test]
    fn run_output_is_the_leaves_outputs() {
        let def = Definition::parse(LINEAR).unwrap();
        let mut state = RunState::new(&def, Value::Null);
        let cx = Context {
            now_ms: 0,
            random: 0.0,
        };
        apply(&def, &mut state, Event::Start, cx).unwrap();
        for (step, output) in [
            (0, serde_json::json!(1)),
            (1, serde_json::json!({"rows": 3})),
        ] {
            apply(&def, &mut state, Event::Claimed { step }, cx).unwrap();
            apply(
                &def,
                &mut state,
                Event::AttemptCompleted { step, output },
                cx,
            )
            .unwrap();
        }
        assert_eq!(state.output, Some(serde_json::json!({"load": {"rows": 3}})));
    }
}
