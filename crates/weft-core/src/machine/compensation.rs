//! Saga compensation: when a run fails for good (or is cancelled under
//! `compensate_on: [failure, cancel]`), every completed step with a
//! `compensate` handler is undone by that handler, in reverse DAG order.
//!
//! The rules, all decided here and applied through `machine::apply`:
//! - The run goes `compensating` (keeping its failure reason and error);
//!   each step to undo gets an undo status ([`UndoStatus`]) beside its own.
//! - A step still running when the run fails, if it has a `compensate`
//!   handler, is drained rather than cancelled: its worker is asked to stop
//!   (`cancel_requested`) and its attempt ends as it will; completed, it is
//!   undone like the others, otherwise it is cancelled. Undos of its
//!   dependencies, and the end of the compensation, wait for it.
//! - A step's undo becomes `ready` (the step row `compensating`) once the
//!   undos of all its transitive dependants that have one have settled;
//!   independent undos are ready together, so they run in parallel.
//! - An undo is a normal dispatched attempt of the step's `compensate`
//!   handler, retried under `compensate_retry`. Completed → the step is
//!   `compensated`; failed for good → the step is `failed` with reason
//!   `compensation_failed`, and the other undos are still attempted.
//! - All settled: the run is `compensated` (keeping its original reason), or
//!   `failed` with reason `compensation_failed` if some undo failed.
//!   `Retry` of such a run retries the failed undos only; an operator may
//!   skip a failed undo instead (`SkipCompensation`).
//! - Cancel while compensating: undos not yet completed will not run
//!   (`compensation.cancelled` names them); the run is `cancelled`.
//! - A `for_each` step that did not complete (a child failed for good, its
//!   gathered output was refused, or it was cancelled under
//!   `compensate_on: [cancel]`) is undone like a completed one, child by
//!   child, if some of its children completed: each completed child is a
//!   unit of work done. It keeps its forward failure (`reason`, `error`)
//!   while undone, and after: `compensated` with that reason, or back to
//!   `failed`/`cancelled` when its undo fails or is cancelled (the undo
//!   status says which). Its children that were running when it stopped are
//!   cancelled (their attempts asked to stop) and never undone: their
//!   attempts did not complete, and a result arriving late is recorded on
//!   the attempt row without changing the child. A `for_each` step is never
//!   drained: it is stopped like that on a cancel too.

use serde_json::Value;

use super::{Context, Effect, RunState};
use crate::{Reason, RunStatus, StepStatus, UndoStatus, definition::Definition};

/// Whether `step`, running when its run fails, is drained: its attempt may
/// still complete, and then must be undone.
pub(crate) fn drains(def: &Definition, state: &RunState, step: usize) -> bool {
    state.steps[step].status == StepStatus::Running
        && state.steps[step].undo.is_none()
        && def.steps[step].compensate.is_some()
        && def.steps[step].fan_out.is_none()
}

/// Whether `step` is a `for_each` step that did not complete forward (it
/// failed or was cancelled after some children ran): no gathered output.
/// Its undo keeps its forward failure on the step.
fn did_not_complete(state: &RunState, step: usize) -> bool {
    stopped_short(&state.steps[step])
}

/// A `for_each` step's row with no gathered output: it did not complete.
fn stopped_short(s: &crate::StepState) -> bool {
    s.children.is_some() && s.output.is_none()
}

/// The status a step whose undo stopped short (failed for good, or
/// cancelled) returns to: what it was before its undo began.
fn forward_status(state: &RunState, step: usize) -> StepStatus {
    if !did_not_complete(state, step) {
        StepStatus::Completed
    } else if state.steps[step].reason == Some(Reason::Cancelled) {
        StepStatus::Cancelled
    } else {
        StepStatus::Failed
    }
}

/// Whether `step` is undone when its run compensates: a completed step
/// with a `compensate` handler, or a `for_each` step with one that did not
/// complete but some of whose children did.
fn undoable(def: &Definition, state: &RunState, step: usize) -> bool {
    let s = &state.steps[step];
    def.steps[step].compensate.is_some()
        && match s.status {
            StepStatus::Completed => true,
            // Running: a cancel about to stop it (`will_compensate`).
            StepStatus::Failed | StepStatus::Cancelled | StepStatus::Running => {
                did_not_complete(state, step) && s.children.is_some_and(|c| c.completed > 0)
            }
            _ => false,
        }
}

