//! Conformance of leases: fencing of stale leases after the reaper, timeouts,
//! heartbeat timeouts, heartbeats renewing leases and cancellation.

use std::time::{Duration, Instant};

use serde_json::json;
use weft_core::Reason;
use weft_store::{FailReport, Store};

use crate::support::{
    assert_conflict, attempt_statuses, claim, claim_after_timers, claim_one, complete, event_index,
    events, reap_until_one, register, snapshot, start, step,
};

const FENCED: &str = "
name: fenced
steps:
  - name: s
    handler: h
    retry: {max_attempts: 3, initial: 100ms, max: 100ms, jitter: false}
";

conformance!(check_stale_lease_fencing, lease_ms = 300);
async fn check_stale_lease_fencing(store: Store) {
    register(&store, FENCED).await;
    let run_id = start(&store, "fenced", json!({})).await;
    let claimed_at = Instant::now();
    let old = claim_one(&store, &["h"]).await;
    assert_eq!(old.lease_ms, 300, "the lease comes from Settings.lease");
    let early = store.reap(100).await.unwrap();
    if claimed_at.elapsed() < Duration::from_millis(200) {
        assert_eq!(early, 0, "a lease was reaped before it expired");
    }

    reap_until_one(&store).await;
    assert!(
        claimed_at.elapsed() >= Duration::from_millis(290),
        "reaped after {:?}",
        claimed_at.elapsed()
    );
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "running");
    let s = step(&run, "s");
    assert!(
        matches!(s.status.as_str(), "retrying" | "ready"),
        "step is {}",
        s.status
    );
    assert_eq!(s.reason.as_deref(), Some("lease_expired"));
    assert_eq!(
        attempt_statuses(s),
        vec![(1, "failed", Some("lease_expired"))]
    );
    assert!(s.attempts[0].finished_at_ms.is_some());
    let history = events(&store, &run_id).await;
    assert!(
        event_index(&history, "lease.expired", Some("s"))
            < event_index(&history, "attempt.failed", Some("s"))
    );
    assert_eq!(store.reap(100).await.unwrap(), 0, "reaping is idempotent");

    // The late worker's calls are rejected and change nothing.
    let before = snapshot(&store, &run_id).await;
    assert_conflict(
        store
            .complete(&old.lease_id, json!("late"), None, weft_store::now_ms())
            .await,
        "stale_lease",
    );
    assert_conflict(store.heartbeat(&old.lease_id).await, "stale_lease");
    let report = FailReport {
        reason: Reason::HandlerError,
        message: "late".into(),
        retryable: true,
        timing: None,
    };
    assert_conflict(
        store
            .fail(&old.lease_id, report, weft_store::now_ms())
            .await,
        "stale_lease",
    );
    assert_conflict(
        store.append_logs(&old.lease_id, &["late".to_owned()]).await,
        "stale_lease",
    );
    assert_eq!(snapshot(&store, &run_id).await, before);

    // The step is claimed again under a new lease; the old one stays stale.
    let new = claim_after_timers(&store, &["h"]).await;
    assert_eq!(new.attempt, 2);
    assert_ne!(new.lease_id, old.lease_id);
    assert_conflict(
        store
            .complete(&old.lease_id, json!("late"), None, weft_store::now_ms())
            .await,
        "stale_lease",
    );
    assert_eq!(
        step(&store.get_run(&run_id).await.unwrap(), "s").status,
        "running"
    );
    complete(&store, &new, json!("fresh")).await;
    assert_conflict(
        store
            .complete(&new.lease_id, json!("twice"), None, weft_store::now_ms())
            .await,
        "stale_lease",
    );

    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "completed");
    assert_eq!(run.output, Some(json!({"s": "fresh"})));
    assert_eq!(
        attempt_statuses(step(&run, "s")),
        vec![(1, "failed", Some("lease_expired")), (2, "completed", None)]
    );
}

const SLOW: &str = "
name: slow
steps:
  - name: s
    handler: h
    timeout: 200ms
    retry: {max_attempts: 1}
";
const SILENT: &str = "
name: silent
steps:
  - name: s
    handler: quiet
    heartbeat_timeout: 300ms
    retry: {max_attempts: 1}
";

