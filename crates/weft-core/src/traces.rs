//! The text-trace tests of the whole lifecycle: run and step transitions
//! (`machine.rs`) and attempts (`attempt.rs`: claims, results, late results,
//! lapsed leases, releases, attempts ended with their run), driven the way
//! the store drives them, each event rendered with the history events it
//! writes and the statuses after it.

use std::fmt::Write;

use expect_test::{Expect, expect};
use serde_json::Value;

use crate::{
    AttemptStatus, Definition, Reason, RunState,
    attempt::{self, Claim, End, Report},
    machine::{Context, Event, apply},
};

/// One thing that happens to a run, as the store sees it.
#[derive(Debug, Clone)]
pub(crate) enum Act {
    /// A run or step event applied under the run lock.
    Run(Event),
    /// A worker claims the step (the claim query).
    Claim(usize),
    /// The step's attempt's worker reports.
    Result(usize, Report),
    Heartbeat(usize),
    /// The reaper looks at the step's attempt's lease.
    Lapse(usize),
    /// The step's attempt's worker shuts down and hands it back.
    Release(usize),
}

pub(crate) use Act::*;

/// An attempt out (its lease row), as the harness tracks it.
#[derive(Debug, Clone, Copy)]
struct Out {
    attempt: i64,
    claim: Claim,
    expires_at: i64,
    status: AttemptStatus,
}

pub(crate) fn ok(output: Value) -> Report {
    Report::Completed(output)
}

pub(crate) fn failed(reason: Reason, message: &str, retryable: bool) -> Report {
    Report::Failed {
        reason,
        message: message.to_owned(),
        retryable,
    }
}

const LEASE_MS: u64 = 30_000;
const MAX_OUTPUT_BYTES: u64 = 64;

/// Applies `acts` in order and renders each with the history events it
/// writes (attempts as `step#attempt`) and the statuses after it.
pub(crate) fn trace(manifest: &str, input: Value, acts: &[(i64, Act)], expected: Expect) {
    let def = Definition::parse(manifest).unwrap();
    let mut state = RunState::new(&def, input);
    let mut outs: Vec<Option<Out>> = vec![None; def.steps.len()];
    let mut released = vec![0u32; def.steps.len()];
    let mut out = String::new();
    for (now, act) in acts {
        let now = *now;
        let name = |step: usize| def.steps[step].name.clone();
        let cx = Context {
            now_ms: now,
            random: 0.5,
        };
        let mut lines: Vec<String> = Vec::new();
        let run_event = |state: &mut RunState,
                         outs: &mut Vec<Option<Out>>,
                         event: Event,
                         lines: &mut Vec<String>| {
            let before = state.status;
            let steps_before = state.steps.clone();
            match apply(&def, state, event, cx) {
                Ok(effects) => {
                    for e in effects {
                        assert_in_catalogue(e.kind(), &e.data());
                        lines.push(match e.step() {
                            Some(i) => format!("{}({})", e.kind(), name(i)),
                            None => e.kind().to_string(),
                        });
                    }
                    for (step, o) in outs.iter_mut().enumerate() {
                        if let (Some(o), Some(end)) = (
                            o.as_mut().filter(|o| o.status == AttemptStatus::Running),
                            attempt::step_ended(&steps_before[step], &state.steps[step]),
                        ) {
                            o.status = end.status;
                            lines.push(format!("[{}#{} {}]", name(step), o.attempt, end.status));
                        }
                    }
                    if let Some(end) = attempt::run_ended(before, state.status) {
                        for (step, o) in outs.iter_mut().enumerate() {
                            if let Some(o) =
                                o.as_mut().filter(|o| o.status == AttemptStatus::Running)
                            {
                                o.status = end.status;
                                lines.push(format!(
                                    "[{}#{} {}]",
                                    name(step),
                                    o.attempt,
                                    end.status
                                ));
                            }
                        }
                    }
                }
                Err(err) => lines.push(format!("REJECTED: {err}")),
            }
        };
        let label = match act {
            Run(event) => format!("{event:?}"),
            Claim(s) => format!("Claim({})", name(*s)),
            Result(s, report) => format!("Result({}, {report:?})", name(*s)),
            Heartbeat(s) => format!("Heartbeat({})", name(*s)),
            Lapse(s) => format!("Lapse({})", name(*s)),
            Release(s) => format!("Release({})", name(*s)),
        };
        let ending = |step: usize, out: &Out, end: &End| {
            let mut text = String::new();
            if end.lease_expired {
                write!(text, "lease.expired({}#{}) ", name(step), out.attempt).unwrap();
            }
            write!(
                text,
                "{}({}#{} {}",
                end.kind.expect("an attempt's own end has an event"),
                name(step),
                out.attempt,
                end.status
            )
            .unwrap();
            if let Some(reason) = end.reason {
                write!(text, " {reason}").unwrap();
            }
            if let Some(releases) = end.releases {
                write!(text, " releases={releases}").unwrap();
            }
            if end.late {
                text.push_str(" late");
            }
            text.push(')');
            text
        };
        match act.clone() {
            Run(event) => run_event(&mut state, &mut outs, event, &mut lines),
            Claim(step) => {
                let s = &state.steps[step];
                let kind = if s.undo == Some(attempt::READY_UNDO) {
                    crate::AttemptKind::Compensate
                } else {
                    crate::AttemptKind::Forward
                };
                if s.status != crate::StepStatus::Ready && kind == crate::AttemptKind::Forward {
                    lines.push(format!("NOT CLAIMED: step is {}", s.status));
                } else {
                    let claim = attempt::claim(
                        kind,
                        &def.steps[step],
                        state.status,
                        i64::from(s.n_attempts),
                        None,
                        now,
                        LEASE_MS,
                    );
                    claim.apply(&mut state.status, &mut state.steps[step]);
                    assert_in_catalogue(
                        crate::EventKind::AttemptClaimed,
                        &claim.data("worker-1", "00f067aa0ba902b7".parse().unwrap()),
                    );
                    for kind in claim.events() {
                        lines.push(match kind {
                            crate::EventKind::AttemptClaimed
                                if claim.kind == crate::AttemptKind::Compensate =>
                            {
                                format!("{kind}({}#{} compensate)", name(step), claim.attempt)
                            }
                            crate::EventKind::AttemptClaimed => {
                                format!("{kind}({}#{})", name(step), claim.attempt)
                            }
                            _ => kind.to_string(),
                        });
                    }
                    outs[step] = Some(Out {
                        attempt: claim.attempt,
                        claim,
                        expires_at: claim.expires_at,
                        status: AttemptStatus::Running,
                    });
                }
            }
            Heartbeat(step) => match outs[step].as_mut() {
                None => lines.push("STALE LEASE".into()),
                Some(o) => {
                    let beat = attempt::heartbeat(
                        state.status,
                        o.claim.kind,
                        o.status,
                        o.claim.deadline_at,
                        o.claim.lease_ms,
                        now,
                    );
                    match beat.renew_until {
                        Some(until) => {
                            o.expires_at = until;
                            lines.push(format!("renewed until {until}"));
                        }
                        None => lines.push("cancel_requested".into()),
                    }
                }
            },
            Result(step, _) | Lapse(step) | Release(step) => {
                // The lease is taken (deleted) first, then the attempt judged.
                let end = match (outs[step], act) {
                    (None, _) => {
                        lines.push("STALE LEASE".into());
                        None
                    }
                    (Some(o), _) => match act {
                        Lapse(_) => {
                            if o.status != AttemptStatus::Running {
                                // An attempt of an ended run: its lease is dropped.
                                outs[step] = None;
                                lines.push("lease dropped".into());
                                None
                            } else {
                                let end = attempt::lapse(
                                    &def.steps[step],
                                    step,
                                    o.expires_at,
                                    o.claim.deadline_at,
                                    now,
                                );
                                if end.is_none() {
                                    lines.push("not lapsed".into());
                                }
                                end
                            }
                        }
                        _ if !attempt::still_counts(&state.steps[step], o.attempt) => {
                            outs[step] = None;
                            lines.push("REFUSED: attempt_not_running".into());
                            None
                        }
                        Result(_, report) => Some(attempt::result(
                            step,
                            report.clone(),
                            now,
                            o.claim.deadline_at,
                            MAX_OUTPUT_BYTES,
                        )),
                        Release(_) => Some(attempt::release(
                            step,
                            released[step],
                            None,
                            now,
                            o.claim.deadline_at,
                        )),
                        _ => unreachable!(),
                    }
                    .map(|end| (o, end)),
                };
                if let Some((o, end)) = end {
                    outs[step] = None;
                    if end.status == AttemptStatus::Released {
                        released[step] += 1;
                    }
                    let timing = serde_json::json!({"queue_wait_ms": 0});
                    assert_in_catalogue(end.kind.expect("an event"), &end.data(timing));
                    if end.lease_expired {
                        assert_in_catalogue(
                            crate::EventKind::LeaseExpired,
                            &end.lease_expired_data(),
                        );
                    }
                    lines.push(ending(step, &o, &end));
                    run_event(
                        &mut state,
                        &mut outs,
                        end.event.clone().expect("an event"),
                        &mut lines,
                    );
                }
            }
        }
        let steps: Vec<String> = def
            .steps
            .iter()
            .zip(&state.steps)
            .map(|(d, s)| match s.undo {
                Some(undo) => format!("{}={}/undo:{undo}", d.name, s.status),
                None => format!("{}={}", d.name, s.status),
            })
            .collect();
        writeln!(
            out,
            "t={now} {label}\n  -> {}\n  run={} {}",
            lines.join(" "),
            state.status,
            steps.join(" ")
        )
        .unwrap();
    }
    expected.assert_eq(&out);
}