/// Whether a run failing (or cancelled under `compensate_on: [cancel]`) in
/// `state` compensates: some step is to be undone, or may be once drained.
pub(crate) fn will_compensate(def: &Definition, state: &RunState) -> bool {
    !to_undo(def, state).is_empty() || (0..def.steps.len()).any(|i| drains(def, state, i))
}

/// The steps a failing run would undo ([`undoable`]).
fn to_undo(def: &Definition, state: &RunState) -> Vec<usize> {
    (0..def.steps.len())
        .filter(|&i| undoable(def, state, i))
        .collect()
}

/// Called at the one point where the machine decides a run has failed (or
/// been cancelled, when the workflow compensates cancels), with the run's
/// reason and error already set: starts compensation and returns true, or
/// returns false when there is nothing to undo (the run ends as it would).
pub(crate) fn begin(
    def: &Definition,
    state: &mut RunState,
    reason: Reason,
    effects: &mut Vec<Effect>,
) -> bool {
    let steps = to_undo(def, state);
    if !will_compensate(def, state) {
        return false;
    }
    for &step in &steps {
        let s = &mut state.steps[step];
        s.undo = Some(UndoStatus::Pending);
        s.undo_base = s.n_attempts;
    }
    state.status = RunStatus::Compensating;
    effects.push(Effect::CompensationStarted {
        reason,
        steps: steps.iter().map(|&i| def.steps[i].name.clone()).collect(),
    });
    advance(def, state, effects);
    true
}

/// Whether every transitive dependant of `step` that is being undone has
/// settled its undo.
fn dependants_settled(def: &Definition, state: &RunState, step: usize) -> bool {
    let n = def.steps.len();
    let mut seen = vec![false; n];
    let mut stack = vec![step];
    while let Some(at) = stack.pop() {
        for (j, d) in def.steps.iter().enumerate() {
            if !seen[j] && d.deps.contains(&at) {
                seen[j] = true;
                if state.steps[j].undo.is_some_and(|u| !u.is_settled()) || drains(def, state, j) {
                    return false;
                }
                stack.push(j);
            }
        }
    }
    true
}

/// Makes every pending undo whose dependants' undos settled ready, then ends
/// the compensation when every undo has settled.
pub(crate) fn advance(def: &Definition, state: &mut RunState, effects: &mut Vec<Effect>) {
    if state.status != RunStatus::Compensating {
        return;
    }
    // Reverse topological order: a dependant is looked at before its
    // dependencies (whose readiness does not change within one pass anyway).
    for &step in def.topo_order.iter().rev() {
        if state.steps[step].undo != Some(UndoStatus::Pending) {
            continue;
        }
        if dependants_settled(def, state, step) {
            let s = &mut state.steps[step];
            s.undo = Some(UndoStatus::Ready);
            s.status = StepStatus::Compensating;
            s.due_at = None;
            effects.push(Effect::StepCompensating { step });
            // A `for_each` step is undone child by child (the store makes
            // each completed child's undo ready); with none completed there
            // is nothing to undo.
            if s.children
                .is_some_and(|c| c.undos_settled() && c.undo_failed == 0)
            {
                s.undo = Some(UndoStatus::Completed);
                s.status = StepStatus::Compensated;
                effects.push(Effect::StepCompensated { step });
            }
        }
    }
    if state
        .steps
        .iter()
        .any(|s| s.undo.is_some_and(|u| !u.is_settled()))
        || (0..def.steps.len()).any(|i| drains(def, state, i))
    {
        return;
    }
    let original = original_reason(state);
    if state.steps.iter().all(|s| s.undo.is_none()) {
        // Only drained steps, none of which completed: nothing was undone.
        state.status = RunStatus::Failed;
        state.reason = Some(original);
        effects.push(Effect::RunFailed { reason: original });
        return;
    }
    let failed: Vec<String> = (0..def.steps.len())
        .filter(|&i| state.steps[i].undo == Some(UndoStatus::Failed))
        .map(|i| def.steps[i].name.clone())
        .collect();
    if failed.is_empty() {
        state.status = RunStatus::Compensated;
        state.reason = Some(original);
        effects.push(Effect::CompensationCompleted { reason: original });
    } else {
        state.status = RunStatus::Failed;
        state.reason = Some(Reason::CompensationFailed);
        effects.push(Effect::CompensationFailed {
            failed,
            reason: original,
        });
        effects.push(Effect::RunFailed {
            reason: Reason::CompensationFailed,
        });
    }
}

