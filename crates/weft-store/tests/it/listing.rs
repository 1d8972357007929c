//! Conformance of run listing: filters by workflow, status and trace id, and
//! cursor pagination (newest first, no duplicates, no gaps).

use std::collections::HashSet;

use serde_json::json;
use weft_core::{RunStatus, trace::TraceParent};
use weft_store::{NewRun, RunFilter, Store};

use crate::support::{register, start};

fn ids(list: &weft_store::RunPage) -> Vec<weft_core::RunId> {
    list.runs.iter().map(|r| r.run_id).collect()
}

conformance!(check_list_runs);
async fn check_list_runs(store: Store) {
    register(&store, "name: alpha\nsteps:\n  - {name: s, handler: h}\n").await;
    register(&store, "name: beta\nsteps:\n  - {name: s, handler: h}\n").await;
    let mut alpha = Vec::new();
    for i in 0..5 {
        alpha.push(start(&store, "alpha", json!({"i": i})).await);
    }
    let parent = TraceParent {
        trace_id: "0af7651916cd43dd8448eb211c80319c".parse().unwrap(),
        parent_span_id: "b7ad6b7169203331".parse().unwrap(),
        sampled: true,
    };
    let traced = store
        .start_run(NewRun {
            workflow: "beta".into(),
            parent: Some(parent),
            ..NewRun::default()
        })
        .await
        .unwrap();
    let beta_plain = start(&store, "beta", json!({})).await;
    store.cancel_run(&alpha[1]).await.unwrap();

    // Newest first.
    let all_alpha = store
        .list_runs(&RunFilter {
            workflow: Some("alpha".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    let newest_first: Vec<weft_core::RunId> = alpha.iter().rev().copied().collect();
    assert_eq!(ids(&all_alpha), newest_first);
    assert_eq!(all_alpha.next_cursor, None);
    assert!(
        all_alpha
            .runs
            .iter()
            .all(|r| r.workflow == "alpha" && r.version == 1)
    );
    let everything = store.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(everything.runs.len(), 7);

    let cancelled = store
        .list_runs(&RunFilter {
            status: Some(RunStatus::Cancelled),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&cancelled), vec![alpha[1]]);
    assert_eq!(cancelled.runs[0].status, "cancelled");
    let pending_alpha = store
        .list_runs(&RunFilter {
            workflow: Some("alpha".into()),
            status: Some(RunStatus::Pending),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending_alpha.runs.len(), 4);
    assert!(
        pending_alpha
            .runs
            .iter()
            .all(|r| r.status == "pending" && r.workflow == "alpha")
    );
    let by_trace = store
        .list_runs(&RunFilter {
            trace_id: Some(traced.trace_id),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&by_trace), vec![traced.run_id]);
    assert_eq!(
        by_trace.runs[0].trace_id.to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    let none = store
        .list_runs(&RunFilter {
            workflow: Some("beta".into()),
            status: Some(RunStatus::Completed),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert!(none.runs.is_empty() && none.next_cursor.is_none());
    let future = store
        .list_runs(&RunFilter {
            since_ms: Some(weft_store::now_ms() + 3_600_000),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert!(future.runs.is_empty());

    // Pages of two over five runs: 2 + 2 + 1, then no cursor.
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = Vec::new();
    loop {
        let page = store
            .list_runs(&RunFilter {
                workflow: Some("alpha".into()),
                limit: Some(2),
                cursor,
                ..RunFilter::default()
            })
            .await
            .unwrap();
        pages.push(page.runs.len());
        seen.extend(page.runs.iter().map(|r| r.run_id));
        match page.next_cursor {
            Some(next) => {
                assert!(pages.len() < 10, "pagination does not end");
                cursor = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(pages, vec![2, 2, 1]);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        seen.len(),
        "a run was listed twice"
    );
    assert_eq!(seen.to_vec(), newest_first);

    // A page that ends exactly at the last run has no cursor.
    let beta = store
        .list_runs(&RunFilter {
            workflow: Some("beta".into()),
            limit: Some(2),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&beta), vec![beta_plain, traced.run_id]);
    assert_eq!(beta.next_cursor, None);

    // A cursor is a run id, parsed where it enters: text that is not one
    // never reaches the store (the API answers 400 `invalid_cursor`).
    for bad in ["garbage", "' OR 1=1 --"] {
        assert!(bad.parse::<weft_core::RunId>().is_err(), "{bad:?}");
    }
}
