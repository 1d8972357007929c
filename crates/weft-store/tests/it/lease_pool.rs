//! A heartbeat is answered while a busy run's writers hold every
//! connection of the store's main pool waiting on that run's lock (a burst
//! of results for one `for_each` step's children): on PostgreSQL lease
//! renewals have connections of their own. Before, the heartbeat of any
//! other run queued for a connection behind them, and its lease could lapse
//! though its worker was alive. The pool gauge counts both pools.

use std::time::Duration;

use serde_json::json;
use weft_store::{PoolOptions, Settings, Store, db::Pool};

use crate::support::*;

const FAN: &str = "
name: fan
steps:
  - {name: work, handler: child, for_each: 'input.items'}
";

const ONE: &str = "
name: one
steps:
  - {name: s, handler: single}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_is_answered_while_a_busy_run_holds_the_main_pool() {
    let (cluster, url) = postgres_database().await;
    let options = PoolOptions {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(30),
    };
    let store = Store::connect_with(&url, Settings::default(), &options)
        .await
        .expect("connect");
    register(&store, FAN).await;
    register(&store, ONE).await;
    let busy = start(&store, "fan", json!({"items": [0, 1, 2, 3, 4, 5, 6, 7]})).await;
    start(&store, "one", json!({})).await;
    let children = store
        .claim(&claim_request("w1", &["child"], 20))
        .await
        .expect("claim");
    assert_eq!(children.len(), 8, "{:?}", steps_of(&children));
    let single = claim_one(&store, &["single"]).await;

    // Another session holds the busy run's lock, as a long transition would.
    let locker = Pool::connect(&url, &options).await.expect("connect");
    let mut lock = locker.begin().await.expect("begin");
    lock.execute(
        "SELECT run_id FROM weft_runs WHERE run_id = $1 FOR UPDATE",
        vec![busy.to_string().into()],
    )
    .await
    .expect("lock the run");
    // Eight results of that run: four take every connection of the main
    // pool and wait on the lock, the others wait for a connection.
    let results: Vec<_> = children
        .iter()
        .map(|task| {
            let store = store.clone();
            let lease = task.lease_id.clone();
            tokio::spawn(async move {
                store
                    .complete(&lease, json!({"ok": true}), None, weft_store::now_ms())
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(results.iter().all(|r| !r.is_finished()), "held by the lock");

    // The other run's heartbeat is answered meanwhile.
    let beat = tokio::time::timeout(Duration::from_secs(5), store.heartbeat(&single.lease_id))
        .await
        .expect("the heartbeat was answered while the main pool was busy")
        .expect("a heartbeat");
    assert!(!beat.cancel_requested);
    // The pool gauge counts every connection: the main pool's 4 and the
    // lease pool's.
    let (open, _idle) = store.pool_connections();
    assert!(open > 4, "{open} connections counted");

    // Once the lock is gone, every result is written.
    drop(lock);
    for result in results {
        result.await.expect("a task").expect("a result");
    }
    locker.close().await;
    store.close().await;
    drop(cluster);
}
