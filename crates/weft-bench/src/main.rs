//! `weft-bench`: Weft's side of the peer benchmarks (the peer harnesses in ../shared/peers).
//! Starts everything it needs in this process: a throwaway durable
//! PostgreSQL cluster (or a temp SQLite file), the Weft server on a loopback
//! port and an SDK worker with no-op handlers (or, with `--worker process` or
//! `exec`, a worker process beside it; E runs its halves in child processes
//! of this binary, see overhead.rs). Each scenario prints one JSON
//! line on stdout in the peers' shape (`"peer": "weft"`); progress and a
//! human summary go to stderr.
//!
//!     weft-bench                        # every scenario on Postgres, then SQLite
//!     weft-bench a b --backend sqlite   # throughput and latency on SQLite only
//!     weft-bench a --worker exec        # the exec worker: a `true` process per step
//!     weft-bench e --backend sqlite     # signals off vs on (child processes)
//!     weft-bench d f g                  # fan-out, memory, 1,000,000-run scale (fanout.rs, memory.rs, scale.rs)
//!     weft-bench h --backend sqlite     # weft doctor's diagnosis over G's seed and 10,000 stuck runs (diagnose.rs)

mod diagnose;
mod fanout;
mod harness;
mod memory;
mod overhead;
mod scale;
mod scenarios;
mod stats;

use std::{io::Write, time::Duration};

use anyhow::{Result, bail};
use clap::Parser;
use serde_json::{Map, Value, json};

use harness::{Backend, Databases, Server, ServerOptions, WorkerMode, WorkerSpec};
use scenarios::{Common, Enqueue, ThroughputArgs, WorkflowArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Throughput: N one-step runs started one request at a time, then drained.
    A,
    /// Throughput with `--enqueue-concurrency` start requests in flight.
    ABatch,
    /// Throughput with runs started through the batch endpoint, `--start-batch` per request.
    ABulk,
    /// Latency of one-step runs, one at a time.
    B,
    /// Three-step workflows: sequential latency, then throughput.
    C,
    /// C with the workflows started through the batch endpoint, `--start-batch` per request.
    CBulk,
    /// Fan-out: one run of a root, `--d-width` parallel steps (or `for_each` children) and a join, `--d-rounds` times.
    D,
    /// Observability overhead: A (`--e-n` runs) and B with every signal off, then on.
    E,
    /// Memory: process RSS idle, with `--f-n` runs queued, then while they drain.
    F,
    /// Scale: list and show queries with `--g-runs` runs seeded in the store.
    G,
    /// Diagnosis at scale: `GET /v1/diagnostics` with G's seed and `--h-active` runs not moving.
    H,
    /// a, a-batch, a-bulk, b, c, c-bulk, d, e, f, g.
    All,
}

