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
//! - A step that fails for good marks only its dependants that cannot run
//!   any more (trigger rule `all_succeeded` or `none_failed`, transitively)
//!   `cancelled` with reason `upstream_failed`; other branches go on, and
//!   `all_done` / `any_failed` steps run (or are skipped when their rule
//!   cannot hold). The run is decided in one place, [`settle`], once nothing
//!   more can progress: `failed`, or `completed` when every failure was
//!   consumed by a completed `handles_failure` step.
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
    definition::{Definition, OnTimeout, RunIf, StepKind},
    event::EventKind,
    fan_out::{self, ChildEnd, Children, Expansion, Next},
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
    /// Time its `when` took, ms, when this transition evaluated it (not
    /// stored: the store writes it into the event of the decision).
    pub condition_ms: Option<u64>,
    /// A `for_each` step's children counts, once its list is expanded.
    pub children: Option<Children>,
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
            condition_ms: None,
            children: None,
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
    /// A child of a `for_each` step completed. `gathered` holds every
    /// child's output in index order (this one's included) when this is the
    /// last child to complete (the store reads them then, and only then);
    /// the parent's output is held to `max_output_bytes`.
    ChildCompleted {
        step: usize,
        index: u32,
        output: Value,
        gathered: Option<Vec<Value>>,
        max_output_bytes: u64,
    },
    /// A child's attempt failed; `attempts` is how many attempts the child
    /// has spent (its own budget, under the step's retry policy).
    ChildFailed {
        step: usize,
        index: u32,
        reason: Reason,
        message: String,
        retryable: bool,
        attempts: u32,
    },
    /// A child's attempt was handed back: the child is ready again.
    ChildReleased {
        step: usize,
        index: u32,
    },
    /// An operator marks the step's failed undo as skipped.
    SkipCompensation {
        step: usize,
    },
    /// The undo of completed child `index` of a `for_each` step being
    /// compensated completed.
    ChildUndoCompleted {
        step: usize,
        index: u32,
    },
    /// The undo attempt of child `index` failed; `attempts` is how many undo
    /// attempts the child has spent (under the step's `compensate_retry`).
    ChildUndoFailed {
        step: usize,
        index: u32,
        reason: Reason,
        message: String,
        retryable: bool,
        attempts: u32,
    },
    /// The undo attempt of child `index` was handed back: ready again.
    ChildUndoReleased {
        step: usize,
        index: u32,
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
    /// A `for_each` step expanded into one child per item; the first
    /// `ready` are ready. The store writes the children's rows.
    StepFannedOut {
        step: usize,
        items: Vec<Value>,
        ready: u32,
    },
    /// Children `from..from + count` of a `for_each` step are ready.
    ChildrenReady {
        step: usize,
        from: u32,
        count: u32,
    },
    ChildRetrying {
        step: usize,
        index: u32,
        due_at: i64,
        delay_ms: u64,
    },
    ChildCompleted {
        step: usize,
        index: u32,
        output: Value,
    },
    ChildFailed {
        step: usize,
        index: u32,
        reason: Reason,
        message: String,
    },
    /// A child handed back by its worker: ready again, its attempt unspent.
    ChildReleased {
        step: usize,
        index: u32,
    },
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
    /// A retried `for_each` step keeps its completed children: the `again`
    /// others are pending again, the first `ready` of them (by index) ready.
    ChildrenRetried {
        step: usize,
        again: u32,
        ready: u32,
    },
    /// The undo of child `index` is ready (again) to be claimed.
    ChildCompensating {
        step: usize,
        index: u32,
    },
    /// The undo of child `index` failed and is ready again after its backoff.
    ChildCompensationRetrying {
        step: usize,
        index: u32,
        due_at: i64,
        delay_ms: u64,
    },
    /// The undo of child `index` completed.
    ChildCompensated {
        step: usize,
        index: u32,
    },
    /// The undo of child `index` failed for good.
    ChildCompensationFailed {
        step: usize,
        index: u32,
        reason: Reason,
        message: String,
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
            Effect::StepFannedOut { .. } => EventKind::StepFannedOut,
            Effect::ChildrenReady { .. } | Effect::ChildReleased { .. } => EventKind::ChildReady,
            Effect::ChildRetrying { .. } => EventKind::ChildRetrying,
            Effect::ChildCompleted { .. } => EventKind::ChildCompleted,
            Effect::ChildFailed { .. } => EventKind::ChildFailed,
            Effect::CompensationStarted { .. } => EventKind::CompensationStarted,
            Effect::StepCompensating { .. } => EventKind::StepCompensating,
            Effect::StepCompensated { .. } => EventKind::StepCompensated,
            Effect::StepCompensationFailed { .. } => EventKind::StepCompensationFailed,
            Effect::CompensationCompleted { .. } => EventKind::CompensationCompleted,
            Effect::CompensationFailed { .. } => EventKind::CompensationFailed,
            Effect::CompensationSkipped { .. } => EventKind::CompensationSkipped,
            Effect::CompensationCancelled { .. } => EventKind::CompensationCancelled,
            Effect::ChildCompensating { .. } => EventKind::ChildCompensating,
            Effect::ChildrenRetried { .. } => EventKind::StepChildrenRetried,
            Effect::ChildCompensationRetrying { .. } => EventKind::ChildCompensationRetrying,
            Effect::ChildCompensated { .. } => EventKind::ChildCompensated,
            Effect::ChildCompensationFailed { .. } => EventKind::ChildCompensationFailed,
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
            | Effect::StepFannedOut { step, .. }
            | Effect::ChildrenReady { step, .. }
            | Effect::ChildRetrying { step, .. }
            | Effect::ChildCompleted { step, .. }
            | Effect::ChildFailed { step, .. }
            | Effect::ChildReleased { step, .. }
            | Effect::StepCompensating { step }
            | Effect::StepCompensated { step }
            | Effect::StepCompensationFailed { step, .. }
            | Effect::CompensationSkipped { step }
            | Effect::ChildCompensating { step, .. }
            | Effect::ChildrenRetried { step, .. }
            | Effect::ChildCompensationRetrying { step, .. }
            | Effect::ChildCompensated { step, .. }
            | Effect::ChildCompensationFailed { step, .. } => Some(step),
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
            Effect::ChildrenRetried { again, ready, .. } => {
                map.insert("count".into(), (*again).into());
                map.insert("ready".into(), (*ready).into());
            }
            Effect::StepFannedOut { items, ready, .. } => {
                map.insert("count".into(), items.len().into());
                map.insert("ready".into(), (*ready).into());
            }
            Effect::ChildrenReady { from, .. } => {
                map.insert("index".into(), (*from).into());
            }
            Effect::ChildReleased { index, .. }
            | Effect::ChildCompleted { index, .. }
            | Effect::ChildCompensating { index, .. }
            | Effect::ChildCompensated { index, .. } => {
                map.insert("index".into(), (*index).into());
            }
            Effect::ChildRetrying {
                index,
                due_at,
                delay_ms,
                ..
            }
            | Effect::ChildCompensationRetrying {
                index,
                due_at,
                delay_ms,
                ..
            } => {
                map.insert("index".into(), (*index).into());
                map.insert("due_at_ms".into(), (*due_at).into());
                map.insert("delay_ms".into(), (*delay_ms).into());
            }
            Effect::ChildFailed {
                index,
                reason,
                message,
                ..
            }
            | Effect::ChildCompensationFailed {
                index,
                reason,
                message,
                ..
            } => {
                map.insert("index".into(), (*index).into());
                map.insert("reason".into(), reason.as_str().into());
                map.insert("error".into(), message.clone().into());
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
    #[error("step `{0}` has no children")]
    NoChildren(String),
    #[error("child {1} of step `{0}` completed last but its outputs were not gathered")]
    NotGathered(String, u32),
    /// `Retry` of a run that was compensated (or whose compensation was
    /// cancelled): its undos ran, so its forward steps must not run again.
    #[error("run is {0} and its compensation began: it cannot be retried")]
    Compensated(RunStatus),
    #[error("step `{0}` has no failed compensation to skip")]
    NoFailedUndo(String),
}

impl Rejected {
    /// The stable error code the API answers with (409).
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            Rejected::Compensated(_) => crate::ErrorCode::RunCompensated,
            Rejected::NoFailedUndo(_) => crate::ErrorCode::NoFailedCompensation,
            _ => crate::ErrorCode::InvalidState,
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
    for s in &mut state.steps {
        s.condition_ms = None;
    }
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
                advance(def, state, cx, conditions, &mut effects);
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
                    match (&def.steps[step].kind, def.steps[step].on_timeout) {
                        (StepKind::Approval, OnTimeout::Reject) => {
                            let message = "no decision before the approval's timeout".to_owned();
                            fail_step(state, step, Reason::ApprovalTimeout, message, &mut effects);
                            advance(def, state, cx, conditions, &mut effects);
                        }
                        (StepKind::Approval, OnTimeout::Approve) => {
                            let output = serde_json::json!({"approved": true, "by": "timeout"});
                            complete_step(state, step, output, &mut effects);
                            advance(def, state, cx, conditions, &mut effects);
                        }
                        _ => {
                            complete_step(state, step, Value::Null, &mut effects);
                            advance(def, state, cx, conditions, &mut effects);
                        }
                    }
                }
                // A timer that fired twice (two engines, or a restart) is a no-op.
                _ => {}
            }
        }
        Event::Approve { step } => {
            expect_active(state)?;
            expect_approval(def, step)?;
            expect_step(def, state, step, StepStatus::Waiting)?;
            state.steps[step].due_at = None;
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
            advance(def, state, cx, conditions, &mut effects);
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
        Event::ChildCompleted {
            step,
            index,
            output,
            gathered,
            max_output_bytes,
        } => {
            expect_active(state)?;
            expect_step(def, state, step, StepStatus::Running)?;
            let mut counts = expect_children(def, state, step)?;
            effects.push(Effect::ChildCompleted {
                step,
                index,
                output,
            });
            let next = fan_out::child_ended(&mut counts, ChildEnd::Completed);
            state.steps[step].children = Some(counts);
            match next {
                Next::Dispatch { from, count } => {
                    if count > 0 {
                        effects.push(Effect::ChildrenReady { step, from, count });
                    }
                }
                Next::Gather => {
                    let Some(outputs) = gathered else {
                        return Err(Rejected::NotGathered(def.steps[step].name.clone(), index));
                    };
                    match fan_out::gather(outputs, max_output_bytes) {
                        Ok(output) => {
                            complete_step(state, step, output, &mut effects);
                            advance(def, state, cx, conditions, &mut effects);
                        }
                        Err((reason, message)) => {
                            fail_step(state, step, reason, message, &mut effects);
                            advance(def, state, cx, conditions, &mut effects);
                        }
                    }
                }
                Next::FailParent => {}
            }
        }
        Event::ChildFailed {
            step,
            index,
            reason,
            message,
            retryable,
            attempts,
        } => {
            expect_active(state)?;
            expect_step(def, state, step, StepStatus::Running)?;
            let mut counts = expect_children(def, state, step)?;
            let policy = &def.steps[step].retry;
            if retryable && attempts < policy.max_attempts {
                let delay_ms = policy.delay_ms(attempts.max(1), cx.random);
                let due_at = cx.now_ms + delay_ms as i64;
                fan_out::child_ended(&mut counts, ChildEnd::Retrying);
                effects.push(Effect::ChildRetrying {
                    step,
                    index,
                    due_at,
                    delay_ms,
                });
            } else {
                fan_out::child_ended(&mut counts, ChildEnd::Failed);
                state.steps[step].children = Some(counts);
                effects.push(Effect::ChildFailed {
                    step,
                    index,
                    reason,
                    message: message.clone(),
                });
                let name = fan_out::child_name(&def.steps[step].name, index);
                fail_step(
                    state,
                    step,
                    reason,
                    format!("{name}: {message}"),
                    &mut effects,
                );
                advance(def, state, cx, conditions, &mut effects);
            }
        }
        Event::ChildReleased { step, index } => {
            expect_active(state)?;
            expect_step(def, state, step, StepStatus::Running)?;
            expect_children(def, state, step)?;
            effects.push(Effect::ChildReleased { step, index });
        }
        Event::ChildUndoCompleted { step, index } => {
            expect_child_undo(def, state, step)?;
            compensation::child_completed(def, state, step, index, &mut effects);
        }
        Event::ChildUndoFailed {
            step,
            index,
            reason,
            message,
            retryable,
            attempts,
        } => {
            expect_child_undo(def, state, step)?;
            compensation::child_failed(
                def,
                state,
                (step, index, attempts),
                (reason, message, retryable),
                cx,
                &mut effects,
            );
        }
        Event::ChildUndoReleased { step, index } => {
            expect_child_undo(def, state, step)?;
            effects.push(Effect::ChildCompensating { step, index });
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
            let mut resumed = Vec::new();
            for (step, s) in state.steps.iter_mut().enumerate() {
                if matches!(s.status, StepStatus::Failed | StepStatus::Cancelled)
                    && let Some(fan_out) = &def.steps[step].fan_out
                    && let Some(counts) = s.children.filter(|c| c.completed > 0)
                {
                    // A `for_each` step that fanned out keeps its completed
                    // children (their outputs stand); only the others run
                    // again, through the window, each with a fresh budget.
                    let again = counts.total - counts.completed;
                    let ready = fan_out.max_parallel.map_or(again, |m| m.min(again));
                    s.children = Some(Children {
                        dispatched: counts.completed + ready,
                        in_flight: ready,
                        failed: 0,
                        ..counts
                    });
                    s.status = StepStatus::Running;
                    s.reason = None;
                    s.error = None;
                    s.due_at = None;
                    s.attempt_base = s.n_attempts;
                    resumed.push(Effect::ChildrenRetried { step, again, ready });
                    continue;
                }
                if matches!(s.status, StepStatus::Failed | StepStatus::Cancelled) {
                    s.status = StepStatus::Pending;
                    s.children = None;
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
            effects.extend(resumed);
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
        | Event::ChildCompleted { step, .. }
        | Event::ChildFailed { step, .. }
        | Event::ChildReleased { step, .. }
        | Event::SkipCompensation { step }
        | Event::ChildUndoCompleted { step, .. }
        | Event::ChildUndoFailed { step, .. }
        | Event::ChildUndoReleased { step, .. } => Some(step),
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

/// A child undo's end counts only while its `for_each` step's undo is out
/// (the step `compensating`, in a compensating run).
fn expect_child_undo(def: &Definition, state: &RunState, step: usize) -> Result<(), Rejected> {
    expect_run(state, &[RunStatus::Compensating], "compensating")?;
    expect_step(def, state, step, StepStatus::Compensating)?;
    expect_children(def, state, step).map(|_| ())
}

fn expect_children(def: &Definition, state: &RunState, step: usize) -> Result<Children, Rejected> {
    state.steps[step]
        .children
        .ok_or_else(|| Rejected::NoChildren(def.steps[step].name.clone()))
}

/// Fails a step for good. The caller then [`advance`]s: its dependants are
/// cancelled or run by their trigger rules, and the run settles once nothing
/// more can move.
fn fail_step(
    state: &mut RunState,
    step: usize,
    reason: Reason,
    message: String,
    effects: &mut Vec<Effect>,
) {
    let s = &mut state.steps[step];
    s.status = StepStatus::Failed;
    s.reason = Some(reason);
    s.error = Some(message.clone());
    s.due_at = None;
    effects.push(Effect::StepFailed { step, reason });
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

/// What a pending step's trigger rule makes of its dependencies' outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Some dependency is not done and the rule needs it.
    Wait,
    /// The rule holds: evaluate `when`, then run.
    Run,
    /// The rule can no longer hold and the step is not a failure's
    /// casualty (`any_failed` with no dependency failed).
    Skip,
    /// A dependency failed and the rule needs them all to succeed.
    UpstreamFailed,
}

/// Whether a step's outcome counts as a failure for its dependants' trigger
/// rules: `failed`, or `cancelled` because of a failure upstream.
pub fn is_failure(status: StepStatus, reason: Option<Reason>) -> bool {
    status == StepStatus::Failed
        || (status == StepStatus::Cancelled && reason == Some(Reason::UpstreamFailed))
}

fn trigger(def: &Definition, state: &RunState, step: usize) -> Trigger {
    let deps = &def.steps[step].deps;
    let outcome = |dep: usize| {
        let s = &state.steps[dep];
        (s.status.is_terminal(), is_failure(s.status, s.reason))
    };
    let all_done = deps.iter().all(|&d| outcome(d).0);
    let any_failed = deps.iter().any(|&d| outcome(d).1);
    match def.steps[step].run_if {
        RunIf::AllSucceeded | RunIf::NoneFailed => {
            if any_failed {
                Trigger::UpstreamFailed
            } else if deps
                .iter()
                .all(|&d| state.steps[d].status.satisfies_dependants())
            {
                Trigger::Run
            } else {
                Trigger::Wait
            }
        }
        RunIf::AllDone if all_done => Trigger::Run,
        RunIf::AnyFailed if all_done && any_failed => Trigger::Run,
        RunIf::AnyFailed if all_done => Trigger::Skip,
        RunIf::AllDone | RunIf::AnyFailed => Trigger::Wait,
    }
}

/// Moves every pending step whose trigger rule is decided forward, in
/// topological order so that a skipped or cancelled step unblocks (or
/// cancels) its dependants at once, then [`settle`]s the run.
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
        match trigger(def, state, step) {
            Trigger::Wait => continue,
            Trigger::UpstreamFailed => {
                let s = &mut state.steps[step];
                s.status = StepStatus::Cancelled;
                s.reason = Some(Reason::UpstreamFailed);
                s.due_at = None;
                effects.push(Effect::StepCancelled {
                    step,
                    reason: Reason::UpstreamFailed,
                });
                continue;
            }
            Trigger::Skip => {
                state.steps[step].status = StepStatus::Skipped;
                effects.push(Effect::StepSkipped { step });
                continue;
            }
            Trigger::Run => {}
        }
        let step_def = &def.steps[step];
        if let Some(expression) = &step_def.when {
            let vars = condition_vars(def, state, step);
            let evaluation = conditions.evaluate(expression, &vars);
            state.steps[step].condition_ms = evaluation.condition_ms;
            match evaluation.result {
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
                    s.error = Some(format!("`when` could not be evaluated: {message}"));
                    effects.push(Effect::StepFailed {
                        step,
                        reason: Reason::ConditionError,
                    });
                    continue;
                }
            }
        }
        if let (StepKind::Task { .. }, Some(spec)) = (&step_def.kind, &step_def.fan_out) {
            // `when` held (or there is none): the list is evaluated once,
            // with the same context.
            let vars = condition_vars(def, state, step);
            let evaluated = conditions.evaluate_list(&spec.expression, &vars);
            match fan_out::expand(spec, evaluated) {
                Expansion::Children {
                    items,
                    counts,
                    ready,
                } => {
                    let s = &mut state.steps[step];
                    s.status = StepStatus::Running;
                    s.children = Some(counts);
                    effects.push(Effect::StepFannedOut { step, items, ready });
                    mark_started(state, effects);
                }
                Expansion::Empty => {
                    state.steps[step].children = Some(Children::default());
                    complete_step(state, step, Value::Array(Vec::new()), effects);
                }
                Expansion::Fail { reason, message } => {
                    fail_step(state, step, reason, message, effects);
                    continue;
                }
            }
            continue;
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
                // With a `timeout`, the wait is a durable timer like a sleep's.
                let until = step_def.timeout_ms.map(|t| cx.now_ms + t as i64);
                s.status = StepStatus::Waiting;
                s.due_at = until;
                effects.push(Effect::StepWaiting { step, until });
                mark_started(state, effects);
            }
        }
    }
    settle(def, state, effects);
}

