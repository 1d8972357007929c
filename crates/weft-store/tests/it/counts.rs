//! Conformance of the runs list's counts per status: every status reported,
//! the workflow, trace and creation-time filters (a run-id key range), and
//! the cap (`capped` past it).

use serde_json::json;
use weft_core::RunStatus;
use weft_store::{CountFilter, Store};

use crate::support::{register, start};

fn count(counts: &[weft_store::StatusCount], status: RunStatus) -> (i64, bool) {
    counts
        .iter()
        .find(|c| c.status == status)
        .map(|c| (c.count, c.capped))
        .expect("every status is counted")
}

conformance!(check_count_runs_by_status);
async fn check_count_runs_by_status(store: Store) {
    register(&store, "name: alpha\nsteps:\n  - {name: s, handler: h}\n").await;
    register(&store, "name: beta\nsteps:\n  - {name: s, handler: h}\n").await;
    let before = weft_store::now_ms();
    let mut alpha = Vec::new();
    for i in 0..4 {
        alpha.push(start(&store, "alpha", json!({"i": i})).await);
    }
    start(&store, "beta", json!({})).await;
    store.cancel_run(&alpha[0]).await.unwrap();

    let all = store
        .count_runs_by_status(&CountFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(all.len(), RunStatus::ALL.len());
    assert_eq!(count(&all, RunStatus::Pending), (4, false));
    assert_eq!(count(&all, RunStatus::Cancelled), (1, false));
    assert_eq!(count(&all, RunStatus::Completed), (0, false));

    let alpha_only = CountFilter {
        workflow: Some("alpha".into()),
        ..CountFilter::default()
    };
    let counts = store.count_runs_by_status(&alpha_only, 100).await.unwrap();
    assert_eq!(count(&counts, RunStatus::Pending), (3, false));

    // The cap: three pending alpha runs counted to at most two.
    let capped = store.count_runs_by_status(&alpha_only, 2).await.unwrap();
    assert_eq!(count(&capped, RunStatus::Pending), (2, true));
    assert_eq!(count(&capped, RunStatus::Cancelled), (1, false));

    // Time ranges are run-id ranges: before the first run, nothing; from it, all.
    let earlier = CountFilter {
        until_ms: Some(before - 60_000),
        ..CountFilter::default()
    };
    let counts = store.count_runs_by_status(&earlier, 100).await.unwrap();
    assert!(counts.iter().all(|c| c.count == 0), "{counts:?}");
    let since = CountFilter {
        since_ms: Some(before - 1_000),
        until_ms: Some(weft_store::now_ms() + 60_000),
        ..CountFilter::default()
    };
    let counts = store.count_runs_by_status(&since, 100).await.unwrap();
    assert_eq!(count(&counts, RunStatus::Pending), (4, false));
    let later = CountFilter {
        since_ms: Some(weft_store::now_ms() + 60_000),
        ..CountFilter::default()
    };
    let counts = store.count_runs_by_status(&later, 100).await.unwrap();
    assert!(counts.iter().all(|c| c.count == 0), "{counts:?}");
}
