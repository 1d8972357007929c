//! Conformance of the worker rows (what polls record, lease figures, retention)
//! and of the diagnosis reads: the views a run's diagnosis is made from, and
//! `weft_runs_stalled` counted by the same rules.

use std::collections::BTreeMap;

use serde_json::json;
use weft_core::diagnosis::{self, Cause, Thresholds};
use weft_store::{Store, WorkerMeta};

use crate::support::{claim_request, complete, register, start};

fn meta(concurrency: u32) -> WorkerMeta {
    WorkerMeta {
        host: Some("box-1".to_owned()),
        pid: Some(4242),
        version: Some("9.9.9".to_owned()),
        concurrency: Some(concurrency),
    }
}

conformance!(check_workers_recorded);
async fn check_workers_recorded(store: Store) {
    let queues = vec!["default".to_owned()];
    let handlers = vec!["h".to_owned()];
    store
        .record_worker("w1", &queues, &handlers, &meta(2))
        .await
        .unwrap();
    let first = store.list_workers(0).await.unwrap();
    assert_eq!(first.len(), 1);
    let w = &first[0];
    assert_eq!(
        (w.meta.clone(), w.slots_in_use, w.last_heartbeat_ms),
        (meta(2), 0, None)
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .record_worker("w1", &queues, &["h".to_owned(), "g".to_owned()], &meta(4))
        .await
        .unwrap();
    register(&store, "name: wk\nsteps:\n  - {name: s, handler: h}\n").await;
    start(&store, "wk", json!({})).await;
    let tasks = store.claim(&claim_request("w1", &["h"], 1)).await.unwrap();
    assert_eq!(tasks.len(), 1);
    let again = store.list_workers(0).await.unwrap();
    let w = &again[0];
    assert_eq!(
        w.first_seen_ms, first[0].first_seen_ms,
        "first seen is kept"
    );
    assert!(w.last_poll_ms > first[0].first_seen_ms);
    assert_eq!(w.handlers, ["h", "g"]);
    assert_eq!(w.meta.concurrency, Some(4));
    assert_eq!(w.slots_in_use, 1, "slots in use come from the lease rows");
    assert!(w.last_heartbeat_ms.is_some_and(|b| b <= store.now_ms()));
    // Retention: a row not heard from is deleted.
    assert_eq!(
        store.list_workers(store.now_ms() + 1).await.unwrap().len(),
        0
    );
    assert_eq!(store.forget_workers(store.now_ms() + 1).await.unwrap(), 1);
    assert!(store.list_workers(0).await.unwrap().is_empty());
}

/// Counts per stalled cause from the views, as `weft doctor` computes them.
async fn doctor_counts(store: &Store, t: &Thresholds) -> BTreeMap<String, i64> {
    let now = store.now_ms();
    let workers: Vec<_> = store
        .list_workers(now - t.worker_live_ms)
        .await
        .unwrap()
        .iter()
        .map(|w| w.view())
        .collect();
    let mut counts: BTreeMap<String, i64> = diagnosis::stalled_labels()
        .map(|c| (c.as_str().to_owned(), 0))
        .collect();
    for run in store.diagnosis_views(None, 1000).await.unwrap() {
        let d = diagnosis::diagnose(&run, &workers, t, now);
        if let (true, Some(c)) = (d.stalled, d.cause) {
            *counts.entry(c.as_str().to_owned()).or_default() += 1;
        }
    }
    counts
}

async fn gauge_counts(store: &Store, t: &Thresholds) -> BTreeMap<String, i64> {
    store
        .gauge_snapshot_with(t)
        .await
        .unwrap()
        .runs_stalled
        .into_iter()
        .collect()
}

conformance!(check_diagnosis_views_and_gauge_agree);
async fn check_diagnosis_views_and_gauge_agree(store: Store) {
    let t = Thresholds::default();
    register(
        &store,
        "name: orphan\nsteps:\n  - {name: s, handler: nobody}\n",
    )
    .await;
    register(
        &store,
        "name: gated\nsteps:\n  - {name: a, handler: h}\n  - {name: ok, kind: approval, depends_on: [a]}\n",
    )
    .await;
    let orphan = start(&store, "orphan", json!({})).await;
    let gated = start(&store, "gated", json!({})).await;

    let views = store.diagnosis_views(None, 1000).await.unwrap();
    assert_eq!(views.len(), 2);
    let g = views.iter().find(|v| v.run_id == gated).unwrap();
    let names: Vec<(&str, &str)> = g
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.status.as_str()))
        .collect();
    assert_eq!(names, [("a", "ready"), ("ok", "pending")]);
    assert_eq!(
        g.steps[1].depends_on,
        [("a".to_owned(), weft_core::StepStatus::Ready)]
    );

    // No worker at all: both runs want one.
    let one = store
        .diagnosis_views(Some(&orphan.into()), 1)
        .await
        .unwrap();
    let d = diagnosis::diagnose(&one[0], &[], &t, store.now_ms());
    assert_eq!(d.cause, Some(Cause::NoWorkerForQueue));
    let gauge = gauge_counts(&store, &t).await;
    assert_eq!(gauge["no_worker_for_queue"], 2);
    assert_eq!(gauge, doctor_counts(&store, &t).await);

    // A worker with handler h only: the orphan lacks its handler, the gated
    // run's step is taken and runs.
    store
        .record_worker("w1", &["default".to_owned()], &["h".to_owned()], &meta(4))
        .await
        .unwrap();
    let tasks = store.claim(&claim_request("w1", &["h"], 4)).await.unwrap();
    assert_eq!(tasks.len(), 1);
    let gauge = gauge_counts(&store, &t).await;
    assert_eq!(
        (gauge["no_worker_for_queue"], gauge["no_worker_for_handler"]),
        (0, 1)
    );
    assert_eq!(gauge, doctor_counts(&store, &t).await);
    let one = store.diagnosis_views(Some(&gated.into()), 1).await.unwrap();
    let running = one[0].steps.iter().find(|s| s.name == "a").unwrap();
    assert_eq!(
        running.lease.as_ref().map(|l| l.worker_id.as_str()),
        Some("w1")
    );
}

conformance!(check_queue_throughput_from_completed_attempts);
async fn check_queue_throughput_from_completed_attempts(store: Store) {
    register(
        &store,
        "name: tp\nsteps:\n  - {name: a, handler: h, queue: fast}\n",
    )
    .await;
    for _ in 0..3 {
        start(&store, "tp", json!({})).await;
    }
    let mut request = claim_request("w1", &["h"], 3);
    request.queues = vec!["fast".to_owned()];
    let tasks = store.claim(&request).await.unwrap();
    assert_eq!(tasks.len(), 3);
    complete(&store, &tasks[0], json!(1)).await;
    complete(&store, &tasks[1], json!(2)).await;
    // Two completed, one still running: the running one is not throughput.
    let counts = store.queue_counts().await.unwrap();
    let fast = &counts["fast"];
    assert_eq!((fast.running, fast.completed_last_minute), (1, 2));
    // An attempt that finished more than a minute ago has left the window.
    store
        .execute_unchecked(&format!(
            "UPDATE weft_attempts SET finished_at = {} WHERE lease_id = '{}'",
            store.now_ms() - weft_store::THROUGHPUT_WINDOW_MS - 1_000,
            tasks[0].lease_id
        ))
        .await
        .unwrap();
    let counts = store.queue_counts().await.unwrap();
    assert_eq!(counts["fast"].completed_last_minute, 1);
}