/// The one place a run is decided once nothing more can progress (every
/// step is done): `failed` with the first (in manifest order) failure that
/// no completed `handles_failure` descendant consumed, its reason and error;
/// otherwise `completed`, its output the leaves' outputs. Does nothing while
/// a step can still move. Returns whether it decided the run.
///
/// A failed step is consumed by a completed step with `handles_failure: true`
/// that has it among its ancestors. Steps cancelled with `upstream_failed`
/// are a failure's consequences, not failures of their own.
pub fn settle(def: &Definition, state: &mut RunState, effects: &mut Vec<Effect>) -> bool {
    if state.status.is_terminal() || !state.steps.iter().all(|s| s.status.is_terminal()) {
        return false;
    }
    let mut consumed = vec![false; def.steps.len()];
    for (handler, s) in state.steps.iter().enumerate() {
        if s.status == StepStatus::Completed && def.steps[handler].handles_failure {
            for (step, is_ancestor) in def.ancestors(handler).into_iter().enumerate() {
                consumed[step] |= is_ancestor;
            }
        }
    }
    let unconsumed = state
        .steps
        .iter()
        .enumerate()
        .find(|&(step, s)| s.status == StepStatus::Failed && !consumed[step]);
    if let Some((_, failed)) = unconsumed {
        let reason = failed.reason.unwrap_or(Reason::HandlerError);
        state.error = failed.error.clone();
        state.reason = Some(reason);
        // Compensation starts once the run has settled as failed: every
        // step is done, so nothing is still running that it would undo.
        if compensation::begin(def, state, reason, effects) {
            return true;
        }
        state.status = RunStatus::Failed;
        effects.push(Effect::RunFailed { reason });
        return true;
    }
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
    true
}

