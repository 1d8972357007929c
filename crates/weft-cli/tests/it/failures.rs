//! Failure handling end to end: retries with backoff, start-to-close
//! timeouts that kill the handler's process group, a worker killed mid-step,
//! fencing of a stale lease, and cancellation reaching a running handler.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use weft_api::{CompleteRequest, PollRequest};
use weft_worker::{HandlerError, TaskContext};

use crate::harness::{Env, PATIENCE, SdkWorker, kill_group, ms, process_alive, step, wait_until};

const FLAKY: &str = "\
name: flaky
steps:
  - name: exec_flaky
    handler: flaky.exec
    retry: { max_attempts: 3, initial: 100ms, max: 100ms, jitter: false }
  - name: sdk_flaky
    handler: flaky.sdk
    retry: { max_attempts: 3, initial: 100ms, max: 100ms, jitter: false }
";

/// Both kinds of handler fail twice, then succeed on attempt 3.
pub async fn retries_then_success(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(FLAKY).await;
    let script = env.script(
        "flaky.sh",
        r#"cat > /dev/null
echo "attempt $WEFT_ATTEMPT of $WEFT_STEP" >&2
if [ "$WEFT_ATTEMPT" -lt 3 ]; then
  echo "failing on purpose (attempt $WEFT_ATTEMPT)" >&2
  exit 1
fi
echo "{\"attempt\": $WEFT_ATTEMPT, \"by\": \"exec\"}""#,
    );
    let handlers = env.handlers_file("handlers.toml", &[("flaky.exec", &script)]);
    let _exec = env.exec_worker(&handlers, "exec-1");
    let sdk = SdkWorker::spawn(
        env.sdk_worker("sdk-1")
            .handler("flaky.sdk", |ctx: TaskContext| async move {
                let attempt = ctx.task.attempt;
                ctx.log(vec![format!("sdk attempt {attempt}")]).await;
                if attempt < 3 {
                    return Err(HandlerError::retryable(format!(
                        "sdk failing on purpose (attempt {attempt})"
                    )));
                }
                Ok(json!({"attempt": attempt, "by": "sdk"}))
            })
            .build(),
    );

    let run_id = env.start_run("flaky", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    sdk.stop().await;
    assert_eq!(run.status, "completed", "run: {run:#?}");
    for (name, by) in [("exec_flaky", "exec"), ("sdk_flaky", "sdk")] {
        let s = step(&run, name);
        assert_eq!(s.status, "completed");
        assert_eq!(s.output, Some(json!({"attempt": 3, "by": by})));
        let numbers: Vec<i64> = s.attempts.iter().map(|a| a.attempt).collect();
        assert_eq!(numbers, [1, 2, 3], "{name}");
        let statuses: Vec<&str> = s.attempts.iter().map(|a| a.status.as_str()).collect();
        assert_eq!(statuses, ["failed", "failed", "completed"], "{name}");
        let reasons: Vec<Option<&str>> = s.attempts.iter().map(|a| a.reason.as_deref()).collect();
        assert_eq!(
            reasons,
            [Some("handler_error"), Some("handler_error"), None],
            "{name}"
        );
        for (i, attempt) in s.attempts[..2].iter().enumerate() {
            let error = attempt.error.as_deref().unwrap_or_default();
            assert!(
                error.contains(&format!("failing on purpose (attempt {})", i + 1)),
                "{name} attempt {}: {error}",
                i + 1
            );
        }
        // The backoff (100 ms, no jitter) separates each failure from the next claim.
        for pair in s.attempts.windows(2) {
            let gap =
                ms(&pair[1].claimed_at) - ms(pair[0].finished_at.as_deref().expect("finished_at"));
            assert!(
                gap >= 95,
                "{name}: attempt {} claimed {gap} ms after the previous failure",
                pair[1].attempt
            );
        }
    }

    // The history tells the same story, in order.
    let events = env
        .client
        .run_events(&run_id, None)
        .await
        .expect("events")
        .events;
    for name in ["exec_flaky", "sdk_flaky"] {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| {
                e.step.as_deref() == Some(name)
                    && (e.kind.starts_with("attempt.") || e.kind == "step.retrying")
            })
            .map(|e| e.kind.as_str())
            .collect();
        assert_eq!(
            kinds,
            [
                "attempt.claimed",
                "attempt.failed",
                "step.retrying",
                "attempt.claimed",
                "attempt.failed",
                "step.retrying",
                "attempt.claimed",
                "attempt.completed"
            ],
            "{name}"
        );
    }
    assert_eq!(
        events.last().map(|e| e.kind.as_str()),
        Some("run.completed")
    );
    assert!(
        events.windows(2).all(|w| w[0].seq < w[1].seq),
        "events come in seq order"
    );

    // stderr of the exec handler (and SDK log lines) are the steps' logs, per attempt.
    let logs = env
        .client
        .run_logs(&run_id, Some("exec_flaky"))
        .await
        .expect("logs")
        .lines;
    for attempt in 1..=3 {
        assert!(
            logs.iter()
                .any(|l| l.attempt == attempt
                    && l.line == format!("attempt {attempt} of exec_flaky")),
            "attempt {attempt} log line missing: {logs:#?}"
        );
    }
    for attempt in 1..=2 {
        assert!(
            logs.iter().any(|l| l.attempt == attempt
                && l.line == format!("failing on purpose (attempt {attempt})"))
        );
    }
    assert!(
        logs.iter().all(|l| l.step == "exec_flaky"),
        "the step filter holds: {logs:#?}"
    );
    let sdk_logs = env
        .client
        .run_logs(&run_id, Some("sdk_flaky"))
        .await
        .expect("logs")
        .lines;
    let sdk_lines: Vec<(i64, &str)> = sdk_logs
        .iter()
        .map(|l| (l.attempt, l.line.as_str()))
        .collect();
    assert_eq!(
        sdk_lines,
        [
            (1, "sdk attempt 1"),
            (2, "sdk attempt 2"),
            (3, "sdk attempt 3")
        ]
    );
}

