//! Conformance of the store with a corrupt row (forced through SQL: an
//! unknown status or a wrong-typed value on SQLite, a NULL past a dropped
//! NOT NULL on PostgreSQL): reading the run is an `Error::Corrupt` naming it,
//! and the list, the claim, the reaper and the timers skip that run, note it
//! once and go on with the others.

use std::time::Duration;

use serde_json::json;
use weft_core::Reason;
use weft_store::{Dialect, Error, FailReport, Problem, RunFilter, Store, now_ms};

use crate::support::*;

const ONCE: &str = "
name: once
steps:
  - {name: s, handler: h, retry: {max_attempts: 1}}
";

const TWICE: &str = "
name: twice
steps:
  - {name: s, handler: t, retry: {max_attempts: 2, initial: 10ms, max: 10ms, jitter: false}}
";

/// Damages one row of `table` for `run_id`: SQLite gets `sqlite_value` in
/// `column`, PostgreSQL a NULL after the column's NOT NULL is dropped.
async fn corrupt(
    store: &Store,
    table: &str,
    column: &str,
    sqlite_value: &str,
    run_id: impl std::fmt::Display,
) {
    match store.dialect() {
        Dialect::Sqlite => {
            let sql =
                format!("UPDATE {table} SET {column} = {sqlite_value} WHERE run_id = '{run_id}'");
            assert!(store.execute_unchecked(&sql).await.expect(&sql) >= 1);
        }
        Dialect::Postgres => {
            let sql = format!("ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL");
            store.execute_unchecked(&sql).await.expect(&sql);
            let sql = format!("UPDATE {table} SET {column} = NULL WHERE run_id = '{run_id}'");
            assert!(store.execute_unchecked(&sql).await.expect(&sql) >= 1);
        }
    }
}

fn corruption_of(result: Result<impl std::fmt::Debug, Error>) -> weft_store::Corruption {
    match result {
        Err(Error::Corrupt(c)) => *c,
        other => panic!("expected a corrupt row, got {other:?}"),
    }
}

conformance!(
    check_a_corrupt_run_row_is_an_error_and_skipped,
    lease_ms = 30_000
);
async fn check_a_corrupt_run_row_is_an_error_and_skipped(store: Store) {
    register(&store, ONCE).await;
    let bad = start(&store, "once", json!({})).await;
    let good = start(&store, "once", json!({})).await;
    let (column, value) = match store.dialect() {
        Dialect::Sqlite => ("status", "'bogus'"),
        Dialect::Postgres => ("trace_id", "NULL"),
    };
    corrupt(&store, "weft_runs", column, value, &bad).await;

    let c = corruption_of(store.get_run(&bad).await);
    assert_eq!(c.run_id.as_deref(), Some(bad.to_string().as_str()));
    assert_eq!(c.column, column);
    match store.dialect() {
        Dialect::Sqlite => assert_eq!(c.problem, Problem::UnknownValue("bogus".into())),
        Dialect::Postgres => assert_eq!(c.problem, Problem::Null),
    }

    // The list leaves the bad run out and shows the others.
    let list = store
        .list_runs(&RunFilter::default())
        .await
        .expect("list runs");
    let ids: Vec<weft_core::RunId> = list.runs.iter().map(|r| r.run_id).collect();
    assert_eq!(ids, vec![good]);

    // The claim skips the bad run and hands out the good one, which completes.
    let task = claim_one(&store, &["h"]).await;
    assert_eq!(task.run_id, good);
    complete(&store, &task, json!({"ok": true})).await;
    assert_eq!(
        store.get_run(&good).await.expect("good run").status,
        "completed"
    );
    assert!(claim(&store, &["h"]).await.is_empty());
    assert_eq!(store.corrupt_runs(), vec![bad.to_string()]);
    // Noted once: a second report of the same run is not logged again.
    assert!(!store.skip_corrupt("test", &store.get_run(&bad).await.unwrap_err()));
}

conformance!(check_the_reaper_skips_a_corrupt_attempt_row, lease_ms = 200);
async fn check_the_reaper_skips_a_corrupt_attempt_row(store: Store) {
    register(&store, ONCE).await;
    let bad = start(&store, "once", json!({})).await;
    let good = start(&store, "once", json!({})).await;
    let tasks = claim(&store, &["h"]).await;
    assert_eq!(tasks.len(), 2);
    corrupt(&store, "weft_attempts", "claimed_at", "'yesterday'", &bad).await;
    let c = corruption_of(store.get_run(&bad).await);
    assert_eq!(c.column, "claimed_at");
    assert_eq!(c.run_id.as_deref(), Some(bad.to_string().as_str()));
    if store.dialect() == Dialect::Sqlite {
        assert_eq!(
            c.problem,
            Problem::WrongType {
                expected: "an integer"
            }
        );
    }

    // Both leases lapse: the good one is reaped, the bad one skipped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.reap(100).await.expect("reap"), 1);
    assert_eq!(store.corrupt_runs(), vec![bad.to_string()]);
    let run = store.get_run(&good).await.expect("good run");
    assert_eq!(run.status, "failed");
    assert_eq!(
        run.steps[0].attempts[0].reason.as_deref(),
        Some(Reason::LeaseExpired.as_str())
    );
    // Later sweeps leave the bad run out and do not fail.
    assert_eq!(store.reap(100).await.expect("reap again"), 0);
}

conformance!(check_the_timers_skip_a_corrupt_step_row, lease_ms = 30_000);
async fn check_the_timers_skip_a_corrupt_step_row(store: Store) {
    register(&store, TWICE).await;
    let bad = start(&store, "twice", json!({})).await;
    let good = start(&store, "twice", json!({})).await;
    for task in claim(&store, &["t"]).await {
        let report = FailReport {
            reason: Reason::HandlerError,
            message: "again".to_owned(),
            retryable: true,
            timing: None,
        };
        store
            .fail(&task.lease_id, report, now_ms())
            .await
            .expect("fail");
    }
    corrupt(&store, "weft_steps", "n_attempts", "'many'", &bad).await;

    // The good run's retry fires and is claimed; the bad run is skipped.
    let task = claim_after_timers(&store, &["t"]).await;
    assert_eq!(task.run_id, good);
    assert_eq!(task.attempt, 2);
    assert_eq!(store.corrupt_runs(), vec![bad.to_string()]);
    assert_eq!(store.fire_due_timers(100).await.expect("fire again"), 0);
    // The diagnosis and the gauges built on it still answer.
    store
        .diagnosis_views(None, 100)
        .await
        .expect("diagnosis with a corrupt run");
}