/// Every key of an event's payload is a field the catalogue lists for its
/// kind, and every field it lists as always there is there (`run.failed`'s
/// `error` aside: the store adds the run's error to it).
fn assert_in_catalogue(kind: crate::EventKind, data: &Value) {
    let map = data.as_object().expect("a payload is an object");
    for key in map.keys() {
        assert!(
            kind.carries(key),
            "{kind} carries `{key}`, which the catalogue does not list"
        );
    }
    for field in kind.fields().iter().filter(|f| f.always) {
        if (kind, field.name) != (crate::EventKind::RunFailed, "error") {
            assert!(
                map.contains_key(field.name),
                "{kind} without `{}`",
                field.name
            );
        }
    }
}

const LINEAR: &str = "name: etl\nsteps:\n  - {name: extract, handler: h, retry: {max_attempts: 2, initial: 1s, jitter: false}}\n  - {name: load, handler: h, depends_on: [extract]}\n";

#[test]
fn linear_with_one_retry() {
    trace(
        LINEAR,
        serde_json::json!({}),
        &[
            (0, Run(Event::Start)),
            (10, Claim(0)),
            (20, Result(0, failed(Reason::HandlerError, "boom", true))),
            (500, Run(Event::TimerFired { step: 0 })),
            (1020, Run(Event::TimerFired { step: 0 })),
            (1030, Claim(0)),
            (1040, Result(0, ok(serde_json::json!(1)))),
            (1041, Result(0, ok(serde_json::json!(1)))),
            (1050, Claim(1)),
            (1060, Result(1, ok(serde_json::json!(2)))),
            (1070, Run(Event::Cancel)),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(extract)
              run=pending extract=ready load=pending
            t=10 Claim(extract)
              -> attempt.claimed(extract#1) run.started
              run=running extract=running load=pending
            t=20 Result(extract, Failed { reason: HandlerError, message: "boom", retryable: true })
              -> attempt.failed(extract#1 failed handler_error) step.retrying(extract)
              run=running extract=retrying load=pending
            t=500 TimerFired { step: 0 }
              -> 
              run=running extract=retrying load=pending
            t=1020 TimerFired { step: 0 }
              -> step.ready(extract)
              run=running extract=ready load=pending
            t=1030 Claim(extract)
              -> attempt.claimed(extract#2)
              run=running extract=running load=pending
            t=1040 Result(extract, Completed(Number(1)))
              -> attempt.completed(extract#2 completed) step.completed(extract) step.ready(load)
              run=running extract=completed load=ready
            t=1041 Result(extract, Completed(Number(1)))
              -> STALE LEASE
              run=running extract=completed load=ready
            t=1050 Claim(load)
              -> attempt.claimed(load#1)
              run=running extract=completed load=running
            t=1060 Result(load, Completed(Number(2)))
              -> attempt.completed(load#1 completed) step.completed(load) run.completed
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
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, failed(Reason::HandlerError, "slow", true))),
            (1002, Run(Event::TimerFired { step: 0 })),
            (1003, Claim(0)),
            (40_000, Lapse(0)),
            (40_001, Run(Event::Retry)),
            (40_002, Claim(0)),
            (40_003, Result(0, ok(Value::Null))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(extract)
              run=pending extract=ready load=pending
            t=1 Claim(extract)
              -> attempt.claimed(extract#1) run.started
              run=running extract=running load=pending
            t=2 Result(extract, Failed { reason: HandlerError, message: "slow", retryable: true })
              -> attempt.failed(extract#1 failed handler_error) step.retrying(extract)
              run=running extract=retrying load=pending
            t=1002 TimerFired { step: 0 }
              -> step.ready(extract)
              run=running extract=ready load=pending
            t=1003 Claim(extract)
              -> attempt.claimed(extract#2)
              run=running extract=running load=pending
            t=40000 Lapse(extract)
              -> lease.expired(extract#2) attempt.failed(extract#2 failed lease_expired) step.failed(extract) step.cancelled(load) run.failed
              run=failed extract=failed load=cancelled
            t=40001 Retry
              -> run.retried step.ready(extract)
              run=running extract=ready load=pending
            t=40002 Claim(extract)
              -> attempt.claimed(extract#3)
              run=running extract=running load=pending
            t=40003 Result(extract, Completed(Null))
              -> attempt.completed(extract#3 completed) step.completed(extract) step.ready(load)
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
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(Value::Null))),
            (3, Claim(1)),
            (3, Claim(2)),
            (4, Result(1, ok(Value::Null))),
            (5, Result(1, ok(Value::Null))),
            (6, Claim(3)),
            (7, Result(3, ok(serde_json::json!("done")))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(split)
              run=pending split=ready a=pending b=pending join=pending
            t=1 Claim(split)
              -> attempt.claimed(split#1) run.started
              run=running split=running a=pending b=pending join=pending
            t=2 Result(split, Completed(Null))
              -> attempt.completed(split#1 completed) step.completed(split) step.ready(a) step.skipped(b)
              run=running split=completed a=ready b=skipped join=pending
            t=3 Claim(a)
              -> attempt.claimed(a#1)
              run=running split=completed a=running b=skipped join=pending
            t=3 Claim(b)
              -> NOT CLAIMED: step is skipped
              run=running split=completed a=running b=skipped join=pending
            t=4 Result(a, Completed(Null))
              -> attempt.completed(a#1 completed) step.completed(a) step.ready(join)
              run=running split=completed a=completed b=skipped join=ready
            t=5 Result(a, Completed(Null))
              -> STALE LEASE
              run=running split=completed a=completed b=skipped join=ready
            t=6 Claim(join)
              -> attempt.claimed(join#1)
              run=running split=completed a=completed b=skipped join=running
            t=7 Result(join, Completed(String("done")))
              -> attempt.completed(join#1 completed) step.completed(join) run.completed
              run=completed split=completed a=completed b=skipped join=completed
        "#]],
    );
}

#[test]
fn a_failure_cancels_its_dependants_and_lets_other_branches_finish() {
    trace(
        FAN,
        serde_json::json!({"with_b": true}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(Value::Null))),
            (3, Claim(1)),
            (4, Claim(2)),
            (5, Result(2, failed(Reason::InvalidOutput, "bad", false))),
            (6, Heartbeat(1)),
            (7, Result(1, ok(Value::Null))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(split)
              run=pending split=ready a=pending b=pending join=pending
            t=1 Claim(split)
              -> attempt.claimed(split#1) run.started
              run=running split=running a=pending b=pending join=pending
            t=2 Result(split, Completed(Null))
              -> attempt.completed(split#1 completed) step.completed(split) step.ready(a) step.ready(b)
              run=running split=completed a=ready b=ready join=pending
            t=3 Claim(a)
              -> attempt.claimed(a#1)
              run=running split=completed a=running b=ready join=pending
            t=4 Claim(b)
              -> attempt.claimed(b#1)
              run=running split=completed a=running b=running join=pending
            t=5 Result(b, Failed { reason: InvalidOutput, message: "bad", retryable: false })
              -> attempt.failed(b#1 failed invalid_output) step.failed(b) step.cancelled(join)
              run=running split=completed a=running b=failed join=cancelled
            t=6 Heartbeat(a)
              -> renewed until 30006
              run=running split=completed a=running b=failed join=cancelled
            t=7 Result(a, Completed(Null))
              -> attempt.completed(a#1 completed) step.completed(a) run.failed
              run=failed split=completed a=completed b=failed join=cancelled
        "#]],
    );
    trace(
        FAN,
        serde_json::json!({"with_b": true}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Run(Event::Cancel)),
            (40_000, Lapse(0)),
            (40_001, Run(Event::Retry)),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(split)
              run=pending split=ready a=pending b=pending join=pending
            t=1 Claim(split)
              -> attempt.claimed(split#1) run.started
              run=running split=running a=pending b=pending join=pending
            t=2 Cancel
              -> step.cancelled(split) step.cancelled(a) step.cancelled(b) step.cancelled(join) run.cancelled [split#1 cancelled]
              run=cancelled split=cancelled a=cancelled b=cancelled join=cancelled
            t=40000 Lapse(split)
              -> lease dropped
              run=cancelled split=cancelled a=cancelled b=cancelled join=cancelled
            t=40001 Retry
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
            (0, Run(Event::Start)),
            (999, Run(Event::TimerFired { step: 0 })),
            (1000, Run(Event::TimerFired { step: 0 })),
            (1001, Run(Event::Approve { step: 2 })),
            (1002, Run(Event::Approve { step: 1 })),
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
    trace(
        manifest,
        Value::Null,
        &[
            (0, Run(Event::Start)),
            (1000, Run(Event::TimerFired { step: 0 })),
            (
                1001,
                Run(Event::Reject {
                    step: 1,
                    message: "no".into(),
                }),
            ),
        ],
        expect![[r#"
            t=0 Start
              -> step.waiting(nap) run.started
              run=running nap=waiting ok=pending go=pending
            t=1000 TimerFired { step: 0 }
              -> step.completed(nap) step.waiting(ok)
              run=running nap=completed ok=waiting go=pending
            t=1001 Reject { step: 1, message: "no" }
              -> step.failed(ok) step.cancelled(go) run.failed
              run=failed nap=completed ok=failed go=cancelled
        "#]],
    );
}

#[test]
fn approval_timeouts() {
    // on_timeout: reject (the default) fails the step and the run.
    let manifest = "name: a\nsteps:\n  - {name: ok, kind: approval, timeout: 1s}\n  - {name: go, handler: h, depends_on: [ok]}\n";
    trace(
        manifest,
        Value::Null,
        &[
            (0, Run(Event::Start)),
            (999, Run(Event::TimerFired { step: 0 })),
            (1000, Run(Event::TimerFired { step: 0 })),
            (1001, Run(Event::TimerFired { step: 0 })),
        ],
        expect![[r#"
            t=0 Start
              -> step.waiting(ok) run.started
              run=running ok=waiting go=pending
            t=999 TimerFired { step: 0 }
              -> 
              run=running ok=waiting go=pending
            t=1000 TimerFired { step: 0 }
              -> step.failed(ok) step.cancelled(go) run.failed
              run=failed ok=failed go=cancelled
            t=1001 TimerFired { step: 0 }
              -> REJECTED: run is failed, not pending or running
              run=failed ok=failed go=cancelled
        "#]],
    );
    // on_timeout: approve completes the step; a decision before the timeout
    // wins and the late timer is a no-op.
    let manifest = "name: a\nsteps:\n  - {name: ok, kind: approval, timeout: 1s, on_timeout: approve}\n  - {name: go, handler: h, depends_on: [ok]}\n";
    trace(
        manifest,
        Value::Null,
        &[
            (0, Run(Event::Start)),
            (1000, Run(Event::TimerFired { step: 0 })),
        ],
        expect![[r#"
            t=0 Start
              -> step.waiting(ok) run.started
              run=running ok=waiting go=pending
            t=1000 TimerFired { step: 0 }
              -> step.completed(ok) step.ready(go)
              run=running ok=completed go=ready
        "#]],
    );
    trace(
        manifest,
        Value::Null,
        &[
            (0, Run(Event::Start)),
            (
                500,
                Run(Event::Reject {
                    step: 0,
                    message: "no".into(),
                }),
            ),
            (1000, Run(Event::TimerFired { step: 0 })),
        ],
        expect![[r#"
            t=0 Start
              -> step.waiting(ok) run.started
              run=running ok=waiting go=pending
            t=500 Reject { step: 0, message: "no" }
              -> step.failed(ok) step.cancelled(go) run.failed
              run=failed ok=failed go=cancelled
            t=1000 TimerFired { step: 0 }
              -> REJECTED: run is failed, not pending or running
              run=failed ok=failed go=cancelled
        "#]],
    );
}

#[test]
fn releases_spend_no_attempt_until_the_cap() {
    let manifest = "name: r\nsteps:\n  - {name: work, handler: h, retry: {max_attempts: 2, initial: 1s, jitter: false}}\n";
    trace(
        manifest,
        Value::Null,
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Release(0)),
            (3, Claim(0)),
            (4, Release(0)),
            (5, Claim(0)),
            (6, Release(0)),
            (7, Release(0)),
            (8, Claim(0)),
            (9, Release(0)),
            (1009, Run(Event::TimerFired { step: 0 })),
            (1010, Claim(0)),
            (1011, Release(0)),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(work)
              run=pending work=ready
            t=1 Claim(work)
              -> attempt.claimed(work#1) run.started
              run=running work=running
            t=2 Release(work)
              -> attempt.released(work#1 released worker_shutdown releases=1) step.ready(work)
              run=running work=ready
            t=3 Claim(work)
              -> attempt.claimed(work#2)
              run=running work=running
            t=4 Release(work)
              -> attempt.released(work#2 released worker_shutdown releases=2) step.ready(work)
              run=running work=ready
            t=5 Claim(work)
              -> attempt.claimed(work#3)
              run=running work=running
            t=6 Release(work)
              -> attempt.released(work#3 released worker_shutdown releases=3) step.ready(work)
              run=running work=ready
            t=7 Release(work)
              -> STALE LEASE
              run=running work=ready
            t=8 Claim(work)
              -> attempt.claimed(work#4)
              run=running work=running
            t=9 Release(work)
              -> attempt.failed(work#4 failed worker_shutdown releases=4) step.retrying(work)
              run=running work=retrying
            t=1009 TimerFired { step: 0 }
              -> step.ready(work)
              run=running work=ready
            t=1010 Claim(work)
              -> attempt.claimed(work#5)
              run=running work=running
            t=1011 Release(work)
              -> attempt.failed(work#5 failed worker_shutdown releases=4) step.failed(work) run.failed
              run=failed work=failed
        "#]],
    );
}

const TIMED: &str = "name: t\nsteps:\n  - {name: slow, handler: h, timeout: 100ms, retry: {max_attempts: 3, initial: 1s, jitter: false}}\n  - {name: beat, handler: h, heartbeat_timeout: 50ms, retry: {max_attempts: 3, initial: 1s, jitter: false}}\n";

#[test]
fn lapsed_leases_late_results_and_timeouts() {
    trace(
        TIMED,
        Value::Null,
        &[
            (0, Run(Event::Start)),
            (10, Claim(0)),
            (10, Claim(1)),
            (40, Heartbeat(1)),
            (59, Lapse(1)),
            (89, Lapse(1)),
            (90, Lapse(1)),
            (100, Heartbeat(0)),
            (110, Heartbeat(0)),
            (111, Result(0, ok(Value::Null))),
            (1090, Run(Event::TimerFired { step: 1 })),
            (1111, Run(Event::TimerFired { step: 0 })),
            (1112, Claim(0)),
            (1212, Lapse(0)),
            (2212, Run(Event::TimerFired { step: 0 })),
            (3212, Run(Event::TimerFired { step: 0 })),
            (3213, Claim(0)),
            (3400, Release(0)),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(slow) step.ready(beat)
              run=pending slow=ready beat=ready
            t=10 Claim(slow)
              -> attempt.claimed(slow#1) run.started
              run=running slow=running beat=ready
            t=10 Claim(beat)
              -> attempt.claimed(beat#1)
              run=running slow=running beat=running
            t=40 Heartbeat(beat)
              -> renewed until 90
              run=running slow=running beat=running
            t=59 Lapse(beat)
              -> not lapsed
              run=running slow=running beat=running
            t=89 Lapse(beat)
              -> not lapsed
              run=running slow=running beat=running
            t=90 Lapse(beat)
              -> lease.expired(beat#1) attempt.failed(beat#1 failed heartbeat_timeout) step.retrying(beat)
              run=running slow=running beat=retrying
            t=100 Heartbeat(slow)
              -> renewed until 30100
              run=running slow=running beat=retrying
            t=110 Heartbeat(slow)
              -> cancel_requested
              run=running slow=running beat=retrying
            t=111 Result(slow, Completed(Null))
              -> attempt.failed(slow#1 failed timeout late) step.retrying(slow)
              run=running slow=retrying beat=retrying
            t=1090 TimerFired { step: 1 }
              -> step.ready(beat)
              run=running slow=retrying beat=ready
            t=1111 TimerFired { step: 0 }
              -> step.ready(slow)
              run=running slow=ready beat=ready
            t=1112 Claim(slow)
              -> attempt.claimed(slow#2)
              run=running slow=running beat=ready
            t=1212 Lapse(slow)
              -> attempt.failed(slow#2 failed timeout) step.retrying(slow)
              run=running slow=retrying beat=ready
            t=2212 TimerFired { step: 0 }
              -> 
              run=running slow=retrying beat=ready
            t=3212 TimerFired { step: 0 }
              -> step.ready(slow)
              run=running slow=ready beat=ready
            t=3213 Claim(slow)
              -> attempt.claimed(slow#3)
              run=running slow=running beat=ready
            t=3400 Release(slow)
              -> attempt.failed(slow#3 failed timeout late) step.failed(slow)
              run=running slow=failed beat=ready
        "#]],
    );
}

#[test]
fn an_output_over_the_limit_fails_the_step_for_good() {
    trace(
        LINEAR,
        Value::Null,
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(serde_json::json!("x".repeat(100))))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(extract)
              run=pending extract=ready load=pending
            t=1 Claim(extract)
              -> attempt.claimed(extract#1) run.started
              run=running extract=running load=pending
            t=2 Result(extract, Completed(String("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")))
              -> attempt.failed(extract#1 failed invalid_output) step.failed(extract) step.cancelled(load) run.failed
              run=failed extract=failed load=cancelled
        "#]],
    );
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
        let claim = attempt::claim(
            crate::AttemptKind::Forward,
            &def.steps[step],
            state.status,
            0,
            None,
            0,
            LEASE_MS,
        );
        claim.apply(&mut state.status, &mut state.steps[step]);
        let end = attempt::result(step, ok(output), 0, None, u64::MAX);
        apply(&def, &mut state, end.event.unwrap(), cx).unwrap();
    }
    assert_eq!(state.output, Some(serde_json::json!({"load": {"rows": 3}})));
}

#[test]
fn releases_keep_the_budget_until_the_cap() {
    let manifest = "name: r\nsteps:\n  - {name: work, handler: h, retry: {max_attempts: 2, initial: 1s, jitter: false}}\n";
    let def = Definition::parse(manifest).unwrap();
    let mut state = RunState::new(&def, Value::Null);
    let cx = Context {
        now_ms: 0,
        random: 0.0,
    };
    apply(&def, &mut state, Event::Start, cx).unwrap();
    let claim_and_release = |state: &mut RunState, releases| {
        let n = i64::from(state.steps[0].n_attempts);
        attempt::claim(
            crate::AttemptKind::Forward,
            &def.steps[0],
            state.status,
            n,
            None,
            0,
            LEASE_MS,
        )
        .apply(&mut state.status, &mut state.steps[0]);
        let end = attempt::release(0, releases, Some("bye".into()), 0, None);
        apply(&def, state, end.event.unwrap(), cx).unwrap();
    };
    for releases in 0..3 {
        claim_and_release(&mut state, releases);
    }
    // Three releases cost nothing: three claims, none of them counted.
    assert_eq!(
        (state.steps[0].n_attempts, state.steps[0].attempt_base),
        (3, 3)
    );
    claim_and_release(&mut state, 3);
    assert_eq!(state.steps[0].reason, Some(Reason::WorkerShutdown));
    assert_eq!(state.steps[0].status, crate::StepStatus::Retrying);
    assert!(
        state.steps[0]
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("released 3 times already") && e.ends_with(": bye"))
    );
}

#[test]
fn a_when_that_cannot_be_evaluated_fails_the_run() {
    let manifest = "name: w\nsteps:\n  - {name: first, handler: h}\n  - {name: second, handler: h, depends_on: [first], when: \"input.n > 1\"}\n";
    trace(
        manifest,
        serde_json::json!({"n": "not a number"}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(Value::Null))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(first)
              run=pending first=ready second=pending
            t=1 Claim(first)
              -> attempt.claimed(first#1) run.started
              run=running first=running second=pending
            t=2 Result(first, Completed(Null))
              -> attempt.completed(first#1 completed) step.completed(first) step.failed(second) run.failed
              run=failed first=completed second=failed
        "#]],
    );
}

/// `a` fails for good; `b` needs it (`all_succeeded`), `nf` too
/// (`none_failed`); `cleanup` runs once `b` is done whatever happened
/// (`all_done`); `notify` runs because something upstream failed
/// (`any_failed`) and consumes the failure (`handles_failure`) only in the
/// second manifest.
const RULES: &str = "name: rules\nsteps:\n  - {name: a, handler: h, retry: {max_attempts: 1}}\n  - {name: side, handler: h}\n  - {name: b, handler: h, depends_on: [a]}\n  - {name: nf, handler: h, depends_on: [a], run_if: none_failed}\n  - {name: cleanup, handler: h, depends_on: [b, side], run_if: all_done}\n  - {name: notify, handler: h, depends_on: [b], run_if: any_failed}\n";

#[test]
fn trigger_rules_after_a_failure_run_cleanup_and_notify_and_the_run_fails() {
    trace(
        RULES,
        Value::Null,
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Claim(1)),
            (3, Result(0, failed(Reason::HandlerError, "boom", false))),
            (4, Claim(5)),
            (5, Result(5, ok(Value::Null))),
            (6, Result(1, ok(Value::Null))),
            (7, Claim(4)),
            (8, Result(4, ok(Value::Null))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(a) step.ready(side)
              run=pending a=ready side=ready b=pending nf=pending cleanup=pending notify=pending
            t=1 Claim(a)
              -> attempt.claimed(a#1) run.started
              run=running a=running side=ready b=pending nf=pending cleanup=pending notify=pending
            t=2 Claim(side)
              -> attempt.claimed(side#1)
              run=running a=running side=running b=pending nf=pending cleanup=pending notify=pending
            t=3 Result(a, Failed { reason: HandlerError, message: "boom", retryable: false })
              -> attempt.failed(a#1 failed handler_error) step.failed(a) step.cancelled(b) step.cancelled(nf) step.ready(notify)
              run=running a=failed side=running b=cancelled nf=cancelled cleanup=pending notify=ready
            t=4 Claim(notify)
              -> attempt.claimed(notify#1)
              run=running a=failed side=running b=cancelled nf=cancelled cleanup=pending notify=running
            t=5 Result(notify, Completed(Null))
              -> attempt.completed(notify#1 completed) step.completed(notify)
              run=running a=failed side=running b=cancelled nf=cancelled cleanup=pending notify=completed
            t=6 Result(side, Completed(Null))
              -> attempt.completed(side#1 completed) step.completed(side) step.ready(cleanup)
              run=running a=failed side=completed b=cancelled nf=cancelled cleanup=ready notify=completed
            t=7 Claim(cleanup)
              -> attempt.claimed(cleanup#1)
              run=running a=failed side=completed b=cancelled nf=cancelled cleanup=running notify=completed
            t=8 Result(cleanup, Completed(Null))
              -> attempt.completed(cleanup#1 completed) step.completed(cleanup) run.failed
              run=failed a=failed side=completed b=cancelled nf=cancelled cleanup=completed notify=completed
        "#]],
    );
}

#[test]
fn a_handles_failure_step_that_completes_consumes_the_failure() {
    let manifest = RULES.replace(
        "run_if: any_failed}",
        "run_if: any_failed, handles_failure: true}",
    );
    trace(
        &manifest,
        Value::Null,
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, failed(Reason::HandlerError, "boom", false))),
            (3, Claim(1)),
            (4, Result(1, ok(Value::Null))),
            (5, Claim(4)),
            (6, Result(4, ok(Value::Null))),
            (7, Claim(5)),
            (8, Result(5, ok(Value::Null))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(a) step.ready(side)
              run=pending a=ready side=ready b=pending nf=pending cleanup=pending notify=pending
            t=1 Claim(a)
              -> attempt.claimed(a#1) run.started
              run=running a=running side=ready b=pending nf=pending cleanup=pending notify=pending
            t=2 Result(a, Failed { reason: HandlerError, message: "boom", retryable: false })
              -> attempt.failed(a#1 failed handler_error) step.failed(a) step.cancelled(b) step.cancelled(nf) step.ready(notify)
              run=running a=failed side=ready b=cancelled nf=cancelled cleanup=pending notify=ready
            t=3 Claim(side)
              -> attempt.claimed(side#1)
              run=running a=failed side=running b=cancelled nf=cancelled cleanup=pending notify=ready
            t=4 Result(side, Completed(Null))
              -> attempt.completed(side#1 completed) step.completed(side) step.ready(cleanup)
              run=running a=failed side=completed b=cancelled nf=cancelled cleanup=ready notify=ready
            t=5 Claim(cleanup)
              -> attempt.claimed(cleanup#1)
              run=running a=failed side=completed b=cancelled nf=cancelled cleanup=running notify=ready
            t=6 Result(cleanup, Completed(Null))
              -> attempt.completed(cleanup#1 completed) step.completed(cleanup)
              run=running a=failed side=completed b=cancelled nf=cancelled cleanup=completed notify=ready
            t=7 Claim(notify)
              -> attempt.claimed(notify#1)
              run=running a=failed side=completed b=cancelled nf=cancelled cleanup=completed notify=running
            t=8 Result(notify, Completed(Null))
              -> attempt.completed(notify#1 completed) step.completed(notify) run.completed
              run=completed a=failed side=completed b=cancelled nf=cancelled cleanup=completed notify=completed
        "#]],
    );
}

#[test]
fn without_a_failure_any_failed_is_skipped_and_the_others_run() {
    let manifest = RULES.replace(
        "run_if: any_failed}",
        "run_if: any_failed, handles_failure: true}",
    );
    trace(
        &manifest,
        Value::Null,
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(Value::Null))),
            (3, Claim(1)),
            (4, Result(1, ok(Value::Null))),
            (5, Claim(2)),
            (6, Claim(3)),
            (7, Result(3, ok(Value::Null))),
            (8, Result(2, ok(Value::Null))),
            (9, Claim(4)),
            (10, Result(4, ok(Value::Null))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(a) step.ready(side)
              run=pending a=ready side=ready b=pending nf=pending cleanup=pending notify=pending
            t=1 Claim(a)
              -> attempt.claimed(a#1) run.started
              run=running a=running side=ready b=pending nf=pending cleanup=pending notify=pending
            t=2 Result(a, Completed(Null))
              -> attempt.completed(a#1 completed) step.completed(a) step.ready(b) step.ready(nf)
              run=running a=completed side=ready b=ready nf=ready cleanup=pending notify=pending
            t=3 Claim(side)
              -> attempt.claimed(side#1)
              run=running a=completed side=running b=ready nf=ready cleanup=pending notify=pending
            t=4 Result(side, Completed(Null))
              -> attempt.completed(side#1 completed) step.completed(side)
              run=running a=completed side=completed b=ready nf=ready cleanup=pending notify=pending
            t=5 Claim(b)
              -> attempt.claimed(b#1)
              run=running a=completed side=completed b=running nf=ready cleanup=pending notify=pending
            t=6 Claim(nf)
              -> attempt.claimed(nf#1)
              run=running a=completed side=completed b=running nf=running cleanup=pending notify=pending
            t=7 Result(nf, Completed(Null))
              -> attempt.completed(nf#1 completed) step.completed(nf)
              run=running a=completed side=completed b=running nf=completed cleanup=pending notify=pending
            t=8 Result(b, Completed(Null))
              -> attempt.completed(b#1 completed) step.completed(b) step.ready(cleanup) step.skipped(notify)
              run=running a=completed side=completed b=completed nf=completed cleanup=ready notify=skipped
            t=9 Claim(cleanup)
              -> attempt.claimed(cleanup#1)
              run=running a=completed side=completed b=completed nf=completed cleanup=running notify=skipped
            t=10 Result(cleanup, Completed(Null))
              -> attempt.completed(cleanup#1 completed) step.completed(cleanup) run.completed
              run=completed a=completed side=completed b=completed nf=completed cleanup=completed notify=skipped
        "#]],
    );
}

#[test]
fn a_failed_handles_failure_step_does_not_consume_and_retry_reruns_it() {
    let manifest = "name: w\nsteps:\n  - {name: a, handler: h, retry: {max_attempts: 1}}\n  - {name: notify, handler: h, depends_on: [a], run_if: any_failed, handles_failure: true, retry: {max_attempts: 1}}\n";
    trace(
        manifest,
        Value::Null,
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, failed(Reason::HandlerError, "boom", false))),
            (3, Claim(1)),
            (4, Result(1, failed(Reason::Timeout, "slow", false))),
            (5, Run(Event::Retry)),
            (6, Claim(0)),
            (7, Result(0, ok(Value::Null))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(a)
              run=pending a=ready notify=pending
            t=1 Claim(a)
              -> attempt.claimed(a#1) run.started
              run=running a=running notify=pending
            t=2 Result(a, Failed { reason: HandlerError, message: "boom", retryable: false })
              -> attempt.failed(a#1 failed handler_error) step.failed(a) step.ready(notify)
              run=running a=failed notify=ready
            t=3 Claim(notify)
              -> attempt.claimed(notify#1)
              run=running a=failed notify=running
            t=4 Result(notify, Failed { reason: Timeout, message: "slow", retryable: false })
              -> attempt.failed(notify#1 failed timeout) step.failed(notify) run.failed
              run=failed a=failed notify=failed
            t=5 Retry
              -> run.retried step.ready(a)
              run=running a=ready notify=pending
            t=6 Claim(a)
              -> attempt.claimed(a#2)
              run=running a=running notify=pending
            t=7 Result(a, Completed(Null))
              -> attempt.completed(a#2 completed) step.completed(a) step.skipped(notify) run.completed
              run=completed a=completed notify=skipped
        "#]],
    );
}

#[test]
fn a_skipped_dependency_is_null_to_when() {
    let manifest = format!(
        "name: skipbranch\nsteps:\n  - {{name: a, handler: h}}\n  - {{name: b, handler: h, depends_on: [a], when: 'input.run_b == true'}}\n  - {{name: d, handler: h, depends_on: [b], when: 'steps.b != null'}}\n  - {{name: e, handler: h, depends_on: [b], when: \"upstream.b.status == '{}'\"}}\n",
        crate::StepStatus::Skipped.as_str()
    );
    trace(
        &manifest,
        serde_json::json!({"run_b": false}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(Value::Null))),
            (3, Claim(3)),
            (4, Result(3, ok(Value::Null))),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(a)
              run=pending a=ready b=pending d=pending e=pending
            t=1 Claim(a)
              -> attempt.claimed(a#1) run.started
              run=running a=running b=pending d=pending e=pending
            t=2 Result(a, Completed(Null))
              -> attempt.completed(a#1 completed) step.completed(a) step.skipped(b) step.skipped(d) step.ready(e)
              run=running a=completed b=skipped d=skipped e=ready
            t=3 Claim(e)
              -> attempt.claimed(e#1)
              run=running a=completed b=skipped d=skipped e=running
            t=4 Result(e, Completed(Null))
              -> attempt.completed(e#1 completed) step.completed(e) run.completed
              run=completed a=completed b=skipped d=skipped e=completed
        "#]],
    );
}

const FAN_OUT: &str = "name: w\nsteps:\n  - {name: list, handler: h}\n  - {name: each, handler: h, depends_on: [list], for_each: \"steps.list.items\", max_items: 3, max_parallel: 2, retry: {max_attempts: 2}}\n  - {name: after, handler: h, depends_on: [each]}\n";

fn child_done(index: u32, output: Value, gathered: Option<Vec<Value>>) -> Act {
    Run(Event::ChildCompleted {
        step: 1,
        index,
        output,
        gathered,
        max_output_bytes: MAX_OUTPUT_BYTES,
    })
}

fn child_failed(index: u32, retryable: bool, attempts: u32) -> Act {
    Run(Event::ChildFailed {
        step: 1,
        index,
        reason: Reason::HandlerError,
        message: "boom".into(),
        retryable,
        attempts,
    })
}

#[test]
fn for_each_children_run_in_a_window_and_gather_in_order() {
    use serde_json::json;
    trace(
        FAN_OUT,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!({"items": ["a", "b", "c"]})))),
            (3, child_failed(1, true, 1)),
            (4, child_done(0, json!("A"), None)),
            (5, Run(Event::ChildReleased { step: 1, index: 2 })),
            (6, child_done(2, json!("C"), None)),
            (
                7,
                child_done(
                    1,
                    json!("B"),
                    Some(vec![json!("A"), json!("B"), json!("C")]),
                ),
            ),
            (8, Claim(2)),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(list)
              run=pending list=ready each=pending after=pending
            t=1 Claim(list)
              -> attempt.claimed(list#1) run.started
              run=running list=running each=pending after=pending
            t=2 Result(list, Completed(Object {"items": Array [String("a"), String("b"), String("c")]}))
              -> attempt.completed(list#1 completed) step.completed(list) step.fanned_out(each)
              run=running list=completed each=running after=pending
            t=3 ChildFailed { step: 1, index: 1, reason: HandlerError, message: "boom", retryable: true, attempts: 1 }
              -> child.retrying(each)
              run=running list=completed each=running after=pending
            t=4 ChildCompleted { step: 1, index: 0, output: String("A"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each) child.ready(each)
              run=running list=completed each=running after=pending
            t=5 ChildReleased { step: 1, index: 2 }
              -> child.ready(each)
              run=running list=completed each=running after=pending
            t=6 ChildCompleted { step: 1, index: 2, output: String("C"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each)
              run=running list=completed each=running after=pending
            t=7 ChildCompleted { step: 1, index: 1, output: String("B"), gathered: Some([String("A"), String("B"), String("C")]), max_output_bytes: 64 }
              -> child.completed(each) step.completed(each) step.ready(after)
              run=running list=completed each=completed after=ready
            t=8 Claim(after)
              -> attempt.claimed(after#1)
              run=running list=completed each=completed after=running
        "#]],
    );
}

#[test]
fn for_each_the_first_permanent_child_failure_fails_the_step_and_run() {
    use serde_json::json;
    trace(
        FAN_OUT,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!({"items": [1, 2]})))),
            (3, child_failed(0, true, 2)),
            (4, child_done(1, json!(2), None)),
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
            t=3 ChildFailed { step: 1, index: 0, reason: HandlerError, message: "boom", retryable: true, attempts: 2 }
              -> child.failed(each) step.failed(each) step.cancelled(after) run.failed
              run=failed list=completed each=failed after=cancelled
            t=4 ChildCompleted { step: 1, index: 1, output: Number(2), gathered: None, max_output_bytes: 64 }
              -> REJECTED: run is failed, not pending or running
              run=failed list=completed each=failed after=cancelled
        "#]],
    );
}

#[test]
fn for_each_empty_lists_non_lists_and_too_many_items() {
    use serde_json::json;
    let acts = |items: Value| {
        [
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!({ "items": items })))),
        ]
    };
    trace(
        FAN_OUT,
        json!({}),
        &acts(json!([])),
        expect![[r#"
        t=0 Start
          -> step.ready(list)
          run=pending list=ready each=pending after=pending
        t=1 Claim(list)
          -> attempt.claimed(list#1) run.started
          run=running list=running each=pending after=pending
        t=2 Result(list, Completed(Object {"items": Array []}))
          -> attempt.completed(list#1 completed) step.completed(list) step.completed(each) step.ready(after)
          run=running list=completed each=completed after=ready
    "#]],
    );
    trace(
        FAN_OUT,
        json!({}),
        &acts(json!("not a list")),
        expect![[r#"
        t=0 Start
          -> step.ready(list)
          run=pending list=ready each=pending after=pending
        t=1 Claim(list)
          -> attempt.claimed(list#1) run.started
          run=running list=running each=pending after=pending
        t=2 Result(list, Completed(Object {"items": String("not a list")}))
          -> attempt.completed(list#1 completed) step.completed(list) step.failed(each) step.cancelled(after) run.failed
          run=failed list=completed each=failed after=cancelled
    "#]],
    );
    trace(
        FAN_OUT,
        json!({}),
        &acts(json!([1, 2, 3, 4])),
        expect![[r#"
        t=0 Start
          -> step.ready(list)
          run=pending list=ready each=pending after=pending
        t=1 Claim(list)
          -> attempt.claimed(list#1) run.started
          run=running list=running each=pending after=pending
        t=2 Result(list, Completed(Object {"items": Array [Number(1), Number(2), Number(3), Number(4)]}))
          -> attempt.completed(list#1 completed) step.completed(list) step.failed(each) step.cancelled(after) run.failed
          run=failed list=completed each=failed after=cancelled
    "#]],
    );
}

#[test]
fn for_each_gathered_outputs_over_the_limit_fail_the_step() {
    use serde_json::json;
    let long = json!("x".repeat(40));
    trace(
        FAN_OUT,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!({"items": [1, 2]})))),
            (3, child_done(0, long.clone(), None)),
            (
                4,
                child_done(1, long.clone(), Some(vec![long.clone(), long])),
            ),
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
              -> child.completed(each) step.failed(each) step.cancelled(after) run.failed
              run=failed list=completed each=failed after=cancelled
        "#]],
    );
}

const FAN_OUT_UNDO: &str = "name: w\nsteps:\n  - {name: list, handler: h}\n  - {name: each, handler: h, compensate: undo, depends_on: [list], for_each: \"steps.list.items\", compensate_retry: {max_attempts: 2, initial: 1s, jitter: false}}\n  - {name: after, handler: h, depends_on: [each], retry: {max_attempts: 1}}\n";

fn child_undone(index: u32) -> Act {
    Run(Event::ChildUndoCompleted { step: 1, index })
}

fn child_undo_failed(index: u32, retryable: bool, attempts: u32) -> Act {
    Run(Event::ChildUndoFailed {
        step: 1,
        index,
        reason: Reason::HandlerError,
        message: "no refund".into(),
        retryable,
        attempts,
    })
}

#[test]
fn for_each_compensation_undoes_each_completed_child_once() {
    use serde_json::json;
    trace(
        FAN_OUT_UNDO,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!({"items": ["a", "b", "c"]})))),
            (3, child_done(0, json!("A"), None)),
            (4, child_done(1, json!("B"), None)),
            (
                5,
                child_done(
                    2,
                    json!("C"),
                    Some(vec![json!("A"), json!("B"), json!("C")]),
                ),
            ),
            (6, Claim(2)),
            (
                7,
                Result(2, failed(Reason::HandlerError, "ship failed", false)),
            ),
            (8, child_undone(2)),
            (9, child_undo_failed(0, true, 1)),
            (10, Run(Event::ChildUndoReleased { step: 1, index: 1 })),
            (11, child_undone(1)),
            // The step's undo is not done while one child's is out.
            (12, child_undone(0)),
            (13, child_undone(0)),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(list)
              run=pending list=ready each=pending after=pending
            t=1 Claim(list)
              -> attempt.claimed(list#1) run.started
              run=running list=running each=pending after=pending
            t=2 Result(list, Completed(Object {"items": Array [String("a"), String("b"), String("c")]}))
              -> attempt.completed(list#1 completed) step.completed(list) step.fanned_out(each)
              run=running list=completed each=running after=pending
            t=3 ChildCompleted { step: 1, index: 0, output: String("A"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each)
              run=running list=completed each=running after=pending
            t=4 ChildCompleted { step: 1, index: 1, output: String("B"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each)
              run=running list=completed each=running after=pending
            t=5 ChildCompleted { step: 1, index: 2, output: String("C"), gathered: Some([String("A"), String("B"), String("C")]), max_output_bytes: 64 }
              -> child.completed(each) step.completed(each) step.ready(after)
              run=running list=completed each=completed after=ready
            t=6 Claim(after)
              -> attempt.claimed(after#1)
              run=running list=completed each=completed after=running
            t=7 Result(after, Failed { reason: HandlerError, message: "ship failed", retryable: false })
              -> attempt.failed(after#1 failed handler_error) step.failed(after) compensation.started step.compensating(each)
              run=compensating list=completed each=compensating/undo:ready after=failed
            t=8 ChildUndoCompleted { step: 1, index: 2 }
              -> child.compensated(each)
              run=compensating list=completed each=compensating/undo:ready after=failed
            t=9 ChildUndoFailed { step: 1, index: 0, reason: HandlerError, message: "no refund", retryable: true, attempts: 1 }
              -> child.compensation_retrying(each)
              run=compensating list=completed each=compensating/undo:ready after=failed
            t=10 ChildUndoReleased { step: 1, index: 1 }
              -> child.compensating(each)
              run=compensating list=completed each=compensating/undo:ready after=failed
            t=11 ChildUndoCompleted { step: 1, index: 1 }
              -> child.compensated(each)
              run=compensating list=completed each=compensating/undo:ready after=failed
            t=12 ChildUndoCompleted { step: 1, index: 0 }
              -> child.compensated(each) step.compensated(each) compensation.completed
              run=compensated list=completed each=compensated/undo:completed after=failed
            t=13 ChildUndoCompleted { step: 1, index: 0 }
              -> REJECTED: run is compensated, not compensating
              run=compensated list=completed each=compensated/undo:completed after=failed
        "#]],
    );
}

#[test]
fn for_each_a_child_undo_failing_for_good_fails_the_compensation_and_retry_redoes_it_alone() {
    use serde_json::json;
    trace(
        FAN_OUT_UNDO,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!({"items": [1, 2]})))),
            (3, child_done(0, json!(1), None)),
            (4, child_done(1, json!(2), Some(vec![json!(1), json!(2)]))),
            (5, Claim(2)),
            (
                6,
                Result(2, failed(Reason::HandlerError, "ship failed", false)),
            ),
            (7, child_undo_failed(0, true, 2)),
            (8, child_undone(1)),
            (9, Run(Event::Retry)),
            (10, child_undone(0)),
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
            t=3 ChildCompleted { step: 1, index: 0, output: Number(1), gathered: None, max_output_bytes: 64 }
              -> child.completed(each)
              run=running list=completed each=running after=pending
            t=4 ChildCompleted { step: 1, index: 1, output: Number(2), gathered: Some([Number(1), Number(2)]), max_output_bytes: 64 }
              -> child.completed(each) step.completed(each) step.ready(after)
              run=running list=completed each=completed after=ready
            t=5 Claim(after)
              -> attempt.claimed(after#1)
              run=running list=completed each=completed after=running
            t=6 Result(after, Failed { reason: HandlerError, message: "ship failed", retryable: false })
              -> attempt.failed(after#1 failed handler_error) step.failed(after) compensation.started step.compensating(each)
              run=compensating list=completed each=compensating/undo:ready after=failed
            t=7 ChildUndoFailed { step: 1, index: 0, reason: HandlerError, message: "no refund", retryable: true, attempts: 2 }
              -> child.compensation_failed(each)
              run=compensating list=completed each=compensating/undo:ready after=failed
            t=8 ChildUndoCompleted { step: 1, index: 1 }
              -> child.compensated(each) step.compensation_failed(each) compensation.failed run.failed
              run=failed list=completed each=failed/undo:failed after=failed
            t=9 Retry
              -> run.retried step.compensating(each)
              run=compensating list=completed each=compensating/undo:ready after=failed
            t=10 ChildUndoCompleted { step: 1, index: 0 }
              -> child.compensated(each) step.compensated(each) compensation.completed
              run=compensated list=completed each=compensated/undo:completed after=failed
        "#]],
    );
}

#[test]
fn for_each_compensation_with_no_completed_child_has_nothing_to_undo() {
    use serde_json::json;
    trace(
        FAN_OUT_UNDO,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!({"items": []})))),
            (3, Claim(2)),
            (
                4,
                Result(2, failed(Reason::HandlerError, "ship failed", false)),
            ),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(list)
              run=pending list=ready each=pending after=pending
            t=1 Claim(list)
              -> attempt.claimed(list#1) run.started
              run=running list=running each=pending after=pending
            t=2 Result(list, Completed(Object {"items": Array []}))
              -> attempt.completed(list#1 completed) step.completed(list) step.completed(each) step.ready(after)
              run=running list=completed each=completed after=ready
            t=3 Claim(after)
              -> attempt.claimed(after#1)
              run=running list=completed each=completed after=running
            t=4 Result(after, Failed { reason: HandlerError, message: "ship failed", retryable: false })
              -> attempt.failed(after#1 failed handler_error) step.failed(after) compensation.started step.compensating(each) step.compensated(each) compensation.completed
              run=compensated list=completed each=compensated/undo:completed after=failed
        "#]],
    );
}

#[test]
fn for_each_retry_keeps_the_completed_children() {
    use serde_json::json;
    trace(
        FAN_OUT,
        json!({}),
        &[
            (0, Run(Event::Start)),
            (1, Claim(0)),
            (2, Result(0, ok(json!({"items": ["a", "b", "c"]})))),
            (3, child_done(0, json!("A"), None)),
            (4, child_failed(1, false, 1)),
            (5, Run(Event::Retry)),
            (6, child_done(1, json!("B"), None)),
            (
                7,
                child_done(
                    2,
                    json!("C"),
                    Some(vec![json!("A"), json!("B"), json!("C")]),
                ),
            ),
        ],
        expect![[r#"
            t=0 Start
              -> step.ready(list)
              run=pending list=ready each=pending after=pending
            t=1 Claim(list)
              -> attempt.claimed(list#1) run.started
              run=running list=running each=pending after=pending
            t=2 Result(list, Completed(Object {"items": Array [String("a"), String("b"), String("c")]}))
              -> attempt.completed(list#1 completed) step.completed(list) step.fanned_out(each)
              run=running list=completed each=running after=pending
            t=3 ChildCompleted { step: 1, index: 0, output: String("A"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each) child.ready(each)
              run=running list=completed each=running after=pending
            t=4 ChildFailed { step: 1, index: 1, reason: HandlerError, message: "boom", retryable: false, attempts: 1 }
              -> child.failed(each) step.failed(each) step.cancelled(after) run.failed
              run=failed list=completed each=failed after=cancelled
            t=5 Retry
              -> run.retried step.children_retried(each)
              run=running list=completed each=running after=pending
            t=6 ChildCompleted { step: 1, index: 1, output: String("B"), gathered: None, max_output_bytes: 64 }
              -> child.completed(each)
              run=running list=completed each=running after=pending
            t=7 ChildCompleted { step: 1, index: 2, output: String("C"), gathered: Some([String("A"), String("B"), String("C")]), max_output_bytes: 64 }
              -> child.completed(each) step.completed(each) step.ready(after)
              run=running list=completed each=completed after=ready
        "#]],
    );
}
