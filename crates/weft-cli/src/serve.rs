//! Wiring of long-running processes: the server (store + engine + HTTP),
//! `weft dev` (server + in-process worker + examples), and the exec worker.
//! Each stops cleanly on SIGINT or SIGTERM.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use weft_client::Client;
use weft_server::wiring::{StoreConfig, Wired, Wiring};
use weft_store::{PoolOptions, Settings, Store};
use weft_telemetry::traces::Tracing;
use weft_worker::Worker;

use crate::{ServerArgs, demo, parse_duration};

/// How long requests still open at shutdown (event streams, slow clients)
/// may run after the listener closed; parked long polls answer at once.
const SERVER_DRAIN: Duration = Duration::from_secs(1);

/// Cancels the token on SIGINT or SIGTERM; the line logged names the
/// process (`component` = `server` or `worker`) and the signal.
fn shutdown_on_signal(component: &'static str) -> CancellationToken {
    shutdown_on_signals(component).0
}

/// Like [`shutdown_on_signal`], with a second token cancelled by a second
/// SIGINT or SIGTERM (stop now, without waiting out a grace period).
fn shutdown_on_signals(component: &'static str) -> (CancellationToken, CancellationToken) {
    let first = CancellationToken::new();
    let second = CancellationToken::new();
    let (on_first, on_second) = (first.clone(), second.clone());
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .expect("SIGINT handler");
        for (token, message) in [
            (on_first, "shutting down"),
            (on_second, "asked again to stop: stopping now"),
        ] {
            let signal = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            tracing::info!(component, signal, "{message}");
            token.cancel();
        }
    });
    (first, second)
}

struct Running {
    listen_addr: std::net::SocketAddr,
    /// Whether the listener serves HTTPS.
    tls: bool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    store: Store,
}

async fn start_server(
    args: &ServerArgs,
    shutdown: &CancellationToken,
    tracing: Option<&Tracing>,
) -> Result<Running> {
    // One redaction rule, its patterns compiled once, for the store's log
    // lines and spans and for what the server shows.
    let redactor = weft_core::redact::Redactor::from_list(&args.redact_keys)
        .with_patterns(&args.redact_patterns)?;
    let settings = Settings {
        lease: parse_duration("lease-timeout", &args.lease_timeout)?,
        max_output_bytes: weft_store::max_output_bytes_for(args.max_body_bytes as u64),
        redactor: redactor.clone(),
        follow_recheck: parse_duration("stream-recheck", &args.stream_recheck)?,
        ..Settings::default()
    };
    let gauge_interval = parse_duration("gauge-interval", &args.gauge_interval)?;
    anyhow::ensure!(
        !gauge_interval.is_zero(),
        "--gauge-interval must be longer than 0"
    );
    let caps = weft_telemetry::metrics::Caps {
        workflows: args.metrics_max_workflows,
        ..Default::default()
    };
    let metrics = weft_server::Metrics::new(env!("CARGO_PKG_VERSION"), caps);
    let wiring = Wiring {
        store: StoreConfig {
            database_url: args.database_url.clone(),
            settings,
            pool: PoolOptions {
                max_connections: args.db_pool_size,
                ..PoolOptions::default()
            },
        },
        engine: weft_engine::Config {
            tick: parse_duration("engine-tick", &args.engine_tick)?,
            max_poll_wait: parse_duration("max-poll-wait", &args.max_poll_wait)?,
            gauge_interval,
            diagnosis: thresholds(&args.diagnosis)?,
            worker_retention: parse_duration("worker-retention", &args.diagnosis.worker_retention)?,
            ..Default::default()
        },
        server: weft_server::Config {
            max_body_bytes: args.max_body_bytes,
            body_read_timeout: parse_duration("body-read-timeout", &args.body_read_timeout)?,
            metrics: Some(metrics.clone()),
            redactor,
            redact_api: args.redact_api,
            secure_cookies: args.secure_cookies,
            trace_url_template: args.trace_url_template.clone(),
            tracing: tracing.cloned(),
            rate_limits: args.transport.rate_limits()?,
            auth: crate::tokens::auth_config(&args.auth, &args.database_url, &args.listen)?,
            ..Default::default()
        },
        listen: args.listen.clone(),
        serve: weft_server::ServeOptions {
            header_read_timeout: parse_duration("header-read-timeout", &args.header_read_timeout)?,
            tls: args.transport.tls()?,
        },
    };
    let Wired {
        store,
        engine,
        app,
        listener,
        addr: listen_addr,
        serve: serve_options,
    } = wiring.build().await.map_err(|err| match err {
        weft_server::wiring::WiringError::Auth(err) => {
            anyhow::anyhow!(crate::tokens::explain_startup(&err, &args.listen))
        }
        other => other.into(),
    })?;
    let tls = serve_options.tls.is_some();
    let mut extra_tasks = Vec::new();
    if let Some(addr) = &args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        let metrics_shutdown = shutdown.clone();
        let metrics_app = weft_server::metrics_router(engine.clone(), metrics.clone());
        extra_tasks.push(tokio::spawn(async move {
            if let Err(err) = weft_server::serve(listener, metrics_app, metrics_shutdown).await {
                tracing::error!(component = "server", error = %err, "metrics listener failed");
            }
        }));
    }
    let engine_task = tokio::spawn(engine.run(shutdown.clone()));
    let http_shutdown = shutdown.clone();
    let http_task = tokio::spawn(async move {
        // The listener stops accepting at once; requests in flight get
        // SERVER_DRAIN to end (parked polls answer at once), then their
        // connections are closed (event streams never end on their own).
        let serve = weft_server::serve_with(listener, app, http_shutdown.clone(), serve_options);
        tokio::pin!(serve);
        let drained = tokio::select! {
            served = &mut serve => Some(served),
            _ = async {
                http_shutdown.cancelled().await;
                tracing::info!(component = "server", "listener closed; answering open requests");
                tokio::time::sleep(SERVER_DRAIN).await;
            } => None,
        };
        match drained {
            Some(Err(err)) => {
                tracing::error!(component = "server", error = %err, "HTTP server failed")
            }
            Some(Ok(())) => tracing::info!(component = "server", "HTTP server stopped"),
            None => tracing::info!(
                component = "server",
                drain_ms = SERVER_DRAIN.as_millis() as u64,
                "closing connections still open after the drain (event streams, slow requests)"
            ),
        }
    });
    tracing::info!(component = "server", addr = %listen_addr, tls, database = %redact_url(&args.database_url), "server started");
    let mut tasks = vec![engine_task, http_task];
    tasks.extend(extra_tasks);
    Ok(Running {
        listen_addr,
        tls,
        tasks,
        store,
    })
}

