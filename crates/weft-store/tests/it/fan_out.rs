//! Conformance of dynamic fan-out (`for_each`): children claimed through a
//! window of `max_parallel`, each with its own input and attempts, outputs
//! gathered in index order, the first permanent child failure failing the
//! run, and the lists that cannot be expanded.

use serde_json::{Value, json};
use weft_core::Reason;
use weft_store::{FailReport, Store};

use crate::support::{assert_conflict, claim, claim_one, complete, register, start, step};

const EACH: &str = "
name: each
steps:
  - {name: list, handler: list}
  - {name: work, handler: work, depends_on: [list], for_each: 'steps.list.items', max_items: 6, max_parallel: 2}
  - {name: after, handler: after, depends_on: [work]}
";
const HANDLERS: &[&str] = &["list", "work", "after"];

/// Starts an `each` run and completes `list` with `items`.
async fn listed(store: &Store, items: Value) -> weft_core::RunId {
    register(store, EACH).await;
    let run_id = start(store, "each", json!({"k": 1})).await;
    let list = claim_one(store, HANDLERS).await;
    complete(store, &list, json!({ "items": items })).await;
    run_id
}

fn index_of(task: &weft_store::ClaimedTask) -> i64 {
    task.input["index"]
        .as_i64()
        .expect("a child's input has its index")
}

conformance!(check_for_each_runs_a_window_and_gathers_in_order);
async fn check_for_each_runs_a_window_and_gathers_in_order(store: Store) {
    let run_id = listed(&store, json!(["a", "b", "c", "d", "e"])).await;
    // Two of five at once (`max_parallel: 2`), in index order.
    let mut out = claim(&store, HANDLERS).await;
    assert_eq!(out.len(), 2, "max_parallel holds the claim");
    out.sort_by_key(index_of);
    assert_eq!(out[0].step, "work");
    assert_eq!(
        out[0].input,
        json!({
            "input": {"k": 1},
            "steps": {"list": {"items": ["a", "b", "c", "d", "e"]}},
            "upstream": {"list": {"status": "completed", "reason": null, "error": null}},
            "item": "a",
            "index": 0
        })
    );
    assert_eq!(
        (out[1].input["item"].clone(), index_of(&out[1])),
        (json!("b"), 1)
    );
    assert_ne!(
        out[0].attempt, out[1].attempt,
        "attempts numbered across the step"
    );
    assert!(claim(&store, HANDLERS).await.is_empty());
    // The gauges count the running children, not their step.
    let gauges = store.gauge_snapshot().await.unwrap();
    assert_eq!(gauges.steps_running, [("default".to_owned(), 2)]);
    assert!(
        gauges.steps_ready.iter().all(|(_, n)| *n == 0),
        "{:?}",
        gauges.steps_ready
    );

    // Each end frees one slot for the next child; complete out of order.
    let mut done = 0;
    while let Some(task) = out.pop() {
        let index = index_of(&task);
        complete(&store, &task, json!({ "n": index })).await;
        done += 1;
        if done == 5 {
            break;
        }
        let more = claim(&store, HANDLERS).await;
        if done <= 3 {
            assert_eq!(more.len(), 1, "one child takes the freed slot");
            assert_eq!(index_of(&more[0]), 1 + done);
        } else {
            assert!(more.is_empty(), "no child left to start");
        }
        out.extend(more);
    }
    assert_eq!(done, 5);
    // The dependant receives the outputs in index order.
    let after = claim_one(&store, HANDLERS).await;
    assert_eq!(after.step, "after");
    assert_eq!(
        after.input["steps"]["work"],
        json!([{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}])
    );
    complete(&store, &after, json!("ok")).await;
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "completed");
    let work = step(&run, "work");
    assert_eq!(work.status, "completed");
    assert_eq!(work.attempts.len(), 5, "one attempt per child");
}

conformance!(check_for_each_a_failing_child_fails_the_step_and_the_run);
async fn check_for_each_a_failing_child_fails_the_step_and_the_run(store: Store) {
    let run_id = listed(&store, json!([1, 2, 3])).await;
    let mut out = claim(&store, HANDLERS).await;
    out.sort_by_key(index_of);
    store
        .fail(
            &out[1].lease_id,
            FailReport {
                reason: Reason::HandlerError,
                message: "no stock".into(),
                retryable: false,
                timing: None,
            },
            weft_store::now_ms(),
        )
        .await
        .unwrap();
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(
        (
            run.status.as_str(),
            run.reason.as_deref(),
            run.error.as_deref()
        ),
        ("failed", Some("handler_error"), Some("work[1]: no stock"))
    );
    assert_eq!(step(&run, "work").status, "failed");
    assert_eq!(step(&run, "after").status, "cancelled");
    // The sibling still out no longer counts; nothing else is claimable.
    assert_conflict(
        store
            .complete(&out[0].lease_id, json!(1), None, weft_store::now_ms())
            .await,
        "attempt_not_running",
    );
    assert!(claim(&store, HANDLERS).await.is_empty());
}

