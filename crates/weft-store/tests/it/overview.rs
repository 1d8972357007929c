//! Conformance of the overview query: runs created in the window per
//! workflow (a run-id key range), ended ones' failure rate and p95, per
//! bucket too; runs outside the window left out; cached for a few seconds.

use serde_json::json;
use weft_core::Reason;
use weft_store::{FailReport, Store};

use crate::support::{claim, claim_one, complete, register, start};

conformance!(check_overview_per_workflow);
async fn check_overview_per_workflow(store: Store) {
    register(&store, "name: alpha\nsteps:\n  - {name: s, handler: a.h}\n").await;
    register(
        &store,
        "name: beta\nsteps:\n  - {name: s, handler: b.h, retry: {max_attempts: 1}}\n",
    )
    .await;
    let since = store.now_ms() - 1_000;
    for _ in 0..3 {
        start(&store, "alpha", json!({})).await;
    }
    for task in claim(&store, &["a.h"]).await.iter().take(2) {
        complete(&store, task, json!({})).await;
    }
    start(&store, "beta", json!({})).await;
    let task = claim_one(&store, &["b.h"]).await;
    let report = FailReport {
        reason: Reason::HandlerError,
        message: "no".to_owned(),
        retryable: false,
        timing: None,
    };
    store
        .fail(&task.lease_id, report, weft_store::now_ms())
        .await
        .unwrap();
    start(&store, "beta", json!({})).await;
    let task = claim_one(&store, &["b.h"]).await;
    complete(&store, &task, json!({})).await;
    let until = store.now_ms() + 1_000;

    let overview = store.overview_between(since, until, 4).await.unwrap();
    assert!(!overview.truncated);
    assert_eq!(overview.buckets, 4);
    let names: Vec<&str> = overview
        .workflows
        .iter()
        .map(|w| w.workflow.as_str())
        .collect();
    assert_eq!(names, vec!["alpha", "beta"]);
    let alpha = &overview.workflows[0];
    assert_eq!((alpha.started, alpha.completed, alpha.failed), (3, 2, 0));
    assert_eq!(alpha.failure_rate, Some(0.0));
    assert!(alpha.p95_ms.is_some_and(|p| p >= 0));
    assert_eq!(alpha.started_per_bucket.iter().sum::<i64>(), 3);
    let beta = &overview.workflows[1];
    assert_eq!((beta.started, beta.completed, beta.failed), (2, 1, 1));
    assert_eq!(beta.failure_rate, Some(0.5));
    assert_eq!(beta.failed_per_bucket.iter().sum::<i64>(), 1);

    // A window before the runs: nothing.
    let earlier = store
        .overview_between(since - 3_600_000, since - 60_000, 4)
        .await
        .unwrap();
    assert!(earlier.workflows.is_empty(), "{earlier:?}");

    // The last hour, cached: a run started within the TTL is not seen yet.
    let hour = std::time::Duration::from_secs(3600);
    let first = store.overview(hour, 12).await.unwrap();
    assert_eq!(first.workflows[0].started, 3);
    start(&store, "alpha", json!({})).await;
    let cached = store.overview(hour, 12).await.unwrap();
    assert_eq!(cached, first);
    let fresh = store
        .overview_between(since, store.now_ms() + 1_000, 12)
        .await
        .unwrap();
    assert_eq!(fresh.workflows[0].started, 4);
}
