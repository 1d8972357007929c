//! The HTTP API's contract at its edges: idempotent starts, and bad input
//! (invalid manifests, unknown workflows, malformed or oversized bodies)
//! answered with a stable error code and changing nothing; every response
//! carries an `x-request-id`.

use serde_json::{Value, json};
use weft_api::StartRunRequest;

use crate::harness::Env;

const SIMPLE: &str = "\
name: simple
steps:
  - name: only
    handler: simple.h
";

pub async fn idempotent_start(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(SIMPLE).await;
    let start = |key: &str, input: Value| StartRunRequest {
        input,
        idempotency_key: Some(key.to_owned()),
        ..Default::default()
    };

    let first = env
        .client
        .start_run("simple", &start("order-1", json!({"n": 1})))
        .await
        .expect("start");
    assert!(first.created);
    let again = env
        .client
        .start_run("simple", &start("order-1", json!({"n": 1})))
        .await
        .expect("start again");
    assert!(
        !again.created,
        "the second start with the same key creates nothing"
    );
    assert_eq!(again.run_id, first.run_id);
    assert_eq!(again.trace_id, first.trace_id);
    let other = env
        .client
        .start_run("simple", &start("order-2", json!({"n": 1})))
        .await
        .expect("start another");
    assert!(other.created);
    assert_ne!(other.run_id, first.run_id);
    assert_ne!(other.trace_id, first.trace_id);

    let runs = env
        .client
        .list_runs(&[("workflow", "simple".to_owned())])
        .await
        .expect("list runs")
        .runs;
    let mut ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    ids.sort();
    let mut expected = vec![first.run_id.as_str(), other.run_id.as_str()];
    expected.sort();
    assert_eq!(ids, expected, "exactly two runs exist");
    let run = env.client.get_run(&first.run_id).await.expect("get run");
    assert_eq!(run.input, json!({"n": 1}));
}

/// Status, headers and JSON body of a raw response.
struct Raw {
    status: u16,
    request_id: Option<String>,
    body: Value,
}

impl Raw {
    fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.body))
    }

    fn message(&self) -> &str {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.body))
    }
}

async fn raw(
    env: &Env,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    request_id: Option<&str>,
) -> Raw {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = env
        .http
        .request(method, format!("{}{path}", env.server.url))
        .header("content-type", content_type)
        .body(body);
    let supplied = request_id;
    if let Some(id) = supplied {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().expect("ASCII header").to_owned());
    // Every response carries one: the client's own, or a generated one.
    match supplied {
        Some(id) => assert_eq!(
            request_id.as_deref(),
            Some(id),
            "{path}: x-request-id echoed"
        ),
        None => assert!(
            request_id.as_deref().is_some_and(|id| !id.is_empty()),
            "{path}: a generated x-request-id (HTTP {status})"
        ),
    }
    let bytes = response.bytes().await.expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|err| {
        panic!(
            "body is not JSON ({err}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Raw {
        status,
        request_id,
        body,
    }
}

/// The manifest cases: (what, workflow in the URL, manifest, code, text the message must contain).
const BAD_MANIFESTS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "cycle",
        "simple",
        "name: simple\nsteps:\n  - {name: a, handler: h, depends_on: [c]}\n  - {name: b, handler: h, depends_on: [a]}\n  - {name: c, handler: h, depends_on: [b]}\n",
        "cycle",
        "depends_on",
    ),
    (
        "unknown dependency",
        "simple",
        "name: simple\nsteps:\n  - {name: a, handler: h}\n  - {name: b, handler: h, depends_on: [ghost]}\n",
        "unknown_dependency",
        "steps[b].depends_on",
    ),
    (
        "duplicate step",
        "simple",
        "name: simple\nsteps:\n  - {name: a, handler: h}\n  - {name: a, handler: h2}\n",
        "duplicate_step",
        "steps[a]",
    ),
    (
        "bad duration",
        "simple",
        "name: simple\nsteps:\n  - {name: a, handler: h, timeout: 5 parsecs}\n",
        "invalid_duration",
        "steps[a].timeout",
    ),
    (
        "CEL that does not compile",
        "simple",
        "name: simple\nsteps:\n  - {name: a, handler: h, when: \"input.total > \"}\n",
        "invalid_when",
        "steps[a].when",
    ),
    (
        "unknown step field",
        "simple",
        "name: simple\nsteps:\n  - {name: a, handler: h, retries: 3}\n",
        "unknown_field",
        "steps[a].retries",
    ),
    (
        "unknown top-level field",
        "simple",
        "name: simple\nowner: me\nsteps:\n  - {name: a, handler: h}\n",
        "unknown_field",
        "owner",
    ),
    (
        "malformed YAML",
        "simple",
        "name: simple\nsteps: [ {name: a, handler: h\n",
        "invalid_manifest",
        "YAML",
    ),
    (
        "malformed JSON",
        "simple",
        "{\"name\": \"simple\", \"steps\": [",
        "invalid_manifest",
        "JSON",
    ),
    (
        "name mismatch",
        "other",
        "name: simple\nsteps:\n  - {name: a, handler: changed}\n",
        "name_mismatch",
        "other",
    ),
];

