//! Batches: worker results and run starts written in one transaction, one
//! answer per item, the same outcome as the items sent one by one.

use serde_json::json;
use weft_core::Reason;
use weft_store::{Error, FailReport, Outcome, Store, WorkerResult, now_ms};

use crate::support::*;

const FAN: &str = "
name: fan
steps:
  - {name: b1, handler: h}
  - {name: b2, handler: h}
  - {name: b3, handler: h}
  - {name: join, handler: h, depends_on: [b1, b2, b3]}
";

const ONE: &str = "
name: one
steps:
  - name: s
    handler: h
    retry: {max_attempts: 2, initial: 10ms, max: 10ms, jitter: false}
";

fn completed(lease_id: &str, output: serde_json::Value) -> WorkerResult {
    WorkerResult {
        lease_id: lease_id.to_owned(),
        outcome: Outcome::Completed(output),
        timing: None,
        received_ms: now_ms(),
    }
}

conformance!(check_result_batches);
async fn check_result_batches(store: Store) {
    register(&store, FAN).await;
    register(&store, ONE).await;
    let fan = start(&store, "fan", json!({})).await;
    let ones = [
        start(&store, "one", json!({"i": 1})).await,
        start(&store, "one", json!({"i": 2})).await,
    ];
    let tasks = claim(&store, &["h"]).await;
    assert_eq!(
        tasks.len(),
        5,
        "b1, b2, b3 and two `s`: {:?}",
        steps_of(&tasks)
    );
    let fan_tasks: Vec<_> = tasks.iter().filter(|t| t.run_id == fan).collect();
    let one_tasks: Vec<_> = tasks.iter().filter(|t| t.run_id != fan).collect();
    assert_eq!(fan_tasks.len(), 3);

    // One batch: three results of one run (sharing its lock), a completion
    // and a failure of two other runs, and a lease that never existed.
    let mut batch: Vec<WorkerResult> = fan_tasks
        .iter()
        .map(|t| completed(&t.lease_id, json!({"from": t.step})))
        .collect();
    batch.push(completed(&one_tasks[0].lease_id, json!("ok")));
    batch.push(WorkerResult {
        lease_id: one_tasks[1].lease_id.clone(),
        outcome: Outcome::Failed(FailReport {
            reason: Reason::HandlerError,
            message: "boom".into(),
            retryable: false,
            timing: None,
        }),
        timing: None,
        received_ms: now_ms(),
    });
    batch.push(completed("no-such-lease", json!(null)));
    let answers = store.finish_batch(&batch).await.expect("finish_batch");
    assert_eq!(
        answers.len(),
        batch.len(),
        "one answer per result, in order"
    );
    for answer in &answers[..5] {
        assert!(answer.is_ok(), "{answer:?}");
    }
    assert!(
        matches!(
            &answers[5],
            Err(Error::Conflict {
                code: weft_core::ErrorCode::StaleLease,
                ..
            })
        ),
        "{:?}",
        answers[5]
    );

    // The fan-in step is ready with all three outputs; the one-step runs ended.
    let join = claim_one(&store, &["h"]).await;
    assert_eq!(join.step, "join");
    assert_eq!(
        join.input["steps"],
        json!({"b1": {"from": "b1"}, "b2": {"from": "b2"}, "b3": {"from": "b3"}})
    );
    let done = store.get_run(&one_tasks[0].run_id).await.unwrap();
    assert_eq!(done.status, "completed");
    assert_eq!(done.output, Some(json!({"s": "ok"})));
    let failed = store.get_run(&one_tasks[1].run_id).await.unwrap();
    assert_eq!(failed.status, "failed");
    assert_eq!(step(&failed, "s").error.as_deref(), Some("boom"));
    assert!(ones.contains(&done.run_id) && ones.contains(&failed.run_id));

    // History: each attempt's end is written before the transition it causes.
    let history = events(&store, &fan).await;
    for b in ["b1", "b2", "b3"] {
        assert!(
            event_index(&history, "attempt.completed", Some(b))
                < event_index(&history, "step.completed", Some(b))
        );
    }
    assert!(
        event_index(&history, "step.completed", Some("b3"))
            < event_index(&history, "step.ready", Some("join"))
    );

    // The same batch again changes nothing: every lease is gone, and each
    // result was already applied (the first answer may have been lost).
    let before = snapshot(&store, &fan).await;
    let again = store.finish_batch(&batch[..3]).await.expect("finish_batch");
    for answer in again {
        assert!(
            matches!(answer, Ok(weft_store::Recorded::AlreadyApplied)),
            "{answer:?}"
        );
    }
    // Other outputs for the same leases are refused.
    let other: Vec<WorkerResult> = fan_tasks
        .iter()
        .map(|t| completed(&t.lease_id, json!("other")))
        .collect();
    for answer in store.finish_batch(&other).await.expect("finish_batch") {
        assert!(
            matches!(
                answer,
                Err(Error::Conflict {
                    code: weft_core::ErrorCode::StaleLease,
                    ..
                })
            ),
            "{answer:?}"
        );
    }
    assert_eq!(snapshot(&store, &fan).await, before);

    // An empty batch is answered with nothing.
    assert!(store.finish_batch(&[]).await.unwrap().is_empty());
    complete(&store, &join, json!(1)).await;
    assert_eq!(store.get_run(&fan).await.unwrap().status, "completed");
}

