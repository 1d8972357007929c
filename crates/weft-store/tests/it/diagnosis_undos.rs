//! The diagnosis of compensating runs by their undos, the pure rules and
//! the aggregate SQL alike: an undo failing the same way again and again is
//! `poison_input`, one losing its lease again and again `lease_expired_loop`
//! (as a forward attempt would be); a `for_each` step undone child by child
//! is judged by its children's undos (one waiting for a worker, running, or
//! backing off), named in the evidence as `step[i]`, never as the step's
//! own `queued` undo, and its child undos' repeated failures count as a
//! step's undo's do. A `for_each` step that failed is undone too.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use weft_core::{
    Reason, RunId,
    diagnosis::{self, Thresholds},
};
use weft_store::ClaimedTask as Task;
use weft_store::{FailReport, Page, Store, WorkerMeta};

use crate::support::{claim_request, complete, end_backoff, lose_lease, register, sql, start};

/// Claims exactly one task of `handler` for `run_id`.
async fn claim(store: &Store, run_id: &RunId, handler: &str) -> Task {
    let tasks = store
        .claim(&claim_request("w1", &[handler], 1))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1, "one {handler} task");
    assert_eq!(tasks[0].run_id, *run_id, "{handler}");
    tasks.into_iter().next().unwrap()
}

/// Claims every ready task of `handler` (children of a fan-out).
async fn claim_all(store: &Store, handler: &str, n: usize) -> Vec<Task> {
    let tasks = store
        .claim(&claim_request("w1", &[handler], 10))
        .await
        .unwrap();
    assert_eq!(tasks.len(), n, "{n} {handler} tasks");
    tasks
}

async fn fail(store: &Store, task: &Task, message: &str, retryable: bool) {
    store
        .fail(
            &task.lease_id,
            FailReport {
                reason: Reason::HandlerError,
                message: message.to_owned(),
                retryable,
                timing: None,
            },
            store.now_ms(),
        )
        .await
        .unwrap();
}

/// Makes the run's child undos backing off due now.
async fn end_child_backoff(store: &Store, run_id: &RunId) {
    sql(
        store,
        format!(
            "UPDATE weft_children SET ready_at = {} WHERE run_id = '{run_id}' AND undo = 'ready'",
            store.now_ms() - 1
        ),
    )
    .await;
}

const BACKOFF: &str = "{max_attempts: 5, initial: 1h, max: 1h, jitter: false}";

/// A step `a` undone by `undo` (handlers `<p>.do`, `<p>.undo`) and a step
/// `b` that fails for good.
fn chain(name: &str) -> String {
    format!(
        "name: {name}\nsteps:\n  - {{name: a, handler: {name}.do, compensate: {name}.undo, compensate_retry: {BACKOFF}}}\n  - {{name: b, handler: {name}.do, depends_on: [a], retry: {{max_attempts: 1}}}}\n"
    )
}

/// A `for_each` step `work` undone by `undo`, and `after` that fails.
fn fan_out(name: &str, undo: &str) -> String {
    format!(
        "name: {name}\nsteps:\n  - {{name: work, handler: {name}.do, compensate: {undo}, for_each: 'input.items', retry: {{max_attempts: 1}}, compensate_retry: {BACKOFF}}}\n  - {{name: after, handler: {name}.do, depends_on: [work], retry: {{max_attempts: 1}}}}\n"
    )
}

/// Runs `name`'s children (one per item) to completion, then fails `after`:
/// the run is compensating with every child's undo ready.
async fn compensating_fan_out(store: &Store, name: &str, items: Value) -> RunId {
    let n = items.as_array().unwrap().len();
    let run_id = start(store, name, json!({ "items": items })).await;
    for child in claim_all(store, &format!("{name}.do"), n).await {
        complete(store, &child, json!({})).await;
    }
    let after = claim(store, &run_id, &format!("{name}.do")).await;
    fail(store, &after, "no truck", false).await;
    run_id
}