pub async fn bad_input_is_rejected_and_changes_nothing(db_url: String) {
    let env = Env::start_with(&db_url, &["--max-body-bytes", "1000"]).await;
    env.register(SIMPLE).await;
    let workflows_before =
        serde_json::to_value(env.client.list_workflows().await.expect("list workflows")).unwrap();

    for (what, url_name, manifest, code, mentions) in BAD_MANIFESTS {
        let response = raw(
            &env,
            "PUT",
            &format!("/v1/workflows/{url_name}"),
            "application/yaml",
            manifest.as_bytes().to_vec(),
            None,
        )
        .await;
        assert_eq!(response.status, 400, "{what}: {}", response.body);
        assert_eq!(response.code(), *code, "{what}: {}", response.body);
        assert!(
            response.message().contains(mentions),
            "{what}: message `{}` should mention `{mentions}`",
            response.message()
        );
        assert!(
            response
                .request_id
                .as_deref()
                .is_some_and(|id| !id.is_empty()),
            "{what}: no x-request-id"
        );
    }
    // The typed client sees the same errors.
    let err = env
        .client
        .put_workflow("simple", BAD_MANIFESTS[0].2)
        .await
        .expect_err("a cycle is rejected");
    assert_eq!((err.status(), err.code()), (Some(400), Some("cycle")));

    // Starting a run of an unknown workflow.
    let response = raw(
        &env,
        "POST",
        "/v1/workflows/nope/runs",
        "application/json",
        b"{\"input\": {}}".to_vec(),
        None,
    )
    .await;
    assert_eq!(
        (response.status, response.code()),
        (404, "workflow_not_found"),
        "{}",
        response.body
    );
    let err = env
        .client
        .start_run("nope", &StartRunRequest::default())
        .await
        .expect_err("unknown workflow");
    assert_eq!(
        (err.status(), err.code()),
        (Some(404), Some("workflow_not_found"))
    );

    // Malformed JSON, and JSON of the wrong shape.
    for body in [
        &b"{\"input\": "[..],
        b"[1, 2, 3]",
        b"{\"input\": {}, \"idempotency_key\": 5}",
    ] {
        let response = raw(
            &env,
            "POST",
            "/v1/workflows/simple/runs",
            "application/json",
            body.to_vec(),
            None,
        )
        .await;
        assert_eq!(
            (response.status, response.code()),
            (400, "invalid_json"),
            "{}: {}",
            String::from_utf8_lossy(body),
            response.body
        );
    }

    // Bodies over --max-body-bytes 1000.
    let padding = "x".repeat(5000);
    let big_start = serde_json::to_vec(&json!({"input": {"pad": padding}})).unwrap();
    assert!(big_start.len() > 5000);
    let response = raw(
        &env,
        "POST",
        "/v1/workflows/simple/runs",
        "application/json",
        big_start,
        None,
    )
    .await;
    assert_eq!(
        (response.status, response.code()),
        (413, "payload_too_large"),
        "{}",
        response.body
    );
    let big_manifest = format!("{SIMPLE}description: \"{padding}\"\n").into_bytes();
    let response = raw(
        &env,
        "PUT",
        "/v1/workflows/simple",
        "application/yaml",
        big_manifest,
        None,
    )
    .await;
    assert_eq!(
        (response.status, response.code()),
        (413, "payload_too_large"),
        "{}",
        response.body
    );

    // Request ids: generated when absent, echoed when supplied, on errors and successes alike.
    let response = raw(
        &env,
        "POST",
        "/v1/workflows/simple/runs",
        "application/json",
        b"not json".to_vec(),
        Some("e2e-req-42"),
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.request_id.as_deref(), Some("e2e-req-42"));
    let ok = env
        .http
        .get(format!("{}/v1/workflows", env.server.url))
        .header("x-request-id", "e2e-req-43")
        .send()
        .await
        .expect("GET");
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(
        ok.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("e2e-req-43")
    );
    let generated = env
        .http
        .get(format!("{}/v1/runs", env.server.url))
        .send()
        .await
        .expect("GET");
    assert!(
        generated
            .headers()
            .get("x-request-id")
            .is_some_and(|v| !v.is_empty()),
        "a generated x-request-id"
    );
    let missing = raw(
        &env,
        "GET",
        "/v1/runs/does-not-exist",
        "application/json",
        Vec::new(),
        Some("e2e-req-44"),
    )
    .await;
    assert_eq!((missing.status, missing.code()), (404, "run_not_found"));
    assert_eq!(missing.request_id.as_deref(), Some("e2e-req-44"));
    let no_route = raw(
        &env,
        "GET",
        "/v1/nowhere",
        "application/json",
        Vec::new(),
        None,
    )
    .await;
    assert_eq!(no_route.status, 404, "{}", no_route.body);
    let ready = raw(
        &env,
        "GET",
        "/health/ready",
        "application/json",
        Vec::new(),
        Some("e2e-req-45"),
    )
    .await;
    assert_eq!(
        (ready.status, &ready.body["status"]),
        (200, &json!("ready"))
    );

    // Nothing changed: same workflows, one version, no runs.
    let workflows_after =
        serde_json::to_value(env.client.list_workflows().await.expect("list workflows")).unwrap();
    assert_eq!(workflows_after, workflows_before);
    let detail = env
        .client
        .get_workflow("simple")
        .await
        .expect("get workflow");
    assert_eq!(detail.versions, [1]);
    let err = env
        .client
        .get_workflow("other")
        .await
        .expect_err("no workflow `other`");
    assert_eq!(err.status(), Some(404));
    let runs = env.client.list_runs(&[]).await.expect("list runs").runs;
    assert!(runs.is_empty(), "no run was created: {runs:#?}");
}