/// A handler that outlives its 500 ms timeout is killed, twice, and the run fails with `timeout`.
pub async fn timeout_kills_the_handler(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(
        "\
name: slow
steps:
  - name: nap
    handler: slow.sleep
    timeout: 500ms
    retry: { max_attempts: 2, initial: 100ms, max: 100ms, jitter: false }
",
    )
    .await;
    let pids = env.path("pids.txt");
    let script = env.script(
        "slow.sh",
        &format!(
            r#"cat > /dev/null
sleep 10 &
echo "$$ $!" >> {pids}
echo "attempt $WEFT_ATTEMPT sleeping" >&2
wait
echo '{{}}'"#,
            pids = pids.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("slow.sleep", &script)]);
    let _worker = env.exec_worker(&handlers, "exec-1");

    let run_id = env.start_run("slow", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "failed", "run: {run:#?}");
    assert_eq!(run.reason.as_deref(), Some("timeout"));
    let nap = step(&run, "nap");
    assert_eq!(nap.status, "failed");
    assert_eq!(nap.reason.as_deref(), Some("timeout"));
    assert_eq!(nap.attempts.len(), 2);
    for attempt in &nap.attempts {
        assert_eq!(attempt.status, "failed");
        assert_eq!(
            attempt.reason.as_deref(),
            Some("timeout"),
            "attempt {}",
            attempt.attempt
        );
        // Ended near the 500 ms deadline, not after the 10 s sleep.
        let took =
            ms(attempt.finished_at.as_deref().expect("finished_at")) - ms(&attempt.claimed_at);
        assert!(
            (400..5_000).contains(&took),
            "attempt {} took {took} ms",
            attempt.attempt
        );
    }

    // Both attempts' shell and `sleep` processes are gone: the group was killed.
    let text = wait_until("both attempts to record their pids", PATIENCE, || {
        let pids = pids.clone();
        async move {
            let text = std::fs::read_to_string(&pids).unwrap_or_default();
            (text.lines().count() == 2).then_some(text)
        }
    })
    .await;
    let all: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(all.len(), 4);
    wait_until("the handlers' processes to be killed", PATIENCE, || {
        let all = all.clone();
        async move { all.iter().all(|&pid| !process_alive(pid)).then_some(()) }
    })
    .await;
}

