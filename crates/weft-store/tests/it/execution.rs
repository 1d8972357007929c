//! Conformance of run execution: DAG order and task inputs, retries and
//! failures, operator retry, `when` conditions, sleep timers and step logs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_core::Reason;
use weft_store::{Error, FailReport, Store};

use crate::support::{
    assert_conflict, attempt_statuses, claim, claim_after_timers, claim_one, complete, event_index,
    event_kinds, events, register, start, step, steps_of,
};

fn handler_error(message: &str, retryable: bool) -> FailReport {
    FailReport {
        reason: Reason::HandlerError,
        message: message.to_owned(),
        retryable,
        timing: None,
    }
}

const FAN: &str = "
name: fan
steps:
  - {name: split, handler: split}
  - {name: a, handler: work, depends_on: [split]}
  - {name: b, handler: work, depends_on: [split]}
  - {name: join, handler: join, depends_on: [a, b]}
";
const FAN_HANDLERS: &[&str] = &["split", "work", "join"];

conformance!(check_dag_order);
async fn check_dag_order(store: Store) {
    register(&store, FAN).await;
    let input = json!({"order": 7});
    let started = store
        .start_run(weft_store::NewRun {
            workflow: "fan".into(),
            input: input.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let run_id = started.run_id;

    // Workers of other queues or handlers see nothing.
    let mut elsewhere = crate::support::claim_request("w9", FAN_HANDLERS, 10);
    elsewhere.queues = vec!["other".into()];
    assert!(store.claim(&elsewhere).await.unwrap().is_empty());
    assert!(claim(&store, &["work", "join"]).await.is_empty());

    let split = claim_one(&store, FAN_HANDLERS).await;
    assert_eq!(
        (split.step.as_str(), split.handler.as_str(), split.attempt),
        ("split", "split", 1)
    );
    assert_eq!(
        (split.run_id, split.trace_id, split.workflow.as_str()),
        (run_id, started.trace_id, "fan")
    );
    assert_eq!(
        split.input,
        json!({"input": input, "steps": {}, "upstream": {}})
    );
    assert_eq!(split.trace_id, started.trace_id);
    assert_eq!(
        split.span_id.to_string().len(),
        16,
        "span id {}",
        split.span_id
    );
    assert_eq!(split.lease_ms, 30_000);
    assert_eq!((split.deadline_at_ms, split.timeout_ms), (None, None));
    assert_eq!(store.get_run(&run_id).await.unwrap().status, "running");

    // Nothing else is ready while `split` runs.
    assert!(claim(&store, FAN_HANDLERS).await.is_empty());
    complete(&store, &split, json!({"n": 2})).await;

    let mut fanned = claim(&store, FAN_HANDLERS).await;
    fanned.sort_by(|x, y| x.step.cmp(&y.step));
    assert_eq!(steps_of(&fanned), vec!["a", "b"]);
    for task in &fanned {
        assert_eq!(
            task.input,
            json!({"input": input, "steps": {"split": {"n": 2}}, "upstream": done(&["split"])})
        );
        assert_eq!(task.attempt, 1);
    }
    assert_ne!(fanned[0].lease_id, fanned[1].lease_id);
    assert!(claim(&store, FAN_HANDLERS).await.is_empty());

    complete(&store, &fanned[0], json!("from a")).await;
    assert!(
        claim(&store, FAN_HANDLERS).await.is_empty(),
        "join must wait for b"
    );
    complete(&store, &fanned[1], json!({"from": "b"})).await;

    let join = claim_one(&store, FAN_HANDLERS).await;
    assert_eq!(join.step, "join");
    assert_eq!(
        join.input,
        json!({"input": input, "steps": {"a": "from a", "b": {"from": "b"}}, "upstream": done(&["a", "b"])})
    );
    complete(&store, &join, json!({"joined": true})).await;
    assert!(claim(&store, FAN_HANDLERS).await.is_empty());

    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "completed");
    assert_eq!((run.reason.clone(), run.error.clone()), (None, None));
    assert_eq!(run.output, Some(json!({"join": {"joined": true}})));
    assert!(run.started_at_ms.is_some() && run.finished_at_ms.is_some());
    assert!(run.end_to_end_ms.is_some() && run.schedule_to_start_ms.is_some());
    let names: Vec<&str> = run.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["split", "a", "b", "join"],
        "steps in manifest order"
    );
    for (name, output) in [
        ("split", json!({"n": 2})),
        ("a", json!("from a")),
        ("b", json!({"from": "b"})),
        ("join", json!({"joined": true})),
    ] {
        let s = step(&run, name);
        assert_eq!(s.status, "completed", "{name}");
        assert_eq!(s.output, Some(output), "{name}");
        assert_eq!(attempt_statuses(s), vec![(1, "completed", None)], "{name}");
        let attempt = &s.attempts[0];
        assert_eq!(attempt.worker_id, "w1");
        assert!(attempt.finished_at_ms.is_some());
        let timing = attempt
            .timing
            .as_ref()
            .expect("a completed attempt has timing");
        assert!(timing.total_ms >= 0 && timing.queue_wait_ms >= 0);
    }

    let history = events(&store, &run_id).await;
    let kinds = event_kinds(&history);
    assert_eq!(history[0].kind, "run.created", "{kinds:?}");
    assert_eq!(history.last().unwrap().kind, "run.completed", "{kinds:?}");
    assert_eq!(
        history.iter().filter(|e| e.kind == "run.started").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        history.iter().filter(|e| e.kind == "run.completed").count(),
        1,
        "{kinds:?}"
    );
    for name in ["split", "a", "b", "join"] {
        let ready = event_index(&history, "step.ready", Some(name));
        let claimed = event_index(&history, "attempt.claimed", Some(name));
        let attempt_done = event_index(&history, "attempt.completed", Some(name));
        let step_done = event_index(&history, "step.completed", Some(name));
        assert!(
            ready < claimed && claimed < attempt_done && attempt_done <= step_done,
            "{name}: {kinds:?}"
        );
        assert_eq!(history[claimed].attempt, Some(1));
        assert_eq!(history[claimed].data["worker_id"], "w1");
    }
    assert!(
        event_index(&history, "step.completed", Some("split"))
            < event_index(&history, "step.ready", Some("a"))
    );
    assert!(
        event_index(&history, "step.completed", Some("a"))
            < event_index(&history, "step.ready", Some("join"))
    );
    assert!(
        event_index(&history, "step.completed", Some("b"))
            < event_index(&history, "step.ready", Some("join"))
    );
    assert!(
        event_index(&history, "run.created", None)
            < event_index(&history, "step.ready", Some("split"))
    );

    // `after_seq` returns only the later events.
    let middle = history[history.len() / 2].seq;
    let tail = store.run_events(&run_id, Some(middle)).await.unwrap();
    assert_eq!(
        tail.len(),
        history.iter().filter(|e| e.seq > middle).count()
    );
    assert!(tail.iter().all(|e| e.seq > middle));
}