/// A step's outcome as its dependants see it under `upstream`:
/// `{"status", "reason", "error"}` (reason and error `null` when there are
/// none).
pub fn outcome_json(status: StepStatus, reason: Option<Reason>, error: Option<&str>) -> Value {
    serde_json::json!({
        "status": status.as_str(),
        "reason": reason.map(Reason::as_str),
        "error": error,
    })
}

/// What `step`'s condition sees: the run input, every step's output (`null`
/// unless it completed; every step, so that a version stored before the
/// ancestor check keeps reading what it read) and the outcome of each of its
/// ancestors (`upstream` is newer than that check).
fn condition_vars(def: &Definition, state: &RunState, step: usize) -> condition::Vars {
    let ancestors = def.ancestors(step);
    let mut steps = Map::new();
    let mut upstream = Map::new();
    for (i, (d, s)) in def.steps.iter().zip(&state.steps).enumerate() {
        let output = match s.status {
            StepStatus::Completed => s.output.clone().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        steps.insert(d.name.clone(), output);
        if ancestors[i] {
            upstream.insert(
                d.name.clone(),
                outcome_json(s.status, s.reason, s.error.as_deref()),
            );
        }
    }
    condition::Vars {
        input: state.input.clone(),
        steps: Value::Object(steps),
        upstream: Value::Object(upstream),
    }
}

/// A dependency of a step being claimed, as the claim reads its row.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub status: StepStatus,
    pub reason: Option<Reason>,
    pub error: Option<String>,
    /// Its output, used when it completed.
    pub output: Option<Value>,
}