#[derive(Debug, Parser)]
#[command(
    name = "weft-bench",
    about = "Weft's benchmark scenarios A (throughput), B (latency), C (workflows), D (fan-out), E (signals overhead), F (memory), G (scale), in the peers' JSON line shape"
)]
struct Args {
    /// Scenarios to run, in this order, each on a fresh database and server.
    #[arg(value_enum, default_values_t = [Scenario::All])]
    scenarios: Vec<Scenario>,
    /// Backends, comma separated; every scenario runs on each.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Backend::Postgres, Backend::Sqlite])]
    backend: Vec<Backend>,
    /// Use this PostgreSQL database instead of starting a throwaway cluster (runs accumulate in it).
    #[arg(long)]
    database_url: Option<String>,
    /// A: runs to enqueue and drain.
    #[arg(long, default_value_t = 10_000)]
    n: usize,
    /// a-bulk, c-bulk: runs per batch start request.
    #[arg(long, default_value_t = 500)]
    start_batch: usize,
    /// a-batch: start requests in flight.
    #[arg(long, default_value_t = 16)]
    enqueue_concurrency: usize,
    /// B: recorded samples.
    #[arg(long, default_value_t = 200)]
    b_n: usize,
    /// C: workflows in the throughput part.
    #[arg(long, default_value_t = 1000)]
    c_n: usize,
    /// C: sequential workflows in the latency part.
    #[arg(long, default_value_t = 100)]
    c_lat_n: usize,
    /// C: start requests in flight during the throughput part.
    #[arg(long, default_value_t = 1)]
    c_submit_concurrency: usize,
    /// D: parallel steps between the root and the join.
    #[arg(long, default_value_t = 1000)]
    d_width: usize,
    /// D: runs, one after the other; the median is reported.
    #[arg(long, default_value_t = 3)]
    d_rounds: usize,
    /// D: fan out with one `for_each` step of `--d-width` children instead
    /// of `--d-width` declared steps.
    #[arg(long)]
    d_for_each: bool,
    /// F: runs queued (started with `--enqueue-concurrency` requests in flight).
    #[arg(long, default_value_t = 100_000)]
    f_n: usize,
    /// F: runs per batch start request (`POST /v1/workflows/{name}/runs/batch`);
    /// 0 starts one run per request, `--enqueue-concurrency` in flight.
    #[arg(long, default_value_t = weft_store::MAX_STARTS_PER_BATCH)]
    f_batch: usize,
    /// F: seconds the idle server waits before the idle reading.
    #[arg(long, default_value_t = 5)]
    f_idle_s: u64,
    /// F: drain the queued runs with the worker afterwards (`--f-drain false` skips it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    f_drain: bool,
    /// G: runs seeded in the store.
    #[arg(long, default_value_t = 1_000_000)]
    g_runs: usize,
    /// G: timed repetitions of each query.
    #[arg(long, default_value_t = 50)]
    g_reps: usize,
    /// G: workflows the seeded runs rotate over.
    #[arg(long, default_value_t = 4)]
    g_workflows: usize,
    /// G: one seeded run in this many is failed.
    #[arg(long, default_value_t = 100)]
    g_failed_every: usize,
    /// G: runs seeded per INSERT statement.
    #[arg(long, default_value_t = 100_000)]
    g_chunk: usize,
    /// G: also print (and record) the plans of the list and lookup queries.
    #[arg(long)]
    g_explain: bool,
    /// G: run this SQL on the seeded database before the timed queries, e.g.
    /// an index to try (repeatable; the result's config says so).
    #[arg(long)]
    g_try_sql: Vec<String>,
    /// H: runs not moving beside G's seed (a third stalled).
    #[arg(long, default_value_t = 10_000)]
    h_active: usize,
    /// H: timed repetitions of each request.
    #[arg(long, default_value_t = 30)]
    h_reps: usize,
    /// H: runs listed per cause.
    #[arg(long, default_value_t = 20)]
    h_limit: usize,
    /// Unrecorded runs before B's and C's sequential samples.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// SDK worker concurrency (tasks in hand; a poll asks for as many as are free, at most 100).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100))]
    concurrency: u32,
    /// How often B and C poll GET /v1/runs/{id} for completion; 0: one
    /// `GET /v1/runs/{id}?wait_ms=` per run, answered when it ends.
    #[arg(long, default_value_t = 0)]
    observe_ms: u64,
    /// Give up on a drain after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Server database pool size (as `weft server --db-pool-size`).
    #[arg(long, default_value_t = 16)]
    db_pool_size: u32,
    /// Engine sweep interval in ms (as `weft server --engine-tick`).
    #[arg(long, default_value_t = 200)]
    engine_tick_ms: u64,
    /// Also append each result line to this file.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Log filter for Weft's own logs on stderr.
    #[arg(long, default_value = "warn")]
    log: String,
    /// Where handlers run: an SDK worker in this process, an SDK worker in
    /// its own process, or the exec worker (`weft worker`, `true` per step).
    #[arg(long, value_enum, default_value_t = WorkerMode::Inproc)]
    worker: WorkerMode,
    /// The `weft` binary for `--worker exec` (default: beside weft-bench).
    #[arg(long)]
    weft_bin: Option<std::path::PathBuf>,
    /// E: runs in its A half.
    #[arg(long, default_value_t = 5000)]
    e_n: usize,
    /// Internal: run as the SDK worker process of `--worker process`, against this server.
    #[arg(long, hide = true)]
    worker_child: Option<String>,
    /// Internal: run as a child of E with these signals.
    #[arg(long, hide = true, value_enum)]
    signals_child: Option<overhead::Signals>,
    /// Internal: E child's database.
    #[arg(long, hide = true)]
    child_database_url: Option<String>,
    /// Internal: E child's OTLP collector (base URL).
    #[arg(long, hide = true)]
    otlp_endpoint: Option<String>,
    /// Internal: E child's log directory.
    #[arg(long, hide = true)]
    log_dir: Option<std::path::PathBuf>,
}

