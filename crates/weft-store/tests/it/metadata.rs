//! Conformance of run metadata: written with the run, read back in the run's
//! detail and in list pages, the `meta.k=v` filter (pairs ANDed, with the
//! other filters, cursor pagination newest first), `until`, and counts per
//! status under a metadata filter, cached for a few seconds.

use std::collections::HashSet;

use serde_json::json;
use weft_core::{RunStatus, metadata::Metadata};
use weft_store::{CountFilter, NewRun, RunFilter, Store};

use crate::support::register;

fn meta(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    meta(pairs).into_iter().collect()
}

async fn start_with(store: &Store, workflow: &str, metadata: Metadata) -> weft_core::RunId {
    store
        .start_run(NewRun {
            workflow: workflow.into(),
            input: json!({}),
            metadata,
            ..NewRun::default()
        })
        .await
        .unwrap()
        .run_id
}

fn ids(list: &weft_store::RunPage) -> Vec<weft_core::RunId> {
    list.runs.iter().map(|r| r.run_id).collect()
}

conformance!(check_metadata_is_stored_and_filtered);
async fn check_metadata_is_stored_and_filtered(store: Store) {
    register(&store, "name: alpha\nsteps:\n  - {name: s, handler: h}\n").await;
    register(&store, "name: beta\nsteps:\n  - {name: s, handler: h}\n").await;
    let mut c42 = Vec::new();
    for i in 0..5 {
        let region = if i % 2 == 0 { "eu" } else { "us" };
        c42.push(
            start_with(
                &store,
                "alpha",
                meta(&[("customer", "42"), ("region", region)]),
            )
            .await,
        );
    }
    let c7 = start_with(
        &store,
        "alpha",
        meta(&[("customer", "7"), ("region", "eu")]),
    )
    .await;
    let beta42 = start_with(&store, "beta", meta(&[("customer", "42")])).await;
    let bare = start_with(&store, "alpha", Metadata::new()).await;
    store.cancel_run(&c42[1]).await.unwrap();

    // Stored with the run, read back in its detail and in list pages.
    let detail = store.get_run(&c42[0]).await.unwrap();
    assert_eq!(
        detail.metadata,
        meta(&[("customer", "42"), ("region", "eu")])
    );
    assert!(store.get_run(&bare).await.unwrap().metadata.is_empty());
    let all = store.list_runs(&RunFilter::default()).await.unwrap();
    let listed = all.runs.iter().find(|r| r.run_id == c7).unwrap();
    assert_eq!(
        listed.metadata,
        meta(&[("customer", "7"), ("region", "eu")])
    );

    // One pair: every run with it, newest first, whatever the workflow.
    let list = |filter: RunFilter| {
        let store = store.clone();
        async move { store.list_runs(&filter).await.unwrap() }
    };
    let customer = list(RunFilter {
        metadata: pairs(&[("customer", "42")]),
        ..RunFilter::default()
    })
    .await;
    let mut expected: Vec<weft_core::RunId> = c42.to_vec();
    expected.push(beta42);
    expected.reverse();
    assert_eq!(ids(&customer), expected);

    // Pairs AND together, and with the other filters.
    let eu = list(RunFilter {
        metadata: pairs(&[("customer", "42"), ("region", "eu")]),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(ids(&eu), vec![c42[4], c42[2], c42[0]]);
    let alpha_only = list(RunFilter {
        workflow: Some("alpha".into()),
        metadata: pairs(&[("customer", "42")]),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(alpha_only.runs.len(), 5);
    let cancelled = list(RunFilter {
        status: Some(RunStatus::Cancelled),
        metadata: pairs(&[("customer", "42")]),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(ids(&cancelled), vec![c42[1]]);
    let none = list(RunFilter {
        metadata: pairs(&[("customer", "42"), ("region", "ap")]),
        ..RunFilter::default()
    })
    .await;
    assert!(none.runs.is_empty() && none.next_cursor.is_none());
    let other_value = list(RunFilter {
        metadata: pairs(&[("customer", "4")]),
        ..RunFilter::default()
    })
    .await;
    assert!(other_value.runs.is_empty(), "values match whole");

    // Cursor pagination over a metadata filter: no duplicates, no gaps.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(RunFilter {
            metadata: pairs(&[("customer", "42")]),
            limit: Some(2),
            cursor,
            ..RunFilter::default()
        })
        .await;
        assert!(page.runs.len() <= 2);
        seen.extend(page.runs.iter().map(|r| r.run_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 6);

    // `until`: created before; with `since`, a window.
    let now = store.now_ms();
    let before = list(RunFilter {
        until_ms: Some(now - 3_600_000),
        ..RunFilter::default()
    })
    .await;
    assert!(before.runs.is_empty());
    let window = list(RunFilter {
        since_ms: Some(now - 3_600_000),
        until_ms: Some(now + 1),
        metadata: pairs(&[("customer", "7")]),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(ids(&window), vec![c7]);
}

conformance!(check_counts_under_a_metadata_filter_are_cached);
async fn check_counts_under_a_metadata_filter_are_cached(store: Store) {
    register(&store, "name: alpha\nsteps:\n  - {name: s, handler: h}\n").await;
    let mut runs = Vec::new();
    for i in 0..3 {
        let customer = if i < 2 { "42" } else { "7" };
        runs.push(
            start_with(
                &store,
                "alpha",
                meta(&[("customer", customer), ("tier", "gold")]),
            )
            .await,
        );
    }
    store.cancel_run(&runs[0]).await.unwrap();
    let filter = CountFilter {
        metadata: pairs(&[("customer", "42"), ("tier", "gold")]),
        ..CountFilter::default()
    };
    let count = |counts: &[weft_store::StatusCount], status: RunStatus| {
        let c = counts.iter().find(|c| c.status == status).unwrap();
        (c.count, c.capped)
    };
    let counts = store.count_runs_by_status(&filter, 100).await.unwrap();
    assert_eq!(count(&counts, RunStatus::Pending), (1, false));
    assert_eq!(count(&counts, RunStatus::Cancelled), (1, false));
    let capped = store
        .count_runs_by_status(
            &CountFilter {
                metadata: pairs(&[("tier", "gold")]),
                ..CountFilter::default()
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!(count(&capped, RunStatus::Pending), (1, true));

    // Cached: a run started after the first read is not counted until the
    // entry is older than the TTL; the uncached count sees it at once.
    let first = store.cached_run_counts(&filter, 100).await.unwrap();
    assert_eq!(count(&first, RunStatus::Pending), (1, false));
    start_with(
        &store,
        "alpha",
        meta(&[("customer", "42"), ("tier", "gold")]),
    )
    .await;
    let again = store.cached_run_counts(&filter, 100).await.unwrap();
    assert_eq!(again, first, "read within the TTL: the cached counts");
    let fresh = store.count_runs_by_status(&filter, 100).await.unwrap();
    assert_eq!(count(&fresh, RunStatus::Pending), (2, false));
    tokio::time::sleep(weft_store::COUNTS_TTL + std::time::Duration::from_millis(100)).await;
    let later = store.cached_run_counts(&filter, 100).await.unwrap();
    assert_eq!(count(&later, RunStatus::Pending), (2, false));
}