const FLAKY: &str = "
name: flaky
steps:
  - name: s
    handler: flaky
    retry: {max_attempts: 3, initial: 100ms, max: 100ms, jitter: false}
";

conformance!(check_retry_then_complete);
async fn check_retry_then_complete(store: Store) {
    register(&store, FLAKY).await;
    let run_id = start(&store, "flaky", json!({})).await;

    let mut task = claim_one(&store, &["flaky"]).await;
    for n in 1..=2 {
        assert_eq!(task.attempt, n);
        // Taken before the call: the backoff counts from a moment inside it,
        // and a slow commit must not make the retry look early.
        let failed_at = Instant::now();
        store
            .fail(
                &task.lease_id,
                handler_error(&format!("boom {n}"), true),
                weft_store::now_ms(),
            )
            .await
            .unwrap();
        let run = store.get_run(&run_id).await.unwrap();
        assert_eq!(run.status, "running");
        let s = step(&run, "s");
        assert_eq!(s.status, "retrying");
        assert_eq!(
            (s.reason.as_deref(), s.error.clone()),
            (Some("handler_error"), Some(format!("boom {n}")))
        );
        assert!(
            s.due_at_ms.is_some(),
            "a retrying step shows when it is due"
        );
        // Not claimable during the backoff, and the old lease is spent.
        assert!(claim(&store, &["flaky"]).await.is_empty());
        assert_conflict(store.heartbeat(&task.lease_id).await, "stale_lease");
        task = claim_after_timers(&store, &["flaky"]).await;
        assert!(
            failed_at.elapsed() >= Duration::from_millis(90),
            "retried after {:?}",
            failed_at.elapsed()
        );
    }
    assert_eq!(task.attempt, 3);
    complete(&store, &task, json!({"ok": true})).await;

    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "completed");
    assert_eq!(run.output, Some(json!({"s": {"ok": true}})));
    let s = step(&run, "s");
    assert_eq!(
        (s.status.as_str(), s.reason.clone(), s.error.clone()),
        ("completed", None, None)
    );
    assert_eq!(
        attempt_statuses(s),
        vec![
            (1, "failed", Some("handler_error")),
            (2, "failed", Some("handler_error")),
            (3, "completed", None)
        ]
    );
    assert_eq!(s.attempts[0].error.as_deref(), Some("boom 1"));
    assert_eq!(s.attempts[1].error.as_deref(), Some("boom 2"));

    let history = events(&store, &run_id).await;
    let retrying: Vec<&Value> = history
        .iter()
        .filter(|e| e.kind == "step.retrying")
        .map(|e| &e.data)
        .collect();
    assert_eq!(retrying.len(), 2, "{:?}", event_kinds(&history));
    assert!(
        retrying.iter().all(|d| d["delay_ms"] == 100),
        "{retrying:?}"
    );
    let failures: Vec<(Option<i64>, &Value)> = history
        .iter()
        .filter(|e| e.kind == "attempt.failed")
        .map(|e| (e.attempt, &e.data["reason"]))
        .collect();
    assert_eq!(
        failures,
        vec![
            (Some(1), &json!("handler_error")),
            (Some(2), &json!("handler_error"))
        ]
    );
}

