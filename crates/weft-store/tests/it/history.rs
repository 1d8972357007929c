//! The history the store writes keeps the event catalogue's contract
//! (`weft_core::EventKind`): every path that ends an attempt (a result, a
//! free release, a lapsed lease, a result after the deadline) and every run
//! end writes only kinds the catalogue lists, each with the payload fields it
//! lists and no others, on both backends. Time moves on a `ManualClock`.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use serde_json::json;
use weft_core::EventKind;
use weft_store::{ManualClock, Settings, Store};

use crate::support::{claim_one, events, register, start};

const PATHS: &str = "
name: paths
steps:
  - {name: s, handler: h, timeout: 60s, retry: {max_attempts: 2, initial: 1s, jitter: false}}
";

fn settings(clock: Arc<ManualClock>) -> Settings {
    Settings {
        lease: Duration::from_secs(30),
        clock,
        ..Settings::default()
    }
}

async fn check(store: Store, clock: Arc<ManualClock>) {
    register(&store, PATHS).await;

    // A free release, then a result.
    let released = start(&store, "paths", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    store
        .release(&task.lease_id, Some("draining".into()), store.now_ms())
        .await
        .expect("release");
    let task = claim_one(&store, &["h"]).await;
    store
        .complete(&task.lease_id, json!({"ok": true}), None, store.now_ms())
        .await
        .expect("complete");

    // A lapsed lease, then a result after the deadline: the run fails.
    let lapsed = start(&store, "paths", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    clock.advance_ms(30_001);
    assert_eq!(store.reap(100).await.expect("reap"), 1);
    clock.advance_ms(1_001);
    assert_eq!(store.fire_due_timers(100).await.expect("timers"), 1);
    let late = claim_one(&store, &["h"]).await;
    assert_ne!(late.lease_id, task.lease_id);
    let received = store.now_ms() + 60_001;
    let answer = store
        .complete(&late.lease_id, json!(1), None, received)
        .await;
    assert!(
        matches!(&answer, Err(weft_store::Error::Conflict { code, .. }) if *code == "deadline_exceeded"),
        "{answer:?}"
    );

    // A cancelled run.
    let cancelled = start(&store, "paths", json!({})).await;
    claim_one(&store, &["h"]).await;
    store.cancel_run(&cancelled).await.expect("cancel");

    let mut seen = BTreeSet::new();
    for run_id in [&released, &lapsed, &cancelled] {
        for event in events(&store, run_id).await {
            let kind = EventKind::parse(&event.kind)
                .unwrap_or_else(|| panic!("{} is not in the catalogue", event.kind));
            let data = event.data.as_object().expect("a payload is an object");
            for key in data.keys() {
                assert!(
                    kind.carries(key),
                    "{kind} carries `{key}`, which the catalogue does not list: {data:?}"
                );
            }
            for field in kind.fields().iter().filter(|f| f.always) {
                assert!(
                    data.contains_key(field.name),
                    "{kind} without `{}`: {data:?}",
                    field.name
                );
            }
            seen.insert(kind);
        }
    }
    for kind in [
        EventKind::RunCreated,
        EventKind::RunStarted,
        EventKind::StepReady,
        EventKind::AttemptClaimed,
        EventKind::AttemptReleased,
        EventKind::AttemptCompleted,
        EventKind::StepCompleted,
        EventKind::RunCompleted,
        EventKind::LeaseExpired,
        EventKind::AttemptFailed,
        EventKind::StepRetrying,
        EventKind::StepFailed,
        EventKind::RunFailed,
        EventKind::StepCancelled,
        EventKind::RunCancelled,
    ] {
        assert!(seen.contains(&kind), "no {kind} in {seen:?}");
    }
    let run = store.get_run(&lapsed).await.expect("get run");
    let reasons: Vec<_> = run.steps[0]
        .attempts
        .iter()
        .map(|a| (a.status.as_str(), a.reason.as_deref()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("failed", Some("lease_expired")),
            ("failed", Some("timeout"))
        ]
    );
    let run = store.get_run(&cancelled).await.expect("get run");
    assert_eq!(
        run.steps[0].attempts[0].status, "cancelled",
        "the attempt out when its run was cancelled ends with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_end_keeps_the_catalogue_sqlite() {
    let clock = Arc::new(ManualClock::new(weft_store::now_ms()));
    crate::support::on_sqlite_with(settings(clock.clone()), |store| check(store, clock)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_end_keeps_the_catalogue_postgres() {
    let clock = Arc::new(ManualClock::new(weft_store::now_ms()));
    crate::support::on_postgres_with(settings(clock.clone()), |store| check(store, clock)).await;
}
