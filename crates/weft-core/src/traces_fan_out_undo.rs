//! Text-trace tests of the undo of a `for_each` step that did not complete
//! (`compensation.rs` through `machine::apply`), in the harness of
//! `traces.rs`: a child failing for good, a cancel under
//! `compensate_on: [cancel]`, a gathered output refused, a failing child
//! undo with its retry and skip.

use expect_test::expect;
use serde_json::{Value, json};

use crate::{
    Reason,
    machine::Event,
    traces::{Act, Act::*, ok, trace},
};

/// `list` → `each` (a `for_each` with an undo, 3 at once, one attempt per
/// child and per child undo) → `after`.
const FAILING_FAN_OUT: &str = "name: w\nsteps:\n  - {name: list, handler: h}\n  - {name: each, handler: h, compensate: undo, depends_on: [list], for_each: \"steps.list.items\", max_parallel: 3, retry: {max_attempts: 1}, compensate_retry: {max_attempts: 1}}\n  - {name: after, handler: h, depends_on: [each]}\n";

const CANCELLED_FAN_OUT: &str = "name: w\ncompensate_on: [failure, cancel]\nsteps:\n  - {name: list, handler: h}\n  - {name: each, handler: h, compensate: undo, depends_on: [list], for_each: \"steps.list.items\", max_parallel: 2}\n  - {name: after, handler: h, depends_on: [each]}\n";

fn done(index: u32, output: Value) -> Act {
    Run(Event::ChildCompleted {
        step: 1,
        index,
        output,
        gathered: None,
        max_output_bytes: 64,
    })
}

fn child_failed(index: u32) -> Act {
    Run(Event::ChildFailed {
        step: 1,
        index,
        reason: Reason::HandlerError,
        message: "boom".into(),
        retryable: false,
        attempts: 1,
    })
}

fn undone(index: u32) -> Act {
    Run(Event::ChildUndoCompleted { step: 1, index })
}

fn undo_failed(index: u32) -> Act {
    Run(Event::ChildUndoFailed {
        step: 1,
        index,
        reason: Reason::HandlerError,
        message: "no refund".into(),
        retryable: false,
        attempts: 1,
    })
}

