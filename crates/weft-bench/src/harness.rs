//! What every scenario stands on: a fresh database per scenario (a database
//! in a throwaway durable PostgreSQL cluster, or a temp SQLite file), the
//! Weft server spawned in this process on a loopback port (wired as
//! `weft server` wires it), an in-process SDK worker with no-op handlers, and
//! a wait for a set of runs to end that asks the store, not the worker.

use std::{
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
use weft_engine::Engine;
use weft_store::{PoolOptions, Settings, Store};
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
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start(database_url: &str, options: &ServerOptions) -> Result<Server> {
        let pool = PoolOptions {
            max_connections: options.db_pool_size,
            ..PoolOptions::default()
        };
        let store = Store::connect_with(database_url, Settings::default(), &pool)
            .await
            .with_context(|| format!("cannot open the database at {database_url}"))?;
        let engine = Engine::new(
            store.clone(),
            weft_engine::Config {
                tick: options.engine_tick,
                ..Default::default()
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind a loopback port")?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = weft_server::router(engine.clone(), weft_server::Config::default());
        let shutdown = CancellationToken::new();
        let engine_task = tokio::spawn(engine.run(shutdown.clone()));
        let http_shutdown = shutdown.clone();
        let http_task = tokio::spawn(async move {
            if let Err(err) = weft_server::serve(listener, app, http_shutdown).await {
                eprintln!("[weft-bench] HTTP server failed: {err}");
            }
        });
        Ok(Server {
            url,
            store,
            shutdown,
            tasks: vec![engine_task, http_task],
        })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.store.close().await;
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
    };
    Ok(client
        .start_run(workflow, &request)
        .await
        .with_context(|| format!("starting run {i} of {workflow}"))?
        .run_id)
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
        let run = client.get_run(&run_id).await.context("GET /v1/runs/{id}")?;
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
        tokio::time::sleep(every).await;
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
    let mut pending: Vec<String> = run_ids.to_vec();
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
                        _ => still.push(id.clone()),
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