/// kill -9 of a worker mid-step: its lease expires and another worker finishes the step.
pub async fn worker_killed_mid_step(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(
        "\
name: crashy
steps:
  - name: work
    handler: crashy.work
    retry: { max_attempts: 3, initial: 100ms, max: 100ms, jitter: false }
",
    )
    .await;
    let pid_file = env.path("attempt1.pid");
    let script = env.script(
        "work.sh",
        &format!(
            r#"cat > /dev/null
if [ "$WEFT_ATTEMPT" = 1 ]; then
  echo $$ > {pid_file}
  sleep 3
fi
echo "{{\"attempt\": $WEFT_ATTEMPT}}""#,
            pid_file = pid_file.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("crashy.work", &script)]);
    let mut first = env.exec_worker(&handlers, "worker-1");

    let run_id = env.start_run("crashy", json!({})).await;
    env.wait_run(&run_id, "step `work` running", PATIENCE, |run| {
        let s = step(run, "work");
        s.status == "running" && s.attempts.len() == 1
    })
    .await;
    let handler_pid: i32 = wait_until("the handler to start", PATIENCE, || {
        let pid_file = pid_file.clone();
        async move { std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok() }
    })
    .await;
    first.kill();
    // The orphaned handler would sleep on; it has its own process group.
    kill_group(handler_pid);
    let _second = env.exec_worker(&handlers, "worker-2");

    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "run: {run:#?}");
    let work = step(&run, "work");
    assert_eq!(work.attempts.len(), 2, "attempts: {:#?}", work.attempts);
    let (a1, a2) = (&work.attempts[0], &work.attempts[1]);
    assert_eq!(
        (a1.status.as_str(), a1.reason.as_deref()),
        ("failed", Some("lease_expired"))
    );
    assert_eq!(a1.worker_id, "worker-1");
    assert_eq!(
        (a2.status.as_str(), a2.reason.as_deref()),
        ("completed", None)
    );
    assert_eq!(a2.worker_id, "worker-2");
    assert_ne!(a1.worker_id, a2.worker_id);
    assert_eq!(work.output, Some(json!({"attempt": 2})));
    let events = env
        .client
        .run_events(&run_id, None)
        .await
        .expect("events")
        .events;
    assert!(
        events.iter().any(|e| e.kind == "lease.expired"
            && e.step.as_deref() == Some("work")
            && e.attempt == Some(1)),
        "a lease.expired event for attempt 1: {events:#?}"
    );
}

/// A fake worker that stops heartbeating loses its lease; its late result is
/// rejected with 409 and never overwrites the replacement attempt's result.
pub async fn stale_lease_is_rejected(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(
        "\
name: stale
steps:
  - name: only
    handler: stale.fake
    retry: { max_attempts: 3, initial: 100ms, max: 100ms, jitter: false }
",
    )
    .await;
    let run_id = env.start_run("stale", json!({"k": "v"})).await;
    let poll = |worker_id: &str| PollRequest {
        worker_id: worker_id.to_owned(),
        queues: vec!["default".to_owned()],
        handlers: vec!["stale.fake".to_owned()],
        max_tasks: 1,
        wait_ms: 5000,
        host: None,
        pid: None,
        version: None,
        concurrency: None,
    };

    let first = env.client.poll(&poll("fake-1")).await.expect("poll").tasks;
    assert_eq!(first.len(), 1, "one task claimed");
    let old = &first[0];
    assert_eq!(
        (old.run_id.as_str(), old.step.as_str(), old.attempt),
        (run_id.as_str(), "only", 1)
    );
    assert_eq!(
        old.input,
        json!({"input": {"k": "v"}, "steps": {}, "upstream": {}})
    );
    assert_eq!(old.lease_ms, 1000, "the server's --lease-timeout");

    // No heartbeat: the lease lapses and the reaper fails the attempt.
    env.wait_run(
        &run_id,
        "attempt 1 to fail with lease_expired",
        PATIENCE,
        |run| {
            step(run, "only").attempts.first().is_some_and(|a| {
                a.status == "failed" && a.reason.as_deref() == Some("lease_expired")
            })
        },
    )
    .await;
    let late = CompleteRequest {
        output: json!({"from": 1}),
        timing: None,
    };
    let err = env
        .client
        .complete(&old.lease_id, &late)
        .await
        .expect_err("a stale lease is rejected");
    assert_eq!(
        (err.status(), err.code()),
        (Some(409), Some("stale_lease")),
        "{err}"
    );
    let err = env
        .client
        .heartbeat(&old.lease_id)
        .await
        .expect_err("a stale lease cannot be renewed");
    assert_eq!(err.status(), Some(409));

    let second = env.client.poll(&poll("fake-2")).await.expect("poll").tasks;
    assert_eq!(second.len(), 1, "the step is offered again");
    let new = &second[0];
    assert_eq!(new.attempt, 2);
    assert_ne!(new.lease_id, old.lease_id);
    // Still rejected while the replacement attempt is out.
    let err = env
        .client
        .complete(&old.lease_id, &late)
        .await
        .expect_err("a stale lease is rejected");
    assert_eq!(
        (err.status(), err.code()),
        (Some(409), Some("stale_lease")),
        "{err}"
    );
    let run = env.client.get_run(&run_id).await.expect("get run");
    assert_eq!(
        step(&run, "only").status,
        "running",
        "the stale result changed nothing"
    );

    env.client
        .complete(
            &new.lease_id,
            &CompleteRequest {
                output: json!({"from": 2}),
                timing: None,
            },
        )
        .await
        .expect("the current lease completes");
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed");
    let only = step(&run, "only");
    assert_eq!(
        only.output,
        Some(json!({"from": 2})),
        "the result of the current lease wins"
    );
    let summary: Vec<(i64, &str, Option<&str>, &str)> = only
        .attempts
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.status.as_str(),
                a.reason.as_deref(),
                a.worker_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "failed", Some("lease_expired"), "fake-1"),
            (2, "completed", None, "fake-2")
        ]
    );
    // And after the run ended, the old lease still cannot write.
    let err = env
        .client
        .complete(&old.lease_id, &late)
        .await
        .expect_err("a stale lease is rejected");
    assert_eq!(err.status(), Some(409));
    assert_eq!(
        env.client.get_run(&run_id).await.expect("get run").steps[0].output,
        Some(json!({"from": 2}))
    );
}

