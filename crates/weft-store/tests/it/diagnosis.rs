//! Conformance of the aggregate diagnosis (`Store::diagnosis_summary`, which
//! `weft_runs_stalled` and `GET /v1/diagnostics` count with) against the pure
//! rules applied run by run: over a population with every cause the two must
//! name each run alike. Ages are set by moving a row's times back, so no
//! test waits for a threshold.

use std::collections::BTreeMap;

use serde_json::json;
use weft_core::{
    Reason,
    diagnosis::{self, Cause, Thresholds},
};
use weft_store::ClaimedTask as Task;
use weft_store::{ClaimRequest, FailReport, Page, Store, WorkerMeta};

use crate::support::{complete, end_backoff, lose_lease, register, sql, start};

fn request(worker: &str, queue: &str, handler: &str, n: u32) -> ClaimRequest {
    ClaimRequest {
        meta: Default::default(),
        worker_id: worker.to_owned(),
        queues: vec![queue.to_owned()],
        handlers: vec![handler.to_owned()],
        max_tasks: n,
        token_id: None,
    }
}

async fn claim(store: &Store, worker: &str, queue: &str, handler: &str) -> Task {
    let mut tasks = store
        .claim(&request(worker, queue, handler, 1))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1, "one {handler} task");
    tasks.pop().unwrap()
}

async fn fail(store: &Store, task: &Task, message: &str) {
    store
        .fail(
            &task.lease_id,
            FailReport {
                reason: Reason::HandlerError,
                message: message.to_owned(),
                retryable: true,
                timing: None,
            },
            store.now_ms(),
        )
        .await
        .unwrap();
}

type Counts = BTreeMap<(String, bool), u64>;

/// Every run's worst cause, by the pure rules run by run.
async fn pure_counts(store: &Store, t: &Thresholds) -> Counts {
    let now = store.now_ms();
    let workers: Vec<_> = store
        .list_workers(now - t.worker_live_ms)
        .await
        .unwrap()
        .iter()
        .map(|w| w.view())
        .collect();
    let mut counts = Counts::new();
    for run in store.diagnosis_views(None, 100_000).await.unwrap() {
        let d = diagnosis::diagnose(&run, &workers, t, now);
        if let Some(cause) = d.cause {
            *counts
                .entry((cause.as_str().to_owned(), d.stalled))
                .or_default() += 1;
        }
    }
    counts
}

/// Every run's worst cause, by the aggregate SQL.
async fn summary_counts(store: &Store, t: &Thresholds) -> Counts {
    let workers: Vec<_> = store
        .list_workers(0)
        .await
        .unwrap()
        .iter()
        .map(|w| w.view())
        .collect();
    store
        .diagnosis_summary(&workers, t, &Page::default())
        .await
        .unwrap()
        .groups
        .iter()
        .map(|g| ((g.cause.as_str().to_owned(), g.stalled), g.count))
        .collect()
}

