//! End-to-end traces: an in-process server and SDK worker over a temp SQLite
//! file export to an OTLP receiver inside the test (gRPC, or HTTP/protobuf),
//! and the spans of a run must form one tree: caller → `POST
//! /v1/workflows/{name}/runs` → `workflow.<name>` → `step.<step>` →
//! `execute <handler>` → the handler's own spans.
//!
//! Each test installs the process-wide subscriber and tracer provider, so the
//! binary is meant for nextest, which runs every test in its own process.

mod collector;

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use weft_api::{RunDetail, StartRunRequest};
use weft_client::Client;
use weft_server::wiring::{Running, StoreConfig, Wiring};
use weft_store::Settings;
use weft_telemetry::traces::{Config, Protocol, SamplerConfig, Tracing};
use weft_worker::{HandlerError, TaskContext, Worker};

use collector::{Collector, Span};

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";
const TRACE_URL: &str = "http://jaeger.test/trace/{trace_id}";

/// One in-process server: store, engine loops and HTTP on a loopback port.
struct Server {
    url: String,
    shutdown: CancellationToken,
    running: Running,
}

impl Server {
    async fn start(database_url: &str, tracing: Option<&Tracing>) -> Server {
        let wired = Wiring {
            store: StoreConfig {
                settings: Settings {
                    lease: Duration::from_secs(10),
                    ..Settings::default()
                },
                ..StoreConfig::new(database_url)
            },
            engine: weft_engine::Config {
                tick: Duration::from_millis(20),
                ..Default::default()
            },
            server: weft_server::Config {
                trace_url_template: Some(TRACE_URL.to_owned()),
                tracing: tracing.cloned(),
                ..Default::default()
            },
            listen: "127.0.0.1:0".to_owned(),
            serve: Default::default(),
        }
        .build()
        .await
        .expect("build the server");
        let shutdown = CancellationToken::new();
        let running = wired.spawn(shutdown.clone());
        Server {
            url: running.url(),
            shutdown,
            running,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.url)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await.expect("serve");
    }
}

/// Installs the exporting pipeline (provider + `tracing` layer) for this
/// process, pointed at `collector` over gRPC.
fn export_to(collector: &Collector) -> Tracing {
    export_over(Protocol::Grpc, collector.endpoint())
}

fn export_over(protocol: Protocol, endpoint: String) -> Tracing {
    let config = Config {
        endpoint,
        protocol,
        service_name: "weft-it".to_owned(),
        resource: vec![("deployment.environment".to_owned(), "test".to_owned())],
        headers: vec![("x-tenant".to_owned(), "it".to_owned())],
        sampler: SamplerConfig::ParentBasedAlwaysOn,
        timeout: Duration::from_secs(5),
    };
    let tracing = Tracing::start(&config, "0.0.0-test").expect("start tracing");
    let logs = weft_telemetry::LogConfig {
        format: weft_telemetry::LogFormat::Text,
        filter: "info".to_owned(),
        dir: None,
    };
    // Leaked: the file guard would only matter with a log dir.
    std::mem::forget(
        weft_telemetry::init_with_traces(&logs, Some(&tracing)).expect("install the subscriber"),
    );
    tracing
}

async fn register(client: &Client, manifest: &str) {
    let name = manifest
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("name: ")
        .trim();
    client
        .put_workflow(name, manifest)
        .await
        .expect("register the workflow");
}

