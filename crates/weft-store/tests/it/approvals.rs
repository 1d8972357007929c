//! Approval timeouts and history followers, on both backends. An approval's
//! `timeout` is a timer row fired by the timer sweep (time moves on a
//! `ManualClock`): `reject` fails the step and run with `approval_timeout`,
//! `approve` completes it, the events name the actor `timeout`, and a
//! person's decision first leaves nothing to fire. A follower of a run's
//! history is woken by a commit that wrote its events, and not by a refused
//! action that wrote none.

use std::{sync::Arc, time::Duration};

use serde_json::json;
use weft_store::{ManualClock, Settings, Store};

use crate::support::{events, register, start, step};

const GATES: &str = "
name: gates
steps:
  - {name: no, kind: approval, timeout: 10s}
  - {name: yes, kind: approval, timeout: 20s, on_timeout: approve}
  - {name: later, kind: approval, timeout: 10s, on_timeout: approve}
  - {name: after, kind: sleep, duration: 1s, depends_on: [yes, later]}
";

const SIMPLE: &str = "
name: yes
steps:
  - {name: yes, kind: approval, timeout: 20s, on_timeout: approve}
";

fn settings(clock: Arc<ManualClock>) -> Settings {
    Settings {
        clock,
        ..Settings::default()
    }
}

async fn check(store: Store, clock: Arc<ManualClock>) {
    register(&store, SIMPLE).await;
    register(&store, GATES).await;

    // on_timeout: approve, fired at its due time and not before.
    let run_id = start(&store, "yes", json!({})).await;
    let run = store.get_run(&run_id).await.unwrap();
    let due = step(&run, "yes")
        .due_at_ms
        .expect("a timed approval has a due_at");
    assert_eq!(Some(due), Some(store.now_ms() + 20_000));
    clock.advance_ms(19_999);
    assert_eq!(store.fire_due_timers(100).await.unwrap(), 0);
    clock.advance_ms(1);
    assert_eq!(store.fire_due_timers(100).await.unwrap(), 1);
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "completed");
    assert_eq!(
        step(&run, "yes").output,
        Some(json!({"approved": true, "by": "timeout"}))
    );
    let history = events(&store, &run_id).await;
    let completed = history
        .iter()
        .find(|e| e.kind == "step.completed")
        .expect("step.completed");
    assert_eq!(completed.data["actor"], "timeout");
    assert_eq!(store.fire_due_timers(100).await.unwrap(), 0, "fired once");

    // on_timeout: reject (the default) fails the run; `later`, approved by
    // a person first, has no timer left to fire.
    let run_id = start(&store, "gates", json!({})).await;
    store
        .decide(&run_id, "later", true, None)
        .await
        .expect("approve in time");
    clock.advance_ms(10_000);
    assert_eq!(store.fire_due_timers(100).await.unwrap(), 1);
    // `no` failed; the run settles once its other branch is done: `yes`
    // approves itself at 20 s, then `after` sleeps 1 s.
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "running");
    clock.advance_ms(10_000);
    assert_eq!(store.fire_due_timers(100).await.unwrap(), 1);
    clock.advance_ms(1_000);
    assert_eq!(store.fire_due_timers(100).await.unwrap(), 1);
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "failed");
    assert_eq!(run.reason.as_deref(), Some("approval_timeout"));
    assert_eq!(step(&run, "no").reason.as_deref(), Some("approval_timeout"));
    assert_eq!(step(&run, "later").output, Some(json!({"approved": true})));
    let history = events(&store, &run_id).await;
    let failed = history
        .iter()
        .find(|e| e.kind == "step.failed")
        .expect("step.failed");
    assert_eq!(failed.data["reason"], "approval_timeout");
    assert_eq!(failed.data["actor"], "timeout");
    let later = history
        .iter()
        .find(|e| e.kind == "step.completed" && e.step.as_deref() == Some("later"))
        .expect("later completed");
    assert!(later.data.get("actor").is_none(), "{later:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_timeouts_sqlite() {
    let clock = Arc::new(ManualClock::new(weft_store::now_ms()));
    crate::support::on_sqlite_with(settings(clock.clone()), |store| check(store, clock)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_timeouts_postgres() {
    let clock = Arc::new(ManualClock::new(weft_store::now_ms()));
    crate::support::on_postgres_with(settings(clock.clone()), |store| check(store, clock)).await;
}

const HOUR: Duration = Duration::from_secs(3600);

/// Waits at most 30 s for what must come at once: a hung test, not a timing.
async fn woken(follow: &mut weft_store::RunFollow) -> bool {
    tokio::time::timeout(Duration::from_secs(30), follow.wait(HOUR))
        .await
        .expect("woken within 30s")
}

conformance!(check_followers_are_woken_by_commits);
async fn check_followers_are_woken_by_commits(store: Store) {
    register(&store, SIMPLE).await;
    let run_id = start(&store, "yes", json!({})).await;
    let other = start(&store, "yes", json!({})).await;
    let mut follow = store.follow_run(run_id);
    let mut second = store.follow_run(run_id);
    assert_eq!(follow.run_id(), run_id);
    follow.mark_seen();
    second.mark_seen();

    // Another run's commit does not wake it; a refused action writes no
    // history and wakes nobody.
    store.decide(&other, "yes", true, None).await.unwrap();
    let refused = store.decide(&other, "yes", true, None).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(!follow.wait(Duration::from_millis(100)).await);

    // A commit between mark_seen and wait still wakes it, every follower.
    follow.mark_seen();
    store.decide(&run_id, "yes", true, None).await.unwrap();
    assert!(woken(&mut follow).await);
    assert!(woken(&mut second).await);
    // Seen: nothing new until the next commit.
    follow.mark_seen();
    assert!(!follow.wait(Duration::from_millis(100)).await);
}