/// The input a task step receives: `{"input": ..., "steps": {dependency:
/// output}, "upstream": {dependency: {status, reason, error}}}`. A
/// dependency's output is `null` unless it completed; a dependency missing
/// from `deps` reads as `pending`.
pub fn task_input(
    def: &Definition,
    step: usize,
    run_input: &Value,
    deps: &BTreeMap<String, Upstream>,
) -> Value {
    let mut steps = Map::new();
    let mut upstream = Map::new();
    for &dep in &def.steps[step].deps {
        let name = &def.steps[dep].name;
        let (output, outcome) = match deps.get(name) {
            Some(u) => (
                match u.status {
                    StepStatus::Completed => u.output.clone().unwrap_or(Value::Null),
                    _ => Value::Null,
                },
                outcome_json(u.status, u.reason, u.error.as_deref()),
            ),
            None => (Value::Null, outcome_json(StepStatus::Pending, None, None)),
        };
        steps.insert(name.clone(), output);
        upstream.insert(name.clone(), outcome);
    }
    serde_json::json!({
        "input": run_input,
        "steps": steps,
        "upstream": upstream,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records what each condition saw and answers true.
    #[derive(Default)]
    struct Seen(RefCell<Vec<condition::Vars>>);

    impl condition::Evaluate for Seen {
        fn evaluate(&self, _: &str, vars: &condition::Vars) -> condition::Evaluation {
            self.0.borrow_mut().push(vars.clone());
            condition::Evaluation {
                result: Ok(true),
                condition_ms: Some(3),
            }
        }
    }

    #[test]
    fn a_condition_sees_every_step_and_its_ancestors_outcomes() {
        let def = Definition::parse(
            "name: w\nsteps:\n  - {name: a, handler: h}\n  - {name: side, handler: h}\n  - {name: b, handler: h, depends_on: [a], when: 'true'}\n",
        )
        .unwrap();
        let mut state = RunState::new(&def, serde_json::json!({"k": 1}));
        let cx = Context {
            now_ms: 0,
            random: 0.5,
        };
        let seen = Seen::default();
        apply_with(&def, &mut state, Event::Start, cx, &seen).unwrap();
        state.steps[0].status = StepStatus::Running;
        let effects = apply_with(
            &def,
            &mut state,
            Event::AttemptCompleted {
                step: 0,
                output: serde_json::json!({"rows": 2}),
            },
            cx,
            &seen,
        )
        .unwrap();
        assert!(effects.contains(&Effect::StepReady { step: 2 }));
        assert_eq!(state.steps[2].condition_ms, Some(3));
        let vars = seen.0.borrow();
        assert_eq!(vars.len(), 1);
        assert_eq!(vars[0].input, serde_json::json!({"k": 1}));
        assert_eq!(
            vars[0].steps,
            serde_json::json!({"a": {"rows": 2}, "side": null, "b": null})
        );
        assert_eq!(
            vars[0].upstream,
            serde_json::json!({"a": {"status": "completed", "reason": null, "error": null}})
        );
        // The next transition does not carry the time over.
        state.steps[1].status = StepStatus::Running;
        apply_with(
            &def,
            &mut state,
            Event::AttemptCompleted {
                step: 1,
                output: Value::Null,
            },
            cx,
            &seen,
        )
        .unwrap();
        assert_eq!(state.steps[2].condition_ms, None);
    }
}