/// The reason the run failed before compensation began: the reason of the
/// step that failed forward, else `cancelled` (a compensated cancel).
/// While compensating the run's own reason is it; after a failed
/// compensation it is found again from the steps.
pub fn original_reason(state: &RunState) -> Reason {
    if let Some(reason) = state.reason.filter(|r| *r != Reason::CompensationFailed) {
        return reason;
    }
    state
        .steps
        .iter()
        .find(|s| s.status == StepStatus::Failed && s.reason != Some(Reason::CompensationFailed))
        .and_then(|s| s.reason)
        // A `for_each` step that failed forward keeps its reason while
        // compensated.
        .or_else(|| {
            state
                .steps
                .iter()
                .find(|s| {
                    s.status == StepStatus::Compensated && stopped_short(s) && s.reason.is_some()
                })
                .and_then(|s| s.reason)
        })
        .unwrap_or(Reason::Cancelled)
}

/// The drained attempt of `step` completed: the step is, and its undo
/// waits for its turn.
pub(crate) fn drained_completed(
    def: &Definition,
    state: &mut RunState,
    step: usize,
    output: Value,
    effects: &mut Vec<Effect>,
) {
    let s = &mut state.steps[step];
    s.status = StepStatus::Completed;
    s.output = Some(output);
    s.undo = Some(UndoStatus::Pending);
    s.undo_base = s.n_attempts;
    effects.push(Effect::StepCompleted { step });
    advance(def, state, effects);
}

/// The drained attempt of `step` failed, lapsed or was handed back: the
/// step did not complete, so there is nothing to undo.
pub(crate) fn drained_ended(
    def: &Definition,
    state: &mut RunState,
    step: usize,
    effects: &mut Vec<Effect>,
) {
    let s = &mut state.steps[step];
    s.status = StepStatus::Cancelled;
    s.reason = Some(Reason::UpstreamFailed);
    s.due_at = None;
    effects.push(Effect::StepCancelled {
        step,
        reason: Reason::UpstreamFailed,
    });
    advance(def, state, effects);
}

/// The running undo of `step` completed.
pub(crate) fn completed(
    def: &Definition,
    state: &mut RunState,
    step: usize,
    effects: &mut Vec<Effect>,
) {
    let keep = did_not_complete(state, step);
    let s = &mut state.steps[step];
    s.undo = Some(UndoStatus::Completed);
    s.status = StepStatus::Compensated;
    if !keep {
        s.reason = None;
        s.error = None;
    }
    effects.push(Effect::StepCompensated { step });
    advance(def, state, effects);
}

/// The running undo of `step` failed: retried under `compensate_retry` while
/// attempts are left and the failure is retryable, else failed for good.
pub(crate) fn failed(
    def: &Definition,
    state: &mut RunState,
    step: usize,
    (reason, message, retryable): (Reason, String, bool),
    cx: Context,
    effects: &mut Vec<Effect>,
) {
    let policy = &def.steps[step].compensate_retry;
    let s = &mut state.steps[step];
    let used = s.n_attempts.saturating_sub(s.undo_base);
    if retryable && used < policy.max_attempts {
        let delay_ms = policy.delay_ms(used.max(1), cx.random);
        let due_at = cx.now_ms + delay_ms as i64;
        s.undo = Some(UndoStatus::Retrying);
        s.due_at = Some(due_at);
        s.error = Some(message);
        effects.push(Effect::StepRetrying {
            step,
            due_at,
            delay_ms,
        });
        return;
    }
    failed_for_good(def, state, step, reason, message, effects);
}