type Counts = BTreeMap<(String, bool), u64>;

conformance!(check_undos_are_diagnosed_as_attempts_and_children);
async fn check_undos_are_diagnosed_as_attempts_and_children(store: Store) {
    let t = Thresholds {
        worker_live_ms: 60_000,
        repeat_attempts: 2,
        ..Thresholds::default()
    };
    for manifest in [
        chain("poison"),
        chain("crash"),
        fan_out("queued", "queued.undo"),
        fan_out("running", "running.undo"),
        fan_out("backoff", "backoff.undo"),
        fan_out("orphan", "nobody.undo"),
        fan_out("failing", "failing.undo"),
        fan_out("childpoison", "childpoison.undo"),
        fan_out("childcrash", "childcrash.undo"),
    ] {
        register(&store, &manifest).await;
    }
    let handlers: Vec<String> = [
        "poison",
        "crash",
        "queued",
        "running",
        "backoff",
        "orphan",
        "failing",
        "childpoison",
        "childcrash",
    ]
    .iter()
    .flat_map(|p| [format!("{p}.do"), format!("{p}.undo")])
    .collect();
    store
        .record_worker(
            "w1",
            &["default".to_owned()],
            &handlers,
            &WorkerMeta::default(),
        )
        .await
        .unwrap();

    // An undo failing the same way twice: poison_input.
    let poison = start(&store, "poison", json!({})).await;
    let a = claim(&store, &poison, "poison.do").await;
    complete(&store, &a, json!({})).await;
    let b = claim(&store, &poison, "poison.do").await;
    fail(&store, &b, "out of stock", false).await;
    for i in 0..2 {
        if i > 0 {
            end_backoff(&store, &poison).await;
        }
        let undo = claim(&store, &poison, "poison.undo").await;
        fail(&store, &undo, "refund refused: card closed", true).await;
    }
    // An undo losing its lease twice: lease_expired_loop.
    let crash = start(&store, "crash", json!({})).await;
    let a = claim(&store, &crash, "crash.do").await;
    complete(&store, &a, json!({})).await;
    let b = claim(&store, &crash, "crash.do").await;
    fail(&store, &b, "out of stock", false).await;
    for i in 0..2 {
        if i > 0 {
            end_backoff(&store, &crash).await;
        }
        let undo = claim(&store, &crash, "crash.undo").await;
        lose_lease(&store, &undo).await;
    }
    // Child undos: two due (queued), one running, one backing off, one no
    // worker serves.
    let queued = compensating_fan_out(&store, "queued", json!([1, 2])).await;
    let running = compensating_fan_out(&store, "running", json!([1])).await;
    claim(&store, &running, "running.undo").await;
    let backoff = compensating_fan_out(&store, "backoff", json!([1])).await;
    let undo = claim(&store, &backoff, "backoff.undo").await;
    fail(&store, &undo, "refund refused", true).await;
    let orphan = compensating_fan_out(&store, "orphan", json!([1])).await;
    // A `for_each` step that failed: its completed child's undo is due, the
    // failed child's is not.
    let failing = start(&store, "failing", json!({ "items": [1, 2] })).await;
    let mut children = claim_all(&store, "failing.do", 2).await;
    children.sort_by_key(|c| c.input["index"].as_i64());
    complete(&store, &children[0], json!({})).await;
    fail(&store, &children[1], "bad item", false).await;

    // A child undo failing the same way twice, one losing its lease twice:
    // judged like a step's undo, on that child's undo attempts.
    let child_poison = compensating_fan_out(&store, "childpoison", json!([1, 2])).await;
    let child_crash = compensating_fan_out(&store, "childcrash", json!([1])).await;
    for i in 0..2 {
        if i > 0 {
            end_child_backoff(&store, &child_poison).await;
            end_child_backoff(&store, &child_crash).await;
        }
        let mut undos = claim_all(&store, "childpoison.undo", 2 - i).await;
        undos.sort_by_key(|u| u.input["index"].as_i64());
        fail(&store, &undos[0], "refund refused: card closed", true).await;
        if let Some(other) = undos.get(1) {
            complete(&store, other, json!({})).await;
        }
        let undo = claim(&store, &child_crash, "childcrash.undo").await;
        lose_lease(&store, &undo).await;
    }

    let now = store.now_ms();
    let workers: Vec<_> = store
        .list_workers(now - t.worker_live_ms)
        .await
        .unwrap()
        .iter()
        .map(|w| w.view())
        .collect();
    let mut pure = Counts::new();
    let mut by_run = BTreeMap::new();
    for run in store.diagnosis_views(None, 1_000).await.unwrap() {
        let d = diagnosis::diagnose(&run, &workers, &t, now);
        if let Some(cause) = d.cause {
            *pure
                .entry((cause.as_str().to_owned(), d.stalled))
                .or_default() += 1;
        }
        by_run.insert(run.run_id, d);
    }
    let cause_of = |run_id: &RunId| {
        let d = &by_run[run_id];
        assert_eq!(d.status.as_str(), "compensating", "{d:#?}");
        (d.cause.unwrap().as_str(), d.steps[0].evidence.clone())
    };
    let (cause, evidence) = cause_of(&poison);
    assert_eq!(cause, "poison_input", "{evidence}");
    assert!(
        evidence.contains("undo by compensate handler poison.undo")
            && evidence.contains("refund refused: card closed"),
        "{evidence}"
    );
    let (cause, evidence) = cause_of(&crash);
    assert_eq!(cause, "lease_expired_loop", "{evidence}");
    let (cause, evidence) = cause_of(&queued);
    assert_eq!(cause, "queued", "{evidence}");
    assert!(
        evidence.contains("undo of work[0] by compensate handler queued.undo"),
        "{evidence}"
    );
    let (cause, evidence) = cause_of(&running);
    assert_eq!(cause, "running", "{evidence}");
    assert!(
        evidence.contains("undo of work[0] by compensate handler running.undo")
            && evidence.contains("running on worker w1"),
        "{evidence}"
    );
    let (cause, evidence) = cause_of(&backoff);
    assert_eq!(cause, "retrying", "{evidence}");
    assert!(
        evidence.contains("undo of work[0]") && evidence.contains("backing off"),
        "{evidence}"
    );
    let (cause, evidence) = cause_of(&orphan);
    assert_eq!(cause, "no_worker_for_handler", "{evidence}");
    assert!(evidence.contains("nobody.undo"), "{evidence}");
    let (cause, evidence) = cause_of(&child_poison);
    assert_eq!(cause, "poison_input", "{evidence}");
    assert!(
        evidence.contains("undo of work[0] by compensate handler childpoison.undo")
            && evidence.contains("refund refused: card closed"),
        "{evidence}"
    );
    let (cause, evidence) = cause_of(&child_crash);
    assert_eq!(cause, "lease_expired_loop", "{evidence}");
    assert!(evidence.contains("undo of work[0]"), "{evidence}");
    let (cause, evidence) = cause_of(&failing);
    assert_eq!(cause, "queued", "{evidence}");
    assert!(evidence.contains("undo of work[0]"), "{evidence}");

    let expected: Counts = [
        (("poison_input", true), 2),
        (("lease_expired_loop", true), 2),
        (("no_worker_for_handler", true), 1),
        (("queued", false), 2),
        (("running", false), 1),
        (("retrying", false), 1),
    ]
    .into_iter()
    .map(|((cause, stalled), n)| ((cause.to_owned(), stalled), n))
    .collect();
    assert_eq!(pure, expected);
    let summary: Counts = store
        .diagnosis_summary(&workers, &t, &Page::default())
        .await
        .unwrap()
        .groups
        .iter()
        .map(|g| ((g.cause.as_str().to_owned(), g.stalled), g.count))
        .collect();
    assert_eq!(summary, pure, "the aggregate SQL agrees with the rules");
}
