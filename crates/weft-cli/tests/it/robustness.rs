//! End-to-end checks of the worker protocol and starts under faults and
//! hostile input, over real HTTP: a result sent again after a lost answer,
//! a lease released by a worker shutting down, an output over the limit,
//! strings with NUL and control characters, idempotency keys reused with
//! another input, and the runs counters after a retry.

use serde_json::{Value, json};
use weft_api::{
    CompleteRequest, FailRequest, PollRequest, ReleaseRequest, ResultsRequest, StartRunRequest,
    StartRunsRequest, Task, TaskError, TaskResult,
};

use crate::harness::*;

const ONE: &str = "\
name: one
steps:
  - name: only
    handler: h.fake
    retry: { max_attempts: 1 }
";

fn poll_request(worker_id: &str) -> PollRequest {
    PollRequest {
        worker_id: worker_id.to_owned(),
        queues: vec!["default".to_owned()],
        handlers: vec!["h.fake".to_owned()],
        max_tasks: 1,
        wait_ms: 5000,
        host: None,
        pid: None,
        version: None,
        concurrency: None,
    }
}

async fn claim_one(env: &Env) -> Task {
    let mut tasks = env
        .client
        .poll(&poll_request("fake-worker"))
        .await
        .expect("poll")
        .tasks;
    assert_eq!(tasks.len(), 1, "one task claimed");
    tasks.pop().unwrap()
}

fn complete(output: Value) -> CompleteRequest {
    CompleteRequest {
        output,
        timing: None,
    }
}

fn fail(message: &str) -> FailRequest {
    FailRequest {
        error: TaskError {
            message: message.to_owned(),
            kind: None,
            retryable: Some(false),
        },
        timing: None,
    }
}

fn api_error(err: weft_client::Error) -> (u16, String) {
    match err {
        weft_client::Error::Api { status, code, .. } => (status, code),
        other => panic!("expected an API error, got {other}"),
    }
}