const BRITTLE: &str = "
name: brittle
steps:
  - {name: first, handler: brittle}
  - {name: second, handler: after, depends_on: [first]}
  - {name: side, handler: side}
  - name: once
    handler: once
    retry: {max_attempts: 1}
";

/// The `upstream` key of a task input for dependencies that all completed.
fn done(names: &[&str]) -> Value {
    names
        .iter()
        .map(|n| {
            (
                (*n).to_owned(),
                json!({"status": "completed", "reason": null, "error": null}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

conformance!(check_non_retryable_failure);
async fn check_non_retryable_failure(store: Store) {
    register(&store, BRITTLE).await;
    let run_id = start(&store, "brittle", json!({})).await;

    let mut tasks = claim(&store, &["brittle", "side"]).await;
    tasks.sort_by(|x, y| x.step.cmp(&y.step));
    assert_eq!(steps_of(&tasks), vec!["first", "side"]);
    let (first, side) = (&tasks[0], &tasks[1]);
    let report = FailReport {
        reason: Reason::InvalidOutput,
        message: "not JSON".into(),
        retryable: false,
        timing: None,
    };
    store
        .fail(&first.lease_id, report, weft_store::now_ms())
        .await
        .unwrap();

    // Only the failed step's dependants are cancelled; the other branches go on.
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("running", None)
    );
    let s = step(&run, "first");
    assert_eq!(
        (s.status.as_str(), s.reason.as_deref()),
        ("failed", Some("invalid_output"))
    );
    assert_eq!(
        attempt_statuses(s),
        vec![(1, "failed", Some("invalid_output"))]
    );
    let second = step(&run, "second");
    assert_eq!(
        (second.status.as_str(), second.reason.as_deref()),
        ("cancelled", Some("upstream_failed"))
    );
    assert_eq!(step(&run, "side").status, "running");
    assert_eq!(step(&run, "once").status, "ready");
    assert!(
        !store
            .heartbeat(&side.lease_id)
            .await
            .unwrap()
            .cancel_requested
    );
    store
        .complete(&side.lease_id, json!(1), None, weft_store::now_ms())
        .await
        .unwrap();
    let once = claim_one(&store, &["once"]).await;
    complete(&store, &once, json!("once")).await;

    // Nothing more can progress: the run fails with the step's failure.
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(
        (
            run.status.as_str(),
            run.reason.as_deref(),
            run.error.as_deref()
        ),
        ("failed", Some("invalid_output"), Some("not JSON"))
    );
    assert!(run.finished_at_ms.is_some());
    assert!(
        claim(&store, &["brittle", "after", "side", "once"])
            .await
            .is_empty()
    );
    let history = events(&store, &run_id).await;
    let failed = &history[event_index(&history, "run.failed", None)];
    assert_eq!(failed.data["reason"], "invalid_output");
    assert_eq!(
        history.last().unwrap().kind,
        "run.failed",
        "{:?}",
        event_kinds(&history)
    );

    // A retryable failure with no attempts left fails the run too, once the
    // other branches are done.
    let run_id = start(&store, "brittle", json!({})).await;
    let once = claim_one(&store, &["once"]).await;
    store
        .fail(
            &once.lease_id,
            handler_error("no luck", true),
            weft_store::now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(store.get_run(&run_id).await.unwrap().status, "running");
    for handler in ["brittle", "side", "after"] {
        let task = claim_one(&store, &[handler]).await;
        complete(&store, &task, json!(handler)).await;
    }
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("failed", Some("handler_error"))
    );
    assert_eq!(step(&run, "once").status, "failed");
    assert_eq!(step(&run, "second").status, "completed");
}

const REPAIRABLE: &str = "
name: repairable
steps:
  - {name: first, handler: h}
  - name: second
    handler: h
    depends_on: [first]
    retry: {max_attempts: 1}
  - {name: third, handler: h, depends_on: [second]}
";

conformance!(check_retry_run);
async fn check_retry_run(store: Store) {
    register(&store, REPAIRABLE).await;
    let run_id = start(&store, "repairable", json!({"x": 1})).await;
    assert_conflict(store.retry_run(&run_id).await, "invalid_state");

    let first = claim_one(&store, &["h"]).await;
    complete(&store, &first, json!({"made": "first"})).await;
    let second = claim_one(&store, &["h"]).await;
    assert_eq!(second.step, "second");
    store
        .fail(
            &second.lease_id,
            handler_error("bad day", false),
            weft_store::now_ms(),
        )
        .await
        .unwrap();
    let failed = store.get_run(&run_id).await.unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_deref()),
        ("failed", Some("handler_error"))
    );
    assert_eq!(
        step(&failed, "third").reason.as_deref(),
        Some("upstream_failed")
    );

    let summary = store.retry_run(&run_id).await.unwrap();
    assert_eq!(
        (
            summary.status.as_str(),
            summary.reason.clone(),
            summary.finished_at_ms
        ),
        ("running", None, None)
    );
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(
        (
            run.status.as_str(),
            run.reason.clone(),
            run.error.clone(),
            run.finished_at_ms
        ),
        ("running", None, None, None)
    );
    let s = step(&run, "first");
    assert_eq!(
        (s.status.as_str(), s.output.clone()),
        ("completed", Some(json!({"made": "first"})))
    );
    assert_eq!(s.attempts.len(), 1, "completed steps are not run again");
    let s = step(&run, "second");
    assert_eq!(
        (s.status.as_str(), s.reason.clone(), s.error.clone()),
        ("ready", None, None)
    );
    let s = step(&run, "third");
    assert_eq!((s.status.as_str(), s.reason.clone()), ("pending", None));

    // A fresh attempt budget: `second` allows one attempt, and gets one more.
    let second = claim_one(&store, &["h"]).await;
    assert_eq!((second.step.as_str(), second.attempt), ("second", 2));
    assert_eq!(
        second.input,
        json!({"input": {"x": 1}, "steps": {"first": {"made": "first"}}, "upstream": done(&["first"])})
    );
    complete(&store, &second, json!("second ok")).await;
    let third = claim_one(&store, &["h"]).await;
    assert_eq!(third.step, "third");
    complete(&store, &third, json!("third ok")).await;

    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "completed");
    assert_eq!(run.output, Some(json!({"third": "third ok"})));
    assert!(run.finished_at_ms.is_some());
    assert_eq!(
        attempt_statuses(step(&run, "second")),
        vec![(1, "failed", Some("handler_error")), (2, "completed", None)]
    );
    let history = events(&store, &run_id).await;
    assert!(event_index(&history, "run.failed", None) < event_index(&history, "run.retried", None));
    assert_eq!(history.last().unwrap().kind, "run.completed");
    assert_conflict(store.retry_run(&run_id).await, "invalid_state");
}

const BRANCHING: &str = "
name: branching
steps:
  - {name: start, handler: h}
  - {name: maybe, handler: h, depends_on: [start], when: 'steps.start.go && input.allowed'}
  - {name: after, handler: h, depends_on: [maybe]}
";

conformance!(check_when_false_skips);
async fn check_when_false_skips(store: Store) {
    register(&store, BRANCHING).await;
    let input = json!({"allowed": true});
    let run_id = start(&store, "branching", input.clone()).await;
    let first = claim_one(&store, &["h"]).await;
    complete(&store, &first, json!({"go": false})).await;

    let run = store.get_run(&run_id).await.unwrap();
    let maybe = step(&run, "maybe");
    assert_eq!(maybe.status, "skipped");
    assert!(maybe.attempts.is_empty());
    assert_eq!(step(&run, "after").status, "ready");
    let after = claim_one(&store, &["h"]).await;
    assert_eq!(after.step, "after", "the skipped step's dependant runs");
    assert_eq!(
        after.input,
        json!({"input": input, "steps": {"maybe": null},
            "upstream": {"maybe": {"status": "skipped", "reason": null, "error": null}}})
    );
    complete(&store, &after, json!("after")).await;
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "completed");
    assert_eq!(run.output, Some(json!({"after": "after"})));
    let history = events(&store, &run_id).await;
    event_index(&history, "step.skipped", Some("maybe"));

    // With the condition true the step runs.
    let run_id = start(&store, "branching", input).await;
    let first = claim_one(&store, &["h"]).await;
    complete(&store, &first, json!({"go": true})).await;
    let maybe = claim_one(&store, &["h"]).await;
    assert_eq!((maybe.step.as_str(), maybe.run_id), ("maybe", run_id));
}