/// The undo of `step` failed for good: the step is `failed` with reason
/// `compensation_failed` (a `for_each` step that did not complete goes back
/// to its forward status and failure, its undo `failed`); the other undos
/// go on.
fn failed_for_good(
    def: &Definition,
    state: &mut RunState,
    step: usize,
    reason: Reason,
    message: String,
    effects: &mut Vec<Effect>,
) {
    let keep = did_not_complete(state, step);
    let status = forward_status(state, step);
    let s = &mut state.steps[step];
    s.undo = Some(UndoStatus::Failed);
    s.due_at = None;
    if keep {
        s.status = status;
    } else {
        s.status = StepStatus::Failed;
        s.reason = Some(Reason::CompensationFailed);
        s.error = Some(message.clone());
    }
    effects.push(Effect::StepCompensationFailed {
        step,
        reason,
        error: message,
    });
    advance(def, state, effects);
}

/// The undo of completed child `index` of the `for_each` step `step`
/// completed: the step is compensated once every completed child's undo
/// has settled.
pub(crate) fn child_completed(
    def: &Definition,
    state: &mut RunState,
    step: usize,
    index: u32,
    effects: &mut Vec<Effect>,
) {
    let s = &mut state.steps[step];
    let mut counts = s.children.unwrap_or_default();
    counts.undone += 1;
    s.children = Some(counts);
    effects.push(Effect::ChildCompensated { step, index });
    children_settled(def, state, step, None, effects);
}

/// The undo attempt of child `index` of `step` failed, the child having
/// spent `attempts` undo attempts: retried under `compensate_retry` while
/// attempts are left and the failure is retryable, else failed for good
/// (the step's other children are still undone).
pub(crate) fn child_failed(
    def: &Definition,
    state: &mut RunState,
    (step, index, attempts): (usize, u32, u32),
    (reason, message, retryable): (Reason, String, bool),
    cx: Context,
    effects: &mut Vec<Effect>,
) {
    let policy = &def.steps[step].compensate_retry;
    if retryable && attempts < policy.max_attempts {
        let delay_ms = policy.delay_ms(attempts.max(1), cx.random);
        effects.push(Effect::ChildCompensationRetrying {
            step,
            index,
            due_at: cx.now_ms + delay_ms as i64,
            delay_ms,
        });
        return;
    }
    let name = crate::fan_out::child_name(&def.steps[step].name, index);
    let keep = did_not_complete(state, step);
    let s = &mut state.steps[step];
    let mut counts = s.children.unwrap_or_default();
    counts.undo_failed += 1;
    s.children = Some(counts);
    let last = (reason, format!("{name}: {message}"));
    if !keep {
        // The step's compensation fails with the last child failure seen
        // (a step that did not complete keeps its forward failure instead).
        s.reason = Some(last.0);
        s.error = Some(last.1.clone());
    }
    effects.push(Effect::ChildCompensationFailed {
        step,
        index,
        reason,
        message,
    });
    children_settled(def, state, step, Some(last), effects);
}

/// Settles the undo of the `for_each` step `step` once every completed
/// child's undo has: compensated, or failed when one of them failed (with
/// `last`, the child undo failure just seen, when this settles it).
fn children_settled(
    def: &Definition,
    state: &mut RunState,
    step: usize,
    last: Option<(Reason, String)>,
    effects: &mut Vec<Effect>,
) {
    let s = &state.steps[step];
    let Some(counts) = s.children.filter(|c| c.undos_settled()) else {
        return;
    };
    if counts.undo_failed == 0 {
        completed(def, state, step, effects);
        return;
    }
    let (reason, message) = if did_not_complete(state, step) {
        // Its own reason and error are its forward failure.
        last.unwrap_or_else(|| {
            (
                Reason::CompensationFailed,
                format!(
                    "{} of {} child undos failed",
                    counts.undo_failed, counts.completed
                ),
            )
        })
    } else {
        (
            s.reason.unwrap_or(Reason::HandlerError),
            s.error.clone().unwrap_or_default(),
        )
    };
    failed_for_good(def, state, step, reason, message, effects);
}

/// The running undo of `step` was handed back by its worker: ready again.
pub(crate) fn released(state: &mut RunState, step: usize, effects: &mut Vec<Effect>) {
    let s = &mut state.steps[step];
    s.undo_base += 1;
    s.undo = Some(UndoStatus::Ready);
    s.due_at = None;
    effects.push(Effect::StepCompensating { step });
}

/// A retrying undo's backoff is over: ready again. A timer fired twice is a
/// no-op.
pub(crate) fn timer(state: &mut RunState, step: usize, cx: Context, effects: &mut Vec<Effect>) {
    let s = &mut state.steps[step];
    if s.undo == Some(UndoStatus::Retrying) && s.due_at.is_some_and(|due| due <= cx.now_ms) {
        s.undo = Some(UndoStatus::Ready);
        s.due_at = None;
        effects.push(Effect::StepCompensating { step });
    }
}