conformance!(check_for_each_an_empty_list_completes_with_an_empty_output);
async fn check_for_each_an_empty_list_completes_with_an_empty_output(store: Store) {
    let run_id = listed(&store, json!([])).await;
    let after = claim_one(&store, HANDLERS).await;
    assert_eq!(after.step, "after");
    assert_eq!(after.input["steps"]["work"], json!([]));
    complete(&store, &after, json!(null)).await;
    assert_eq!(store.get_run(&run_id).await.unwrap().status, "completed");
}

conformance!(check_for_each_a_non_list_or_too_many_items_fail_the_step);
async fn check_for_each_a_non_list_or_too_many_items_fail_the_step(store: Store) {
    for (items, message) in [
        (json!({"a": 1}), "must yield a list, got a map"),
        (
            json!([1, 2, 3, 4, 5, 6, 7]),
            "yielded 7 items, over `max_items` 6",
        ),
    ] {
        let run_id = listed(&store, items).await;
        let run = store.get_run(&run_id).await.unwrap();
        assert_eq!(
            (run.status.as_str(), run.reason.as_deref()),
            ("failed", Some("condition_error"))
        );
        let error = run.error.clone().unwrap_or_default();
        assert!(error.contains(message), "{error}");
        assert!(error.contains("steps.list.items"), "{error}");
        assert_eq!(step(&run, "work").status, "failed");
    }
}

const RETRIED: &str = "
name: retried
steps:
  - {name: work, handler: work, for_each: 'input.items', max_parallel: 1, retry: {max_attempts: 3, backoff: fixed, initial: 1s, jitter: false}}
";

conformance!(
    check_for_each_a_child_retries_and_a_lapsed_child_lease_is_reaped,
    lease_ms = 200
);
async fn check_for_each_a_child_retries_and_a_lapsed_child_lease_is_reaped(store: Store) {
    register(&store, RETRIED).await;
    let run_id = start(&store, "retried", json!({"items": ["x", "y"]})).await;
    // Child 0 fails retryably: it holds the only slot through its backoff.
    let first = claim_one(&store, &["work"]).await;
    assert_eq!((index_of(&first), first.attempt), (0, 1));
    store
        .fail(
            &first.lease_id,
            FailReport {
                reason: Reason::HandlerError,
                message: "flaky".into(),
                retryable: true,
                timing: None,
            },
            weft_store::now_ms(),
        )
        .await
        .unwrap();
    assert!(claim(&store, &["work"]).await.is_empty(), "in its backoff");
    let again = crate::support::eventually(
        "child 0 after its backoff",
        std::time::Duration::from_secs(10),
        async || claim(&store, &["work"]).await.pop(),
    )
    .await;
    assert_eq!((index_of(&again), again.attempt), (0, 2));
    // Its worker vanishes: the reaper ends the attempt and the child retries.
    crate::support::reap_until_one(&store).await;
    let third = crate::support::eventually(
        "child 0 after its lapsed lease",
        std::time::Duration::from_secs(10),
        async || claim(&store, &["work"]).await.pop(),
    )
    .await;
    assert_eq!((index_of(&third), third.attempt), (0, 3));
    complete(&store, &third, json!("X")).await;
    let last = claim_one(&store, &["work"]).await;
    assert_eq!((index_of(&last), last.attempt), (1, 4));
    complete(&store, &last, json!("Y")).await;

    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "completed");
    let work = step(&run, "work");
    assert_eq!(work.output, Some(json!(["X", "Y"])));
    let attempts: Vec<(i64, Option<i64>, &str, Option<&str>)> = work
        .attempts
        .iter()
        .map(|a| (a.attempt, a.index, a.status.as_str(), a.reason.as_deref()))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, Some(0), "failed", Some("handler_error")),
            (2, Some(0), "failed", Some("lease_expired")),
            (3, Some(0), "completed", None),
            (4, Some(1), "completed", None),
        ]
    );
    let events = crate::support::events(&store, &run_id).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "step.fanned_out",
        "child.retrying",
        "child.completed",
        "child.ready",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
}