conformance!(check_result_batch_after_cancel);
async fn check_result_batch_after_cancel(store: Store) {
    register(&store, ONE).await;
    let run_id = start(&store, "one", json!({})).await;
    let task = claim_one(&store, &["h"]).await;
    store.cancel_run(&run_id).await.expect("cancel");
    let answers = store
        .finish_batch(&[completed(&task.lease_id, json!("too late"))])
        .await
        .expect("finish_batch");
    assert!(
        matches!(
            &answers[0],
            Err(Error::Conflict {
                code: weft_core::ErrorCode::AttemptNotRunning,
                ..
            })
        ),
        "{:?}",
        answers[0]
    );
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "cancelled");
    assert_eq!(run.output, None);
    // The refusal released the lease: a second report is stale.
    let answers = store
        .finish_batch(&[completed(&task.lease_id, json!("again"))])
        .await
        .unwrap();
    assert!(matches!(
        &answers[0],
        Err(Error::Conflict {
            code: weft_core::ErrorCode::StaleLease,
            ..
        })
    ));
}

conformance!(check_start_batches);
async fn check_start_batches(store: Store) {
    register(&store, ONE).await;
    let new = |i: i64, key: Option<&str>| weft_store::NewRun {
        workflow: "one".into(),
        input: json!({"i": i}),
        idempotency_key: key.map(str::to_owned),
        ..weft_store::NewRun::default()
    };
    // Two with one key (and one input) in the same batch: one run, found by
    // the second.
    let batch = [new(1, None), new(2, Some("k")), new(2, Some("k"))];
    let answers = store.start_runs(&batch).await.expect("start_runs");
    let started: Vec<_> = answers.into_iter().map(|a| a.expect("started")).collect();
    assert!(started[0].created && started[1].created);
    assert!(!started[2].created);
    assert_eq!(started[1].run_id, started[2].run_id);
    assert_ne!(started[0].run_id, started[1].run_id);
    let tasks = claim(&store, &["h"]).await;
    assert_eq!(tasks.len(), 2, "one task per created run");

    // An unknown workflow fails its own start only.
    let mut unknown = new(4, None);
    unknown.workflow = "nope".into();
    let answers = store
        .start_runs(&[unknown, new(5, None)])
        .await
        .expect("start_runs");
    assert!(matches!(
        &answers[0],
        Err(Error::NotFound {
            what: "workflow",
            ..
        })
    ));
    assert!(answers[1].as_ref().is_ok_and(|s| s.created));

    // Concurrent single starts share transactions and each gets its own run.
    let mut handles = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store
                .start_run(weft_store::NewRun {
                    workflow: "one".into(),
                    input: json!({"i": 100 + i}),
                    ..weft_store::NewRun::default()
                })
                .await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for handle in handles {
        let started = handle.await.unwrap().expect("start_run");
        assert!(started.created);
        ids.insert(started.run_id);
    }
    assert_eq!(ids.len(), 40);
    for id in &ids {
        let run = store.get_run(id).await.unwrap();
        assert_eq!(step(&run, "s").status, "ready");
    }
}
