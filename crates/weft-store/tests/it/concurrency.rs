//! Conformance of concurrent claims: workers polling at once never get the
//! same step twice (`FOR UPDATE SKIP LOCKED` on Postgres, one writer on SQLite).

use std::collections::HashSet;

use serde_json::json;
use weft_store::ClaimedTask as Task;
use weft_store::Store;

use crate::support::{claim, claim_request, register, start};

const N_RUNS: usize = 30;
const N_WORKERS: usize = 6;

conformance!(check_no_double_claim);
async fn check_no_double_claim(store: Store) {
    register(
        &store,
        "name: crowd\nsteps:\n  - {name: only, handler: h}\n",
    )
    .await;
    let mut run_ids = Vec::new();
    for i in 0..N_RUNS {
        run_ids.push(start(&store, "crowd", json!({"i": i})).await);
    }

    let mut workers = tokio::task::JoinSet::new();
    for w in 0..N_WORKERS {
        let store = store.clone();
        workers.spawn(async move {
            let request = claim_request(&format!("worker-{w}"), &["h"], 3);
            let mut mine: Vec<Task> = Vec::new();
            loop {
                let tasks = store.claim(&request).await.expect("claim");
                if tasks.is_empty() {
                    return mine;
                }
                assert!(
                    tasks.len() <= 3,
                    "claimed {} tasks with max_tasks 3",
                    tasks.len()
                );
                for task in &tasks {
                    store
                        .complete(&task.lease_id, json!({"by": w}), None, weft_store::now_ms())
                        .await
                        .expect("complete a claimed task");
                }
                mine.extend(tasks);
            }
        });
    }
    let mut all: Vec<Task> = Vec::new();
    while let Some(joined) = workers.join_next().await {
        all.extend(joined.expect("worker task"));
    }

    let leases: HashSet<&str> = all.iter().map(|t| t.lease_id.as_str()).collect();
    let steps: HashSet<(weft_core::RunId, &str)> =
        all.iter().map(|t| (t.run_id, t.step.as_str())).collect();
    assert_eq!(leases.len(), all.len(), "a lease id was handed out twice");
    assert_eq!(steps.len(), all.len(), "a step was claimed twice");
    assert_eq!(all.len(), N_RUNS, "every step is claimed exactly once");
    assert!(all.iter().all(|t| t.attempt == 1));
    assert_eq!(
        steps.iter().map(|(run, _)| *run).collect::<HashSet<_>>(),
        run_ids.iter().copied().collect()
    );
    assert!(claim(&store, &["h"]).await.is_empty());

    let statuses = store.run_statuses(&run_ids).await.unwrap();
    assert_eq!(statuses.len(), N_RUNS);
    assert!(statuses.values().all(|s| s == "completed"), "{statuses:?}");
    for run_id in &run_ids {
        let run = store.get_run(run_id).await.unwrap();
        assert_eq!(
            run.steps[0].attempts.len(),
            1,
            "run {run_id} has more than one attempt"
        );
    }
}

const RACE: &str = "
name: race
steps:
  - {name: a, handler: h}
  - {name: b, handler: h}
  - {name: c, handler: h}
";

// Cancelling pending runs while workers claim their first steps: neither side
// fails (on Postgres this once deadlocked: the claim held step locks and waited
// for the run row, the cancel held the run row and waited for the steps), and
// every attempt handed out learns that its run was cancelled.
conformance!(check_cancel_races_claims);
async fn check_cancel_races_claims(store: Store) {
    register(&store, RACE).await;
    for _round in 0..20 {
        let mut run_ids = Vec::new();
        for _ in 0..5 {
            run_ids.push(start(&store, "race", json!({})).await);
        }
        let claimer = {
            let store = store.clone();
            tokio::spawn(async move {
                let request = claim_request("racer", &["h"], 2);
                let mut tasks = Vec::new();
                for _ in 0..5 {
                    tasks.extend(
                        store
                            .claim(&request)
                            .await
                            .expect("claim while runs are cancelled"),
                    );
                }
                tasks
            })
        };
        let canceller = {
            let store = store.clone();
            let run_ids = run_ids.clone();
            tokio::spawn(async move {
                for run_id in run_ids.iter().rev() {
                    let summary = store
                        .cancel_run(run_id)
                        .await
                        .expect("cancel while steps are claimed");
                    assert_eq!(summary.status, "cancelled");
                }
            })
        };
        let tasks = claimer.await.expect("claimer");
        canceller.await.expect("canceller");

        for run_id in &run_ids {
            let run = store.get_run(run_id).await.unwrap();
            assert_eq!(run.status, "cancelled");
            for s in &run.steps {
                assert_eq!(s.status, "cancelled", "step {} of run {run_id}", s.name);
                assert!(
                    s.attempts.iter().all(|a| a.status == "cancelled"),
                    "step {} of run {run_id}",
                    s.name
                );
            }
        }
        for task in &tasks {
            assert!(
                store
                    .heartbeat(&task.lease_id)
                    .await
                    .unwrap()
                    .cancel_requested
            );
            crate::support::assert_conflict(
                store
                    .complete(&task.lease_id, json!(null), None, weft_store::now_ms())
                    .await,
                "attempt_not_running",
            );
        }
    }
    assert!(claim(&store, &["h"]).await.is_empty());
}