conformance!(check_for_each_cancel_stops_the_children_and_retry_expands_again);
async fn check_for_each_cancel_stops_the_children_and_retry_expands_again(store: Store) {
    let run_id = listed(&store, json!(["a", "b", "c"])).await;
    let out = claim(&store, HANDLERS).await;
    assert_eq!(out.len(), 2);
    store.cancel_run(&run_id).await.unwrap();
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "cancelled");
    assert_eq!(step(&run, "work").status, "cancelled");
    let statuses: Vec<&str> = step(&run, "work")
        .attempts
        .iter()
        .map(|a| a.status.as_str())
        .collect();
    assert_eq!(statuses, ["cancelled", "cancelled"]);
    assert!(
        claim(&store, HANDLERS).await.is_empty(),
        "no child is claimable"
    );
    assert_conflict(
        store
            .complete(&out[0].lease_id, json!(1), None, weft_store::now_ms())
            .await,
        "attempt_not_running",
    );

    // A retry expands the list again; attempt numbers go on from the last.
    store.retry_run(&run_id).await.unwrap();
    let mut again = claim(&store, HANDLERS).await;
    again.sort_by_key(index_of);
    let seen: Vec<(i64, i64)> = again.iter().map(|t| (index_of(t), t.attempt)).collect();
    assert_eq!(seen, [(0, 3), (1, 4)]);
    for task in &again {
        complete(&store, task, json!(index_of(task))).await;
    }
    let last = claim_one(&store, HANDLERS).await;
    complete(&store, &last, json!(2)).await;
    let after = claim_one(&store, HANDLERS).await;
    assert_eq!(after.input["steps"]["work"], json!([0, 1, 2]));
}

conformance!(check_for_each_a_released_child_is_ready_again_with_its_budget);
async fn check_for_each_a_released_child_is_ready_again_with_its_budget(store: Store) {
    register(&store, RETRIED).await;
    let run_id = start(&store, "retried", json!({"items": ["x"]})).await;
    // `max_attempts: 3`; releases spend none of it, up to their cap.
    for attempt in 1..=3 {
        let task = claim_one(&store, &["work"]).await;
        assert_eq!((index_of(&task), task.attempt), (0, attempt));
        store
            .release(
                &task.lease_id,
                Some("shutting down".into()),
                weft_store::now_ms(),
            )
            .await
            .unwrap();
    }
    let task = claim_one(&store, &["work"]).await;
    assert_eq!(task.attempt, 4);
    complete(&store, &task, json!("X")).await;
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "completed");
    let statuses: Vec<&str> = step(&run, "work")
        .attempts
        .iter()
        .map(|a| a.status.as_str())
        .collect();
    assert_eq!(statuses, ["released", "released", "released", "completed"]);
}

conformance!(check_for_each_retry_keeps_the_completed_children);
async fn check_for_each_retry_keeps_the_completed_children(store: Store) {
    let run_id = listed(&store, json!(["a", "b", "c", "d", "e"])).await;
    // Children 0 and 2 complete; 1 fails for good (3 is then cancelled).
    let mut out = claim(&store, HANDLERS).await;
    out.sort_by_key(index_of);
    complete(&store, &out[0], json!({"first": 0})).await;
    let two = claim_one(&store, HANDLERS).await;
    assert_eq!(index_of(&two), 2);
    complete(&store, &two, json!({"first": 2})).await;
    store
        .fail(
            &out[1].lease_id,
            FailReport {
                reason: Reason::HandlerError,
                message: "no stock".into(),
                retryable: false,
                timing: None,
            },
            weft_store::now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(store.get_run(&run_id).await.unwrap().status, "failed");

    store.retry_run(&run_id).await.unwrap();
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "running");
    assert_eq!(step(&run, "work").status, "running");
    // Only the children that did not complete run again, through the
    // window (`max_parallel: 2`), in index order past the kept ones.
    let mut again = claim(&store, HANDLERS).await;
    again.sort_by_key(index_of);
    assert_eq!(again.iter().map(index_of).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(again[0].input["item"], "b");
    complete(&store, &again[0], json!({"again": 1})).await;
    let four = claim_one(&store, HANDLERS).await;
    assert_eq!(index_of(&four), 4);
    complete(&store, &again[1], json!({"again": 3})).await;
    complete(&store, &four, json!({"again": 4})).await;
    // The gathered output keeps the completed children's outputs.
    let after = claim_one(&store, HANDLERS).await;
    assert_eq!(after.step, "after");
    assert_eq!(
        after.input["steps"]["work"],
        json!([{"first": 0}, {"again": 1}, {"first": 2}, {"again": 3}, {"again": 4}])
    );
    complete(&store, &after, json!(null)).await;
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "completed");
    // Children 0 and 2 ran once each.
    let work = step(&run, "work");
    for kept in [0, 2] {
        assert_eq!(
            work.attempts
                .iter()
                .filter(|a| a.index == Some(kept))
                .count(),
            1,
            "child {kept} kept"
        );
    }
    let kinds = crate::support::event_kinds(&crate::support::events(&store, &run_id).await);
    assert!(
        kinds.iter().any(|k| k == "step.children_retried(work)"),
        "{kinds:?}"
    );
}