/// The batch endpoints: starts in one request, results in one request, each
/// answered like its single call; a bad batch is refused whole.
pub async fn batch_endpoints(db_url: String) {
    use weft_api::{PollRequest, ResultsRequest, StartRunsRequest, TaskError, TaskResult};
    let env = Env::start(&db_url).await;
    env.register(SIMPLE).await;
    let runs: Vec<StartRunRequest> = (0..3)
        .map(|i| StartRunRequest {
            input: json!({"i": i}),
            idempotency_key: (i == 2).then(|| "batch-key".to_owned()),
            ..Default::default()
        })
        .collect();
    let started = env
        .client
        .start_runs("simple", &StartRunsRequest { runs: runs.clone() })
        .await
        .expect("batch start")
        .runs;
    assert_eq!(started.len(), 3);
    assert!(started.iter().all(|s| s.created));
    // The same key again finds its run.
    let again = env
        .client
        .start_runs(
            "simple",
            &StartRunsRequest {
                runs: runs[2..].to_vec(),
            },
        )
        .await
        .expect("batch start again")
        .runs;
    assert!(!again[0].created);
    assert_eq!(again[0].run_id, started[2].run_id);

    // Refused whole: unknown workflow, empty batch, a bad key; nothing started.
    for (path, body, status, code) in [
        (
            "/v1/workflows/nope/runs/batch",
            json!({"runs": [{}]}),
            404,
            "workflow_not_found",
        ),
        (
            "/v1/workflows/simple/runs/batch",
            json!({"runs": []}),
            400,
            "invalid_batch",
        ),
        (
            "/v1/workflows/simple/runs/batch",
            json!({"runs": [{"input": 1}, {"idempotency_key": ""}]}),
            400,
            "invalid_idempotency_key",
        ),
        (
            "/v1/workflows/simple/runs/batch",
            json!({"runs": 5}),
            400,
            "invalid_json",
        ),
    ] {
        let response = raw(
            &env,
            "POST",
            path,
            "application/json",
            body.to_string().into_bytes(),
            None,
        )
        .await;
        assert_eq!(
            (response.status, response.code()),
            (status, code),
            "{path} {body}: {}",
            response.body
        );
    }
    let listed = env
        .client
        .list_runs(&[("workflow", "simple".to_owned())])
        .await
        .expect("list")
        .runs;
    assert_eq!(listed.len(), 3, "refused batches started nothing");

    // Results: two completions, one failure, one unknown lease, one answer each.
    let tasks = env
        .client
        .poll(&PollRequest {
            worker_id: "batch-worker".into(),
            queues: vec!["default".into()],
            handlers: vec!["simple.h".into()],
            max_tasks: 10,
            wait_ms: 0,
            host: None,
            pid: None,
            version: None,
            concurrency: None,
        })
        .await
        .expect("poll")
        .tasks;
    assert_eq!(tasks.len(), 3);
    let mut results: Vec<TaskResult> = tasks
        .iter()
        .map(|t| TaskResult {
            lease_id: t.lease_id.clone(),
            output: json!({"done": t.run_id}),
            error: None,
            timing: None,
        })
        .collect();
    results[2].error = Some(TaskError {
        message: "no".into(),
        kind: None,
        retryable: Some(false),
    });
    results.push(TaskResult {
        lease_id: "not-a-lease".into(),
        output: Value::Null,
        error: None,
        timing: None,
    });
    // A reason a worker may not report refuses the whole batch.
    let mut bad = results.clone();
    bad[0].error = Some(TaskError {
        message: "x".into(),
        kind: Some("lease_expired".into()),
        retryable: None,
    });
    let err = env
        .client
        .results(&ResultsRequest { results: bad })
        .await
        .expect_err("a bad entry refuses the batch");
    assert_eq!(
        (err.status(), err.code()),
        (Some(400), Some("invalid_error_kind"))
    );
    let answers = env
        .client
        .results(&ResultsRequest { results })
        .await
        .expect("results")
        .results;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 409]);
    assert_eq!(
        answers[3].error.as_ref().map(|e| e.code.as_str()),
        Some("stale_lease")
    );
    let ended: Vec<String> = {
        let mut v = Vec::new();
        for task in &tasks {
            v.push(env.client.get_run(&task.run_id).await.expect("run").status);
        }
        v
    };
    assert_eq!(ended, vec!["completed", "completed", "failed"]);

    // Waiting for an ended run answers at once; a wait too long is refused.
    let run = env
        .client
        .wait_run(&tasks[0].run_id, std::time::Duration::from_secs(30))
        .await
        .expect("wait");
    assert_eq!(run.status, "completed");
    let path = format!("/v1/runs/{}?wait_ms=600000", tasks[0].run_id);
    let response = raw(&env, "GET", &path, "application/json", Vec::new(), None).await;
    assert_eq!(
        (response.status, response.code()),
        (400, "invalid_wait"),
        "{}",
        response.body
    );
}
