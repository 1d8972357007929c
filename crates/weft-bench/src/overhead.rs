//! Scenario E, the cost of observability: A (drain/s) and B (p50/p99) with
//! every signal off, then with every signal on as `weft server` runs with
//! them configured, each on a fresh database, and the ratios on/off.
//!
//! A global `tracing` subscriber is installed once per process, so each of
//! the four measurements (A off, A on, B off, B on) runs in a child process:
//! this binary re-executed with the hidden `--signals-child off|on`. The
//! child holds the server, the worker (`--worker`) and the driver, as A and B
//! do, and prints `{"listening": url}` then its result on stdout. This
//! process plays the outside world: the OTLP/HTTP collector that receives
//! and counts the spans, the Prometheus that scrapes `/metrics` every second,
//! and the log collector that reads the child's stderr.
//!
//! - off: logs at `error` (text, stderr); no trace pipeline (no server spans,
//!   no `RowSpans` observer, no `execute` spans); `/metrics` never scraped,
//!   so the database gauges are never read. The metrics registry itself has
//!   no switch: `weft_server::router` always installs it as the store's
//!   observer.
//! - on: JSON logs at `info` to stderr and to a daily file in a temp dir
//!   (`weft_telemetry::init_with_traces`, as `WEFT_LOG_FORMAT=json
//!   WEFT_LOG_DIR=...`); OTLP/HTTP protobuf trace export (`Tracing`, from the
//!   same `OTEL_*` values a deployment sets) with the server spans, the
//!   `RowSpans` observer and the in-process worker's `execute` spans;
//!   `/metrics` scraped every second, which reads the database gauges when
//!   they are older than the engine's default `gauge_interval` (5 s).

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::{
    harness::{Backend, Server, ServerOptions},
    scenarios::{self, Common, ThroughputArgs},
    stats::round,
};

/// The target: every signal on costs at most this much throughput.
pub const TARGET_COST_PCT: f64 = 5.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signals {
    Off,
    On,
}

impl Signals {
    fn as_str(self) -> &'static str {
        match self {
            Signals::Off => "off",
            Signals::On => "on",
        }
    }
}

/// Which half of E a child measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    A,
    B,
}

impl Part {
    fn as_str(self) -> &'static str {
        match self {
            Part::A => "a",
            Part::B => "b",
        }
    }
}

/// What the parent hands every child.
pub struct Params {
    /// A: runs to enqueue and drain.
    pub n: usize,
    /// B: recorded samples.
    pub b_n: usize,
    /// The flags every scenario shares (`--concurrency`, `--worker`, ...).
    pub child_flags: Vec<String>,
    /// The worker mode's label (`sdk-inproc`, ...).
    pub worker: &'static str,
}

