//! The HTTP edge under hostile input: read timeouts over raw TCP sockets,
//! every list, size and number of a request held to its documented bound
//! (a 4xx with a stable code before anything reaches SQL), the JSON error
//! shape on every fallback (405, unknown routes, bad JSON and queries),
//! capped request ids, and `/` in workflow names sent as `%2F`.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use weft_api::{PollRequest, StartRunRequest};

use crate::harness::Env;

const SIMPLE: &str = "\
name: simple
steps:
  - name: only
    handler: simple.h
";

/// Status, `Allow`, `x-request-id` and JSON body of a raw answer.
struct Answer {
    status: u16,
    allow: Option<String>,
    request_id: Option<String>,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.body))
    }
}

async fn send(
    env: &Env,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = env
        .http
        .request(method, format!("{}{path}", env.server.url));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ASCII").to_owned())
    };
    let (allow, request_id) = (header("allow"), header("x-request-id"));
    let bytes = response.bytes().await.expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|err| {
        panic!(
            "{path}: HTTP {status} body is not JSON ({err}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Answer {
        status,
        allow,
        request_id,
        body,
    }
}

/// Sends `request` on a fresh connection and reads until the server answers
/// or closes (`None` when it closed without a byte), within `limit`.
fn raw_tcp(port: u16, request: &[u8], limit: Duration) -> (Option<String>, Duration) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(limit)).unwrap();
    stream.write_all(request).expect("send");
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                    break;
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "no answer and no close within {limit:?} (got {:?})",
                    String::from_utf8_lossy(&got)
                )
            }
            Err(_) => break, // reset by the server
        }
    }
    let text = (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned());
    (text, started.elapsed())
}

/// Case 9: a client that never finishes its headers has its connection
/// closed; one that sends less body than its `Content-Length` is answered
/// 408 in JSON. Long polls and `?wait_ms` outlast both timeouts.
pub async fn read_timeouts(db_url: String) {
    let env = Env::start_with(
        &db_url,
        &["--header-read-timeout", "1s", "--body-read-timeout", "1s"],
    )
    .await;
    env.register(SIMPLE).await;
    let port = env.server.port;

    let slow = tokio::task::spawn_blocking(move || {
        let headers = raw_tcp(
            port,
            b"GET /health HTTP/1.1\r\nHost: localhost\r\n",
            Duration::from_secs(20),
        );
        let body = raw_tcp(
            port,
            b"POST /v1/workflows/simple/runs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{}",
            Duration::from_secs(20),
        );
        // A route that never reads its body answers at once.
        let unread = raw_tcp(
            port,
            b"POST /v1/runs/nope/cancel HTTP/1.1\r\nHost: localhost\r\nX-Weft-Client: raw\r\nContent-Length: 100\r\n\r\n{}",
            Duration::from_secs(20),
        );
        (headers, body, unread)
    });
    let ((headers, header_wait), (body, body_wait), (unread, _)) = slow.await.unwrap();
    assert_eq!(
        headers, None,
        "unfinished headers: closed without an answer"
    );
    assert!(
        header_wait < Duration::from_secs(10),
        "closed after {header_wait:?}"
    );
    let body = body.expect("a slow body gets an answer");
    assert!(body.starts_with("HTTP/1.1 408"), "{body}");
    assert!(body.contains("\"request_timeout\""), "{body}");
    assert!(
        body_wait < Duration::from_secs(10),
        "answered after {body_wait:?}"
    );
    let unread = unread.expect("an answer");
    assert!(unread.starts_with("HTTP/1.1 404"), "{unread}");

    // A long poll waits longer than both read timeouts and still answers 200.
    let started = Instant::now();
    let polled = send(
        &env,
        "POST",
        "/v1/worker/poll",
        Some(json!({"worker_id": "w", "handlers": ["nothing.here"], "wait_ms": 2500})),
        &[],
    )
    .await;
    assert_eq!(polled.status, 200, "{}", polled.body);
    assert!(started.elapsed() >= Duration::from_millis(2400));
    // So does a run wait (nobody serves simple.h: the run stays pending).
    let run_id = env.start_run("simple", json!({})).await;
    let started = Instant::now();
    let waited = send(
        &env,
        "GET",
        &format!("/v1/runs/{run_id}?wait_ms=2500"),
        None,
        &[],
    )
    .await;
    assert_eq!(waited.status, 200, "{}", waited.body);
    assert!(started.elapsed() >= Duration::from_millis(2400));
}