async fn wait_finished(client: &Client, run_id: &str) -> RunDetail {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = client.get_run(run_id).await.expect("read the run");
        if matches!(run.status.as_str(), "completed" | "failed" | "cancelled") {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} did not finish: {run:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Traceparents handlers saw, by step.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// An SDK handler that records the traceparent it was given, opens a span of
/// its own, and fails its first attempt when `fail_first` is set.
fn handler(seen: Seen, fail_first: bool) -> impl weft_worker::Handler {
    let calls = Arc::new(AtomicU32::new(0));
    move |ctx: TaskContext| {
        let seen = seen.clone();
        let calls = calls.clone();
        async move {
            seen.lock()
                .unwrap()
                .push((ctx.task.step.clone(), ctx.traceparent().to_owned()));
            tracing::info_span!("handler.work", step = %ctx.task.step).in_scope(|| {
                if fail_first && calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(HandlerError::retryable("flaky the first time"));
                }
                Ok(json!({"step": ctx.task.step, "baggage": ctx.baggage()}))
            })
        }
    }
}

/// The live server span of the request that started `run_id`, checked for
/// its name, kind and attributes.
fn server_span_of<'a>(spans: &'a [Span], run_id: &str) -> &'a Span {
    let servers = named(spans, "POST /v1/workflows/{name}/runs");
    assert_eq!(servers.len(), 1, "one server span: {spans:#?}");
    let span = servers[0];
    assert_eq!(span.kind, "SPAN_KIND_SERVER");
    assert_eq!(span.attr("http.request.method"), Some("POST"));
    assert_eq!(span.attr("http.route"), Some("/v1/workflows/{name}/runs"));
    assert_eq!(span.attr("http.response.status_code"), Some("202"));
    assert_eq!(span.attr("weft.run_id"), Some(run_id));
    assert!(
        span.attr("weft.request_id")
            .is_some_and(|id| !id.is_empty()),
        "{span:#?}"
    );
    assert!(!span.error);
    assert!(span.start_ns <= span.end_ns);
    span
}

/// The span id in a traceparent.
fn span_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(2).unwrap()
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