impl Args {
    fn common(&self, backend: Backend) -> Common {
        Common {
            backend,
            concurrency: self.concurrency as usize,
            observe_every: Duration::from_millis(self.observe_ms),
            warmup: self.warmup,
            timeout: Duration::from_secs(self.timeout_s),
            worker: WorkerSpec {
                mode: self.worker,
                weft_bin: self.weft_bin.clone(),
                log: self.log.clone(),
            },
        }
    }

    fn server_options(&self) -> ServerOptions {
        ServerOptions {
            db_pool_size: self.db_pool_size,
            engine_tick: Duration::from_millis(self.engine_tick_ms),
        }
    }

    /// The flags an E child shares with this process.
    fn child_flags(&self) -> Vec<String> {
        let mut flags: Vec<String> = [
            ("--concurrency", self.concurrency.to_string()),
            ("--observe-ms", self.observe_ms.to_string()),
            ("--warmup", self.warmup.to_string()),
            ("--timeout-s", self.timeout_s.to_string()),
            ("--db-pool-size", self.db_pool_size.to_string()),
            ("--engine-tick-ms", self.engine_tick_ms.to_string()),
            ("--log", self.log.clone()),
            (
                "--worker",
                clap::ValueEnum::to_possible_value(&self.worker)
                    .expect("no skipped values")
                    .get_name()
                    .to_owned(),
            ),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect();
        if let Some(bin) = &self.weft_bin {
            flags.extend(["--weft-bin".to_owned(), bin.display().to_string()]);
        }
        flags
    }
}

/// The processes this binary is re-executed as; None when it is neither.
fn child_main(args: &Args) -> Option<i32> {
    if let Some(url) = &args.worker_child {
        let log = weft_telemetry::LogConfig {
            format: weft_telemetry::LogFormat::Text,
            filter: args.log.clone(),
            dir: None,
        };
        let _log_guard = weft_telemetry::init(&log).ok()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .ok()?;
        let outcome = runtime.block_on(harness::run_worker_child(url, args.concurrency as usize));
        return Some(match outcome {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("weft-bench worker: {err:#}");
                1
            }
        });
    }
    let signals = args.signals_child?;
    let (Some(database_url), Some(&backend)) = (&args.child_database_url, args.backend.first())
    else {
        eprintln!("weft-bench: --signals-child needs --child-database-url and --backend");
        return Some(2);
    };
    let part = match args.scenarios.first() {
        Some(Scenario::A) => overhead::Part::A,
        Some(Scenario::B) => overhead::Part::B,
        _ => {
            eprintln!("weft-bench: --signals-child runs a or b");
            return Some(2);
        }
    };
    Some(overhead::child(&overhead::ChildArgs {
        signals,
        part,
        database_url: database_url.clone(),
        otlp_endpoint: args.otlp_endpoint.clone(),
        log_dir: args.log_dir.clone(),
        common: args.common(backend),
        server: args.server_options(),
        n: args.n,
        b_n: args.b_n,
    }))
}

fn expand(scenarios: &[Scenario]) -> Vec<Scenario> {
    let mut out = Vec::new();
    for &s in scenarios {
        match s {
            Scenario::All => out.extend([
                Scenario::A,
                Scenario::ABatch,
                Scenario::ABulk,
                Scenario::B,
                Scenario::C,
                Scenario::CBulk,
                Scenario::D,
                Scenario::E,
                Scenario::F,
                Scenario::G,
            ]),
            other => out.push(other),
        }
    }
    out
}

fn main() {
    let args = Args::parse();
    if let Some(code) = child_main(&args) {
        std::process::exit(code);
    }
    let log = weft_telemetry::LogConfig {
        format: weft_telemetry::LogFormat::Text,
        filter: args.log.clone(),
        dir: None,
    };
    let _log_guard = match weft_telemetry::init(&log) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("weft-bench: {err}");
            std::process::exit(2);
        }
    };
    let code = match run(&args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(err) => {
            eprintln!("weft-bench: {err:#}");
            1
        }
    };
    std::process::exit(code);
}