/// Cancel while compensating: the undos that have not settled will not run.
pub(crate) fn cancel(def: &Definition, state: &mut RunState, effects: &mut Vec<Effect>) {
    let mut not_run = Vec::new();
    let forward: Vec<StepStatus> = (0..state.steps.len())
        .map(|i| forward_status(state, i))
        .collect();
    for (step, s) in state.steps.iter_mut().enumerate() {
        if s.status == StepStatus::Running && s.undo.is_none() {
            // Still draining: its attempt ends with the run.
            s.status = StepStatus::Cancelled;
            s.reason = Some(Reason::Cancelled);
            effects.push(Effect::StepCancelled {
                step,
                reason: Reason::Cancelled,
            });
            continue;
        }
        if s.undo.is_some_and(|u| !u.is_settled()) {
            s.undo = Some(UndoStatus::Cancelled);
            s.due_at = None;
            if s.status == StepStatus::Compensating {
                // Its undo did not finish: the step's forward work stands.
                s.status = forward[step];
            }
            not_run.push(def.steps[step].name.clone());
        }
    }
    effects.push(Effect::CompensationCancelled { not_run });
    state.status = RunStatus::Cancelled;
    state.reason = Some(Reason::Cancelled);
    effects.push(Effect::RunCancelled);
}

/// Whether `state` is a run whose compensation failed: `Retry` retries its
/// failed undos only.
pub fn is_compensation_failed(state: &RunState) -> bool {
    state.status == RunStatus::Failed && state.reason == Some(Reason::CompensationFailed)
}

/// `Retry` of a run whose compensation failed: its failed undos start again
/// with a fresh `compensate_retry` budget; the others keep their outcome.
pub(crate) fn retry(def: &Definition, state: &mut RunState, effects: &mut Vec<Effect>) {
    let original = original_reason(state);
    for step in 0..state.steps.len() {
        let keep = did_not_complete(state, step);
        let status = forward_status(state, step);
        let s = &mut state.steps[step];
        if s.undo == Some(UndoStatus::Failed) {
            s.undo = Some(UndoStatus::Pending);
            s.undo_base = s.n_attempts;
            if let Some(counts) = s.children.as_mut() {
                // Only the children whose undo failed are undone again.
                counts.undo_failed = 0;
            }
            s.status = status;
            if !keep {
                s.reason = None;
                s.error = None;
            }
        }
    }
    state.status = RunStatus::Compensating;
    state.reason = Some(original);
    effects.push(Effect::RunRetried);
    advance(def, state, effects);
}

/// An operator marks the failed undo of `step` as skipped: the step counts
/// as compensated, and a run whose only failed undos are skipped is
/// `compensated`.
pub(crate) fn skip(def: &Definition, state: &mut RunState, step: usize, effects: &mut Vec<Effect>) {
    let original = original_reason(state);
    let keep = did_not_complete(state, step);
    let s = &mut state.steps[step];
    s.undo = Some(UndoStatus::Skipped);
    s.status = StepStatus::Compensated;
    if !keep {
        s.reason = None;
    }
    effects.push(Effect::CompensationSkipped { step });
    if state.status == RunStatus::Failed {
        // Settled already: settle again without the skipped undo.
        state.status = RunStatus::Compensating;
        state.reason = Some(original);
        let mut settled = Vec::new();
        advance(def, state, &mut settled);
        // Failing again is only the same failure: no new events for it.
        if state.status == RunStatus::Failed {
            return;
        }
        effects.extend(settled);
    }
}

/// The input of a compensation attempt of `step`:
/// `{"input": <run input>, "step": <name>, "output": <the step's output>,
/// "error": {"reason": <the run's failure reason>, "message": <its error>}}`.
pub fn task_input(
    run_input: &Value,
    step: &str,
    output: &Value,
    reason: Option<Reason>,
    error: Option<&str>,
) -> Value {
    serde_json::json!({
        "input": run_input,
        "step": step,
        "output": output,
        "error": {
            "reason": reason.map(Reason::as_str),
            "message": error,
        },
    })
}