const THREE_STEPS: &str = "name: traced
steps:
  - name: extract
    handler: t.extract
  - name: transform
    handler: t.transform
    depends_on: [extract]
    retry: { max_attempts: 3, backoff: fixed, initial: 10ms, jitter: false }
  - name: load
    handler: t.load
    depends_on: [transform]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_a_retry_is_one_tree_under_the_callers_span() {
    let collector = Collector::start().await;
    let tracing = export_to(&collector);
    let db = weft_testkit::sqlite_database();
    let server = Server::start(&db.url, Some(&tracing)).await;
    let client = server.client();
    register(&client, THREE_STEPS).await;

    let seen: Seen = Arc::default();
    // `load` runs as an external command: its TRACEPARENT and BAGGAGE come
    // from the environment.
    let exec = weft_worker::exec::parse(
        r#"[handlers]
"t.load" = 'printf "{\"traceparent\": \"%s\", \"baggage\": \"%s\"}" "$TRACEPARENT" "$BAGGAGE"'
"#,
        std::path::Path::new("."),
    )
    .expect("exec handlers");
    let mut builder = Worker::builder(client.clone())
        .worker_id("it-worker")
        .poll_wait(Duration::from_millis(500))
        .handler("t.extract", handler(seen.clone(), false))
        .handler("t.transform", handler(seen.clone(), true));
    for (name, exec_handler) in weft_worker::exec::handlers(exec) {
        builder = builder.handler_arc(name, exec_handler);
    }
    let stop_worker = CancellationToken::new();
    let worker = tokio::spawn(builder.build().run(stop_worker.clone()));

    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let started = client
        .start_run_with_context(
            "traced",
            &StartRunRequest {
                input: json!({}),
                idempotency_key: None,
                ..Default::default()
            },
            Some(&caller),
            Some("tenant=acme"),
        )
        .await
        .expect("start the run");
    assert_eq!(
        started.trace_id, CALLER_TRACE,
        "the run joins the caller's trace"
    );
    let run = wait_finished(&client, &started.run_id).await;
    assert_eq!(run.status, "completed", "{run:#?}");
    assert_eq!(
        run.trace_url.as_deref(),
        Some(format!("http://jaeger.test/trace/{CALLER_TRACE}").as_str())
    );
    stop_worker.cancel();
    worker.await.unwrap();
    tracing.flush().await;

    // server + run + 4 attempts (transform retried) + 4 executes + 3
    // handler spans (the exec handler has none).
    let spans = collector
        .wait_for(CALLER_TRACE, "the run's 13 spans", |s| s.len() >= 13)
        .await;
    assert!(
        collector.all().iter().all(|s| s.trace_id == CALLER_TRACE),
        "every exported span belongs to the run's trace"
    );
    assert_eq!(spans.len(), 13, "{spans:#?}");

    let server_span = server_span_of(&spans, &run.run_id);
    assert_eq!(
        server_span.parent_span_id, CALLER_SPAN,
        "the server span is a child of the caller's span"
    );
    let run_span = named(&spans, "workflow.traced");
    assert_eq!(run_span.len(), 1);
    let run_span = run_span[0];
    assert_eq!(
        run_span.parent_span_id, server_span.span_id,
        "the run span's parent is the server span"
    );
    // The run's stored start is in whole milliseconds.
    assert!(server_span.start_ns <= run_span.start_ns + 1_000_000);
    assert_eq!(run_span.attr("weft.run_id"), Some(run.run_id.as_str()));
    assert_eq!(run_span.attr("weft.workflow"), Some("traced"));
    assert_eq!(run_span.attr("weft.workflow_version"), Some("1"));
    assert_eq!(run_span.attr("weft.status"), Some("completed"));
    assert_eq!(run_span.service_name.as_deref(), Some("weft-it"));

    // Attempt spans: ids and parents from the rows, times claim → commit.
    let mut attempt_ids = HashSet::new();
    for step in &run.steps {
        let spans_of_step = named(&spans, &format!("step.{}", step.name));
        assert_eq!(
            spans_of_step.len(),
            step.attempts.len(),
            "one span per attempt of {}",
            step.name
        );
        for attempt in &step.attempts {
            let span = spans_of_step
                .iter()
                .find(|s| s.span_id == attempt.span_id)
                .expect("the attempt's stored span id");
            attempt_ids.insert(span.span_id.clone());
            assert_eq!(
                span.parent_span_id, run_span.span_id,
                "attempts are children of the run span"
            );
            assert_eq!(span.attr("weft.step"), Some(step.name.as_str()));
            assert_eq!(
                span.attr("weft.attempt"),
                Some(attempt.attempt.to_string().as_str())
            );
            assert_eq!(span.attr("weft.status"), Some(attempt.status.as_str()));
            assert_eq!(span.attr("weft.queue"), Some("default"));
            assert_eq!(span.attr("weft.worker_id"), Some("it-worker"));
            assert_eq!(span.attr("weft.run_id"), Some(run.run_id.as_str()));
            assert!(
                span.attr("weft.timing.total_ms").is_some()
                    && span.attr("weft.timing.queue_wait_ms").is_some()
            );
            assert!(
                span.attr("weft.timing.handler_ms").is_some(),
                "worker-reported buckets ride along"
            );
            assert!(
                span.start_ns <= span.end_ns
                    && run_span.start_ns <= span.start_ns
                    && span.end_ns <= run_span.end_ns
            );
        }
    }
    let transform = &run.steps[1];
    assert_eq!(transform.attempts.len(), 2);
    let first = spans
        .iter()
        .find(|s| s.span_id == transform.attempts[0].span_id)
        .unwrap();
    let second = spans
        .iter()
        .find(|s| s.span_id == transform.attempts[1].span_id)
        .unwrap();
    assert!(
        first.error && first.events.contains(&"exception".to_owned()),
        "a failed attempt is an error: {first:#?}"
    );
    assert_eq!(first.attr("weft.reason"), Some("handler_error"));
    assert_eq!(
        second.links,
        vec![first.span_id.clone()],
        "the retry links to the attempt before it"
    );
    assert!(!second.error);

    // Worker spans: `execute <handler>` under each attempt; handlers saw it.
    let executes: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("execute "))
        .collect();
    assert_eq!(executes.len(), 4);
    for execute in &executes {
        assert!(
            attempt_ids.contains(&execute.parent_span_id),
            "execute spans are children of attempt spans: {execute:#?}"
        );
    }
    let by_attempt = |span_id: &str| {
        executes
            .iter()
            .find(|e| e.parent_span_id == span_id)
            .copied()
            .unwrap()
    };
    assert_eq!(
        by_attempt(&transform.attempts[0].span_id).name,
        "execute t.transform"
    );
    assert!(
        by_attempt(&transform.attempts[0].span_id).error,
        "the failed handler's execute span is an error"
    );
    for (step, traceparent) in seen.lock().unwrap().iter() {
        let execute = executes
            .iter()
            .find(|e| e.span_id == span_of(traceparent))
            .unwrap_or_else(|| panic!("{step} saw {traceparent}"));
        assert_eq!(execute.name, format!("execute t.{step}"));
    }
    let load = &run.steps[2];
    let output = load.output.as_ref().unwrap();
    let load_execute = by_attempt(&load.attempts[0].span_id);
    assert_eq!(
        output["traceparent"],
        format!("00-{CALLER_TRACE}-{}-01", load_execute.span_id),
        "exec handlers get the execute span"
    );
    assert_eq!(output["baggage"], "tenant=acme");
    assert_eq!(
        run.steps[0].output.as_ref().unwrap()["baggage"],
        "tenant=acme",
        "SDK handlers see the run's baggage"
    );

    // The handler's own spans nest under its execute span.
    let work = named(&spans, "handler.work");
    assert_eq!(work.len(), 3);
    for span in work {
        assert!(
            executes.iter().any(|e| e.span_id == span.parent_span_id),
            "{span:#?}"
        );
    }

    // No orphan: every parent is in the trace, except the caller's span.
    assert_eq!(
        spans
            .iter()
            .filter(|s| s.parent_span_id == CALLER_SPAN)
            .count(),
        1,
        "only the server span hangs off the caller"
    );
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for span in &spans {
        assert!(
            ids.contains(span.parent_span_id.as_str()) || span.parent_span_id == CALLER_SPAN,
            "orphan: {span:#?}"
        );
    }
    server.stop().await;
    tracing.shutdown().await;
}