/// Runs every (backend, scenario); false when one of them failed.
fn run(args: &Args) -> Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let foreign = stats::ForeignCpu::start();
    let mut databases = Databases::new(args.database_url.clone());
    let server_options = args.server_options();
    let mut all_ok = true;
    for &backend in &args.backend {
        for scenario in expand(&args.scenarios) {
            let name = format!("{scenario:?}")
                .to_lowercase()
                .replace("abatch", "a-batch");
            eprintln!("[weft-bench] == scenario {name} on {}", backend.as_str());
            let database = databases.fresh(backend)?;
            let common = args.common(backend);
            // E: three more fresh databases (four children: A and B, off and on).
            let e_databases = match scenario {
                Scenario::E => (0..3)
                    .map(|_| databases.fresh(backend))
                    .collect::<Result<Vec<_>>>()?,
                _ => Vec::new(),
            };
            foreign.take();
            let outcome = runtime.block_on(async {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
                    result = async {
                        if let [b, c, d] = &e_databases[..] {
                            let params = overhead::Params { n: args.e_n, b_n: args.b_n, child_flags: args.child_flags(), worker: args.worker.label() };
                            overhead::overhead(backend, &params, [&database.url, &b.url, &c.url, &d.url]).await
                        } else {
                            run_scenario(scenario, args, &common, &database.url, &server_options).await
                        }
                    } => result,
                }
            });
            let mut result = match outcome {
                Ok(result) => result,
                Err(err) if err.to_string() == "interrupted" => bail!("interrupted"),
                Err(err) => {
                    eprintln!(
                        "[weft-bench] scenario {name} on {} failed: {err:#}",
                        backend.as_str()
                    );
                    all_ok = false;
                    continue;
                }
            };
            let extra = json!({
                "peer": "weft",
                "backend": backend.as_str(),
                "worker": args.worker.label(),
                "db": database.settings,
                "server": {"db_pool_size": args.db_pool_size, "engine_tick_ms": args.engine_tick_ms, "in_process": true},
                "weft_version": env!("CARGO_PKG_VERSION"),
                "foreign_cpu_cores": foreign.take(),
                "loadavg1": stats::loadavg1(),
                "ts": chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
            });
            if let (Some(result), Value::Object(extra)) = (result.as_object_mut(), extra) {
                result.extend(extra);
            }
            let line = ordered_line(&result);
            println!("{line}");
            let _ = std::io::stdout().flush();
            if let Some(path) = &args.out {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                writeln!(file, "{line}")?;
            }
            eprintln!("[weft-bench] {}", summary(&result));
        }
    }
    Ok(all_ok)
}

async fn run_scenario(
    scenario: Scenario,
    args: &Args,
    common: &Common,
    url: &str,
    options: &ServerOptions,
) -> Result<Value> {
    memory::scenario_starting();
    let server = Server::start(url, options).await?;
    let result = match scenario {
        Scenario::A | Scenario::ABatch | Scenario::ABulk => {
            let a = ThroughputArgs {
                n: args.n,
                enqueue: Enqueue {
                    in_flight: if scenario == Scenario::ABatch {
                        args.enqueue_concurrency
                    } else {
                        1
                    },
                    batch: if scenario == Scenario::ABulk {
                        args.start_batch
                    } else {
                        1
                    },
                },
            };
            scenarios::throughput(&server, common, &a).await
        }
        Scenario::B => scenarios::latency(&server, common, args.b_n).await,
        Scenario::C | Scenario::CBulk => {
            let c = WorkflowArgs {
                n: args.c_n,
                latency_n: args.c_lat_n,
                submit: Enqueue {
                    in_flight: args.c_submit_concurrency,
                    batch: if scenario == Scenario::CBulk {
                        args.start_batch
                    } else {
                        1
                    },
                },
            };
            scenarios::workflow(&server, common, &c).await
        }
        Scenario::D => {
            let d = fanout::FanoutArgs {
                width: args.d_width,
                rounds: args.d_rounds,
                for_each: args.d_for_each,
            };
            fanout::fanout(&server, common, &d).await
        }
        Scenario::F => {
            let f = memory::MemoryArgs {
                n: args.f_n,
                enqueue_concurrency: args.enqueue_concurrency,
                batch: args.f_batch,
                idle: Duration::from_secs(args.f_idle_s),
                drain: args.f_drain,
            };
            memory::memory(&server, common, &f).await
        }
        Scenario::G => {
            let g = scale::ScaleArgs {
                runs: args.g_runs,
                reps: args.g_reps,
                workflows: args.g_workflows,
                failed_every: args.g_failed_every,
                chunk: args.g_chunk,
                explain: args.g_explain,
                try_sql: args.g_try_sql.clone(),
            };
            scale::scale(&server, common, url, &g).await
        }
        Scenario::H => {
            let h = diagnose::DiagnoseArgs {
                seed: scale::ScaleArgs {
                    runs: args.g_runs,
                    reps: 0,
                    workflows: args.g_workflows,
                    failed_every: args.g_failed_every,
                    chunk: args.g_chunk,
                    explain: false,
                    try_sql: Vec::new(),
                },
                active: args.h_active,
                reps: args.h_reps,
                limit: args.h_limit,
            };
            diagnose::diagnose(&server, common, url, &h).await
        }
        Scenario::E => unreachable!("run by overhead::overhead"),
        Scenario::All => unreachable!("expanded"),
    };
    server.stop().await;
    result
}