impl Running {
    async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
        self.store.close().await;
    }
}

/// Hides a password in a database URL before it is logged.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:[redacted]{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub async fn server(args: ServerArgs, tracing: Option<Tracing>) -> Result<()> {
    let shutdown = shutdown_on_signal("server");
    let running = start_server(&args, &shutdown, tracing.as_ref()).await?;
    running.wait().await;
    tracing::info!(component = "server", "server stopped");
    Ok(())
}

pub async fn dev(
    args: ServerArgs,
    demo_runs: bool,
    ca_cert: Option<std::path::PathBuf>,
    tracing: Option<Tracing>,
) -> Result<()> {
    let (shutdown, stop_now) = shutdown_on_signals("server");
    // The server outlives the in-process worker, so the results of handlers
    // finishing in the worker's shutdown grace are still delivered.
    let server_shutdown = CancellationToken::new();
    let running = start_server(&args, &server_shutdown, tracing.as_ref()).await?;
    // A wildcard listen address is reached on loopback.
    let url = weft_server::wiring::local_url_with(running.listen_addr, running.tls);
    // With authentication required (a non-loopback --listen), the examples
    // are registered and run with the bootstrap admin token.
    let client =
        crate::transport::client(&url, ca_cert.as_deref(), args.auth.bootstrap_token.clone())?;
    for (name, manifest) in demo::MANIFESTS {
        let response = client
            .put_workflow(name, manifest)
            .await
            .with_context(|| format!("registering example {name}"))?;
        tracing::info!(component = "cli", workflow = %response.name, version = response.version, "example workflow registered");
    }
    let worker = demo::worker(client.clone()).stop_now(stop_now).build();
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));
    let mut started = Vec::new();
    if demo_runs {
        for (workflow, input) in demo::demo_inputs() {
            let run = client
                .start_run(
                    workflow,
                    &weft_api::StartRunRequest {
                        input,
                        idempotency_key: None,
                        ..Default::default()
                    },
                )
                .await?;
            started.push((workflow, run.run_id));
        }
    }
    // The printed commands must reach this server: they name it unless it
    // is where the CLI looks by default.
    let mut url_flag = if url == crate::DEFAULT_URL {
        String::new()
    } else {
        format!(" --url {url}")
    };
    if let Some(ca_cert) = &ca_cert {
        url_flag.push_str(&format!(" --ca-cert {}", ca_cert.display()));
    }
    // Written without `println!`: a closed stdout (`weft dev | head`) must
    // not take the server down with it.
    use std::fmt::Write as _;
    let mut banner = String::new();
    let _ = writeln!(banner);
    let _ = writeln!(
        banner,
        "  Weft is running (database {}).",
        redact_url(&args.database_url)
    );
    let _ = writeln!(banner);
    let _ = writeln!(banner, "  API        {url}/v1/runs");
    let _ = writeln!(banner, "  Health     {url}/health");
    let _ = writeln!(banner, "  Dashboard  {url}/");
    let _ = writeln!(banner);
    for (workflow, run_id) in &started {
        let _ = writeln!(
            banner,
            "  demo run   {workflow:<11} weft run {run_id}{url_flag}"
        );
    }
    let _ = writeln!(banner);
    let _ = writeln!(
        banner,
        "  Try:  weft start etl --input '{{\"source\": \"s3://bucket/day.csv\"}}' --wait{url_flag}"
    );
    let _ = writeln!(banner, "        weft runs{url_flag}");
    let _ = writeln!(banner, "        weft run <run_id or trace_id>{url_flag}");
    if !url_flag.is_empty() {
        let _ = writeln!(
            banner,
            "        (or `export WEFT_URL={url}` once and drop --url)"
        );
    }
    let _ = writeln!(banner);
    let _ = writeln!(banner, "  Ctrl-C to stop.");
    let _ = writeln!(banner);
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, banner.as_bytes());
    let _ = std::io::Write::flush(&mut stdout);
    drop(stdout);
    let _ = worker_task.await;
    server_shutdown.cancel();
    running.wait().await;
    tracing::info!(component = "server", "server stopped");
    Ok(())
}