/// Case 8: every list, size and number of a request is bounded before it
/// reaches SQL, answered 400 with a stable code.
pub async fn request_bounds(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(SIMPLE).await;
    let long = |n: usize| "x".repeat(n);
    let handlers: Vec<String> = (0..40_000).map(|i| format!("h{i}")).collect();
    let many_lines: Vec<String> = vec![String::new(); 10_001];
    let many_results: Vec<Value> = (0..1001)
        .map(|i| json!({"lease_id": format!("l{i}")}))
        .collect();
    let many_runs: Vec<Value> = vec![json!({}); 501];
    let cases: Vec<(&str, String, Value, &str)> = vec![
        (
            "POST",
            "/v1/worker/poll".into(),
            json!({"worker_id": "w", "handlers": handlers}),
            "too_many_handlers",
        ),
        (
            "POST",
            "/v1/worker/poll".into(),
            json!({"worker_id": "w", "handlers": [long(129)]}),
            "invalid_handler",
        ),
        (
            "POST",
            "/v1/worker/poll".into(),
            json!({"worker_id": "w", "handlers": ["h"], "queues": vec!["q"; 101]}),
            "invalid_queues",
        ),
        (
            "POST",
            "/v1/worker/poll".into(),
            json!({"worker_id": "w", "handlers": ["h"], "queues": []}),
            "invalid_queues",
        ),
        (
            "POST",
            "/v1/worker/poll".into(),
            json!({"worker_id": "w", "handlers": ["h"], "max_tasks": 101}),
            "invalid_max_tasks",
        ),
        (
            "POST",
            "/v1/worker/poll".into(),
            json!({"worker_id": "w", "handlers": ["h"], "wait_ms": 60_001}),
            "invalid_wait",
        ),
        (
            "POST",
            "/v1/worker/poll".into(),
            json!({"worker_id": long(257), "handlers": ["h"]}),
            "invalid_worker_id",
        ),
        (
            "POST",
            "/v1/worker/poll".into(),
            json!({"worker_id": "w\u{0}", "handlers": ["h"]}),
            "invalid_worker_id",
        ),
        (
            "POST",
            "/v1/worker/poll".into(),
            json!({"worker_id": "w", "handlers": ["h"], "max_tasks": -1}),
            "invalid_json",
        ),
        (
            "POST",
            "/v1/workflows/simple/runs/batch".into(),
            json!({"runs": many_runs}),
            "invalid_batch",
        ),
        (
            "POST",
            "/v1/workflows/simple/runs".into(),
            json!({"idempotency_key": long(257)}),
            "invalid_idempotency_key",
        ),
        (
            "POST",
            "/v1/worker/results".into(),
            json!({"results": many_results}),
            "too_many_results",
        ),
        (
            "POST",
            "/v1/worker/results".into(),
            json!({"results": [{"lease_id": long(257)}]}),
            "invalid_lease_id",
        ),
        (
            "POST",
            "/v1/worker/results".into(),
            json!({"results": [{"lease_id": "l", "timing": {"handler_ms": -5}}]}),
            "invalid_timing",
        ),
        (
            "POST",
            "/v1/worker/results".into(),
            json!({"results": [{"lease_id": "l", "error": {"message": long(262_145)}}]}),
            "invalid_message",
        ),
        (
            "POST",
            "/v1/worker/leases/l/logs".into(),
            json!({"lines": many_lines}),
            "too_many_lines",
        ),
        (
            "POST",
            "/v1/worker/leases/l/logs".into(),
            json!({"lines": [long(65_537)]}),
            "line_too_long",
        ),
        (
            "POST",
            "/v1/worker/leases/l/fail".into(),
            json!({"error": {"message": "m", "kind": "bogus"}}),
            "invalid_error_kind",
        ),
        (
            "POST",
            "/v1/worker/leases/l/complete".into(),
            json!({"timing": {"dispatch_ms": 40_000_000_000_i64}}),
            "invalid_timing",
        ),
        (
            "POST",
            "/v1/runs/r/steps/s/approve".into(),
            json!({"message": long(4097)}),
            "invalid_message",
        ),
        (
            "GET",
            "/v1/runs?limit=1001".into(),
            Value::Null,
            "invalid_limit",
        ),
        (
            "GET",
            "/v1/runs?limit=0".into(),
            Value::Null,
            "invalid_limit",
        ),
        (
            "GET",
            "/v1/runs?limit=-1".into(),
            Value::Null,
            "invalid_query",
        ),
        (
            "GET",
            format!("/v1/runs?cursor={}", long(257)),
            Value::Null,
            "invalid_query",
        ),
        (
            "GET",
            format!("/v1/runs?workflow={}", long(257)),
            Value::Null,
            "invalid_query",
        ),
        (
            "GET",
            "/v1/runs?since=%201h".into(),
            Value::Null,
            "invalid_since",
        ),
        (
            "GET",
            "/v1/runs?status=nope".into(),
            Value::Null,
            "invalid_status",
        ),
        (
            "GET",
            "/v1/runs/x?wait_ms=60001".into(),
            Value::Null,
            "invalid_wait",
        ),
        (
            "GET",
            "/v1/runs/x/events?after=-1".into(),
            Value::Null,
            "invalid_query",
        ),
        (
            "GET",
            "/v1/workflows/simple?version=0".into(),
            Value::Null,
            "invalid_version",
        ),
        (
            "GET",
            format!("/v1/runs/{}", long(257)),
            Value::Null,
            "invalid_path",
        ),
        ("GET", "/v1/runs/a%00b".into(), Value::Null, "invalid_path"),
    ];
    for (method, path, body, code) in cases {
        let body = (!body.is_null()).then_some(body);
        let answer = send(&env, method, &path, body, &[]).await;
        let shown: String = path.chars().take(80).collect();
        assert_eq!(
            (answer.status, answer.code()),
            (400, code),
            "{method} {shown}: {}",
            answer
                .body
                .to_string()
                .chars()
                .take(300)
                .collect::<String>()
        );
    }
    // A duration back from now longer than the epoch is the epoch, not an overflow.
    let answer = send(
        &env,
        "GET",
        &format!("/v1/runs?since={}", "999999999d".repeat(12)),
        None,
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Manifests: every duration and count within its documented range.
    for (manifest, path) in [
        (
            "name: simple\nsteps:\n  - {name: only, handler: simple.h, timeout: 8d}\n",
            "steps[only].timeout",
        ),
        (
            "name: simple\nsteps:\n  - {name: only, kind: sleep, duration: 400d}\n",
            "steps[only].duration",
        ),
        (
            "name: simple\nsteps:\n  - {name: only, handler: simple.h, retry: {initial: 2d, max: 3d}}\n",
            "steps[only].retry.initial",
        ),
    ] {
        let response = env
            .http
            .put(format!("{}/v1/workflows/simple", env.server.url))
            .header("content-type", "application/yaml")
            .body(manifest)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_duration", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().starts_with(path),
            "{body}"
        );
    }

    // Nothing was started or changed by any of it, and a valid poll still works.
    let runs = env.client.list_runs(&[]).await.expect("list runs");
    assert!(runs.runs.is_empty(), "no run was started");
    let polled = env
        .client
        .poll(&PollRequest {
            worker_id: "w".into(),
            queues: vec!["default".into()],
            handlers: (0..1000).map(|i| format!("h{i}")).collect(),
            max_tasks: 100,
            wait_ms: 0,
            host: Some("h".repeat(256)),
            pid: Some(4_194_304),
            version: Some("v".repeat(128)),
            concurrency: Some(100_000),
        })
        .await
        .expect("a poll at the bounds is served");
    assert!(polled.tasks.is_empty());
}

