//! The store's one clock: tests set time through a `ManualClock` instead of
//! sleeping, and on PostgreSQL every server reads the database's time, so a
//! server whose own clock is skewed neither reaps live leases nor keeps
//! dead ones.

use std::{sync::Arc, time::Duration};

use serde_json::json;
use weft_store::{ManualClock, Settings, Store};

use crate::support::{claim_one, postgres_database, register, start};

const ONE: &str = "\
name: one
steps:
  - {name: a, handler: h.a}
";

/// A lease lapses when the clock passes its end, not when a test has slept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_clock_moves_leases_without_sleeping() {
    let clock = Arc::new(ManualClock::new(weft_store::now_ms()));
    let settings = Settings {
        lease: Duration::from_secs(30),
        clock: clock.clone(),
        ..Settings::default()
    };
    crate::support::on_sqlite_with(settings, |store: Store| async move {
        register(&store, ONE).await;
        let run_id = start(&store, "one", json!({})).await;
        let task = claim_one(&store, &["h.a"]).await;
        assert_eq!(store.reap(100).await.expect("reap"), 0, "the lease is live");
        clock.advance_ms(29_000);
        assert_eq!(store.reap(100).await.expect("reap"), 0, "1 s left");
        assert!(store.heartbeat(&task.lease_id).await.is_ok());
        clock.advance_ms(30_001);
        assert_eq!(store.reap(100).await.expect("reap"), 1, "lapsed");
        let run = store.get_run(&run_id).await.expect("get run");
        let attempt = &run.steps[0].attempts[0];
        assert_eq!(attempt.reason.as_deref(), Some("lease_expired"));
    })
    .await;
}

/// Two servers on one PostgreSQL, one clock an hour ahead: both read the
/// database's time, so the skewed one does not reap the other's live lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_with_skewed_clocks_agree_on_postgres() {
    let (cluster, url) = postgres_database().await;
    let settings = Settings {
        lease: Duration::from_secs(20),
        ..Settings::default()
    };
    let honest = Store::connect(&url, settings.clone())
        .await
        .expect("connect");
    let hour_ahead = Arc::new(ManualClock::new(weft_store::now_ms() + 3_600_000));
    let skewed = Store::connect(
        &url,
        Settings {
            clock: hour_ahead.clone(),
            ..settings
        },
    )
    .await
    .expect("connect");
    let gap = (skewed.now_ms() - honest.now_ms()).abs();
    assert!(gap < 2_000, "the stores disagree by {gap} ms");

    register(&honest, ONE).await;
    start(&honest, "one", json!({})).await;
    let task = claim_one(&honest, &["h.a"]).await;
    assert_eq!(
        skewed.reap(100).await.expect("reap"),
        0,
        "a server an hour ahead reaped a live lease"
    );
    assert!(honest.heartbeat(&task.lease_id).await.is_ok());

    // The correction follows the clock when it is measured again.
    hour_ahead.advance_ms(-7_200_000);
    skewed.sync_clock().await.expect("sync");
    let gap = (skewed.now_ms() - honest.now_ms()).abs();
    assert!(gap < 2_000, "after a jump the stores disagree by {gap} ms");

    honest.close().await;
    skewed.close().await;
    drop(cluster);
}