#[test]
fn a_failed_for_each_step_undoes_its_completed_children() {
    trace(
        FAILING_FAN_OUT,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!({"items": [1, 2, 3, 4]})))),
            (3, done(0, json!("A"))),
            (4, done(1, json!("B"))),
            // Child 2 fails for good while child 3 runs: the step fails,
            // child 3 is cancelled, and children 0 and 1 are undone.
            (5, child_failed(2)),
            (6, undone(1)),
            (7, undone(0)),
            (8, Run(Event::Retry)),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(list)
              run=pending list=ready each=pending after=pending
            t=1 Claim(list)
              -> attempt.claimed(list#1) run.started
              run=running list=running each=pending after=pending
            t=2 Result(list, Completed(Object {"items": Array [Number(1), Number(2), Number(3), Number(4)]}))
              -> attempt.completed(list#1 completed) step.completed(list) step.fanned_out(each)
              run=running list=completed each=running after=pending
            t=3 ChildCompleted { step: 1, index: 0, output: String("A"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each) child.ready(each)
              run=running list=completed each=running after=pending
            t=4 ChildCompleted { step: 1, index: 1, output: String("B"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each)
              run=running list=completed each=running after=pending
            t=5 ChildFailed { step: 1, index: 2, reason: HandlerError, message: "boom", retryable: false, attempts: 1 }
              -> child.failed(each) step.failed(each) step.cancelled(after) compensation.started step.compensating(each)
              run=compensating list=completed each=compensating/undo:ready after=cancelled
            t=6 ChildUndoCompleted { step: 1, index: 1 }
              -> child.compensated(each)
              run=compensating list=completed each=compensating/undo:ready after=cancelled
            t=7 ChildUndoCompleted { step: 1, index: 0 }
              -> child.compensated(each) step.compensated(each) compensation.completed
              run=compensated list=completed each=compensated/undo:completed after=cancelled
            t=8 Retry
              -> REJECTED: run is compensated and its compensation began: it cannot be retried
              run=compensated list=completed each=compensated/undo:completed after=cancelled
        "#]],
    );
}

#[test]
fn a_failed_for_each_steps_failed_child_undo_is_retried_alone_or_skipped() {
    let acts = |last: Act| {
        [
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!({"items": [1, 2, 3]})))),
            (3, done(0, json!("A"))),
            (4, done(1, json!("B"))),
            (5, child_failed(2)),
            (6, undo_failed(0)),
            (7, undone(1)),
            (8, last),
            (9, undone(0)),
        ]
    };
    trace(
        FAILING_FAN_OUT,
        json!({}),
        &acts(Run(Event::Retry)),
        expect![[r#"
            t=0 Start
              -> step.ready(list)
              run=pending list=ready each=pending after=pending
            t=1 Claim(list)
              -> attempt.claimed(list#1) run.started
              run=running list=running each=pending after=pending
            t=2 Result(list, Completed(Object {"items": Array [Number(1), Number(2), Number(3)]}))
              -> attempt.completed(list#1 completed) step.completed(list) step.fanned_out(each)
              run=running list=completed each=running after=pending
            t=3 ChildCompleted { step: 1, index: 0, output: String("A"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each)
              run=running list=completed each=running after=pending
            t=4 ChildCompleted { step: 1, index: 1, output: String("B"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each)
              run=running list=completed each=running after=pending
            t=5 ChildFailed { step: 1, index: 2, reason: HandlerError, message: "boom", retryable: false, attempts: 1 }
              -> child.failed(each) step.failed(each) step.cancelled(after) compensation.started step.compensating(each)
              run=compensating list=completed each=compensating/undo:ready after=cancelled
            t=6 ChildUndoFailed { step: 1, index: 0, reason: HandlerError, message: "no refund", retryable: false, attempts: 1 }
              -> child.compensation_failed(each)
              run=compensating list=completed each=compensating/undo:ready after=cancelled
            t=7 ChildUndoCompleted { step: 1, index: 1 }
              -> child.compensated(each) step.compensation_failed(each) compensation.failed run.failed
              run=failed list=completed each=failed/undo:failed after=cancelled
            t=8 Retry
              -> run.retried step.compensating(each)
              run=compensating list=completed each=compensating/undo:ready after=cancelled
            t=9 ChildUndoCompleted { step: 1, index: 0 }
              -> child.compensated(each) step.compensated(each) compensation.completed
              run=compensated list=completed each=compensated/undo:completed after=cancelled
        "#]],
    );
    trace(
        FAILING_FAN_OUT,
        json!({}),
        &acts(Run(Event::SkipCompensation { step: 1 })),
        expect![[r#"
            t=0 Start
              -> step.ready(list)
              run=pending list=ready each=pending after=pending
            t=1 Claim(list)
              -> attempt.claimed(list#1) run.started
              run=running list=running each=pending after=pending
            t=2 Result(list, Completed(Object {"items": Array [Number(1), Number(2), Number(3)]}))
              -> attempt.completed(list#1 completed) step.completed(list) step.fanned_out(each)
              run=running list=completed each=running after=pending
            t=3 ChildCompleted { step: 1, index: 0, output: String("A"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each)
              run=running list=completed each=running after=pending
            t=4 ChildCompleted { step: 1, index: 1, output: String("B"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each)
              run=running list=completed each=running after=pending
            t=5 ChildFailed { step: 1, index: 2, reason: HandlerError, message: "boom", retryable: false, attempts: 1 }
              -> child.failed(each) step.failed(each) step.cancelled(after) compensation.started step.compensating(each)
              run=compensating list=completed each=compensating/undo:ready after=cancelled
            t=6 ChildUndoFailed { step: 1, index: 0, reason: HandlerError, message: "no refund", retryable: false, attempts: 1 }
              -> child.compensation_failed(each)
              run=compensating list=completed each=compensating/undo:ready after=cancelled
            t=7 ChildUndoCompleted { step: 1, index: 1 }
              -> child.compensated(each) step.compensation_failed(each) compensation.failed run.failed
              run=failed list=completed each=failed/undo:failed after=cancelled
            t=8 SkipCompensation { step: 1 }
              -> compensation.skipped(each) compensation.completed
              run=compensated list=completed each=compensated/undo:skipped after=cancelled
            t=9 ChildUndoCompleted { step: 1, index: 0 }
              -> REJECTED: run is compensated, not compensating
              run=compensated list=completed each=compensated/undo:skipped after=cancelled
        "#]],
    );
}

#[test]
fn a_for_each_step_cancelled_mid_way_undoes_its_completed_children() {
    trace(
        CANCELLED_FAN_OUT,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!({"items": [1, 2, 3]})))),
            (3, done(0, json!("A"))),
            // Cancelled while children 1 and 2 are out: only child 0
            // completed, so only it is undone; a second cancel stops that.
            (4, Run(Event::Cancel)),
            (5, Run(Event::Cancel)),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(list)
              run=pending list=ready each=pending after=pending
            t=1 Claim(list)
              -> attempt.claimed(list#1) run.started
              run=running list=running each=pending after=pending
            t=2 Result(list, Completed(Object {"items": Array [Number(1), Number(2), Number(3)]}))
              -> attempt.completed(list#1 completed) step.completed(list) step.fanned_out(each)
              run=running list=completed each=running after=pending
            t=3 ChildCompleted { step: 1, index: 0, output: String("A"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each) child.ready(each)
              run=running list=completed each=running after=pending
            t=4 Cancel
              -> step.cancelled(each) step.cancelled(after) compensation.started step.compensating(each)
              run=compensating list=completed each=compensating/undo:ready after=cancelled
            t=5 Cancel
              -> compensation.cancelled run.cancelled
              run=cancelled list=completed each=cancelled/undo:cancelled after=cancelled
        "#]],
    );
}

#[test]
fn a_for_each_step_whose_gathered_output_is_refused_undoes_every_child() {
    let long = json!("x".repeat(40));
    trace(
        FAILING_FAN_OUT,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!({"items": [1, 2]})))),
            (3, done(0, long.clone())),
            (
                4,
                Run(Event::ChildCompleted {
                    step: 1,
                    index: 1,
                    output: long.clone(),
                    gathered: Some(vec![long.clone(), long]),
                    max_output_bytes: 64,
                }),
            ),
            (5, undone(0)),
            (6, undone(1)),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(list)
              run=pending list=ready each=pending after=pending
            t=1 Claim(list)
              -> attempt.claimed(list#1) run.started
              run=running list=running each=pending after=pending
            t=2 Result(list, Completed(Object {"items": Array [Number(1), Number(2)]}))
              -> attempt.completed(list#1 completed) step.completed(list) step.fanned_out(each)
              run=running list=completed each=running after=pending
            t=3 ChildCompleted { step: 1, index: 0, output: String("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each)
              run=running list=completed each=running after=pending
            t=4 ChildCompleted { step: 1, index: 1, output: String("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), gathered: Some([String("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), String("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")]), max_output_bytes: 64 }
              -> child.completed(each) step.failed(each) step.cancelled(after) compensation.started step.compensating(each)
              run=compensating list=completed each=compensating/undo:ready after=cancelled
            t=5 ChildUndoCompleted { step: 1, index: 0 }
              -> child.compensated(each)
              run=compensating list=completed each=compensating/undo:ready after=cancelled
            t=6 ChildUndoCompleted { step: 1, index: 1 }
              -> child.compensated(each) step.compensated(each) compensation.completed
              run=compensated list=completed each=compensated/undo:completed after=cancelled
        "#]],
    );
}