/// Runs E on `backend`: four children on the four fresh databases (A off,
/// A on, B off, B on); one result object.
pub async fn overhead(backend: Backend, params: &Params, databases: [&str; 4]) -> Result<Value> {
    let receiver = Receiver::start().await?;
    let mut results = Vec::new();
    for (i, (part, signals)) in [
        (Part::A, Signals::Off),
        (Part::A, Signals::On),
        (Part::B, Signals::Off),
        (Part::B, Signals::On),
    ]
    .into_iter()
    .enumerate()
    {
        eprintln!(
            "[weft-bench]   E: {} with signals {}",
            part.as_str().to_uppercase(),
            signals.as_str()
        );
        let result = run_child(backend, params, part, signals, databases[i], &receiver)
            .await
            .with_context(|| {
                format!(
                    "E: {} with signals {}",
                    part.as_str().to_uppercase(),
                    signals.as_str()
                )
            })?;
        results.push(result);
    }
    receiver.stop().await;
    let [a_off, a_on, b_off, b_on]: [Value; 4] = results.try_into().expect("four children");
    let side = |a: &Value, b: &Value| {
        let mut side = json!({
            "enqueue_per_s": a["enqueue_per_s"],
            "drain_per_s": a.get("drain_per_s").cloned().unwrap_or(Value::Null),
            "drained": a["drained"],
            "peak_rss_mb": a["peak_rss_mb"],
            "p50_ms": b["p50_ms"],
            "p95_ms": b["p95_ms"],
            "p99_ms": b["p99_ms"],
            "a_signals": a["signals"],
            "b_signals": b["signals"],
        });
        if let Some(map) = side.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        side
    };
    let ratio = |key: &str, on: &Value, off: &Value| match (on[key].as_f64(), off[key].as_f64()) {
        (Some(on), Some(off)) if off > 0.0 => json!(round(on / off, 3)),
        _ => Value::Null,
    };
    let ratios = json!({
        "drain_per_s": ratio("drain_per_s", &a_on, &a_off),
        "enqueue_per_s": ratio("enqueue_per_s", &a_on, &a_off),
        "p50_ms": ratio("p50_ms", &b_on, &b_off),
        "p99_ms": ratio("p99_ms", &b_on, &b_off),
    });
    let cost = ratios["drain_per_s"]
        .as_f64()
        .map(|r| round((1.0 - r) * 100.0, 1));
    Ok(json!({
        "test": "E",
        "config": format!("{}, worker={}", backend.as_str(), params.worker),
        "n": params.n,
        "b_n": params.b_n,
        "off": side(&a_off, &b_off),
        "on": side(&a_on, &b_on),
        "ratio_on_off": ratios,
        "throughput_cost_pct": cost,
        "target_cost_pct": TARGET_COST_PCT,
        "within_target": cost.map(|c| c <= TARGET_COST_PCT),
        "signals_off": "logs at error (text, stderr); no trace pipeline; /metrics not scraped, so no gauge reads (the metrics registry cannot be switched off)",
        "signals_on": "JSON logs at info to stderr and a daily file; OTLP/HTTP protobuf export of server, run, attempt and in-process execute spans to a collector in the parent; /metrics scraped every 1 s; database gauges read by the scrape at most every 5 s",
        "order": "A off, A on, B off, B on; each a fresh database and a fresh child process",
    }))
}

/// One child: spawns it, scrapes its `/metrics` every second when signals
/// are on, collects its stderr, and returns its result with the evidence
/// that the signals were (or were not) on.
async fn run_child(
    backend: Backend,
    params: &Params,
    part: Part,
    signals: Signals,
    database_url: &str,
    receiver: &Receiver,
) -> Result<Value> {
    let exe = crate::harness::self_exe()?;
    let log_dir = tempfile::tempdir().context("temp dir for the log files")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg(part.as_str())
        .arg("--backend")
        .arg(backend.as_str())
        .arg("--n")
        .arg(params.n.to_string())
        .arg("--b-n")
        .arg(params.b_n.to_string())
        .arg("--signals-child")
        .arg(signals.as_str())
        .arg("--child-database-url")
        .arg(database_url)
        .args(&params.child_flags)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if signals == Signals::On {
        command
            .arg("--otlp-endpoint")
            .arg(&receiver.endpoint)
            .arg("--log-dir")
            .arg(log_dir.path());
    }
    receiver.take();
    let mut child = command.spawn().context("starting the E child process")?;
    let stdout = child.stdout.take().expect("stdout piped");
    let stderr = child.stderr.take().expect("stderr piped");
    // The log collector: JSON lines are counted, the rest (progress,
    // errors) shown.
    let stderr_task = tokio::spawn(async move {
        let (mut lines, mut bytes) = (0u64, 0u64);
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if line.starts_with('{') {
                lines += 1;
                bytes += line.len() as u64 + 1;
            } else {
                eprintln!("{line}");
            }
        }
        (lines, bytes)
    });
    let scraping = CancellationToken::new();
    let mut scraper = None;
    let mut result = None;
    let mut reader = BufReader::new(stdout).lines();
    while let Some(line) = reader.next_line().await? {
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            eprintln!("{line}");
            continue;
        };
        if let Some(url) = value["listening"].as_str() {
            if signals == Signals::On {
                scraper = Some(tokio::spawn(scrape(url.to_owned(), scraping.clone())));
            }
        } else {
            result = Some(value);
        }
    }
    let status = child.wait().await?;
    scraping.cancel();
    let scrapes = match scraper {
        Some(task) => task.await.unwrap_or_default(),
        None => Scrapes::default(),
    };
    let (stderr_lines, stderr_bytes) = stderr_task.await.unwrap_or_default();
    let (mut result, true) = (result.unwrap_or(Value::Null), status.success()) else {
        bail!("the child process failed ({status})");
    };
    if !result.is_object() {
        bail!("the child process printed no result");
    }
    let (spans, exports) = receiver.take();
    let runs = match part {
        Part::A => params.n as u64,
        Part::B => (params.b_n + result["warmup"].as_u64().unwrap_or(0) as usize) as u64,
    };
    result["signals"] = json!({
        "spans_received": spans,
        "span_exports": exports,
        "spans_per_run": round(spans as f64 / runs.max(1) as f64, 2),
        "log_file_bytes": dir_bytes(log_dir.path()),
        "stderr_log_lines": stderr_lines,
        "stderr_log_bytes": stderr_bytes,
        "metrics_scrapes": scrapes.ok,
        "metrics_scrape_errors": scrapes.errors,
        "metrics_bytes": scrapes.bytes,
    });
    Ok(result)
}

