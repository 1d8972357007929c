//! Conformance of the store under faults and hostile input: a result sent
//! again after its answer was lost, outputs over the limit, released
//! attempts, strings with NUL and control characters, idempotency keys
//! reused with another input, and the attempt numbers history events carry.

use std::time::Duration;

use serde_json::{Value, json};
use weft_core::Reason;
use weft_store::{Error, FailReport, NewRun, Outcome, Recorded, Store, WorkerResult, now_ms};

use crate::support::*;

const ONCE: &str = "
name: once
steps:
  - {name: s, handler: h, retry: {max_attempts: 1}}
";

const TWICE: &str = "
name: twice
steps:
  - {name: s, handler: h, retry: {max_attempts: 2, initial: 10ms, max: 10ms, jitter: false}}
";

fn failure(message: &str, retryable: bool) -> FailReport {
    FailReport {
        reason: Reason::HandlerError,
        message: message.to_owned(),
        retryable,
        timing: None,
    }
}

fn result(lease_id: &str, outcome: Outcome) -> WorkerResult {
    WorkerResult {
        lease_id: lease_id.to_owned(),
        outcome,
        timing: None,
        received_ms: now_ms(),
    }
}

conformance!(check_a_result_sent_again_is_already_applied, lease_ms = 200);
async fn check_a_result_sent_again_is_already_applied(store: Store) {
    register(&store, ONCE).await;
    register(&store, TWICE).await;

    // complete, its answer lost, complete again: applied once, then 200.
    let run = start(&store, "once", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    let first = store
        .complete(&task.lease_id, json!({"n": 1}), None, now_ms())
        .await;
    assert_eq!(first.expect("first complete"), Recorded::Applied);
    let before = snapshot(&store, &run).await;
    let again = store
        .complete(&task.lease_id, json!({"n": 1}), None, now_ms())
        .await;
    assert_eq!(
        again.expect("complete sent again"),
        Recorded::AlreadyApplied
    );
    assert_eq!(snapshot(&store, &run).await, before, "nothing changed");
    // A different outcome for the finished lease is still a conflict.
    assert_conflict(
        store
            .fail(&task.lease_id, failure("late", false), now_ms())
            .await,
        "stale_lease",
    );
    assert_eq!(snapshot(&store, &run).await, before);

    // fail, sent again: the same reason and message match, another does not.
    let run = start(&store, "twice", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    let sent = failure("boom\u{0}with a NUL", true);
    assert_eq!(
        store
            .fail(&task.lease_id, sent.clone(), now_ms())
            .await
            .expect("fail"),
        Recorded::Applied
    );
    let before = snapshot(&store, &run).await;
    assert_eq!(
        store
            .fail(&task.lease_id, sent.clone(), now_ms())
            .await
            .expect("fail sent again"),
        Recorded::AlreadyApplied
    );
    assert_conflict(
        store
            .fail(&task.lease_id, failure("another", true), now_ms())
            .await,
        "stale_lease",
    );
    assert_conflict(
        store
            .complete(&task.lease_id, json!(1), None, now_ms())
            .await,
        "stale_lease",
    );
    assert_eq!(snapshot(&store, &run).await, before, "nothing changed");

    // A lease that lapsed and was reaped: the worker's late result is stale,
    // whatever it says; and a release of it is no release.
    let task = claim_after_timers(&store, &["h"]).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    reap_until_one(&store).await;
    assert_conflict(
        store
            .complete(&task.lease_id, json!(1), None, now_ms())
            .await,
        "stale_lease",
    );
    assert_conflict(
        store
            .fail(&task.lease_id, failure("boom", true), now_ms())
            .await,
        "stale_lease",
    );
    assert_conflict(
        store.release(&task.lease_id, None, now_ms()).await,
        "stale_lease",
    );

    // A huge error message is kept cut (in every row that quotes it), and
    // the same report sent again still matches it.
    let run = start(&store, "once", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    let huge = failure(&"é".repeat(100_000), false);
    store
        .fail(&task.lease_id, huge.clone(), now_ms())
        .await
        .expect("fail with a huge message");
    let detail = store.get_run(&run).await.expect("get_run");
    let error = detail.error.clone().unwrap_or_default();
    assert!(
        error.len() <= weft_store::MAX_ERROR_BYTES + 3 && error.ends_with('…'),
        "{} bytes",
        error.len()
    );
    assert_eq!(
        step(&detail, "s").attempts[0].error.as_deref(),
        Some(error.as_str())
    );
    assert_eq!(
        store
            .fail(&task.lease_id, huge, now_ms())
            .await
            .expect("sent again"),
        Recorded::AlreadyApplied
    );

    // The batch endpoint answers each the same way.
    let a = start(&store, "once", json!({"a": 1})).await;
    let b = start(&store, "once", json!({"b": 1})).await;
    let tasks = claim(&store, &["h"]).await;
    assert_eq!(tasks.len(), 2);
    let (ta, tb) = if tasks[0].run_id == a {
        (&tasks[0], &tasks[1])
    } else {
        (&tasks[1], &tasks[0])
    };
    assert_eq!(tb.run_id, b);
    let batch = [
        result(&ta.lease_id, Outcome::Completed(json!("a"))),
        result(&tb.lease_id, Outcome::Failed(failure("b failed", false))),
    ];
    let answers = store.finish_batch(&batch).await.expect("finish_batch");
    assert!(answers.iter().all(|a| matches!(a, Ok(Recorded::Applied))));
    let again = [
        result(&ta.lease_id, Outcome::Completed(json!("a"))),
        result(&tb.lease_id, Outcome::Failed(failure("b failed", false))),
        result(&tb.lease_id, Outcome::Completed(json!("b"))),
        result("no-such-lease", Outcome::Completed(json!(null))),
    ];
    let answers = store.finish_batch(&again).await.expect("finish_batch");
    assert!(matches!(answers[0], Ok(Recorded::AlreadyApplied)));
    assert!(matches!(answers[1], Ok(Recorded::AlreadyApplied)));
    assert!(matches!(
        &answers[2],
        Err(Error::Conflict {
            code: weft_core::ErrorCode::StaleLease,
            ..
        })
    ));
    assert!(matches!(
        &answers[3],
        Err(Error::Conflict {
            code: weft_core::ErrorCode::StaleLease,
            ..
        })
    ));
    // One result alone goes the single path: the same answer.
    let answers = store.finish_batch(&again[..1]).await.expect("finish_batch");
    assert!(matches!(answers[0], Ok(Recorded::AlreadyApplied)));
}

conformance!(
    check_an_output_over_the_limit_fails_the_step_at_once,
    settings = weft_store::Settings {
        max_output_bytes: 2000,
        ..weft_store::Settings::default()
    }
);
async fn check_an_output_over_the_limit_fails_the_step_at_once(store: Store) {
    register(&store, TWICE).await;
    let run = start(&store, "twice", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    assert_eq!(task.max_output_bytes, 2000, "every task carries the limit");
    let big = json!({"pad": "x".repeat(3000)});
    let size = serde_json::to_vec(&big).unwrap().len();
    // Answered as applied: the worker must not send it again.
    assert_eq!(
        store
            .complete(&task.lease_id, big.clone(), None, now_ms())
            .await
            .expect("complete"),
        Recorded::Applied
    );
    let detail = store.get_run(&run).await.expect("get_run");
    assert_eq!(detail.status, "failed", "not retried: {detail:?}");
    assert_eq!(detail.reason.as_deref(), Some("invalid_output"));
    let s = step(&detail, "s");
    assert_eq!(
        attempt_statuses(s),
        vec![(1, "failed", Some("invalid_output"))]
    );
    let error = s.attempts[0].error.clone().unwrap_or_default();
    assert!(
        error.contains(&format!("{size} bytes")) && error.contains("2000 bytes"),
        "the error names the size and the limit: {error}"
    );
    assert_eq!(s.output, None, "the output was not kept");
    // Sent again (its answer lost): already applied.
    assert_eq!(
        store
            .complete(&task.lease_id, big, None, now_ms())
            .await
            .expect("complete sent again"),
        Recorded::AlreadyApplied
    );
    // An output at the limit is fine.
    let run = start(&store, "twice", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    let fits = json!("y".repeat(2000 - 2));
    complete(&store, &task, fits.clone()).await;
    let detail = store.get_run(&run).await.expect("get_run");
    assert_eq!(detail.status, "completed");
    assert_eq!(step(&detail, "s").output, Some(fits));
}

conformance!(check_a_released_attempt_spends_nothing_up_to_the_cap);
async fn check_a_released_attempt_spends_nothing_up_to_the_cap(store: Store) {
    register(&store, ONCE).await;
    let run = start(&store, "once", json!({})).await;
    // Three releases: each attempt ends `released`, the step is ready at once.
    for n in 1..=3i64 {
        let task = claim_one(&store, &["h"]).await;
        assert_eq!(task.attempt, n);
        store
            .release(&task.lease_id, Some(format!("shutdown {n}")), now_ms())
            .await
            .expect("release");
        // Sent again after a lost answer: already done.
        assert_eq!(
            store
                .release(&task.lease_id, None, now_ms())
                .await
                .expect("release sent again"),
            Recorded::AlreadyApplied
        );
        let detail = store.get_run(&run).await.expect("get_run");
        assert_eq!(step(&detail, "s").status, "ready", "ready again at once");
        assert_eq!(detail.status, "running");
    }
    let events = events(&store, &run).await;
    let released: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "attempt.released")
        .map(|e| (e.attempt, e.data["reason"].clone(), e.data["error"].clone()))
        .collect();
    assert_eq!(
        released,
        vec![
            (Some(1), json!("worker_shutdown"), json!("shutdown 1")),
            (Some(2), json!("worker_shutdown"), json!("shutdown 2")),
            (Some(3), json!("worker_shutdown"), json!("shutdown 3")),
        ]
    );
    // Each release is followed by a step.ready naming the next attempt.
    let ready: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "step.ready")
        .map(|e| e.attempt)
        .collect();
    assert_eq!(ready, vec![Some(1), Some(2), Some(3), Some(4)]);

    // The fourth release counts: with max_attempts 1 the step fails.
    let task = claim_one(&store, &["h"]).await;
    assert_eq!(task.attempt, 4);
    store
        .release(&task.lease_id, None, now_ms())
        .await
        .expect("release past the cap");
    let detail = store.get_run(&run).await.expect("get_run");
    assert_eq!(detail.status, "failed");
    assert_eq!(detail.reason.as_deref(), Some("worker_shutdown"));
    assert_eq!(
        attempt_statuses(step(&detail, "s")),
        vec![
            (1, "released", Some("worker_shutdown")),
            (2, "released", Some("worker_shutdown")),
            (3, "released", Some("worker_shutdown")),
            (4, "failed", Some("worker_shutdown")),
        ]
    );

    // One release then a result: the step completes on its only attempt.
    let run = start(&store, "once", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    store
        .release(&task.lease_id, None, now_ms())
        .await
        .expect("release");
    let task = claim_one(&store, &["h"]).await;
    complete(&store, &task, json!("done")).await;
    let detail = store.get_run(&run).await.expect("get_run");
    assert_eq!(detail.status, "completed");
    assert_eq!(
        attempt_statuses(step(&detail, "s")),
        vec![
            (1, "released", Some("worker_shutdown")),
            (2, "completed", None),
        ]
    );

    // A release after the step's start-to-close deadline is the timeout.
    register(
        &store,
        "name: slow\nsteps:\n  - {name: s, handler: h, timeout: 100ms, retry: {max_attempts: 1}}\n",
    )
    .await;
    let run = start(&store, "slow", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_conflict(
        store.release(&task.lease_id, None, now_ms()).await,
        "deadline_exceeded",
    );
    let detail = store.get_run(&run).await.expect("get_run");
    assert_eq!(
        (detail.status.as_str(), detail.reason.as_deref()),
        ("failed", Some("timeout"))
    );

    // A release for an attempt whose run was cancelled changes nothing.
    let run = start(&store, "once", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    store.cancel_run(&run).await.expect("cancel");
    let before = snapshot(&store, &run).await;
    assert_conflict(
        store.release(&task.lease_id, None, now_ms()).await,
        "attempt_not_running",
    );
    assert_eq!(snapshot(&store, &run).await, before);
}

const APPROVE: &str = "
name: gate
steps:
  - {name: ok, kind: approval}
";

conformance!(check_every_string_the_store_accepts_round_trips);
async fn check_every_string_the_store_accepts_round_trips(store: Store) {
    register(&store, TWICE).await;
    register(&store, APPROVE).await;
    // JSON documents keep `\u0000` and other control characters exactly.
    let input = json!({"nul": "a\u{0}b", "k\u{0}ey": ["\u{1}\u{7f}", "é\u{0}"], "bell": "\u{7}"});
    let output = json!({"out": "x\u{0}y", "\u{0}": null});
    let started = store
        .start_run(NewRun {
            workflow: "twice".into(),
            input: input.clone(),
            idempotency_key: Some("key\u{0}with nul".into()),
            request_id: Some("req\u{0}id".into()),
            ..NewRun::default()
        })
        .await
        .expect("start with NUL in input, key and request id");
    let run = started.run_id;
    let task = claim_one(&store, &["h"]).await;
    assert_eq!(
        task.input["input"], input,
        "the task gets the input as sent"
    );
    // Free text from workers: NUL becomes U+FFFD, the rest is kept.
    store
        .append_logs(
            &task.lease_id,
            &["line\u{0}one".to_owned(), "tab\there \u{1b}[31m".to_owned()],
        )
        .await
        .expect("logs with NUL");
    store
        .fail(&task.lease_id, failure("bad\u{0}thing", true), now_ms())
        .await
        .expect("a failure report with a NUL is never lost");
    let task = claim_after_timers(&store, &["h"]).await;
    store
        .complete(&task.lease_id, output.clone(), None, now_ms())
        .await
        .expect("complete with NUL in the output");

    let detail = store.get_run(&run).await.expect("get_run");
    assert_eq!(detail.status, "completed");
    assert_eq!(detail.input, input);
    assert_eq!(step(&detail, "s").output, Some(output.clone()));
    assert_eq!(detail.output, Some(json!({"s": output})));
    assert_eq!(
        step(&detail, "s").attempts[0].error.as_deref(),
        Some("bad\u{FFFD}thing")
    );
    assert_eq!(detail.request_id.as_deref(), Some("req\u{FFFD}id"));
    let logs: Vec<String> = store
        .run_logs(&run, None)
        .await
        .expect("run_logs")
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(logs, vec!["line\u{FFFD}one", "tab\there \u{1b}[31m"]);
    let failed = events(&store, &run)
        .await
        .into_iter()
        .find(|e| e.kind == "attempt.failed")
        .expect("attempt.failed event");
    assert_eq!(
        failed.data["error"],
        json!("bad\u{0}thing"),
        "event data is JSON"
    );
    // The same key finds the same run on both backends.
    let again = store
        .start_run(NewRun {
            workflow: "twice".into(),
            input: input.clone(),
            idempotency_key: Some("key\u{0}with nul".into()),
            ..NewRun::default()
        })
        .await
        .expect("start again");
    assert_eq!((again.run_id, again.created), (run, false));

    // An operator's rejection message and a release message.
    let gate = start(&store, "gate", Value::Null).await;
    store
        .decide(&gate, "ok", false, Some("no\u{0}pe".into()))
        .await
        .expect("reject with a NUL");
    let detail = store.get_run(&gate).await.expect("get_run");
    assert_eq!(detail.error.as_deref(), Some("no\u{FFFD}pe"));
    let run = start(&store, "twice", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    store
        .release(&task.lease_id, Some("bye\u{0}".into()), now_ms())
        .await
        .expect("release with a NUL");
    let detail = store.get_run(&run).await.expect("get_run");
    assert_eq!(
        step(&detail, "s").attempts[0].error.as_deref(),
        Some("bye\u{FFFD}")
    );
    // A run id with a NUL is not a run id: it never reaches the store.
    assert!("run\u{0}id".parse::<weft_core::RunRef>().is_err());
    assert_conflict(store.heartbeat("lease\u{0}id").await, "stale_lease");
}

conformance!(check_an_idempotency_key_is_bound_to_its_input);
async fn check_an_idempotency_key_is_bound_to_its_input(store: Store) {
    register(&store, TWICE).await;
    let new = |key: &str, input: Value| NewRun {
        workflow: "twice".into(),
        input,
        idempotency_key: Some(key.to_owned()),
        ..NewRun::default()
    };
    let first = store
        .start_run(new("k1", json!({"a": 1, "b": {"c": [1, 2], "d": "x"}})))
        .await
        .expect("start");
    assert!(first.created);
    // Equal canonical JSON (key order ignored): the same run.
    let same = store
        .start_run(new("k1", json!({"b": {"d": "x", "c": [1, 2]}, "a": 1})))
        .await
        .expect("same input");
    assert_eq!((same.run_id, same.created), (first.run_id, false));
    // A different input: refused, nothing written.
    let n_runs = store
        .list_runs(&Default::default())
        .await
        .unwrap()
        .runs
        .len();
    for other in [
        json!({"a": 2, "b": {"c": [1, 2], "d": "x"}}),
        json!({"a": 1}),
        json!(null),
    ] {
        assert_conflict(
            store.start_run(new("k1", other)).await,
            "idempotency_key_reused",
        );
    }
    assert_eq!(
        store
            .list_runs(&Default::default())
            .await
            .unwrap()
            .runs
            .len(),
        n_runs
    );

    // The batch: one answer per start; two starts with one key in one batch
    // compare with each other.
    let answers = store
        .start_runs(&[
            new("k1", json!({"a": 1, "b": {"c": [1, 2], "d": "x"}})),
            new("k2", json!(1)),
            new("k2", json!(2)),
            new("k1", json!("other")),
        ])
        .await
        .expect("start_runs");
    assert!(
        answers[0]
            .as_ref()
            .is_ok_and(|s| !s.created && s.run_id == first.run_id)
    );
    assert!(answers[1].as_ref().is_ok_and(|s| s.created));
    assert!(matches!(
        &answers[2],
        Err(Error::Conflict {
            code: weft_core::ErrorCode::IdempotencyKeyReused,
            ..
        })
    ));
    assert!(matches!(
        &answers[3],
        Err(Error::Conflict {
            code: weft_core::ErrorCode::IdempotencyKeyReused,
            ..
        })
    ));
    // All or none: one refusal writes nothing of the batch.
    let n_runs = store
        .list_runs(&Default::default())
        .await
        .unwrap()
        .runs
        .len();
    assert_conflict(
        store
            .start_runs_all_or_none(&[new("k3", json!(3)), new("k2", json!(3))])
            .await,
        "idempotency_key_reused",
    );
    assert_eq!(
        store
            .list_runs(&Default::default())
            .await
            .unwrap()
            .runs
            .len(),
        n_runs
    );
    let started = store
        .start_runs_all_or_none(&[new("k3", json!(3)), new("k2", json!(1))])
        .await
        .expect("all or none");
    assert!(started[0].created && !started[1].created);

    // Group commit: concurrent starts with one key and different inputs get
    // one run; the others are refused, the equal ones get that run.
    let mut handles = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let input = json!({"v": i % 2});
        handles.push(tokio::spawn(async move {
            (i % 2, store.start_run(new("k4", input)).await)
        }));
    }
    let mut by_input: [Vec<Result<_, Error>>; 2] = [Vec::new(), Vec::new()];
    for handle in handles {
        let (v, answer) = handle.await.unwrap();
        by_input[v].push(answer);
    }
    let winner = by_input
        .iter()
        .position(|answers| answers.iter().any(|a| a.as_ref().is_ok_and(|s| s.created)))
        .expect("one start created the run");
    assert!(by_input[winner].iter().all(|a| a.is_ok()));
    let ids: std::collections::BTreeSet<_> = by_input[winner]
        .iter()
        .map(|a| a.as_ref().unwrap().run_id)
        .collect();
    assert_eq!(ids.len(), 1, "one run for the key");
    assert!(by_input[1 - winner].iter().all(|a| matches!(
        a,
        Err(Error::Conflict {
            code: weft_core::ErrorCode::IdempotencyKeyReused,
            ..
        })
    )));
}

conformance!(check_history_events_name_the_right_attempt);
async fn check_history_events_name_the_right_attempt(store: Store) {
    register(&store, TWICE).await;
    let run = start(&store, "twice", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    store
        .fail(&task.lease_id, failure("first", true), now_ms())
        .await
        .expect("fail");
    let task = claim_after_timers(&store, &["h"]).await;
    assert_eq!(task.attempt, 2);
    complete(&store, &task, json!(2)).await;
    let seen: Vec<(String, Option<i64>)> = events(&store, &run)
        .await
        .into_iter()
        .filter(|e| e.step.is_some())
        .map(|e| (e.kind, e.attempt))
        .collect();
    let expected: Vec<(String, Option<i64>)> = [
        ("step.ready", 1),
        ("attempt.claimed", 1),
        ("step.running", 1),
        ("attempt.failed", 1),
        ("step.retrying", 1),
        ("step.ready", 2),
        ("attempt.claimed", 2),
        ("step.running", 2),
        ("attempt.completed", 2),
        ("step.completed", 2),
    ]
    .into_iter()
    .map(|(kind, attempt)| (kind.to_owned(), Some(attempt)))
    .collect();
    let kinds: Vec<_> = seen
        .iter()
        .filter(|(k, _)| k != "step.running")
        .cloned()
        .collect();
    let expected: Vec<_> = expected
        .into_iter()
        .filter(|(k, _)| k != "step.running")
        .collect();
    assert_eq!(kinds, expected);
}
