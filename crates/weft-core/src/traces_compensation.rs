//! Text-trace tests of saga compensation (`compensation.rs` through
//! `machine::apply`), in the harness of `traces.rs`: undo order, parallel
//! undos, a failing undo and its retry and skip, cancels.

use expect_test::expect;
use serde_json::json;

use crate::{
    Reason,
    machine::Event,
    traces::{Act::*, failed, ok, trace},
};

/// a → b → c → d, each with an undo except d; c fails for good.
const CHAIN: &str = "name: saga\nsteps:\n  - {name: a, handler: h, compensate: undo_a}\n  - {name: b, handler: h, compensate: undo_b, depends_on: [a], compensate_retry: {max_attempts: 2, initial: 1s, jitter: false}}\n  - {name: c, handler: h, compensate: undo_c, depends_on: [b], retry: {max_attempts: 1}}\n  - {name: d, handler: h, depends_on: [c]}\n";

#[test]
fn chain_failing_at_step_three_undoes_two_then_one() {
    trace(
        CHAIN,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!(1)))),
            (3, Claim(1)),
            (4, Result(1, ok(json!(2)))),
            (5, Claim(2)),
            (6, Result(2, failed(Reason::HandlerError, "boom", true))),
            (7, Claim(0)),
            (8, Claim(1)),
            (9, Result(1, ok(json!("undone")))),
            (10, Claim(0)),
            (11, Result(0, ok(json!("undone")))),
            (12, Run(Event::Retry)),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(a)
              run=pending a=ready b=pending c=pending d=pending
            t=1 Claim(a)
              -> attempt.claimed(a#1) run.started
              run=running a=running b=pending c=pending d=pending
            t=2 Result(a, Completed(Number(1)))
              -> attempt.completed(a#1 completed) step.completed(a) step.ready(b)
              run=running a=completed b=ready c=pending d=pending
            t=3 Claim(b)
              -> attempt.claimed(b#1)
              run=running a=completed b=running c=pending d=pending
            t=4 Result(b, Completed(Number(2)))
              -> attempt.completed(b#1 completed) step.completed(b) step.ready(c)
              run=running a=completed b=completed c=ready d=pending
            t=5 Claim(c)
              -> attempt.claimed(c#1)
              run=running a=completed b=completed c=running d=pending
            t=6 Result(c, Failed { reason: HandlerError, message: "boom", retryable: true })
              -> attempt.failed(c#1 failed handler_error) step.failed(c) step.cancelled(d) compensation.started step.compensating(b)
              run=compensating a=completed/undo:pending b=compensating/undo:ready c=failed d=cancelled
            t=7 Claim(a)
              -> NOT CLAIMED: step is completed
              run=compensating a=completed/undo:pending b=compensating/undo:ready c=failed d=cancelled
            t=8 Claim(b)
              -> attempt.claimed(b#2 compensate)
              run=compensating a=completed/undo:pending b=compensating/undo:running c=failed d=cancelled
            t=9 Result(b, Completed(String("undone")))
              -> attempt.completed(b#2 completed) step.compensated(b) step.compensating(a)
              run=compensating a=compensating/undo:ready b=compensated/undo:completed c=failed d=cancelled
            t=10 Claim(a)
              -> attempt.claimed(a#2 compensate)
              run=compensating a=compensating/undo:running b=compensated/undo:completed c=failed d=cancelled
            t=11 Result(a, Completed(String("undone")))
              -> attempt.completed(a#2 completed) step.compensated(a) compensation.completed
              run=compensated a=compensated/undo:completed b=compensated/undo:completed c=failed d=cancelled
            t=12 Retry
              -> REJECTED: run is compensated and its compensation began: it cannot be retried
              run=compensated a=compensated/undo:completed b=compensated/undo:completed c=failed d=cancelled
        "#]],
    );
}

/// root, then two independent branches x and y, then z after both, failing.
const BRANCHES: &str = "name: saga\nsteps:\n  - {name: root, handler: h, compensate: undo}\n  - {name: x, handler: h, compensate: undo, depends_on: [root]}\n  - {name: y, handler: h, compensate: undo, depends_on: [root]}\n  - {name: z, handler: h, depends_on: [x, y], retry: {max_attempts: 1}}\n";

#[test]
fn parallel_branches_are_undone_together_then_their_root() {
    trace(
        BRANCHES,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!(0)))),
            (3, Claim(1)),
            (3, Claim(2)),
            (4, Result(1, ok(json!(1)))),
            (5, Result(2, ok(json!(2)))),
            (6, Claim(3)),
            (7, Result(3, failed(Reason::HandlerError, "no", false))),
            (8, Claim(1)),
            (8, Claim(2)),
            (9, Result(2, ok(json!(null)))),
            (10, Result(1, ok(json!(null)))),
            (11, Claim(0)),
            (12, Result(0, ok(json!(null)))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(root)
              run=pending root=ready x=pending y=pending z=pending
            t=1 Claim(root)
              -> attempt.claimed(root#1) run.started
              run=running root=running x=pending y=pending z=pending
            t=2 Result(root, Completed(Number(0)))
              -> attempt.completed(root#1 completed) step.completed(root) step.ready(x) step.ready(y)
              run=running root=completed x=ready y=ready z=pending
            t=3 Claim(x)
              -> attempt.claimed(x#1)
              run=running root=completed x=running y=ready z=pending
            t=3 Claim(y)
              -> attempt.claimed(y#1)
              run=running root=completed x=running y=running z=pending
            t=4 Result(x, Completed(Number(1)))
              -> attempt.completed(x#1 completed) step.completed(x)
              run=running root=completed x=completed y=running z=pending
            t=5 Result(y, Completed(Number(2)))
              -> attempt.completed(y#1 completed) step.completed(y) step.ready(z)
              run=running root=completed x=completed y=completed z=ready
            t=6 Claim(z)
              -> attempt.claimed(z#1)
              run=running root=completed x=completed y=completed z=running
            t=7 Result(z, Failed { reason: HandlerError, message: "no", retryable: false })
              -> attempt.failed(z#1 failed handler_error) step.failed(z) compensation.started step.compensating(y) step.compensating(x)
              run=compensating root=completed/undo:pending x=compensating/undo:ready y=compensating/undo:ready z=failed
            t=8 Claim(x)
              -> attempt.claimed(x#2 compensate)
              run=compensating root=completed/undo:pending x=compensating/undo:running y=compensating/undo:ready z=failed
            t=8 Claim(y)
              -> attempt.claimed(y#2 compensate)
              run=compensating root=completed/undo:pending x=compensating/undo:running y=compensating/undo:running z=failed
            t=9 Result(y, Completed(Null))
              -> attempt.completed(y#2 completed) step.compensated(y)
              run=compensating root=completed/undo:pending x=compensating/undo:running y=compensated/undo:completed z=failed
            t=10 Result(x, Completed(Null))
              -> attempt.completed(x#2 completed) step.compensated(x) step.compensating(root)
              run=compensating root=compensating/undo:ready x=compensated/undo:completed y=compensated/undo:completed z=failed
            t=11 Claim(root)
              -> attempt.claimed(root#2 compensate)
              run=compensating root=compensating/undo:running x=compensated/undo:completed y=compensated/undo:completed z=failed
            t=12 Result(root, Completed(Null))
              -> attempt.completed(root#2 completed) step.compensated(root) compensation.completed
              run=compensated root=compensated/undo:completed x=compensated/undo:completed y=compensated/undo:completed z=failed
        "#]],
    );
}

#[test]
fn a_failing_undo_leaves_the_rest_attempted_and_retry_redoes_it_only() {
    trace(
        CHAIN,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!(1)))),
            (3, Claim(1)),
            (4, Result(1, ok(json!(2)))),
            (5, Claim(2)),
            (6, Result(2, failed(Reason::HandlerError, "boom", false))),
            (7, Claim(1)),
            (
                8,
                Result(1, failed(Reason::HandlerError, "refund api down", true)),
            ),
            (1008, Run(Event::TimerFired { step: 1 })),
            (1009, Claim(1)),
            (
                1010,
                Result(1, failed(Reason::HandlerError, "still down", true)),
            ),
            (1011, Claim(0)),
            (1012, Result(0, ok(json!(null)))),
            (2000, Run(Event::Retry)),
            (2001, Claim(1)),
            (2002, Result(1, ok(json!(null)))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(a)
              run=pending a=ready b=pending c=pending d=pending
            t=1 Claim(a)
              -> attempt.claimed(a#1) run.started
              run=running a=running b=pending c=pending d=pending
            t=2 Result(a, Completed(Number(1)))
              -> attempt.completed(a#1 completed) step.completed(a) step.ready(b)
              run=running a=completed b=ready c=pending d=pending
            t=3 Claim(b)
              -> attempt.claimed(b#1)
              run=running a=completed b=running c=pending d=pending
            t=4 Result(b, Completed(Number(2)))
              -> attempt.completed(b#1 completed) step.completed(b) step.ready(c)
              run=running a=completed b=completed c=ready d=pending
            t=5 Claim(c)
              -> attempt.claimed(c#1)
              run=running a=completed b=completed c=running d=pending
            t=6 Result(c, Failed { reason: HandlerError, message: "boom", retryable: false })
              -> attempt.failed(c#1 failed handler_error) step.failed(c) step.cancelled(d) compensation.started step.compensating(b)
              run=compensating a=completed/undo:pending b=compensating/undo:ready c=failed d=cancelled
            t=7 Claim(b)
              -> attempt.claimed(b#2 compensate)
              run=compensating a=completed/undo:pending b=compensating/undo:running c=failed d=cancelled
            t=8 Result(b, Failed { reason: HandlerError, message: "refund api down", retryable: true })
              -> attempt.failed(b#2 failed handler_error) step.retrying(b)
              run=compensating a=completed/undo:pending b=compensating/undo:retrying c=failed d=cancelled
            t=1008 TimerFired { step: 1 }
              -> step.compensating(b)
              run=compensating a=completed/undo:pending b=compensating/undo:ready c=failed d=cancelled
            t=1009 Claim(b)
              -> attempt.claimed(b#3 compensate)
              run=compensating a=completed/undo:pending b=compensating/undo:running c=failed d=cancelled
            t=1010 Result(b, Failed { reason: HandlerError, message: "still down", retryable: true })
              -> attempt.failed(b#3 failed handler_error) step.compensation_failed(b) step.compensating(a)
              run=compensating a=compensating/undo:ready b=failed/undo:failed c=failed d=cancelled
            t=1011 Claim(a)
              -> attempt.claimed(a#2 compensate)
              run=compensating a=compensating/undo:running b=failed/undo:failed c=failed d=cancelled
            t=1012 Result(a, Completed(Null))
              -> attempt.completed(a#2 completed) step.compensated(a) compensation.failed run.failed
              run=failed a=compensated/undo:completed b=failed/undo:failed c=failed d=cancelled
            t=2000 Retry
              -> run.retried step.compensating(b)
              run=compensating a=compensated/undo:completed b=compensating/undo:ready c=failed d=cancelled
            t=2001 Claim(b)
              -> attempt.claimed(b#4 compensate)
              run=compensating a=compensated/undo:completed b=compensating/undo:running c=failed d=cancelled
            t=2002 Result(b, Completed(Null))
              -> attempt.completed(b#4 completed) step.compensated(b) compensation.completed
              run=compensated a=compensated/undo:completed b=compensated/undo:completed c=failed d=cancelled
        "#]],
    );
}

#[test]
fn a_failed_undo_skipped_by_an_operator_compensates_the_run() {
    trace(
        CHAIN,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!(1)))),
            (3, Claim(1)),
            (4, Result(1, ok(json!(2)))),
            (5, Claim(2)),
            (6, Result(2, failed(Reason::HandlerError, "boom", false))),
            (7, Claim(1)),
            (8, Result(1, failed(Reason::HandlerError, "gone", false))),
            (9, Run(Event::SkipCompensation { step: 0 })),
            (10, Claim(0)),
            (11, Result(0, ok(json!(null)))),
            (12, Run(Event::SkipCompensation { step: 1 })),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(a)
              run=pending a=ready b=pending c=pending d=pending
            t=1 Claim(a)
              -> attempt.claimed(a#1) run.started
              run=running a=running b=pending c=pending d=pending
            t=2 Result(a, Completed(Number(1)))
              -> attempt.completed(a#1 completed) step.completed(a) step.ready(b)
              run=running a=completed b=ready c=pending d=pending
            t=3 Claim(b)
              -> attempt.claimed(b#1)
              run=running a=completed b=running c=pending d=pending
            t=4 Result(b, Completed(Number(2)))
              -> attempt.completed(b#1 completed) step.completed(b) step.ready(c)
              run=running a=completed b=completed c=ready d=pending
            t=5 Claim(c)
              -> attempt.claimed(c#1)
              run=running a=completed b=completed c=running d=pending
            t=6 Result(c, Failed { reason: HandlerError, message: "boom", retryable: false })
              -> attempt.failed(c#1 failed handler_error) step.failed(c) step.cancelled(d) compensation.started step.compensating(b)
              run=compensating a=completed/undo:pending b=compensating/undo:ready c=failed d=cancelled
            t=7 Claim(b)
              -> attempt.claimed(b#2 compensate)
              run=compensating a=completed/undo:pending b=compensating/undo:running c=failed d=cancelled
            t=8 Result(b, Failed { reason: HandlerError, message: "gone", retryable: false })
              -> attempt.failed(b#2 failed handler_error) step.compensation_failed(b) step.compensating(a)
              run=compensating a=compensating/undo:ready b=failed/undo:failed c=failed d=cancelled
            t=9 SkipCompensation { step: 0 }
              -> REJECTED: step `a` has no failed compensation to skip
              run=compensating a=compensating/undo:ready b=failed/undo:failed c=failed d=cancelled
            t=10 Claim(a)
              -> attempt.claimed(a#2 compensate)
              run=compensating a=compensating/undo:running b=failed/undo:failed c=failed d=cancelled
            t=11 Result(a, Completed(Null))
              -> attempt.completed(a#2 completed) step.compensated(a) compensation.failed run.failed
              run=failed a=compensated/undo:completed b=failed/undo:failed c=failed d=cancelled
            t=12 SkipCompensation { step: 1 }
              -> compensation.skipped(b) compensation.completed
              run=compensated a=compensated/undo:completed b=compensated/undo:skipped c=failed d=cancelled
        "#]],
    );
}

const ON_CANCEL: &str = "name: saga\ncompensate_on: [failure, cancel]\nsteps:\n  - {name: a, handler: h, compensate: undo_a}\n  - {name: b, handler: h, compensate: undo_b, depends_on: [a]}\n  - {name: c, handler: h, depends_on: [b]}\n";

#[test]
fn cancel_with_compensate_on_cancel_undoes_the_completed_steps() {
    trace(
        ON_CANCEL,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!(1)))),
            (3, Claim(1)),
            (4, Heartbeat(1)),
            (5, Run(Event::Cancel)),
            (6, Heartbeat(1)),
            (7, Result(1, ok(json!(2)))),
            (8, Claim(0)),
            (9, Claim(1)),
            (10, Result(1, ok(json!(null)))),
            (11, Claim(0)),
            (12, Result(0, ok(json!(null)))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(a)
              run=pending a=ready b=pending c=pending
            t=1 Claim(a)
              -> attempt.claimed(a#1) run.started
              run=running a=running b=pending c=pending
            t=2 Result(a, Completed(Number(1)))
              -> attempt.completed(a#1 completed) step.completed(a) step.ready(b)
              run=running a=completed b=ready c=pending
            t=3 Claim(b)
              -> attempt.claimed(b#1)
              run=running a=completed b=running c=pending
            t=4 Heartbeat(b)
              -> renewed until 30004
              run=running a=completed b=running c=pending
            t=5 Cancel
              -> step.cancelled(c) compensation.started
              run=compensating a=completed/undo:pending b=running c=cancelled
            t=6 Heartbeat(b)
              -> cancel_requested
              run=compensating a=completed/undo:pending b=running c=cancelled
            t=7 Result(b, Completed(Number(2)))
              -> attempt.completed(b#1 completed) step.completed(b) step.compensating(b)
              run=compensating a=completed/undo:pending b=compensating/undo:ready c=cancelled
            t=8 Claim(a)
              -> NOT CLAIMED: step is completed
              run=compensating a=completed/undo:pending b=compensating/undo:ready c=cancelled
            t=9 Claim(b)
              -> attempt.claimed(b#2 compensate)
              run=compensating a=completed/undo:pending b=compensating/undo:running c=cancelled
            t=10 Result(b, Completed(Null))
              -> attempt.completed(b#2 completed) step.compensated(b) step.compensating(a)
              run=compensating a=compensating/undo:ready b=compensated/undo:completed c=cancelled
            t=11 Claim(a)
              -> attempt.claimed(a#2 compensate)
              run=compensating a=compensating/undo:running b=compensated/undo:completed c=cancelled
            t=12 Result(a, Completed(Null))
              -> attempt.completed(a#2 completed) step.compensated(a) compensation.completed
              run=compensated a=compensated/undo:completed b=compensated/undo:completed c=cancelled
        "#]],
    );
}

/// A step still running when its sibling fails finishes first: the run
/// settles only once nothing can move, then its undo runs before its
/// dependency's (reverse DAG order).
#[test]
fn a_step_running_when_a_sibling_fails_finishes_then_is_undone_first() {
    trace(
        "name: saga\nsteps:\n  - {name: root, handler: h, compensate: undo}\n  - {name: x, handler: h, compensate: undo, depends_on: [root]}\n  - {name: y, handler: h, depends_on: [root], retry: {max_attempts: 1}}\n",
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!(0)))),
            (3, Claim(1)),
            (3, Claim(2)),
            (4, Result(2, failed(Reason::HandlerError, "no", false))),
            (5, Heartbeat(1)),
            (6, Result(1, ok(json!(1)))),
            (7, Claim(0)),
            (8, Claim(1)),
            (9, Result(1, ok(json!(null)))),
            (10, Claim(0)),
            (11, Result(0, ok(json!(null)))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(root)
              run=pending root=ready x=pending y=pending
            t=1 Claim(root)
              -> attempt.claimed(root#1) run.started
              run=running root=running x=pending y=pending
            t=2 Result(root, Completed(Number(0)))
              -> attempt.completed(root#1 completed) step.completed(root) step.ready(x) step.ready(y)
              run=running root=completed x=ready y=ready
            t=3 Claim(x)
              -> attempt.claimed(x#1)
              run=running root=completed x=running y=ready
            t=3 Claim(y)
              -> attempt.claimed(y#1)
              run=running root=completed x=running y=running
            t=4 Result(y, Failed { reason: HandlerError, message: "no", retryable: false })
              -> attempt.failed(y#1 failed handler_error) step.failed(y)
              run=running root=completed x=running y=failed
            t=5 Heartbeat(x)
              -> renewed until 30005
              run=running root=completed x=running y=failed
            t=6 Result(x, Completed(Number(1)))
              -> attempt.completed(x#1 completed) step.completed(x) compensation.started step.compensating(x)
              run=compensating root=completed/undo:pending x=compensating/undo:ready y=failed
            t=7 Claim(root)
              -> NOT CLAIMED: step is completed
              run=compensating root=completed/undo:pending x=compensating/undo:ready y=failed
            t=8 Claim(x)
              -> attempt.claimed(x#2 compensate)
              run=compensating root=completed/undo:pending x=compensating/undo:running y=failed
            t=9 Result(x, Completed(Null))
              -> attempt.completed(x#2 completed) step.compensated(x) step.compensating(root)
              run=compensating root=compensating/undo:ready x=compensated/undo:completed y=failed
            t=10 Claim(root)
              -> attempt.claimed(root#2 compensate)
              run=compensating root=compensating/undo:running x=compensated/undo:completed y=failed
            t=11 Result(root, Completed(Null))
              -> attempt.completed(root#2 completed) step.compensated(root) compensation.completed
              run=compensated root=compensated/undo:completed x=compensated/undo:completed y=failed
        "#]],
    );
}

#[test]
fn cancel_during_compensating_stops_the_undos_not_done() {
    trace(
        CHAIN,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!(1)))),
            (3, Claim(1)),
            (4, Result(1, ok(json!(2)))),
            (5, Claim(2)),
            (6, Result(2, failed(Reason::HandlerError, "boom", false))),
            (7, Claim(1)),
            (8, Run(Event::Cancel)),
            (9, Heartbeat(1)),
            (10, Result(1, ok(json!(null)))),
            (11, Run(Event::Retry)),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(a)
              run=pending a=ready b=pending c=pending d=pending
            t=1 Claim(a)
              -> attempt.claimed(a#1) run.started
              run=running a=running b=pending c=pending d=pending
            t=2 Result(a, Completed(Number(1)))
              -> attempt.completed(a#1 completed) step.completed(a) step.ready(b)
              run=running a=completed b=ready c=pending d=pending
            t=3 Claim(b)
              -> attempt.claimed(b#1)
              run=running a=completed b=running c=pending d=pending
            t=4 Result(b, Completed(Number(2)))
              -> attempt.completed(b#1 completed) step.completed(b) step.ready(c)
              run=running a=completed b=completed c=ready d=pending
            t=5 Claim(c)
              -> attempt.claimed(c#1)
              run=running a=completed b=completed c=running d=pending
            t=6 Result(c, Failed { reason: HandlerError, message: "boom", retryable: false })
              -> attempt.failed(c#1 failed handler_error) step.failed(c) step.cancelled(d) compensation.started step.compensating(b)
              run=compensating a=completed/undo:pending b=compensating/undo:ready c=failed d=cancelled
            t=7 Claim(b)
              -> attempt.claimed(b#2 compensate)
              run=compensating a=completed/undo:pending b=compensating/undo:running c=failed d=cancelled
            t=8 Cancel
              -> compensation.cancelled run.cancelled [b#2 cancelled]
              run=cancelled a=completed/undo:cancelled b=completed/undo:cancelled c=failed d=cancelled
            t=9 Heartbeat(b)
              -> cancel_requested
              run=cancelled a=completed/undo:cancelled b=completed/undo:cancelled c=failed d=cancelled
            t=10 Result(b, Completed(Null))
              -> REFUSED: attempt_not_running
              run=cancelled a=completed/undo:cancelled b=completed/undo:cancelled c=failed d=cancelled
            t=11 Retry
              -> REJECTED: run is cancelled and its compensation began: it cannot be retried
              run=cancelled a=completed/undo:cancelled b=completed/undo:cancelled c=failed d=cancelled
        "#]],
    );
}

#[test]
fn a_run_without_undos_fails_as_before() {
    trace(
        "name: w\nsteps:\n  - {name: a, handler: h}\n  - {name: b, handler: h, depends_on: [a], retry: {max_attempts: 1}}\n",
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!(1)))),
            (3, Claim(1)),
            (4, Result(1, failed(Reason::HandlerError, "boom", false))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(a)
              run=pending a=ready b=pending
            t=1 Claim(a)
              -> attempt.claimed(a#1) run.started
              run=running a=running b=pending
            t=2 Result(a, Completed(Number(1)))
              -> attempt.completed(a#1 completed) step.completed(a) step.ready(b)
              run=running a=completed b=ready
            t=3 Claim(b)
              -> attempt.claimed(b#1)
              run=running a=completed b=running
            t=4 Result(b, Failed { reason: HandlerError, message: "boom", retryable: false })
              -> attempt.failed(b#1 failed handler_error) step.failed(b) run.failed
              run=failed a=completed b=failed
        "#]],
    );
}