conformance!(check_timeouts);
async fn check_timeouts(store: Store) {
    register(&store, SLOW).await;
    let run_id = start(&store, "slow", json!({})).await;
    let claimed_at = Instant::now();
    let task = claim_one(&store, &["h"]).await;
    assert_eq!(task.timeout_ms, Some(200));
    let deadline = task
        .deadline_at_ms
        .expect("a step with a timeout has a deadline");
    let claimed = store.get_run(&run_id).await.unwrap().steps[0].attempts[0].claimed_at_ms;
    assert_eq!(deadline - claimed, 200);
    // A heartbeat renews the lease but does not move the deadline.
    assert!(
        !store
            .heartbeat(&task.lease_id)
            .await
            .unwrap()
            .cancel_requested
    );

    reap_until_one(&store).await;
    assert!(
        claimed_at.elapsed() >= Duration::from_millis(190),
        "timed out after {:?}",
        claimed_at.elapsed()
    );
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("failed", Some("timeout"))
    );
    let s = step(&run, "s");
    assert_eq!(
        (s.status.as_str(), s.reason.as_deref()),
        ("failed", Some("timeout"))
    );
    assert_eq!(attempt_statuses(s), vec![(1, "failed", Some("timeout"))]);
    let history = events(&store, &run_id).await;
    assert!(
        history.iter().all(|e| e.kind != "lease.expired"),
        "a timeout is not a lost lease"
    );
    assert_eq!(
        history[event_index(&history, "attempt.failed", Some("s"))].data["reason"],
        "timeout"
    );
    assert_conflict(store.heartbeat(&task.lease_id).await, "stale_lease");
    assert_conflict(
        store
            .complete(&task.lease_id, json!(1), None, weft_store::now_ms())
            .await,
        "stale_lease",
    );

    // A step's own heartbeat_timeout is its lease, and lapsing it is `heartbeat_timeout`.
    register(&store, SILENT).await;
    let run_id = start(&store, "silent", json!({})).await;
    let task = claim_one(&store, &["quiet"]).await;
    assert_eq!((task.lease_ms, task.timeout_ms), (300, None));
    reap_until_one(&store).await;
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("failed", Some("heartbeat_timeout"))
    );
    assert_eq!(
        attempt_statuses(step(&run, "s")),
        vec![(1, "failed", Some("heartbeat_timeout"))]
    );
}

// A heartbeat past the attempt's deadline, before the reaper got to it, tells
// the worker to stop (`HeartbeatResponse::cancel_requested`).
conformance!(check_heartbeat_past_deadline);
async fn check_heartbeat_past_deadline(store: Store) {
    register(&store, SLOW).await;
    start(&store, "slow", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        store
            .heartbeat(&task.lease_id)
            .await
            .unwrap()
            .cancel_requested
    );
}

const HEARTBEAT: &str = "
name: beating
steps:
  - {name: long, handler: h}
  - {name: next, handler: h, depends_on: [long]}
";

conformance!(check_heartbeat_and_cancel, lease_ms = 500);
async fn check_heartbeat_and_cancel(store: Store) {
    register(&store, HEARTBEAT).await;
    let run_id = start(&store, "beating", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    assert_eq!(task.lease_ms, 500);

    // Heartbeats keep the attempt alive for well over its lease.
    let beating = Instant::now();
    while beating.elapsed() < Duration::from_millis(1_500) {
        assert!(
            !store
                .heartbeat(&task.lease_id)
                .await
                .unwrap()
                .cancel_requested
        );
        assert_eq!(
            store.reap(100).await.unwrap(),
            0,
            "a renewed lease was reaped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(
        attempt_statuses(step(&run, "long")),
        vec![(1, "running", None)]
    );
    assert_eq!(step(&run, "long").status, "running");

    let summary = store.cancel_run(&run_id).await.unwrap();
    assert_eq!(
        (summary.status.as_str(), summary.reason.as_deref()),
        ("cancelled", Some("cancelled"))
    );
    assert!(
        store
            .heartbeat(&task.lease_id)
            .await
            .unwrap()
            .cancel_requested
    );
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("cancelled", Some("cancelled"))
    );
    assert!(run.finished_at_ms.is_some());
    for s in &run.steps {
        assert_eq!(
            (s.status.as_str(), s.reason.as_deref()),
            ("cancelled", Some("cancelled")),
            "{}",
            s.name
        );
    }
    assert_eq!(
        attempt_statuses(step(&run, "long")),
        vec![(1, "cancelled", Some("cancelled"))]
    );
    let before = snapshot(&store, &run_id).await;
    assert_conflict(
        store
            .complete(
                &task.lease_id,
                json!("too late"),
                None,
                weft_store::now_ms(),
            )
            .await,
        "attempt_not_running",
    );
    assert_eq!(
        snapshot(&store, &run_id).await,
        before,
        "a result after cancel changes nothing"
    );
    assert_conflict(store.heartbeat(&task.lease_id).await, "stale_lease");
    assert_conflict(store.cancel_run(&run_id).await, "invalid_state");
    assert!(claim(&store, &["h"]).await.is_empty());
    let history = events(&store, &run_id).await;
    assert_eq!(history.last().unwrap().kind, "run.cancelled");
}