/// Bytes in the files of `dir` (the daily log files).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum()
}

#[derive(Debug, Default)]
struct Scrapes {
    ok: u64,
    errors: u64,
    bytes: u64,
}

/// `GET {url}/metrics` every second until cancelled, as Prometheus would.
async fn scrape(url: String, stop: CancellationToken) -> Scrapes {
    let mut scrapes = Scrapes::default();
    let addr = url.trim_start_matches("http://").to_owned();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return scrapes,
            _ = every.tick() => {}
        }
        match get_metrics(&addr).await {
            Ok(bytes) => {
                scrapes.ok += 1;
                scrapes.bytes += bytes;
            }
            Err(_) => scrapes.errors += 1,
        }
    }
}

/// One HTTP/1.1 GET of `/metrics` on its own connection; the body's size.
async fn get_metrics(addr: &str) -> Result<u64> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response);
    if !text.starts_with("HTTP/1.1 200") {
        bail!("{}", text.lines().next().unwrap_or("no response"));
    }
    let body = text
        .find("\r\n\r\n")
        .map_or(0, |at| response.len() - at - 4);
    Ok(body as u64)
}

/// An OTLP/HTTP trace collector on a loopback port: decodes every
/// `ExportTraceServiceRequest` (protobuf) and counts its spans.
struct Receiver {
    /// `http://127.0.0.1:PORT`, the base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    endpoint: String,
    counts: Arc<Counts>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Counts {
    spans: AtomicU64,
    exports: AtomicU64,
}

async fn export(
    axum::extract::State(counts): axum::extract::State<Arc<Counts>>,
    body: axum::body::Bytes,
) -> (
    axum::http::StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    Vec<u8>,
) {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message as _;
    let protobuf = [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")];
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (axum::http::StatusCode::BAD_REQUEST, protobuf, Vec::new());
    };
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    counts.spans.fetch_add(spans as u64, Ordering::Relaxed);
    counts.exports.fetch_add(1, Ordering::Relaxed);
    let response = ExportTraceServiceResponse {
        partial_success: None,
    };
    (
        axum::http::StatusCode::OK,
        protobuf,
        response.encode_to_vec(),
    )
}

impl Receiver {
    async fn start() -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind a loopback port for the OTLP receiver")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(counts.clone());
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(err) = served {
                eprintln!("[weft-bench] OTLP receiver failed: {err}");
            }
        });
        Ok(Receiver {
            endpoint,
            counts,
            stop,
            task,
        })
    }

    /// Spans and export requests received since the last take.
    fn take(&self) -> (u64, u64) {
        (
            self.counts.spans.swap(0, Ordering::Relaxed),
            self.counts.exports.swap(0, Ordering::Relaxed),
        )
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// What `--signals-child` runs.
pub struct ChildArgs {
    pub signals: Signals,
    pub part: Part,
    pub database_url: String,
    /// On: the collector's base URL.
    pub otlp_endpoint: Option<String>,
    /// On: where the daily log file goes.
    pub log_dir: Option<PathBuf>,
    pub common: Common,
    pub server: ServerOptions,
    pub n: usize,
    pub b_n: usize,
}

/// The body of a child process: installs its signals (the process's one
/// global subscriber), runs A or B, prints the result on stdout. Returns
/// the exit code.
pub fn child(args: &ChildArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("weft-bench: {err}");
            return 1;
        }
    };
    let _entered = runtime.enter();
    let tracing = match start_tracing(args) {
        Ok(tracing) => tracing,
        Err(err) => {
            eprintln!("weft-bench: {err:#}");
            return 2;
        }
    };
    let on = args.signals == Signals::On;
    let log = weft_telemetry::LogConfig {
        format: if on {
            weft_telemetry::LogFormat::Json
        } else {
            weft_telemetry::LogFormat::Text
        },
        filter: if on { "info" } else { "error" }.to_owned(),
        dir: if on { args.log_dir.clone() } else { None },
    };
    let log_guard = match weft_telemetry::init_with_traces(&log, tracing.as_ref()) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("weft-bench: {err}");
            return 2;
        }
    };
    let outcome = runtime.block_on(async {
        let outcome = measure(args, tracing.clone()).await;
        if let Some(tracing) = tracing {
            tracing.shutdown().await;
        }
        outcome
    });
    // Flushes the log file before the parent measures it.
    drop(log_guard);
    match outcome {
        Ok(mut result) => {
            result["warmup"] = json!(args.common.warmup);
            println!("{result}");
            0
        }
        Err(err) => {
            eprintln!("weft-bench: {err:#}");
            1
        }
    }
}

