//! What every scenario stands on: a fresh database per scenario (a database
//! in a throwaway durable PostgreSQL cluster, or a temp SQLite file), the
//! Weft server spawned in this process on a loopback port (wired as
//! `weft server` wires it), the worker (`--worker`: an SDK worker with no-op
//! handlers in this process or in a child process, or the exec worker `weft
//! worker` running `true` per step), and a wait for a set of runs to end
//! that asks the store, not the worker.

use std::{
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use weft_client::Client;
use weft_core::observe::{Fanout, GaugeSnapshot, Observation, Observer};
use weft_server::wiring::{Running, StoreConfig, Wiring};
use weft_store::{PoolOptions, Store};
use weft_testkit::{PgCluster, SqliteDb};
use weft_worker::Worker;

/// The handler every bench step uses: returns `null` at once.
pub const NOOP_HANDLER: &str = "bench.noop";

pub const ONE_STEP: (&str, &str) = (
    "bench_one",
    "name: bench_one\nsteps:\n  - name: only\n    handler: bench.noop\n",
);

pub const THREE_STEPS: (&str, &str) = (
    "bench_three",
    "name: bench_three\nsteps:\n  - name: first\n    handler: bench.noop\n  - name: second\n    handler: bench.noop\n    depends_on: [first]\n  - name: third\n    handler: bench.noop\n    depends_on: [second]\n",
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Knobs of the in-process server, recorded in every result line.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub db_pool_size: u32,
    pub engine_tick: Duration,
}

/// Where scenarios get their databases. A Postgres cluster is started once
/// and shared; each scenario gets its own database in it.
pub struct Databases {
    cluster: Option<PgCluster>,
    external_pg: Option<String>,
    pg_settings: Option<Value>,
}

/// A scenario's database; a temp SQLite file is deleted when this drops.
pub struct Database {
    pub url: String,
    pub settings: Value,
    _sqlite: Option<SqliteDb>,
}

impl Databases {
    /// `external_pg`: use this Postgres database instead of a throwaway cluster.
    pub fn new(external_pg: Option<String>) -> Databases {
        Databases {
            cluster: None,
            external_pg,
            pg_settings: None,
        }
    }

    /// A fresh, empty database on `backend` (blocking: may start a cluster).
    pub fn fresh(&mut self, backend: Backend) -> Result<Database> {
        match backend {
            Backend::Sqlite => {
                let db = weft_testkit::sqlite_database();
                Ok(Database {
                    url: db.url.clone(),
                    settings: json!({"file": "temp file", "journal_mode": "wal", "synchronous": "full (weft-store default)"}),
                    _sqlite: Some(db),
                })
            }
            Backend::Postgres => {
                if let Some(url) = &self.external_pg {
                    return Ok(Database {
                        url: url.clone(),
                        settings: json!({"cluster": "external (--database-url)"}),
                        _sqlite: None,
                    });
                }
                if self.cluster.is_none() {
                    eprintln!(
                        "[weft-bench] starting a throwaway PostgreSQL cluster (fsync on, default synchronous_commit)..."
                    );
                    let cluster =
                        std::panic::catch_unwind(PgCluster::start_durable).map_err(|_| {
                            anyhow::anyhow!(
                                "could not start PostgreSQL (see the panic message above)"
                            )
                        })?;
                    let settings = json!({
                        "cluster": "throwaway (weft-testkit start_durable)",
                        "server_version": cluster.query("SHOW server_version"),
                        "fsync": cluster.query("SHOW fsync"),
                        "synchronous_commit": cluster.query("SHOW synchronous_commit"),
                        "full_page_writes": cluster.query("SHOW full_page_writes"),
                        "shared_buffers": cluster.query("SHOW shared_buffers"),
                    });
                    if settings["fsync"] != "on" || settings["synchronous_commit"] != "on" {
                        bail!("the benchmark cluster is not durable: {settings}");
                    }
                    self.pg_settings = Some(settings);
                    self.cluster = Some(cluster);
                }
                let cluster = self.cluster.as_ref().expect("just started");
                Ok(Database {
                    url: cluster.create_database(),
                    settings: self.pg_settings.clone().unwrap_or(Value::Null),
                    _sqlite: None,
                })
            }
        }
    }
}

/// The Weft server running in this process.
pub struct Server {
    pub url: String,
    pub store: Store,
    /// Attempts claimed and ended, as the store reports them: the progress
    /// and first-call mark of a worker in another process.
    pub attempts: Arc<Calls>,
    shutdown: CancellationToken,
    running: Running,
}

/// Counts the attempts the store reports: the first claim stands for the
/// first handler call and every ended attempt for one call, for workers
/// whose handlers the harness cannot count itself.
struct AttemptCounter(Arc<Calls>);

impl Observer for AttemptCounter {
    fn observe(&self, observation: &Observation<'_>) {
        match observation {
            Observation::AttemptClaimed { .. } => {
                self.0.first.get_or_init(Instant::now);
            }
            Observation::AttemptFinished(_) => {
                self.0.count.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn gauges(&self, _: &GaugeSnapshot) {}
}

impl Server {
    pub async fn start(database_url: &str, options: &ServerOptions) -> Result<Server> {
        Server::start_with(database_url, options, weft_server::Config::default()).await
    }

    /// [`Server::start`] with a server configuration (signals).
    pub async fn start_with(
        database_url: &str,
        options: &ServerOptions,
        mut config: weft_server::Config,
    ) -> Result<Server> {
        // Beside the server's own observers: one atomic add per attempt.
        let attempts = Arc::new(Calls::default());
        let counter: Arc<dyn Observer> = Arc::new(AttemptCounter(attempts.clone()));
        config.observer = Some(match config.observer.take() {
            Some(other) => Arc::new(Fanout(vec![other, counter])),
            None => counter,
        });
        let defaults = weft_engine::Config::default();
        let wired = Wiring {
            store: StoreConfig {
                pool: PoolOptions {
                    max_connections: options.db_pool_size,
                    ..PoolOptions::default()
                },
                ..StoreConfig::new(database_url)
            },
            engine: weft_engine::Config {
                tick: options.engine_tick,
                ..defaults
            },
            server: config,
            listen: "127.0.0.1:0".to_owned(),
            serve: Default::default(),
        }
        .build()
        .await?;
        let shutdown = CancellationToken::new();
        let running = wired.spawn(shutdown.clone());
        Ok(Server {
            url: running.url(),
            store: running.store.clone(),
            attempts,
            shutdown,
            running,
        })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Err(err) = self.running.wait().await {
            eprintln!("[weft-bench] HTTP server failed: {err}");
        }
    }
}

/// Counts handler calls (progress only: a run is done when the store says so).
#[derive(Default)]
pub struct Calls {
    count: AtomicU64,
    first: OnceLock<Instant>,
}

impl Calls {
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// When the first handler ran.
    pub fn first(&self) -> Option<Instant> {
        self.first.get().copied()
    }
}

/// An SDK worker in this process, with its own HTTP client.
pub struct InprocWorker {
    pub calls: Arc<Calls>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl InprocWorker {
    pub fn start(url: &str, concurrency: usize) -> InprocWorker {
        let calls = Arc::new(Calls::default());
        let counted = calls.clone();
        let worker = Worker::builder(Client::new(url))
            .concurrency(concurrency)
            .worker_id("weft-bench")
            .handler(NOOP_HANDLER, move |_ctx: weft_worker::TaskContext| {
                counted.first.get_or_init(Instant::now);
                counted.count.fetch_add(1, Ordering::Relaxed);
                async { Ok(Value::Null) }
            })
            .build();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker.run(shutdown.clone()));
        InprocWorker {
            calls,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Where the handlers run (`--worker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerMode {
    /// An SDK worker on the harness's own runtime.
    Inproc,
    /// An SDK worker in its own OS process (this binary, re-executed with
    /// the hidden `--worker-child`).
    Process,
    /// The exec worker, `weft worker --handlers`: one `true` process per step.
    Exec,
}

impl WorkerMode {
    /// The `worker` field and variant label of a result line.
    pub fn label(self) -> &'static str {
        match self {
            WorkerMode::Inproc => "sdk-inproc",
            WorkerMode::Process => "sdk-process",
            WorkerMode::Exec => "exec",
        }
    }
}

/// How to start the worker of a scenario.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub mode: WorkerMode,
    /// The `weft` binary, for `exec`.
    pub weft_bin: Option<PathBuf>,
    /// Log filter of a worker process (stderr).
    pub log: String,
}

/// This binary, to re-execute as a child: `/proc/self/exe`, which still
/// names it when a rebuild has replaced the file meanwhile.
pub fn self_exe() -> Result<PathBuf> {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe);
    }
    std::env::current_exe().context("locating weft-bench")
}

/// The `weft` binary: `--weft-bin`, else beside this executable (both are
/// built into the same target directory).
pub fn find_weft_bin(explicit: Option<&PathBuf>) -> Result<PathBuf> {
    let path = match explicit {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating weft-bench")?
            .with_file_name("weft"),
    };
    if !path.is_file() {
        bail!(
            "no weft binary at {} (build it: cargo build --release -p weft-cli, or pass --weft-bin)",
            path.display()
        );
    }
    Ok(path)
}

/// The logging variables a child must not inherit, beside the OpenTelemetry
/// ones (`Vars::NAMES`): a worker process exports and logs nothing the
/// scenario did not ask for.
const CHILD_LOG_ENV_REMOVE: [&str; 3] = ["WEFT_LOG_DIR", "WEFT_LOG_FORMAT", "RUST_LOG"];

/// A scenario's worker, wherever it runs. `calls` counts handler calls (in
/// process) or ended attempts as the store reports them (child processes).
pub struct BenchWorker {
    pub calls: Arc<Calls>,
    inner: WorkerInner,
}

enum WorkerInner {
    Inproc(InprocWorker),
    Child {
        child: tokio::process::Child,
        /// The exec worker's handlers file.
        _dir: Option<tempfile::TempDir>,
    },
}

impl BenchWorker {
    pub fn start(spec: &WorkerSpec, server: &Server, concurrency: usize) -> Result<BenchWorker> {
        let (mut command, dir) = match spec.mode {
            WorkerMode::Inproc => {
                let worker = InprocWorker::start(&server.url, concurrency);
                return Ok(BenchWorker {
                    calls: worker.calls.clone(),
                    inner: WorkerInner::Inproc(worker),
                });
            }
            WorkerMode::Process => {
                let mut command = tokio::process::Command::new(self_exe()?);
                command
                    .arg("--worker-child")
                    .arg(&server.url)
                    .arg("--concurrency")
                    .arg(concurrency.to_string())
                    .arg("--log")
                    .arg(&spec.log)
                    // Held open by `child`: the worker stops when it closes.
                    .stdin(std::process::Stdio::piped());
                (command, None)
            }
            WorkerMode::Exec => {
                let weft = find_weft_bin(spec.weft_bin.as_ref())?;
                let dir = tempfile::tempdir().context("temp dir for the handlers file")?;
                let handlers = dir.path().join("handlers.toml");
                std::fs::write(
                    &handlers,
                    format!("[handlers]\n\"{NOOP_HANDLER}\" = {{ command = [\"true\"] }}\n"),
                )?;
                let mut command = tokio::process::Command::new(weft);
                command
                    .arg("worker")
                    .arg("--handlers")
                    .arg(&handlers)
                    .arg("--concurrency")
                    .arg(concurrency.to_string())
                    .arg("--worker-id")
                    .arg("weft-bench-exec")
                    .arg("--url")
                    .arg(&server.url)
                    .env("WEFT_LOG", &spec.log)
                    .stdin(std::process::Stdio::null());
                (command, Some(dir))
            }
        };
        for name in weft_telemetry::traces::Vars::NAMES
            .iter()
            .chain(&CHILD_LOG_ENV_REMOVE)
        {
            command.env_remove(name);
        }
        command
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting the {} worker", spec.mode.label()))?;
        Ok(BenchWorker {
            calls: server.attempts.clone(),
            inner: WorkerInner::Child { child, _dir: dir },
        })
    }

    /// The worker's process id, when it has its own process.
    pub fn pid(&self) -> Option<u32> {
        match &self.inner {
            WorkerInner::Inproc(_) => None,
            WorkerInner::Child { child, .. } => child.id(),
        }
    }

    /// Stops the worker: in process, as `InprocWorker::stop`; a child gets
    /// SIGTERM (it finishes the tasks in hand), and SIGKILL after 10 s.
    pub async fn stop(self) {
        match self.inner {
            WorkerInner::Inproc(worker) => worker.stop().await,
            WorkerInner::Child { mut child, _dir } => {
                if let Some(pid) = child.id() {
                    let _ = std::process::Command::new("kill")
                        .arg("-TERM")
                        .arg(pid.to_string())
                        .status();
                }
                match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                    Ok(_) => {}
                    Err(_) => {
                        eprintln!(
                            "[weft-bench] the worker process did not stop on SIGTERM: killing it"
                        );
                        let _ = child.kill().await;
                    }
                }
            }
        }
    }
}

/// The body of `weft-bench --worker-child URL`: an SDK worker with the no-op
/// handler against the server at `url`, until SIGTERM or SIGINT, or until
/// stdin closes (the harness that started it is gone).
pub async fn run_worker_child(url: &str, concurrency: usize) -> Result<()> {
    let shutdown = CancellationToken::new();
    let orphaned = shutdown.clone();
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut buf = [0u8; 64];
        while !matches!(std::io::stdin().read(&mut buf), Ok(0) | Err(_)) {}
        orphaned.cancel();
    });
    let trigger = shutdown.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        trigger.cancel();
    });
    Worker::builder(Client::new(url))
        .concurrency(concurrency)
        .worker_id("weft-bench-process")
        .handler(NOOP_HANDLER, |_ctx: weft_worker::TaskContext| async {
            Ok(Value::Null)
        })
        .build()
        .run(shutdown)
        .await;
    Ok(())
}

pub async fn register(client: &Client, (name, manifest): (&str, &str)) -> Result<()> {
    client
        .put_workflow(name, manifest)
        .await
        .with_context(|| format!("registering {name}"))?;
    Ok(())
}

pub async fn start_run(client: &Client, workflow: &str, i: usize) -> Result<String> {
    let request = weft_api::StartRunRequest {
        input: json!({ "i": i }),
        idempotency_key: None,
        ..Default::default()
    };
    Ok(client
        .start_run(workflow, &request)
        .await
        .with_context(|| format!("starting run {i} of {workflow}"))?
        .run_id)
}

/// Starts runs `range` (input `{"i": i}`) in one request to the batch start
/// endpoint; their run ids, in order.
pub async fn start_runs(
    client: &Client,
    workflow: &str,
    range: std::ops::Range<usize>,
) -> Result<Vec<String>> {
    let request = weft_api::StartRunsRequest {
        runs: range
            .clone()
            .map(|i| weft_api::StartRunRequest {
                input: json!({ "i": i }),
                idempotency_key: None,
                ..Default::default()
            })
            .collect(),
    };
    let started = client
        .start_runs(workflow, &request)
        .await
        .with_context(|| format!("starting runs {range:?} of {workflow} in one batch"))?;
    if started.runs.len() != range.len() {
        bail!(
            "a batch of {} starts answered {} runs",
            range.len(),
            started.runs.len()
        );
    }
    Ok(started.runs.into_iter().map(|r| r.run_id).collect())
}

/// Starts a run and polls `GET /v1/runs/{id}` every `every` until it ends;
/// returns the milliseconds from just before the start request to the
/// response that showed it completed, and the run id.
pub async fn run_to_completion(
    client: &Client,
    workflow: &str,
    i: usize,
    every: Duration,
    timeout: Duration,
) -> Result<(f64, String)> {
    let started = Instant::now();
    let run_id = start_run(client, workflow, i).await?;
    loop {
        // `every` zero: one request the server holds until the run ends.
        let run = if every.is_zero() {
            let wait = timeout.min(Duration::from_secs(60));
            client
                .wait_run(&run_id, wait)
                .await
                .context("GET /v1/runs/{id}?wait_ms")?
        } else {
            client.get_run(&run_id).await.context("GET /v1/runs/{id}")?
        };
        match run.status.as_str() {
            "completed" => return Ok((started.elapsed().as_secs_f64() * 1000.0, run_id)),
            "failed" | "cancelled" => bail!("run {run_id} ended {}: {:?}", run.status, run.error),
            _ => {}
        }
        if started.elapsed() > timeout {
            bail!(
                "run {run_id} not completed after {timeout:?} (status {})",
                run.status
            );
        }
        if !every.is_zero() {
            tokio::time::sleep(every).await;
        }
    }
}

/// How a wait for many runs ended.
pub struct Drained {
    /// When the store first showed every run completed; None on timeout.
    pub at: Option<Instant>,
    /// Runs seen completed.
    pub done: usize,
}

/// Handler calls to wait for: `expected` more than `base`.
#[derive(Debug, Clone, Copy)]
pub struct CallTarget {
    pub base: u64,
    pub expected: u64,
}

/// Waits until the store shows every run in `run_ids` completed. The handler
/// call counter only paces the (costly) status checks: a status check runs
/// once the handlers have been called `target.base + target.expected`
/// times, then every `every` on the runs not yet seen completed. Prints
/// progress to stderr.
pub async fn wait_completed(
    store: &Store,
    run_ids: &[String],
    calls: &Calls,
    target: CallTarget,
    every: Duration,
    timeout: Duration,
    label: &str,
) -> Result<Drained> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<weft_core::RunId> = run_ids
        .iter()
        .map(|id| id.parse())
        .collect::<Result<_, _>>()
        .context("a started run's id")?;
    let mut progress = Progress::new(label, target.expected);
    let calls_target = target.base + target.expected;
    loop {
        let called = calls.count();
        progress.show(called.saturating_sub(target.base));
        if called >= calls_target {
            let mut still = Vec::new();
            for chunk in pending.chunks(1000) {
                let statuses = store
                    .run_statuses(chunk)
                    .await
                    .context("reading run statuses")?;
                for id in chunk {
                    match statuses.get(id).map(String::as_str) {
                        Some("completed") => {}
                        Some(status @ ("failed" | "cancelled")) => bail!("run {id} ended {status}"),
                        _ => still.push(*id),
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                progress.finish();
                return Ok(Drained {
                    at: Some(Instant::now()),
                    done: run_ids.len(),
                });
            }
        }
        if Instant::now() > deadline {
            progress.finish();
            let statuses = store
                .run_statuses(&pending[..pending.len().min(1000)])
                .await
                .unwrap_or_default();
            let unfinished = statuses.values().filter(|s| *s != "completed").count();
            eprintln!(
                "[weft-bench] {label}: timed out; {unfinished}+ runs unfinished (handler calls {called}/{calls_target})"
            );
            return Ok(Drained {
                at: None,
                done: run_ids.len() - pending.len().min(run_ids.len()),
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// A progress line on stderr every tenth of the way.
pub struct Progress {
    label: String,
    total: u64,
    next_tenth: u64,
    started: Instant,
}

impl Progress {
    pub fn new(label: &str, total: u64) -> Progress {
        Progress {
            label: label.to_owned(),
            total: total.max(1),
            next_tenth: 1,
            started: Instant::now(),
        }
    }

    pub fn show(&mut self, done: u64) {
        if self.next_tenth <= 10 && done * 10 >= self.total * self.next_tenth {
            eprintln!(
                "[weft-bench]   {} {:>3}% ({done}/{}) {:.1}s",
                self.label,
                (done * 100 / self.total).min(100),
                self.total,
                self.started.elapsed().as_secs_f64()
            );
            while self.next_tenth <= 10 && done * 10 >= self.total * self.next_tenth {
                self.next_tenth += 1;
            }
        }
    }

    pub fn finish(&mut self) {
        self.next_tenth = 11;
    }
}