/// Cancelling a run stops its running SDK handler.
pub async fn cancel_reaches_the_handler(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(
        "\
name: long
steps:
  - name: wait
    handler: long.wait
  - name: after
    handler: long.wait
    depends_on: [wait]
",
    )
    .await;
    let started = Arc::new(AtomicBool::new(false));
    let observed = Arc::new(AtomicBool::new(false));
    let (s, o) = (started.clone(), observed.clone());
    let handler = move |ctx: TaskContext| {
        let (started, observed) = (s.clone(), o.clone());
        async move {
            // Watch the token from a task of its own, so the observation
            // survives the worker dropping this future on cancellation.
            let token = ctx.cancellation().clone();
            tokio::spawn(async move {
                token.cancelled().await;
                observed.store(true, Ordering::SeqCst);
            });
            started.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<Value, HandlerError>(json!({"slept": true}))
        }
    };
    let worker = SdkWorker::spawn(
        env.sdk_worker("sdk-1")
            .handler("long.wait", handler)
            .build(),
    );

    let run_id = env.start_run("long", json!({})).await;
    env.wait_run(&run_id, "step `wait` running", PATIENCE, |run| {
        step(run, "wait").status == "running"
    })
    .await;
    wait_until("the handler to start", PATIENCE, || {
        let started = started.clone();
        async move { started.load(Ordering::SeqCst).then_some(()) }
    })
    .await;
    assert!(
        !observed.load(Ordering::SeqCst),
        "not cancelled before the request"
    );

    let summary = env
        .client
        .cancel_run(&run_id)
        .await
        .expect("cancel the run");
    assert_eq!(summary.status, "cancelled");
    wait_until("the handler to observe the cancellation", PATIENCE, || {
        let observed = observed.clone();
        async move { observed.load(Ordering::SeqCst).then_some(()) }
    })
    .await;

    let run = env.client.get_run(&run_id).await.expect("get run");
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("cancelled", Some("cancelled"))
    );
    assert!(run.finished_at.is_some());
    let wait = step(&run, "wait");
    assert_eq!(wait.status, "cancelled");
    assert_eq!(wait.attempts.len(), 1);
    assert_eq!(wait.attempts[0].status, "cancelled");
    let after = step(&run, "after");
    assert_eq!(after.status, "cancelled");
    assert!(after.attempts.is_empty(), "the dependant never ran");
    // A second cancel is refused and changes nothing.
    let err = env
        .client
        .cancel_run(&run_id)
        .await
        .expect_err("an ended run cannot be cancelled again");
    assert_eq!(err.status(), Some(409), "{err}");
    worker.stop().await;
    assert_eq!(
        env.client.get_run(&run_id).await.expect("get run").status,
        "cancelled"
    );
}
