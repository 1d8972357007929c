//! Conformance of saga compensation: undos claimed only by workers serving
//! the `compensate` handler, with their input, kind and the forward attempt
//! they undo; retried under `compensate_retry` after a failure and after a
//! lapsed lease; compensating runs counted as active.

use serde_json::json;
use weft_core::Reason;
use weft_store::{FailReport, Store};

use crate::support::{
    claim, claim_after_timers, claim_one, complete, event_kinds, events, reap_until_one, register,
    start, step,
};

const SAGA: &str = "
name: saga
steps:
  - name: a
    handler: h
    compensate: undo_h
    compensate_retry: {max_attempts: 3, initial: 100ms, max: 100ms, jitter: false}
  - name: b
    handler: h
    depends_on: [a]
    retry: {max_attempts: 1}
";

conformance!(check_compensation_attempts, lease_ms = 300);
async fn check_compensation_attempts(store: Store) {
    register(&store, SAGA).await;
    let run_id = start(&store, "saga", json!({"order": 1})).await;
    let a = claim_one(&store, &["h"]).await;
    complete(&store, &a, json!({"reserved": true})).await;
    let b = claim_one(&store, &["h"]).await;
    store
        .fail(
            &b.lease_id,
            FailReport {
                reason: Reason::HandlerError,
                message: "out of stock".into(),
                retryable: false,
                timing: None,
            },
            weft_store::now_ms(),
        )
        .await
        .unwrap();
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "compensating");
    assert_eq!(step(&run, "a").status, "compensating");
    assert_eq!(
        step(&run, "a").undo.map(weft_core::UndoStatus::as_str),
        Some("ready")
    );
    let gauges = store.gauge_snapshot().await.unwrap();
    assert!(
        gauges
            .runs_active
            .contains(&("saga".to_owned(), "compensating".to_owned(), 1)),
        "{:?}",
        gauges.runs_active
    );

    // Only a worker serving the compensate handler gets the undo.
    assert!(claim(&store, &["h"]).await.is_empty());
    let undo = claim_one(&store, &["undo_h"]).await;
    assert_eq!(undo.handler, "undo_h");
    assert_eq!(undo.step, "a");
    assert_eq!(undo.attempt, 2);
    assert_eq!(undo.input["input"], json!({"order": 1}));
    assert_eq!(undo.input["step"], "a");
    assert_eq!(undo.input["output"], json!({"reserved": true}));
    assert_eq!(undo.input["error"]["reason"], "handler_error");
    assert_eq!(undo.input["error"]["message"], "out of stock");
    assert!(
        !store
            .heartbeat(&undo.lease_id)
            .await
            .unwrap()
            .cancel_requested
    );
    store
        .fail(
            &undo.lease_id,
            FailReport {
                reason: Reason::HandlerError,
                message: "refund api down".into(),
                retryable: true,
                timing: None,
            },
            weft_store::now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(
        step(&store.get_run(&run_id).await.unwrap(), "a")
            .undo
            .map(weft_core::UndoStatus::as_str),
        Some("retrying")
    );
    // Its backoff's timer makes it ready again; this attempt's lease lapses.
    let lapsing = claim_after_timers(&store, &["undo_h"]).await;
    assert_eq!(lapsing.attempt, 3);
    reap_until_one(&store).await;
    let last = claim_after_timers(&store, &["undo_h"]).await;
    assert_eq!(last.attempt, 4);
    complete(&store, &last, json!({"released": true})).await;

    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "compensated");
    assert_eq!(run.reason.as_deref(), Some("handler_error"));
    let a = step(&run, "a");
    assert_eq!(a.status, "compensated");
    assert_eq!(
        a.output,
        Some(json!({"reserved": true})),
        "the undo keeps the output"
    );
    let rows: Vec<(i64, &str, &str, Option<i64>)> = a
        .attempts
        .iter()
        .map(|t| {
            (
                t.attempt,
                t.kind.as_str(),
                t.status.as_str(),
                t.undoes_attempt,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, "forward", "completed", None),
            (2, "compensate", "failed", Some(1)),
            (3, "compensate", "failed", Some(1)),
            (4, "compensate", "completed", Some(1)),
        ]
    );
    let kinds = event_kinds(&events(&store, &run_id).await);
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("compensation.completed")
    );
    assert!(kinds.iter().any(|k| k == "compensation.started"));
    let gauges = store.gauge_snapshot().await.unwrap();
    assert!(
        !gauges
            .runs_active
            .iter()
            .any(|(_, status, _)| status == "compensating"),
        "{:?}",
        gauges.runs_active
    );
}

const DRAIN: &str = "
name: drain
steps:
  - {name: root, handler: h, compensate: undo_h}
  - {name: slow, handler: h, compensate: undo_h, depends_on: [root]}
  - {name: bad, handler: h, depends_on: [root], retry: {max_attempts: 1}}
";

conformance!(check_running_step_is_drained_then_undone);
/// A step still running when its run fails is drained: its heartbeat asks
/// it to stop, yet its result still counts while its lease lives; completed,
/// it is undone before the step it depends on.
async fn check_running_step_is_drained_then_undone(store: Store) {
    register(&store, DRAIN).await;
    let run_id = start(&store, "drain", json!({})).await;
    let root = claim_one(&store, &["h"]).await;
    complete(&store, &root, json!("root")).await;
    let tasks = claim(&store, &["h"]).await;
    let (slow, bad) = match tasks.as_slice() {
        [a, b] if a.step == "slow" => (a.clone(), b.clone()),
        [a, b] => (b.clone(), a.clone()),
        other => panic!("expected slow and bad, got {other:?}"),
    };
    store
        .fail(
            &bad.lease_id,
            FailReport {
                reason: Reason::HandlerError,
                message: "bad".into(),
                retryable: false,
                timing: None,
            },
            weft_store::now_ms(),
        )
        .await
        .unwrap();
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "compensating");
    assert_eq!(step(&run, "slow").status, "running");
    assert_eq!(step(&run, "slow").attempts[0].status, "running");
    assert!(
        store
            .heartbeat(&slow.lease_id)
            .await
            .unwrap()
            .cancel_requested
    );
    // root's undo waits for slow to drain.
    assert!(claim(&store, &["undo_h"]).await.is_empty());
    complete(&store, &slow, json!("slow done")).await;
    let undo_slow = claim_one(&store, &["undo_h"]).await;
    assert_eq!(undo_slow.step, "slow");
    assert_eq!(undo_slow.input["output"], "slow done");
    assert!(claim(&store, &["undo_h"]).await.is_empty(), "root waits");
    complete(&store, &undo_slow, json!(null)).await;
    let undo_root = claim_one(&store, &["undo_h"]).await;
    assert_eq!(undo_root.step, "root");
    complete(&store, &undo_root, json!(null)).await;
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "compensated");
    assert_eq!(step(&run, "slow").status, "compensated");
}