/// POSTs raw JSON; returns the status and the JSON body.
async fn post(env: &Env, path: &str, body: &Value) -> (u16, Value) {
    let response = env
        .http
        .post(format!("{}{path}", env.server.url))
        .json(body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// A result re-sent after its answer was lost is answered 200
/// `already_applied`; another outcome for the finished lease is 409. A
/// released lease makes its step ready at once without spending its only
/// attempt.
pub async fn results_sent_again_and_released_leases(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(ONE).await;

    // complete, then the same complete again; then a fail: 409.
    let run_id = env.start_run("one", json!({})).await;
    let task = claim_one(&env).await;
    let ack = env
        .client
        .complete(&task.lease_id, &complete(json!({"n": 1})))
        .await
        .expect("complete");
    assert!(ack.ok && !ack.already_applied);
    let ack = env
        .client
        .complete(&task.lease_id, &complete(json!({"n": 1})))
        .await
        .expect("complete sent again");
    assert!(
        ack.ok && ack.already_applied,
        "200 already_applied: {ack:?}"
    );
    let err = env
        .client
        .fail(&task.lease_id, &fail("boom"))
        .await
        .expect_err("a different outcome");
    assert_eq!(api_error(err), (409, "stale_lease".to_owned()));
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed");
    assert_eq!(step(&run, "only").attempts.len(), 1);

    // fail sent again, one by one and in a batch.
    let run_id = env.start_run("one", json!({})).await;
    let task = claim_one(&env).await;
    let ack = env
        .client
        .fail(&task.lease_id, &fail("boom"))
        .await
        .expect("fail");
    assert!(!ack.already_applied);
    let ack = env
        .client
        .fail(&task.lease_id, &fail("boom"))
        .await
        .expect("fail sent again");
    assert!(ack.already_applied);
    let answers = env
        .client
        .results(&ResultsRequest {
            results: vec![
                TaskResult {
                    lease_id: task.lease_id.clone(),
                    output: Value::Null,
                    error: Some(fail("boom").error),
                    timing: None,
                },
                TaskResult {
                    lease_id: task.lease_id.clone(),
                    output: json!(1),
                    error: None,
                    timing: None,
                },
            ],
        })
        .await
        .expect("results")
        .results;
    assert_eq!(
        answers
            .iter()
            .map(|a| (a.status, a.already_applied))
            .collect::<Vec<_>>(),
        vec![(200, true), (409, false)]
    );
    assert_eq!(env.wait_finished(&run_id).await.status, "failed");

    // Release: the only attempt is not spent, the step runs again at once.
    let run_id = env.start_run("one", json!({})).await;
    let task = claim_one(&env).await;
    let ack = env
        .client
        .release(
            &task.lease_id,
            &ReleaseRequest {
                message: Some("worker shutting down".into()),
            },
        )
        .await
        .expect("release");
    assert!(ack.ok);
    let err = env
        .client
        .complete(&task.lease_id, &complete(json!(1)))
        .await
        .expect_err("the released lease is gone");
    assert_eq!(api_error(err).0, 409);
    let again = claim_one(&env).await;
    assert_eq!((again.run_id.as_str(), again.attempt), (run_id.as_str(), 2));
    env.client
        .complete(&again.lease_id, &complete(json!("done")))
        .await
        .expect("complete");
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed");
    let attempts: Vec<_> = step(&run, "only")
        .attempts
        .iter()
        .map(|a| (a.attempt, a.status.clone(), a.reason.clone()))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (1, "released".to_owned(), Some("worker_shutdown".to_owned())),
            (2, "completed".to_owned(), None),
        ]
    );
    let events = env.client.run_events(&run_id, None).await.expect("events");
    assert!(
        events.events.iter().any(|e| e.kind == "attempt.released"
            && e.attempt == Some(1)
            && e.data["error"] == "worker shutting down"),
        "{:?}",
        events.events
    );
    // The release endpoint is in the OpenAPI document.
    let doc: Value = env
        .http
        .get(format!("{}/openapi.json", env.server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/worker/leases/{lease_id}/release"]["post"].is_object());
}

/// Every task carries `max_output_bytes`; an output over it fails the step
/// at once (`invalid_output`, answered 200, not retried); a body over the
/// server's limit is a JSON 413 `payload_too_large`.
pub async fn output_over_the_limit_fails_at_once(db_url: String) {
    let env = Env::start_with(&db_url, &["--max-body-bytes", "200000"]).await;
    env.register(
        "\
name: big
steps:
  - name: only
    handler: h.fake
    retry: { max_attempts: 3, initial: 10ms, jitter: false }
",
    )
    .await;
    let run_id = env.start_run("big", json!({})).await;
    let task = claim_one(&env).await;
    let limit = task.max_output_bytes;
    assert_eq!(limit, 200_000 - 64 * 1024, "body limit minus the envelope");
    let output = json!({"pad": "x".repeat(limit as usize)});
    let ack = env
        .client
        .complete(&task.lease_id, &complete(output.clone()))
        .await
        .expect("an oversized output is answered 200");
    assert!(ack.ok);
    let run = env.wait_finished(&run_id).await;
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("failed", Some("invalid_output")),
        "failed at once, not retried"
    );
    let only = step(&run, "only");
    assert_eq!(only.attempts.len(), 1);
    let error = only.attempts[0].error.clone().unwrap_or_default();
    let size = serde_json::to_vec(&output).unwrap().len();
    assert!(
        error.contains(&format!("{size} bytes")) && error.contains(&format!("{limit} bytes")),
        "{error}"
    );
    // Over the body limit: a JSON 413 with its code.
    let run_id = env.start_run("big", json!({})).await;
    let task = claim_one(&env).await;
    let (status, body) = post(
        &env,
        &format!("/v1/worker/leases/{}/complete", task.lease_id),
        &json!({"output": "y".repeat(300_000)}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    env.client
        .complete(&task.lease_id, &complete(json!("small")))
        .await
        .expect("complete");
    assert_eq!(env.wait_finished(&run_id).await.status, "completed");
}

/// NUL and control characters: identifiers are refused with a 400 and a
/// stable code; JSON documents round-trip exactly; a worker's free text is
/// kept with NUL replaced, on both backends.
pub async fn nul_and_control_characters(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(ONE).await;
    let input = json!({"text": "a\u{0}b", "k\u{0}": ["\u{1f}"]});
    let (status, body) = post(
        &env,
        "/v1/workflows/one/runs",
        &json!({"input": input, "idempotency_key": "k\u{0}"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
    let (status, body) = post(
        &env,
        "/v1/workflows/one/runs/batch",
        &json!({"runs": [{"input": 1, "idempotency_key": "a\u{7}b"}]}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
    // Every path parameter is checked once, at the edge, for every route.
    let (status, body) = post(&env, "/v1/workflows/o%00ne/runs", &json!({"input": 1})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_path"))
    );
    for (field, value, code) in [
        ("worker_id", json!("w\u{0}"), "invalid_worker_id"),
        ("handlers", json!(["h.fake\u{0}"]), "invalid_handler"),
        ("queues", json!(["default\n"]), "invalid_queues"),
    ] {
        let mut request = serde_json::to_value(poll_request("w")).unwrap();
        request[field] = value;
        request["wait_ms"] = json!(0);
        let (status, body) = post(&env, "/v1/worker/poll", &request).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{field}"
        );
    }

    let (status, body) = post(&env, "/v1/workflows/one/runs", &json!({"input": input})).await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_str().unwrap().to_owned();
    let task = claim_one(&env).await;
    assert_eq!(task.input["input"], input);
    env.client
        .append_logs(&task.lease_id, vec!["out\u{0}put".to_owned()])
        .await
        .expect("log lines with a NUL");
    env.client
        .fail(&task.lease_id, &fail("exit 100\u{0}: permanent"))
        .await
        .expect("a failure report with a NUL is not lost");
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.input, input, "the input round-trips exactly");
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("failed", Some("handler_error")),
        "the permanent failure is recorded as sent"
    );
    assert_eq!(
        step(&run, "only").attempts[0].error.as_deref(),
        Some("exit 100\u{FFFD}: permanent")
    );
    let logs = env.client.run_logs(&run_id, None).await.expect("logs");
    assert_eq!(logs.lines[0].line, "out\u{FFFD}put");
}

/// The same idempotency key with another input is 409
/// `idempotency_key_reused`; equal canonical JSON finds the same run, also
/// in a batch start, which refuses whole.
pub async fn idempotency_key_bound_to_input(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(ONE).await;
    let start = |input: Value| StartRunRequest {
        input,
        idempotency_key: Some("order-1".to_owned()),
        ..Default::default()
    };
    let first = env
        .client
        .start_run("one", &start(json!({"a": 1, "b": 2})))
        .await
        .expect("start");
    let same = env
        .client
        .start_run("one", &start(json!({"b": 2, "a": 1})))
        .await
        .expect("same input, other key order");
    assert_eq!(
        (same.run_id.as_str(), same.created),
        (first.run_id.as_str(), false)
    );
    let err = env
        .client
        .start_run("one", &start(json!({"a": 1, "b": 3})))
        .await
        .expect_err("another input");
    assert_eq!(api_error(err), (409, "idempotency_key_reused".to_owned()));
    let err = env
        .client
        .start_runs(
            "one",
            &StartRunsRequest {
                runs: vec![
                    StartRunRequest {
                        input: json!(1),
                        idempotency_key: Some("fresh".to_owned()),
                        ..Default::default()
                    },
                    start(json!("other")),
                ],
            },
        )
        .await
        .expect_err("a batch with a reused key");
    assert_eq!(api_error(err), (409, "idempotency_key_reused".to_owned()));
    let runs = env
        .client
        .list_runs(&[("workflow", "one".to_owned())])
        .await
        .expect("list")
        .runs;
    assert_eq!(runs.len(), 1, "the refused batch started nothing");
}

/// After `weft retry`, started + retried − finished = active on /metrics.
pub async fn retried_runs_are_counted(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(ONE).await;
    let run_id = env.start_run("one", json!({})).await;
    let task = claim_one(&env).await;
    env.client
        .fail(&task.lease_id, &fail("boom"))
        .await
        .expect("fail");
    assert_eq!(env.wait_finished(&run_id).await.status, "failed");
    env.client.retry_run(&run_id).await.expect("retry");
    let task = claim_one(&env).await;
    env.client
        .complete(&task.lease_id, &complete(json!(1)))
        .await
        .expect("complete");
    assert_eq!(env.wait_finished(&run_id).await.status, "completed");
    let text = env
        .http
        .get(format!("{}/metrics", env.server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |needle: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(needle))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let started = value("weft_runs_started_total{workflow=\"one\"}");
    let retried = value("weft_runs_retried_total{workflow=\"one\"}");
    let finished = value("weft_runs_finished_total{workflow=\"one\"");
    assert_eq!((started, retried, finished), (1.0, 1.0, 2.0), "{text}");
    assert_eq!(started + retried - finished, 0.0, "no run active");
}

/// A failure's log lines carry its error text, with the run input's secret
/// values masked, and the `step.ready` of the next attempt names it.
pub async fn failure_logs_carry_the_masked_error(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(
        "\
name: masked
steps:
  - name: only
    handler: h.fake
    retry: { max_attempts: 2, initial: 10ms, jitter: false }
",
    )
    .await;
    let run_id = env
        .start_run(
            "masked",
            json!({"user": "ada", "db": {"password": "hunter2-secret"}}),
        )
        .await;
    let mut failure = fail("login ada:hunter2-secret refused");
    failure.error.retryable = Some(true);
    let task = claim_one(&env).await;
    env.client
        .fail(&task.lease_id, &failure)
        .await
        .expect("fail");
    let task = claim_one(&env).await;
    assert_eq!(task.attempt, 2);
    env.client
        .fail(&task.lease_id, &fail("still hunter2-secret"))
        .await
        .expect("fail");
    assert_eq!(env.wait_finished(&run_id).await.status, "failed");
    let events = env.client.run_events(&run_id, None).await.expect("events");
    let ready: Vec<_> = events
        .events
        .iter()
        .filter(|e| e.kind == "step.ready")
        .map(|e| e.attempt)
        .collect();
    assert_eq!(ready, vec![Some(1), Some(2)]);
    let log = wait_until("the failure lines in the server log", PATIENCE, || {
        let log = env.server.proc.output();
        async move { log.contains("run failed").then_some(log) }
    })
    .await;
    let line = |message: &str| -> String {
        log.lines()
            .find(|l| l.contains(message) && l.contains(&run_id))
            .unwrap_or_else(|| panic!("no `{message}` line for the run in:\n{log}"))
            .to_owned()
    };
    assert!(
        line("step will retry").contains("login ada:[redacted] refused"),
        "{}",
        line("step will retry")
    );
    assert!(line("step failed").contains("still [redacted]"));
    assert!(line("run failed").contains("still [redacted]"));
    assert!(!log.contains("hunter2-secret"), "a secret reached the log");
}