/// The trace pipeline of the "on" child, from the `OTEL_*` values a
/// deployment would set, read as the `weft` binary reads them.
fn start_tracing(args: &ChildArgs) -> Result<Option<weft_telemetry::traces::Tracing>> {
    if args.signals == Signals::Off {
        return Ok(None);
    }
    let endpoint = args
        .otlp_endpoint
        .clone()
        .context("--signals-child on needs --otlp-endpoint")?;
    let vars = weft_telemetry::traces::Vars {
        endpoint: Some(endpoint),
        protocol: Some("http/protobuf".to_owned()),
        ..Default::default()
    };
    let config = weft_telemetry::traces::Config::from_vars(&vars, "weft")
        .map_err(anyhow::Error::msg)?
        .context("trace export not configured")?;
    let tracing = weft_telemetry::traces::Tracing::start(&config, env!("CARGO_PKG_VERSION"))
        .map_err(anyhow::Error::msg)?;
    Ok(Some(tracing))
}

async fn measure(
    args: &ChildArgs,
    tracing: Option<weft_telemetry::traces::Tracing>,
) -> Result<Value> {
    let config = match &tracing {
        // The wiring adds the `RowSpans` observer of this pipeline.
        Some(tracing) => weft_server::Config {
            tracing: Some(tracing.clone()),
            ..Default::default()
        },
        None => weft_server::Config::default(),
    };
    let server = Server::start_with(&args.database_url, &args.server, config).await?;
    println!("{}", json!({ "listening": server.url }));
    let result = match args.part {
        Part::A => {
            scenarios::throughput(
                &server,
                &args.common,
                &ThroughputArgs {
                    n: args.n,
                    enqueue: scenarios::Enqueue::SEQUENTIAL,
                },
            )
            .await
        }
        Part::B => scenarios::latency(&server, &args.common, args.b_n).await,
    };
    server.stop().await;
    result
}
