//! Conformance of the observations a span is built from: every ended attempt
//! and finished run is reported with the ids, times and outcome stored in its
//! row (the attempt's span id is the one its task was handed, a retry
//! names the attempt before it, attempts cut short by the end of their run are
//! reported `cancelled` before the run), baggage rides to the task, and each
//! `when` decided is reported with its time and result.

use std::sync::{Arc, Mutex};

use serde_json::json;
use weft_core::{
    Reason,
    observe::{GaugeSnapshot, Observation, Observer},
    trace::TraceParent,
};
use weft_store::{FailReport, NewRun, Store};

use crate::support::{claim, claim_after_timers, complete, events, register, steps_of};

/// What one observation said, owned.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Attempt {
        step: String,
        attempt: i64,
        status: String,
        reason: Option<String>,
        span_id: String,
        previous_span_id: Option<String>,
        run_span_id: String,
        run_parent_span_id: Option<String>,
        trace_id: String,
        worker_id: String,
        in_order: bool,
    },
    Condition {
        step: String,
        result: &'static str,
        run_span_id: String,
        trace_id: String,
    },
    Run {
        status: String,
        span_id: String,
        parent_span_id: Option<String>,
        trace_id: String,
        version: i64,
        in_order: bool,
    },
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl Observer for Recorder {
    fn observe(&self, observation: &Observation<'_>) {
        let seen = match observation {
            Observation::AttemptFinished(a) => Seen::Attempt {
                step: a.step.to_owned(),
                attempt: a.attempt,
                status: a.status.as_str().to_owned(),
                reason: a.reason.map(|r| r.as_str().to_owned()),
                span_id: a.span_id.to_string(),
                previous_span_id: a.previous_span_id.map(|id| id.to_string()),
                run_span_id: a.run_span_id.to_string(),
                run_parent_span_id: a.run_parent_span_id.map(|id| id.to_string()),
                trace_id: a.trace_id.to_string(),
                worker_id: a.worker_id.to_owned(),
                in_order: a.claimed_at_ms <= a.finished_at_ms
                    && a.timing.total_ms == a.finished_at_ms - a.claimed_at_ms,
            },
            Observation::RunFinished(r) => Seen::Run {
                status: r.status.as_str().to_owned(),
                span_id: r.span_id.to_string(),
                parent_span_id: r.parent_span_id.map(|id| id.to_string()),
                trace_id: r.trace_id.to_string(),
                version: r.version,
                in_order: r.created_at_ms <= r.finished_at_ms,
            },
            Observation::ConditionDecided(c) => Seen::Condition {
                step: c.step.to_owned(),
                result: c.result,
                run_span_id: c.run_span_id.to_string(),
                trace_id: c.trace_id.to_string(),
            },
            _ => return,
        };
        self.0.lock().unwrap().push(seen);
    }

    fn gauges(&self, _: &GaugeSnapshot) {}
}

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

const PAIR: &str = "
name: pair
steps:
  - name: flaky
    handler: flaky
    retry: {max_attempts: 3, backoff: fixed, initial: 10ms, jitter: false}
  - {name: slow, handler: slow}
";