const NAPPER: &str = "
name: napper
steps:
  - {name: nap, kind: sleep, duration: 200ms}
  - {name: wake, handler: h, depends_on: [nap]}
";

conformance!(check_sleep_step);
async fn check_sleep_step(store: Store) {
    register(&store, NAPPER).await;
    let started = Instant::now();
    let run_id = start(&store, "napper", json!({})).await;
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "running");
    let nap = step(&run, "nap");
    assert_eq!((nap.status.as_str(), nap.kind), ("waiting", "sleep"));
    let due = nap.due_at_ms.expect("a sleeping step has a due time");
    let created = run.created_at_ms;
    assert!(
        (199..=1_000).contains(&(due - created)),
        "due {} ms after creation",
        due - created
    );
    assert!(claim(&store, &["h"]).await.is_empty());
    let early = store.fire_due_timers(100).await.unwrap();
    if started.elapsed() < Duration::from_millis(150) {
        assert_eq!(early, 0, "a sleep fired before its due time");
    }

    let wake = claim_after_timers(&store, &["h"]).await;
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "woke after {:?}",
        started.elapsed()
    );
    assert_eq!(wake.step, "wake");
    assert_eq!(
        wake.input,
        json!({"input": {}, "steps": {"nap": null}, "upstream": done(&["nap"])})
    );
    assert_eq!(
        store.fire_due_timers(100).await.unwrap(),
        0,
        "a fired timer does not fire again"
    );
    let run = store.get_run(&run_id).await.unwrap();
    let nap = step(&run, "nap");
    assert_eq!((nap.status.as_str(), nap.due_at_ms), ("completed", None));
    complete(&store, &wake, json!("awake")).await;
    assert_eq!(store.get_run(&run_id).await.unwrap().status, "completed");
}

