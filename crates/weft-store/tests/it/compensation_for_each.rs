//! Conformance of the undo of a `for_each` step that did not complete: a
//! child failing for good fails the step and cancels its running siblings'
//! attempts at once (their heartbeats answer `cancel_requested`, a late
//! result changes nothing), and only the children that completed are
//! undone, each once; the step keeps its forward failure.

use serde_json::json;
use weft_core::{AttemptKind, AttemptStatus, Reason, RunStatus, StepStatus, UndoStatus};
use weft_store::{FailReport, Store};

use crate::support::{claim, claim_one, complete, register, start, step};

const EACH: &str = "
name: each
steps:
  - name: work
    handler: h
    compensate: undo_h
    for_each: input.items
    retry: {max_attempts: 1}
  - name: after
    handler: h
    depends_on: [work]
";

conformance!(check_a_failed_for_each_undoes_its_completed_children);
async fn check_a_failed_for_each_undoes_its_completed_children(store: Store) {
    register(&store, EACH).await;
    let run_id = start(&store, "each", json!({"items": ["a", "b", "c"]})).await;
    let mut children = claim(&store, &["h"]).await;
    assert_eq!(children.len(), 3);
    children.sort_by_key(|c| c.input["index"].as_i64());
    complete(&store, &children[0], json!({"booked": 0})).await;
    store
        .fail(
            &children[1].lease_id,
            FailReport {
                reason: Reason::HandlerError,
                message: "bad item".into(),
                retryable: false,
                timing: None,
            },
            weft_store::now_ms(),
        )
        .await
        .unwrap();

    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, RunStatus::Compensating);
    let work = step(&run, "work");
    assert_eq!(work.status, StepStatus::Compensating);
    assert_eq!(work.reason.as_deref(), Some("handler_error"));
    assert_eq!(work.undo, Some(UndoStatus::Ready));
    // The sibling still running was cancelled with its step.
    let running = work
        .attempts
        .iter()
        .find(|a| a.index == Some(2))
        .expect("child 2's attempt");
    assert_eq!(running.status, AttemptStatus::Cancelled, "{work:#?}");
    assert!(
        store
            .heartbeat(&children[2].lease_id)
            .await
            .unwrap()
            .cancel_requested
    );
    // Its late result is recorded nowhere else: the child is not undone.
    let _ = store
        .complete(
            &children[2].lease_id,
            json!({"booked": 2}),
            None,
            weft_store::now_ms(),
        )
        .await;

    // Only child 0 completed: one undo, with its item, index and output.
    let undo = claim_one(&store, &["undo_h"]).await;
    assert_eq!(undo.input["index"], json!(0));
    assert_eq!(undo.input["item"], json!("a"));
    assert_eq!(undo.input["output"], json!({"booked": 0}));
    assert_eq!(undo.input["error"]["reason"], "handler_error");
    assert!(claim(&store, &["undo_h"]).await.is_empty());
    complete(&store, &undo, json!({})).await;

    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, RunStatus::Compensated);
    assert_eq!(run.reason.as_deref(), Some("handler_error"));
    let work = step(&run, "work");
    assert_eq!(work.status, StepStatus::Compensated);
    assert_eq!(work.undo, Some(UndoStatus::Completed));
    assert_eq!(work.reason.as_deref(), Some("handler_error"));
    let undos: Vec<_> = work
        .attempts
        .iter()
        .filter(|a| a.kind == AttemptKind::Compensate)
        .collect();
    assert_eq!(undos.len(), 1, "{work:#?}");
    assert_eq!(undos[0].index, Some(0));
    assert!(claim(&store, &["undo_h", "h"]).await.is_empty());
}