/// One JSON object on one line, `peer`, `test`, `backend`, `worker` first.
fn ordered_line(result: &Value) -> String {
    let Some(map) = result.as_object() else {
        return result.to_string();
    };
    let head = ["peer", "test", "backend", "worker"];
    let mut parts: Vec<String> = head
        .iter()
        .filter_map(|key| {
            map.get(*key)
                .map(|v| format!("{}: {}", Value::from(*key), v))
        })
        .collect();
    let rest: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| !head.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    parts.extend(
        rest.iter()
            .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), v)),
    );
    format!("{{{}}}", parts.join(", "))
}

fn summary(r: &Value) -> String {
    let backend = r["backend"].as_str().unwrap_or("?");
    let foreign = &r["foreign_cpu_cores"];
    match r["test"].as_str() {
        Some("A") => format!(
            "A {backend} [{}]: enqueue {} runs at {}/s; drain {}/s ({}/s incl. worker start-up); peak RSS {} MB; foreign CPU {foreign} cores",
            r["config"].as_str().unwrap_or(""),
            r["n"],
            r["enqueue_per_s"],
            r.get("drain_per_s").unwrap_or(&Value::Null),
            r.get("from_spawn_per_s").unwrap_or(&Value::Null),
            r["peak_rss_mb"]
        ),
        Some("B") => format!(
            "B {backend} [{}]: {} runs one at a time, p50 {} ms, p95 {} ms, p99 {} ms (max {}); foreign CPU {foreign} cores",
            r["config"].as_str().unwrap_or(""),
            r["n"],
            r["p50_ms"],
            r["p95_ms"],
            r["p99_ms"],
            r["max_ms"]
        ),
        Some("E") => format!(
            "E {backend} [{}]: signals on/off: drain {}/s vs {}/s (×{}, cost {}%, target ≤ {}%); p50 ×{}, p99 ×{}; on: {} spans received, {} log file bytes, {} scrapes",
            r["config"].as_str().unwrap_or(""),
            r["on"]["drain_per_s"],
            r["off"]["drain_per_s"],
            r["ratio_on_off"]["drain_per_s"],
            r["throughput_cost_pct"],
            r["target_cost_pct"],
            r["ratio_on_off"]["p50_ms"],
            r["ratio_on_off"]["p99_ms"],
            r["on"]["a_signals"]["spans_received"],
            r["on"]["a_signals"]["log_file_bytes"],
            r["on"]["a_signals"]["metrics_scrapes"]
        ),
        Some("C") => format!(
            "C {backend}: {} workflows at {} wf/s; sequential p50 {} ms, p99 {} ms; foreign CPU {foreign} cores",
            r["n"],
            r.get("wf_per_s").unwrap_or(&Value::Null),
            r["lat"]["p50_ms"],
            r["lat"]["p99_ms"]
        ),
        Some("D") => fanout::summary(r),
        Some("F") => memory::summary(r),
        Some("G") => scale::summary(r),
        Some("H") => diagnose::summary(r),
        _ => r.to_string(),
    }
}