const LOGGED: &str = "
name: logged
steps:
  - {name: a, handler: h}
  - {name: b, handler: h}
";

conformance!(check_logs);
async fn check_logs(store: Store) {
    register(&store, LOGGED).await;
    let started = store
        .start_run(weft_store::NewRun {
            workflow: "logged".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let run_id = started.run_id;
    let mut tasks = claim(&store, &["h"]).await;
    tasks.sort_by(|x, y| x.step.cmp(&y.step));
    assert_eq!(steps_of(&tasks), vec!["a", "b"]);

    store
        .append_logs(
            &tasks[0].lease_id,
            &["a: one".to_owned(), "a: two".to_owned()],
        )
        .await
        .unwrap();
    store
        .append_logs(&tasks[1].lease_id, &["b: one".to_owned()])
        .await
        .unwrap();
    store.append_logs(&tasks[0].lease_id, &[]).await.unwrap();
    let long = "x".repeat(20_000);
    store
        .append_logs(&tasks[0].lease_id, &["a: three".to_owned(), long.clone()])
        .await
        .unwrap();

    let all = store.run_logs(&run_id, None).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let lines: Vec<(&str, i64, &str)> = all
        .iter()
        .take(4)
        .map(|l| (l.step.as_str(), l.attempt, l.line.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("a", 1, "a: one"),
            ("a", 1, "a: two"),
            ("b", 1, "b: one"),
            ("a", 1, "a: three")
        ]
    );
    assert_eq!(all.len(), 5);
    assert!(
        all[4].line.starts_with("xxx") && all[4].line.len() < long.len(),
        "long lines are capped"
    );
    assert!(all.iter().all(|l| l.at_ms > 0));

    let only_b = store.run_logs(&run_id, Some("b")).await.unwrap();
    assert_eq!(
        only_b.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
        vec!["b: one"]
    );
    assert!(
        store
            .run_logs(&run_id, Some("nonesuch"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.run_logs(&started.trace_id, None).await.unwrap().len(),
        5,
        "a trace id finds the logs too"
    );
    assert!(matches!(
        store
            .run_logs(weft_core::RunId::new(store.now_ms()), None)
            .await,
        Err(Error::NotFound { .. })
    ));
    assert_conflict(
        store
            .append_logs(&uuid::Uuid::new_v4().to_string(), &["lost".to_owned()])
            .await,
        "stale_lease",
    );
}

const WAITED: &str = "
name: waited
steps:
  - {name: s, handler: h}
";

conformance!(check_wait_for_run_end);
async fn check_wait_for_run_end(store: Store) {
    register(&store, WAITED).await;
    let run_id = start(&store, "waited", json!({})).await;
    // Not ended: the wait runs out and answers the run as it stands.
    let waited = std::time::Instant::now();
    let run = store
        .wait_run(&run_id, Duration::from_millis(300))
        .await
        .expect("wait_run");
    assert_eq!(run.status, "pending");
    assert!(waited.elapsed() >= Duration::from_millis(300));

    // Ended while waiting: the wait answers with the ended run, by trace id too.
    let waiter = {
        let store = store.clone();
        let trace_id = run.trace_id;
        tokio::spawn(async move { store.wait_run(&trace_id, Duration::from_secs(30)).await })
    };
    let task = claim_one(&store, &["h"]).await;
    complete(&store, &task, json!("done")).await;
    let run = waiter.await.unwrap().expect("wait_run");
    assert_eq!(run.run_id, run_id);
    assert_eq!(run.status, "completed");

    // Already ended: answered at once.
    let run = store
        .wait_run(&run_id, Duration::from_secs(30))
        .await
        .expect("wait_run");
    assert_eq!(run.status, "completed");
    assert!(matches!(
        store
            .wait_run(
                weft_core::RunId::new(store.now_ms()),
                Duration::from_secs(1)
            )
            .await,
        Err(weft_store::Error::NotFound { .. })
    ));
}
