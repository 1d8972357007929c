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

conformance!(check_running_sibling_finishes_then_is_undone_first);
/// A step still running when its sibling fails goes on (the run settles
/// only once nothing is running); completed, it is undone before the step it
/// depends on.
async fn check_running_sibling_finishes_then_is_undone_first(store: Store) {
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
    // The run settles only once nothing is running: `slow` goes on, its
    // lease renewed as usual, and no undo starts yet.
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "running");
    assert_eq!(step(&run, "slow").status, "running");
    assert_eq!(step(&run, "slow").attempts[0].status, "running");
    assert!(
        !store
            .heartbeat(&slow.lease_id)
            .await
            .unwrap()
            .cancel_requested
    );
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

const EACH_SAGA: &str = "
name: each_saga
steps:
  - {name: list, handler: h}
  - name: work
    handler: h
    compensate: undo_h
    compensate_retry: {max_attempts: 2, initial: 100ms, max: 100ms, jitter: false}
    depends_on: [list]
    for_each: 'steps.list.items'
  - {name: ship, handler: h, depends_on: [work], retry: {max_attempts: 1}}
";

async fn fail_task(store: &Store, task: &weft_store::ClaimedTask, message: &str, retryable: bool) {
    store
        .fail(
            &task.lease_id,
            FailReport {
                reason: Reason::HandlerError,
                message: message.into(),
                retryable,
                timing: None,
            },
            weft_store::now_ms(),
        )
        .await
        .unwrap();
}

conformance!(
    check_for_each_children_are_undone_one_by_one,
    lease_ms = 300
);
async fn check_for_each_children_are_undone_one_by_one(store: Store) {
    register(&store, EACH_SAGA).await;
    let run_id = start(&store, "each_saga", json!({"order": 7})).await;
    let list = claim_one(&store, &["h"]).await;
    complete(&store, &list, json!({"items": ["a", "b", "c"]})).await;
    let children = claim(&store, &["h"]).await;
    assert_eq!(children.len(), 3);
    for child in &children {
        let index = child.input["index"].as_i64().unwrap();
        complete(&store, child, json!({"done": index})).await;
    }
    let ship = claim_one(&store, &["h"]).await;
    assert_eq!(ship.step, "ship");
    fail_task(&store, &ship, "no truck", false).await;
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "compensating");
    assert_eq!(step(&run, "work").status, "compensating");

    // One undo per completed child, only to the compensate handler.
    assert!(claim(&store, &["h"]).await.is_empty());
    let mut undos = claim(&store, &["undo_h"]).await;
    assert_eq!(undos.len(), 3, "one undo per completed child");
    undos.sort_by_key(|t| t.input["index"].as_i64());
    for (i, undo) in undos.iter().enumerate() {
        assert_eq!(undo.handler, "undo_h");
        assert_eq!(undo.step, "work");
        assert_eq!(undo.input["index"], json!(i));
        assert_eq!(undo.input["item"], json!(["a", "b", "c"][i]));
        assert_eq!(undo.input["output"], json!({"done": i}));
        assert_eq!(undo.input["input"], json!({"order": 7}));
        assert_eq!(undo.input["error"]["message"], "no truck");
        assert_eq!(
            undo.idempotency_key,
            weft_core::idempotency::key(
                run_id,
                "work",
                weft_core::idempotency::Phase::Compensate,
                Some(i as u64)
            )
        );
    }
    assert!(
        claim(&store, &["undo_h"]).await.is_empty(),
        "each undo once"
    );
    // One fails and is retried after its backoff; the others complete.
    fail_task(&store, &undos[1], "refund api down", true).await;
    complete(&store, &undos[0], json!({})).await;
    complete(&store, &undos[2], json!({})).await;
    assert_eq!(
        store.get_run(&run_id).await.unwrap().status,
        "compensating",
        "not done while one child's undo is out"
    );
    let again = claim_after_timers(&store, &["undo_h"]).await;
    assert_eq!(again.input["index"], json!(1));
    complete(&store, &again, json!({})).await;

    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "compensated");
    assert_eq!(run.reason.as_deref(), Some("handler_error"));
    let work = step(&run, "work");
    assert_eq!(work.status, "compensated");
    let undone: Vec<(Option<i64>, &str, Option<i64>)> = work
        .attempts
        .iter()
        .filter(|t| t.kind == "compensate")
        .map(|t| (t.index, t.status.as_str(), t.undoes_attempt))
        .collect();
    assert_eq!(undone.len(), 4, "{undone:?}");
    for (index, _, undoes) in &undone {
        // Each undo names the forward attempt of its own child.
        let forward = work
            .attempts
            .iter()
            .find(|t| t.kind == "forward" && t.index == *index && t.status == "completed")
            .expect("the child's completed attempt");
        assert_eq!(*undoes, Some(forward.attempt));
    }
    let kinds = event_kinds(&events(&store, &run_id).await);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "child.compensated(work)")
            .count(),
        3
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "child.compensation_retrying(work)")
            .count(),
        1
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("compensation.completed")
    );
}

conformance!(check_retry_of_a_failed_for_each_compensation_redoes_only_the_failed_children);
async fn check_retry_of_a_failed_for_each_compensation_redoes_only_the_failed_children(
    store: Store,
) {
    register(&store, EACH_SAGA).await;
    let run_id = start(&store, "each_saga", json!({})).await;
    let list = claim_one(&store, &["h"]).await;
    complete(&store, &list, json!({"items": [1, 2]})).await;
    for child in claim(&store, &["h"]).await {
        complete(&store, &child, json!(1)).await;
    }
    let ship = claim_one(&store, &["h"]).await;
    fail_task(&store, &ship, "no truck", false).await;
    let mut undos = claim(&store, &["undo_h"]).await;
    undos.sort_by_key(|t| t.input["index"].as_i64());
    fail_task(&store, &undos[0], "card expired", false).await;
    complete(&store, &undos[1], json!({})).await;
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("failed", Some("compensation_failed"))
    );
    assert!(
        step(&run, "work")
            .error
            .as_deref()
            .is_some_and(|e| e.contains("work[0]") && e.contains("card expired")),
        "{:?}",
        step(&run, "work").error
    );

    store.retry_run(&run_id).await.unwrap();
    let redo = claim(&store, &["undo_h"]).await;
    assert_eq!(redo.len(), 1, "only the failed child's undo runs again");
    assert_eq!(redo[0].input["index"], json!(0));
    complete(&store, &redo[0], json!({})).await;
    assert_eq!(store.get_run(&run_id).await.unwrap().status, "compensated");
}