/// Case 18: every answer the server gives outside a handler has the JSON
/// error shape and a stable code; a 405 names the allowed methods.
pub async fn fallbacks_answer_json(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(SIMPLE).await;

    let answer = send(&env, "DELETE", "/v1/workflows/simple", None, &[]).await;
    assert_eq!((answer.status, answer.code()), (405, "method_not_allowed"));
    let allow = answer.allow.expect("405 has an Allow header");
    assert!(allow.contains("GET") && allow.contains("PUT"), "{allow}");
    let answer = send(&env, "GET", "/v1/worker/poll", None, &[]).await;
    assert_eq!((answer.status, answer.code()), (405, "method_not_allowed"));

    let answer = send(&env, "GET", "/v1/nothing", None, &[]).await;
    assert_eq!((answer.status, answer.code()), (404, "route_not_found"));

    // A raw `/` in a name hits no route: the answer says how to send it.
    let answer = send(&env, "GET", "/v1/workflows/team/billing", None, &[]).await;
    assert_eq!((answer.status, answer.code()), (404, "route_not_found"));
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("%2F"), "{message}");

    let bad_json = env
        .http
        .post(format!("{}/v1/worker/poll", env.server.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status().as_u16(), 400);
    let body: Value = bad_json.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");

    let answer = send(&env, "GET", "/v1/runs?limit=many", None, &[]).await;
    assert_eq!((answer.status, answer.code()), (400, "invalid_query"));

    // A body sent as text/plain is read as JSON all the same.
    let answer = env
        .http
        .post(format!("{}/v1/workflows/simple/runs", env.server.url))
        .header("content-type", "text/plain")
        .body("{\"input\": {}}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
}

/// Case 18: a client's `x-request-id` is kept only when short and plain;
/// otherwise a generated id replaces it (in the answer and in the run).
pub async fn request_ids_are_capped(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(SIMPLE).await;
    let plain = "req-2026.11:a/b+c=d@e_f";
    let answer = send(
        &env,
        "GET",
        "/v1/workflows",
        None,
        &[("x-request-id", plain)],
    )
    .await;
    assert_eq!(answer.request_id.as_deref(), Some(plain));

    for bad in [
        "x".repeat(2048),
        "has space".to_owned(),
        "semi;colon".to_owned(),
    ] {
        let answer = send(
            &env,
            "POST",
            "/v1/workflows/simple/runs",
            Some(json!({})),
            &[("x-request-id", bad.as_str())],
        )
        .await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        let id = answer.request_id.expect("an id");
        assert_ne!(id, bad);
        assert!(id.len() <= 128 && !id.is_empty(), "{id}");
        let run = env
            .client
            .get_run(answer.body["run_id"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(run.request_id.as_deref(), Some(id.as_str()));
    }
}

/// Case 18: `/` is legal in workflow names; the client sends it as `%2F`
/// and the server decodes it.
pub async fn slash_in_workflow_names(db_url: String) {
    let env = Env::start(&db_url).await;
    let manifest = "name: team/billing\nsteps:\n  - {name: only, handler: billing.h}\n";
    let put = env
        .client
        .put_workflow("team/billing", manifest)
        .await
        .expect("register a name with a slash");
    assert_eq!(put.name, "team/billing");
    let detail = env.client.get_workflow("team/billing").await.expect("get");
    assert_eq!(detail.name, "team/billing");
    let started = env
        .client
        .start_run("team/billing", &StartRunRequest::default())
        .await
        .expect("start");
    let run = env.client.get_run(&started.run_id).await.unwrap();
    assert_eq!(run.workflow, "team/billing");
    let answer = send(&env, "GET", "/v1/workflows/team%2Fbilling", None, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let listed = env
        .client
        .list_runs(&[("workflow", "team/billing".to_owned())])
        .await
        .unwrap();
    assert_eq!(listed.runs.len(), 1);
}

/// Run ids, trace ids and cursors are parsed once, where they enter: a path
/// naming no possible run is 404 `run_not_found` on every run route, a
/// malformed trace id filter is 400 `invalid_trace_id` (the list and the
/// bulk actions alike), and any spelling of a run id finds the run.
pub async fn identifiers_are_parsed_at_the_edge(db_url: String) {
    let env = Env::start(&db_url).await;
    let manifest = "name: ids\nsteps:\n  - {name: only, handler: ids.h}\n";
    env.client.put_workflow("ids", manifest).await.unwrap();
    let started = env
        .client
        .start_run("ids", &StartRunRequest::default())
        .await
        .unwrap();
    for (method, path) in [
        ("GET", "/v1/runs/not-a-run"),
        ("GET", "/v1/runs/not-a-run/events"),
        ("GET", "/v1/runs/not-a-run/logs"),
        ("GET", "/v1/runs/not-a-run/diagnosis"),
        ("POST", "/v1/runs/not-a-run/cancel"),
        ("POST", "/v1/runs/not-a-run/retry"),
        ("GET", "/v1/runs/00000000000000000000000000000000"),
    ] {
        let answer = send(&env, method, path, None, &[]).await;
        assert_eq!(
            (answer.status, answer.code()),
            (404, "run_not_found"),
            "{method} {path}: {}",
            answer.body
        );
    }
    // The uppercase spelling of a run id names the same run.
    let upper = format!("/v1/runs/{}", started.run_id.to_uppercase());
    let answer = send(&env, "GET", &upper, None, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["run_id"], started.run_id.as_str());
    // And its trace id names it too.
    let by_trace = format!("/v1/runs/{}", started.trace_id);
    let answer = send(&env, "GET", &by_trace, None, &[]).await;
    assert_eq!(answer.body["run_id"], started.run_id.as_str());
    for bad in [
        "xyz",
        "00000000000000000000000000000000",
        "4BF92F3577B34DA6A3CE929D0E0E4736",
    ] {
        let listed = format!("/v1/runs?trace_id={bad}");
        let cancel = json!({"trace_id": bad, "expected": 0});
        for (method, path, body) in [
            ("GET", listed.as_str(), None),
            ("POST", "/v1/runs/cancel", Some(cancel)),
        ] {
            let answer = send(&env, method, path, body, &[]).await;
            assert_eq!(
                (answer.status, answer.code()),
                (400, "invalid_trace_id"),
                "{method} {path} {bad}"
            );
        }
    }
    let answer = send(
        &env,
        "GET",
        &format!("/v1/runs?trace_id={}", started.trace_id),
        None,
        &[],
    )
    .await;
    assert_eq!(answer.body["runs"][0]["run_id"], started.run_id.as_str());
    // The document says what the filter takes.
    let doc = send(&env, "GET", "/openapi.json", None, &[]).await.body;
    let trace = doc["paths"]["/v1/runs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "trace_id")
        .unwrap();
    assert_eq!(trace["schema"]["minLength"], 32);
    assert_eq!(trace["schema"]["pattern"], "^[0-9a-f]*[1-9a-f][0-9a-f]*$");
}

/// What the API fuzzer (scripts/fuzz-api) found, each kept as a case: the
/// server must agree with its own OpenAPI document in both directions.
pub async fn fuzzer_findings(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(SIMPLE).await;
    // A struct sent as an array was read field by field (serde's sequence form).
    let answer = send(
        &env,
        "POST",
        "/v1/worker/results",
        Some(json!({"results": [{"lease_id": "l", "timing": [null, null]}]})),
        &[],
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "invalid_json"),
        "{}",
        answer.body
    );
    let answer = send(
        &env,
        "POST",
        "/v1/workflows/simple/runs/batch",
        Some(json!({"runs": [[null, null]]})),
        &[],
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "invalid_json"),
        "{}",
        answer.body
    );
    assert!(env.client.list_runs(&[]).await.unwrap().runs.is_empty());
    // An integer written with a zero fraction is an integer in JSON Schema.
    let answer = send(
        &env,
        "POST",
        "/v1/worker/poll",
        Some(json!({"worker_id": "w", "handlers": ["h"], "max_tasks": 2.0, "wait_ms": 10.0})),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // A start with no body at all is documented as optional and accepted.
    let started = env
        .http
        .post(format!("{}/v1/workflows/simple/runs", env.server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status().as_u16(), 202);
    let doc: Value = env
        .http
        .get(format!("{}/openapi.json", env.server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["paths"]["/v1/workflows/{name}/runs"]["post"]["requestBody"]["required"],
        false
    );
    // Whitespace alone is not an empty body but invalid JSON.
    let blank = env
        .http
        .post(format!("{}/v1/worker/leases/nope/complete", env.server.url))
        .header("content-type", "application/json")
        .body("\n")
        .send()
        .await
        .unwrap();
    assert_eq!(blank.status().as_u16(), 400);
    // A cursor is documented as a run id: anything else is refused.
    let answer = send(&env, "GET", "/v1/runs?cursor=", None, &[]).await;
    assert_eq!((answer.status, answer.code()), (400, "invalid_cursor"));
    let cursor = doc["paths"]["/v1/runs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cursor")
        .unwrap();
    assert!(
        cursor["schema"]["pattern"]
            .as_str()
            .unwrap()
            .contains("{12}")
    );
    // The document's identifier pattern and the server's check agree on
    // every Unicode control character (C0, DEL and C1): a C1 character was
    // refused by some checks while the pattern allowed it.
    let pattern = doc["components"]["schemas"]["PollRequest"]["properties"]["worker_id"]["pattern"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(pattern.contains("\\u009F"), "{pattern}");
    for path in [
        "/v1/workflows/a%C2%90b/runs",
        "/v1/worker/leases/l%C2%89/release",
    ] {
        let answer = send(&env, "POST", path, Some(json!({})), &[]).await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
    }
    let answer = send(
        &env,
        "POST",
        "/v1/worker/poll",
        Some(json!({"worker_id": "w\u{0085}", "handlers": ["h"]})),
        &[],
    )
    .await;
    assert_eq!((answer.status, answer.code()), (400, "invalid_worker_id"));
    // A pid past what the document states is refused, not accepted.
    let answer = send(
        &env,
        "POST",
        "/v1/worker/poll",
        Some(json!({"worker_id": "w", "handlers": ["h"], "pid": 2_147_483_648_u64, "wait_ms": 0})),
        &[],
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    // `cause` is one of the diagnosis's causes, listed in the document.
    let diagnostics = doc["paths"]["/v1/diagnostics"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cause")
        .unwrap();
    assert!(
        diagnostics["schema"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("no_worker_for_queue"))
    );
    let answer = send(
        &env,
        "GET",
        "/v1/diagnostics?limit=0&cause=queued",
        None,
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}