conformance!(check_aggregate_diagnosis_agrees_with_the_rules);
async fn check_aggregate_diagnosis_agrees_with_the_rules(store: Store) {
    let t = Thresholds {
        worker_live_ms: 60_000,
        running_long_ms: 3_600_000,
        approval_ms: 60_000,
        overdue_timer_ms: 60_000,
        saturated_ms: 5_000,
        repeat_attempts: 2,
        database_slow_ms: 500,
    };
    let retry = "retry: { max_attempts: 5, initial: 1h, max: 1h, jitter: false }";
    for manifest in [
        "name: orphan\nsteps:\n  - {name: s, handler: nobody, queue: nowhere}\n".to_owned(),
        "name: unserved\nsteps:\n  - {name: s, handler: missing}\n".to_owned(),
        "name: busy\nsteps:\n  - {name: s, handler: b, queue: busy}\n".to_owned(),
        "name: slow\nsteps:\n  - {name: s, handler: slow}\n".to_owned(),
        "name: quick\nsteps:\n  - {name: s, handler: quick}\n".to_owned(),
        format!("name: flaky\nsteps:\n  - {{name: s, handler: flaky, {retry}}}\n"),
        format!("name: crash\nsteps:\n  - {{name: s, handler: crash, {retry}}}\n"),
        "name: chain\nsteps:\n  - {name: a, handler: h}\n  - {name: b, handler: h, depends_on: [a]}\n".to_owned(),
        "name: nap\nsteps:\n  - {name: s, kind: sleep, duration: 1h}\n".to_owned(),
        "name: gate\nsteps:\n  - {name: ok, kind: approval}\n".to_owned(),
        "name: doomed\nsteps:\n  - {name: s, handler: h}\n".to_owned(),
        "name: undone\nsteps:\n  - {name: a, handler: h, compensate: refund}\n  - {name: b, handler: h, depends_on: [a], retry: {max_attempts: 1}}\n".to_owned(),
    ] {
        register(&store, &manifest).await;
    }
    let handlers: Vec<String> = ["h", "slow", "quick", "flaky", "crash"]
        .map(str::to_owned)
        .into();
    store
        .record_worker(
            "w1",
            &["default".to_owned()],
            &handlers,
            &WorkerMeta::default(),
        )
        .await
        .unwrap();
    store
        .record_worker(
            "w2",
            &["busy".to_owned()],
            &["b".to_owned()],
            &WorkerMeta {
                concurrency: Some(1),
                ..WorkerMeta::default()
            },
        )
        .await
        .unwrap();
    let now = store.now_ms();

    // A compensating run whose undo no live worker serves (`refund`).
    start(&store, "undone", json!({})).await;
    let a = claim(&store, "w1", "default", "h").await;
    complete(&store, &a, json!({})).await;
    let b = claim(&store, "w1", "default", "h").await;
    fail(&store, &b, "out of stock").await;

    // Ready steps: no worker on the queue, none with the handler, a full
    // worker (one claimed and running, one waiting past the threshold, one
    // just queued).
    start(&store, "orphan", json!({})).await;
    start(&store, "unserved", json!({})).await;
    for _ in 0..3 {
        start(&store, "busy", json!({})).await;
    }
    claim(&store, "w2", "busy", "b").await;
    let waiting = store
        .execute_unchecked(&format!(
            "UPDATE weft_steps SET ready_at = {} WHERE status = 'ready' AND queue = 'busy' \
             AND run_id = (SELECT MIN(run_id) FROM weft_steps WHERE status = 'ready' AND queue = 'busy')",
            now - 10_000
        ))
        .await
        .unwrap();
    assert_eq!(waiting, 1);

    // Running long: past the threshold, and past the p99 of 20 quick ones.
    start(&store, "slow", json!({})).await;
    let slow = claim(&store, "w1", "default", "slow").await;
    sql(
        &store,
        format!(
            "UPDATE weft_leases SET claimed_at = {} WHERE lease_id = '{}'",
            now - 7_200_000,
            slow.lease_id
        ),
    )
    .await;
    for _ in 0..diagnosis::P99_MIN_SAMPLES {
        start(&store, "quick", json!({})).await;
        let task = claim(&store, "w1", "default", "quick").await;
        complete(&store, &task, json!({})).await;
    }
    start(&store, "quick", json!({})).await;
    let stuck = claim(&store, "w1", "default", "quick").await;
    sql(
        &store,
        format!(
            "UPDATE weft_leases SET claimed_at = {} WHERE lease_id = '{}'",
            now - 600_000,
            stuck.lease_id
        ),
    )
    .await;

    // Failures: one (retrying), the same twice (poison_input), two lost
    // leases (lease_expired_loop).
    let retrying = start(&store, "flaky", json!({})).await;
    let first = claim(&store, "w1", "default", "flaky").await;
    fail(&store, &first, "upstream 503").await;
    let poisoned = start(&store, "flaky", json!({})).await;
    for _ in 0..2 {
        end_backoff(&store, &poisoned).await;
        let task = claim(&store, "w1", "default", "flaky").await;
        assert_eq!(task.run_id, poisoned);
        fail(&store, &task, "bad input: no field id").await;
    }
    let crashing = start(&store, "crash", json!({})).await;
    for _ in 0..2 {
        end_backoff(&store, &crashing).await;
        let task = claim(&store, "w1", "default", "crash").await;
        lose_lease(&store, &task).await;
    }
    let _ = retrying;

    // A step waiting on a running one.
    start(&store, "chain", json!({})).await;
    claim(&store, "w1", "default", "h").await;
    // Timers and approvals, one of each overdue or stale.
    start(&store, "nap", json!({})).await;
    let overdue = start(&store, "nap", json!({})).await;
    sql(
        &store,
        format!(
            "UPDATE weft_steps SET due_at = {} WHERE run_id = '{overdue}'",
            now - 120_000
        ),
    )
    .await;
    start(&store, "gate", json!({})).await;
    let stale = start(&store, "gate", json!({})).await;
    sql(
        &store,
        format!(
            "UPDATE weft_steps SET updated_at = {} WHERE run_id = '{stale}'",
            now - 120_000
        ),
    )
    .await;
    // Cancelled while its handler holds the lease.
    let doomed = start(&store, "doomed", json!({})).await;
    claim(&store, "w1", "default", "h").await;
    store.cancel_run(&doomed).await.unwrap();

    let expected: Counts = [
        ("no_worker_for_queue", true),
        ("no_worker_for_handler", true),
        ("poison_input", true),
        ("lease_expired_loop", true),
        ("overdue_timer", true),
        ("worker_saturated", true),
        ("running_long", true),
        ("cancel_pending", true),
        ("waiting_approval", true),
        ("waiting_approval", false),
        ("retrying", false),
        ("waiting_timer", false),
        ("waiting_dependencies", false),
        ("queued", false),
        ("running", false),
    ]
    .into_iter()
    .map(|(cause, stalled)| {
        let n = if cause == "running_long" || cause == "no_worker_for_handler" {
            2
        } else {
            1
        };
        ((cause.to_owned(), stalled), n)
    })
    .collect();
    let pure = pure_counts(&store, &t).await;
    assert_eq!(pure, expected, "the population covers every cause");
    assert_eq!(summary_counts(&store, &t).await, pure);

    // The gauge counts the stalled ones from the same statement.
    let gauge: BTreeMap<String, i64> = store
        .gauge_snapshot_with(&t)
        .await
        .unwrap()
        .runs_stalled
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    let stalled: BTreeMap<String, i64> = pure
        .iter()
        .filter(|((_, stalled), _)| *stalled)
        .map(|((cause, _), n)| (cause.clone(), *n as i64))
        .collect();
    assert_eq!(gauge, stalled);

    // Pages: worst first within a cause (the longest running first), then on.
    let workers: Vec<_> = store
        .list_workers(0)
        .await
        .unwrap()
        .iter()
        .map(|w| w.view())
        .collect();
    let page = |offset| Page {
        limit: 1,
        offset,
        cause: Some(Cause::RunningLong),
        stalled_only: true,
    };
    let first = store
        .diagnosis_summary(&workers, &t, &page(0))
        .await
        .unwrap();
    let group = first
        .groups
        .iter()
        .find(|g| g.cause == Cause::RunningLong)
        .unwrap();
    assert_eq!((group.count, group.run_ids.clone()), (2, vec![slow.run_id]));
    let second = store
        .diagnosis_summary(&workers, &t, &page(1))
        .await
        .unwrap();
    let group = second
        .groups
        .iter()
        .find(|g| g.cause == Cause::RunningLong)
        .unwrap();
    assert_eq!(group.run_ids, vec![stuck.run_id]);
    // Other causes are still counted but not listed.
    assert!(
        second
            .groups
            .iter()
            .filter(|g| g.cause != Cause::RunningLong)
            .all(|g| g.run_ids.is_empty() && g.count > 0)
    );
    assert_eq!(second.examined(), 17);
    // The detail of a listed run, in the order asked.
    let views = store
        .diagnosis_views_of(&[stuck.run_id, slow.run_id])
        .await
        .unwrap();
    let ids: Vec<weft_core::RunId> = views.iter().map(|v| v.run_id).collect();
    assert_eq!(ids, [stuck.run_id, slow.run_id]);
    assert!(views[0].steps[0].p99_ms.is_some(), "{:?}", views[0]);
}