/// How `weft worker` runs, from its flags.
pub struct WorkerOptions {
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub worker_id: Option<String>,
    pub metrics_listen: Option<String>,
    /// How long running handlers may finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
}

pub async fn exec_worker(
    handlers_file: &Path,
    options: WorkerOptions,
    client: Client,
) -> Result<()> {
    let WorkerOptions {
        queues,
        concurrency,
        worker_id,
        metrics_listen,
        shutdown_grace,
    } = options;
    let handlers = weft_worker::exec::load(handlers_file)?;
    // Each handler runs under `weft __supervise` (this binary), so its
    // process group dies with the worker.
    let supervisor = supervisor_binary()?;
    let (shutdown, stop_now) = shutdown_on_signals("worker");
    let mut builder = Worker::builder(client)
        .concurrency(concurrency)
        .shutdown_grace(shutdown_grace)
        .stop_now(stop_now)
        .poll_wait(Duration::from_secs(20));
    let mut metrics_task = None;
    if let Some(addr) = metrics_listen {
        let metrics = weft_telemetry::metrics::WorkerMetrics::new(env!("CARGO_PKG_VERSION"));
        builder = builder.observer(std::sync::Arc::new(WorkerMetricsObserver(metrics.clone())));
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for worker metrics"))?;
        let app = weft_server::exposition_router(std::sync::Arc::new(move |openmetrics| {
            metrics.encode(openmetrics)
        }));
        let metrics_shutdown = shutdown.clone();
        metrics_task = Some(tokio::spawn(async move {
            if let Err(err) = weft_server::serve(listener, app, metrics_shutdown).await {
                tracing::error!(component = "worker", error = %err, "worker metrics listener failed");
            }
        }));
    }
    for queue in queues {
        builder = builder.queue(queue);
    }
    if let Some(id) = worker_id {
        builder = builder.worker_id(id);
    }
    for (name, handler) in weft_worker::exec::handlers_supervised(handlers, Some(supervisor)) {
        builder = builder.handler_arc(name, handler);
    }
    builder.build().run(shutdown).await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    Ok(())
}

/// This binary, to re-execute as `weft __supervise`. On Linux
/// `/proc/self/exe`, which still names the running binary after an upgrade
/// replaced or deleted its file; elsewhere the path it was started from.
fn supervisor_binary() -> Result<std::path::PathBuf> {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe.to_owned());
    }
    std::env::current_exe().context("cannot find the weft binary to supervise handlers")
}

/// Feeds the worker SDK's outcomes into the worker's metrics.
struct WorkerMetricsObserver(weft_telemetry::metrics::WorkerMetrics);

impl weft_worker::WorkerObserver for WorkerMetricsObserver {
    fn task_started(&self, handler: &str) {
        self.0.task_started(handler);
    }

    fn task_finished(&self, handler: &str, outcome: &str, seconds: f64) {
        self.0.task_finished(handler, outcome, seconds);
    }

    fn polled(&self, outcome: &str, seconds: f64) {
        self.0.polled(outcome, seconds);
    }
}

/// The diagnosis thresholds from their flags.
fn thresholds(args: &crate::DiagnosisArgs) -> Result<weft_core::diagnosis::Thresholds> {
    let ms = |flag: &str, text: &str| -> Result<i64> {
        Ok(i64::try_from(parse_duration(flag, text)?.as_millis()).unwrap_or(i64::MAX))
    };
    Ok(weft_core::diagnosis::Thresholds {
        worker_live_ms: ms("worker-live-window", &args.worker_live_window)?,
        running_long_ms: ms("running-long-after", &args.running_long_after)?,
        approval_ms: ms("approval-stalled-after", &args.approval_stalled_after)?,
        overdue_timer_ms: ms("timer-overdue-after", &args.timer_overdue_after)?,
        saturated_ms: ms("saturated-after", &args.saturated_after)?,
        repeat_attempts: 2,
        database_slow_ms: ms("database-slow-after", &args.database_slow_after)?,
    })
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("postgres://weft:hunter2@db:5432/weft"),
            "postgres://weft:[redacted]@db:5432/weft"
        );
        assert_eq!(
            redact_url("postgres://weft@db/weft"),
            "postgres://weft@db/weft"
        );
        assert_eq!(redact_url("sqlite://weft.db"), "sqlite://weft.db");
    }
}