pub async fn check_observations_carry_span_rows(store: Store) {
    let recorder = Arc::new(Recorder::default());
    store.set_observer(recorder.clone());
    register(&store, PAIR).await;
    let started = store
        .start_run(NewRun {
            workflow: "pair".to_owned(),
            input: json!({}),
            parent: Some(TraceParent {
                trace_id: CALLER_TRACE.parse().unwrap(),
                parent_span_id: CALLER_SPAN.parse().unwrap(),
                sampled: true,
            }),
            baggage: Some("tenant=acme".to_owned()),
            ..NewRun::default()
        })
        .await
        .unwrap();
    assert_eq!(started.trace_id.to_string(), CALLER_TRACE);

    let mut tasks = claim(&store, &["flaky", "slow"]).await;
    tasks.sort_by(|a, b| a.step.cmp(&b.step));
    assert_eq!(steps_of(&tasks), ["flaky", "slow"]);
    assert!(
        tasks
            .iter()
            .all(|t| t.baggage.as_deref() == Some("tenant=acme")),
        "baggage rides to every task"
    );
    let (flaky, slow) = (&tasks[0], &tasks[1]);
    let report = FailReport {
        reason: Reason::HandlerError,
        message: "flaky".into(),
        retryable: true,
        timing: None,
    };
    store
        .fail(&flaky.lease_id, report, weft_store::now_ms())
        .await
        .unwrap();
    let retry = claim_after_timers(&store, &["flaky"]).await;
    complete(&store, &retry, json!({})).await;
    // The run ends (cancelled) while `slow` is still out.
    store.cancel_run(&started.run_id).await.unwrap();

    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    let Seen::Run {
        span_id: run_span, ..
    } = &seen[3]
    else {
        panic!("the run ends last: {seen:#?}")
    };
    let attempt = |step: &str,
                   attempt: i64,
                   status: &str,
                   reason: Option<&str>,
                   span_id: &str,
                   previous: Option<&str>| Seen::Attempt {
        step: step.to_owned(),
        attempt,
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        span_id: span_id.to_owned(),
        previous_span_id: previous.map(str::to_owned),
        run_span_id: run_span.clone(),
        run_parent_span_id: Some(CALLER_SPAN.to_owned()),
        trace_id: CALLER_TRACE.to_owned(),
        worker_id: "w1".to_owned(),
        in_order: true,
    };
    let first_span = flaky.span_id.to_string();
    assert_eq!(
        seen[0],
        attempt(
            "flaky",
            1,
            "failed",
            Some("handler_error"),
            &first_span,
            None
        )
    );
    assert_eq!(
        seen[1],
        attempt(
            "flaky",
            2,
            "completed",
            None,
            &retry.span_id.to_string(),
            Some(&first_span)
        )
    );
    assert_eq!(
        seen[2],
        attempt(
            "slow",
            1,
            "cancelled",
            Some("cancelled"),
            &slow.span_id.to_string(),
            None
        )
    );
    assert_eq!(
        seen[3],
        Seen::Run {
            status: "cancelled".to_owned(),
            span_id: run_span.clone(),
            parent_span_id: Some(CALLER_SPAN.to_owned()),
            trace_id: CALLER_TRACE.to_owned(),
            version: 1,
            in_order: true,
        }
    );
    assert_ne!(run_span, &first_span);
}
conformance!(check_observations_carry_span_rows);

const GUARDED: &str = "
name: guarded
steps:
  - {name: a, handler: h}
  - {name: go, handler: h, depends_on: [a], when: 'steps.a.go'}
  - {name: stop, handler: h, depends_on: [a], when: '!steps.a.go'}
  - {name: broken, handler: h, depends_on: [a], when: 'steps.a.nope > 1'}
  - {name: plain, handler: h, depends_on: [a]}
";

conformance!(check_conditions_are_observed_with_their_time);
async fn check_conditions_are_observed_with_their_time(store: Store) {
    let recorder = Arc::new(Recorder::default());
    store.set_observer(recorder.clone());
    register(&store, GUARDED).await;
    let started = store
        .start_run(NewRun {
            workflow: "guarded".to_owned(),
            input: json!({}),
            ..NewRun::default()
        })
        .await
        .unwrap();
    let tasks = claim(&store, &["h"]).await;
    complete(&store, &tasks[0], json!({"go": true})).await;

    let seen = recorder.0.lock().unwrap().clone();
    let conditions: Vec<(&str, &str)> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Condition {
                step,
                result,
                run_span_id,
                trace_id,
            } => {
                assert_eq!(trace_id, &started.trace_id.to_string());
                assert_eq!(run_span_id.len(), 16);
                Some((step.as_str(), *result))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        conditions,
        [("go", "true"), ("stop", "false"), ("broken", "error")],
        "one per `when`, none for a step without: {seen:#?}"
    );
    // The decision's event carries the time; a step without `when` has none.
    let history = events(&store, &started.run_id).await;
    let decided: Vec<(String, String, bool)> = history
        .iter()
        .filter(|e| {
            matches!(
                e.kind.as_str(),
                "step.ready" | "step.skipped" | "step.failed"
            ) && e.step.as_deref() != Some("a")
        })
        .map(|e| {
            (
                e.kind.clone(),
                e.step.clone().unwrap_or_default(),
                e.data["condition_ms"].is_u64(),
            )
        })
        .collect();
    let expected: Vec<(String, String, bool)> = [
        ("step.ready", "go", true),
        ("step.skipped", "stop", true),
        ("step.failed", "broken", true),
        ("step.ready", "plain", false),
    ]
    .iter()
    .map(|(k, s, t)| ((*k).to_owned(), (*s).to_owned(), *t))
    .collect();
    assert_eq!(decided, expected);
}