const TWO_STEPS: &str = "name: restarted
steps:
  - name: first
    handler: r.first
  - name: second
    handler: r.second
    depends_on: [first]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_restart_mid_run_still_yields_one_tree() {
    let collector = Collector::start().await;
    let tracing = export_to(&collector);
    let db = weft_testkit::sqlite_database();
    let ok = |_: TaskContext| async { Ok::<_, HandlerError>(json!({})) };

    // The first engine runs `first` only, then stops.
    let before = Server::start(&db.url, Some(&tracing)).await;
    register(&before.client(), TWO_STEPS).await;
    let started = before
        .client()
        .start_run("restarted", &StartRunRequest::default())
        .await
        .unwrap();
    let stop_worker = CancellationToken::new();
    let worker = Worker::builder(before.client())
        .poll_wait(Duration::from_millis(200))
        .handler("r.first", ok)
        .build();
    let worker_task = tokio::spawn(worker.run(stop_worker.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while before
        .client()
        .get_run(&started.run_id)
        .await
        .unwrap()
        .steps[0]
        .status
        != "completed"
    {
        assert!(Instant::now() < deadline, "the first step did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_worker.cancel();
    worker_task.await.unwrap();
    before.stop().await;

    // A second engine over the same database finishes the run.
    let after = Server::start(&db.url, Some(&tracing)).await;
    let stop_worker = CancellationToken::new();
    let worker = Worker::builder(after.client())
        .poll_wait(Duration::from_millis(200))
        .handler("r.first", ok)
        .handler("r.second", ok)
        .build();
    let worker_task = tokio::spawn(worker.run(stop_worker.clone()));
    let run = wait_finished(&after.client(), &started.run_id).await;
    assert_eq!(run.status, "completed");
    stop_worker.cancel();
    worker_task.await.unwrap();
    tracing.flush().await;

    let spans = collector
        .wait_for(
            &run.trace_id,
            "server, run, 2 attempts and 2 executes",
            |s| s.len() >= 6,
        )
        .await;
    assert_eq!(spans.len(), 6, "{spans:#?}");
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root: {spans:#?}");
    let server_span = server_span_of(&spans, &run.run_id);
    assert_eq!(
        roots[0].span_id, server_span.span_id,
        "without a caller, the server span is the root and the server chose the trace id"
    );
    let run_span = named(&spans, "workflow.restarted");
    assert_eq!(run_span.len(), 1);
    assert_eq!(run_span[0].parent_span_id, server_span.span_id);
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for span in &spans {
        assert!(
            span.parent_span_id.is_empty() || ids.contains(span.parent_span_id.as_str()),
            "orphan: {span:#?}"
        );
    }
    for step in &run.steps {
        let span = spans
            .iter()
            .find(|s| s.span_id == step.attempts[0].span_id)
            .expect("the attempt's span");
        assert_eq!(span.parent_span_id, run_span[0].span_id);
    }

    // A rejected start still has its server span, an error, under the caller.
    let caller_trace = "5b8aa5a2d2c872e8321cf37308d69df2";
    let caller_span = "051581bf3cb55c13";
    let rejected = after
        .client()
        .start_run_with_context(
            "no-such-workflow",
            &StartRunRequest::default(),
            Some(&format!("00-{caller_trace}-{caller_span}-01")),
            None,
        )
        .await;
    assert!(rejected.is_err());
    tracing.flush().await;
    let spans = collector
        .wait_for(caller_trace, "the rejected request's span", |s| {
            !s.is_empty()
        })
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(span.name, "POST /v1/workflows/{name}/runs");
    assert_eq!(span.parent_span_id, caller_span);
    assert_eq!(span.attr("http.response.status_code"), Some("404"));
    assert_eq!(span.attr("weft.run_id"), None);
    assert!(span.error, "{span:#?}");
    after.stop().await;
    tracing.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_handlers_get_the_attempt_span() {
    let vars = weft_telemetry::traces::Vars::from_lookup(|_| None);
    assert!(
        matches!(Config::from_vars(&vars, "weft"), Ok(None)),
        "no endpoint: no exporter is built"
    );
    let db = weft_testkit::sqlite_database();
    let server = Server::start(&db.url, None).await;
    let client = server.client();
    register(&client, TWO_STEPS).await;
    let seen: Seen = Arc::default();
    let stop_worker = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .poll_wait(Duration::from_millis(200))
        .handler("r.first", handler(seen.clone(), false))
        .handler("r.second", handler(seen.clone(), false))
        .build();
    let worker_task = tokio::spawn(worker.run(stop_worker.clone()));
    let started = client
        .start_run_with_context(
            "restarted",
            &StartRunRequest::default(),
            None,
            Some("tenant=solo"),
        )
        .await
        .unwrap();
    let run = wait_finished(&client, &started.run_id).await;
    assert_eq!(run.status, "completed");
    stop_worker.cancel();
    worker_task.await.unwrap();
    // No exporting layer here: the handler's traceparent is the attempt's own.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (step, traceparent) in seen {
        let attempt = &run.steps.iter().find(|s| s.name == step).unwrap().attempts[0];
        assert_eq!(
            traceparent,
            format!("00-{}-{}-01", run.trace_id, attempt.span_id)
        );
    }
    assert_eq!(
        run.steps[1].output.as_ref().unwrap()["baggage"],
        "tenant=solo"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_travel_over_otlp_http_protobuf() {
    let collector = Collector::start_http().await;
    let tracing = export_over(Protocol::HttpProtobuf, collector.traces_url());
    let db = weft_testkit::sqlite_database();
    let server = Server::start(&db.url, Some(&tracing)).await;
    let client = server.client();
    register(&client, TWO_STEPS).await;
    let ok = |_: TaskContext| async { Ok::<_, HandlerError>(json!({})) };
    let stop_worker = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .poll_wait(Duration::from_millis(200))
        .handler("r.first", ok)
        .handler("r.second", ok)
        .build();
    let worker_task = tokio::spawn(worker.run(stop_worker.clone()));
    let started = client
        .start_run("restarted", &StartRunRequest::default())
        .await
        .unwrap();
    let run = wait_finished(&client, &started.run_id).await;
    assert_eq!(run.status, "completed");
    stop_worker.cancel();
    worker_task.await.unwrap();
    tracing.flush().await;

    let spans = collector
        .wait_for(
            &run.trace_id,
            "server, run, 2 attempts and 2 executes",
            |s| s.len() >= 6,
        )
        .await;
    assert_eq!(spans.len(), 6, "{spans:#?}");
    let server_span = server_span_of(&spans, &run.run_id);
    assert!(server_span.parent_span_id.is_empty());
    let run_span = named(&spans, "workflow.restarted");
    assert_eq!(run_span.len(), 1);
    assert_eq!(run_span[0].parent_span_id, server_span.span_id);
    assert_eq!(run_span[0].attr("weft.run_id"), Some(run.run_id.as_str()));
    assert!(
        spans
            .iter()
            .all(|s| s.service_name.as_deref() == Some("weft-it")),
        "the resource rides along"
    );
    let requests = collector.requests();
    assert!(!requests.is_empty());
    for headers in &requests {
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/x-protobuf")
        );
        assert_eq!(
            headers.get("x-tenant").and_then(|v| v.to_str().ok()),
            Some("it"),
            "the configured headers are sent"
        );
    }
    server.stop().await;
    tracing.shutdown().await;
}
