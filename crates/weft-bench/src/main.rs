//! `weft-bench`: Weft's side of the peer benchmarks (the peer harnesses in ../shared/peers).
//! Starts everything it needs in this process: a throwaway durable
//! PostgreSQL cluster (or a temp SQLite file), the Weft server on a loopback
//! port and an SDK worker with no-op handlers. Each scenario prints one JSON
//! line on stdout in the peers' shape (`"peer": "weft"`); progress and a
//! human summary go to stderr.
//!
//!     weft-bench                        # every scenario on Postgres, then SQLite
//!     weft-bench a b --backend sqlite   # throughput and latency on SQLite only

mod harness;
mod scenarios;
mod stats;

use std::{io::Write, time::Duration};

use anyhow::{Result, bail};
use clap::Parser;
use serde_json::{Map, Value, json};

use harness::{Backend, Databases, Server, ServerOptions};
use scenarios::{Common, ThroughputArgs, WorkflowArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Throughput: N one-step runs started one request at a time, then drained.
    A,
    /// Throughput with `--enqueue-concurrency` start requests in flight.
    ABatch,
    /// Latency of one-step runs, one at a time.
    B,
    /// Three-step workflows: sequential latency, then throughput.
    C,
    /// a, a-batch, b, c.
    All,
}

#[derive(Debug, Parser)]
#[command(
    name = "weft-bench",
    about = "Weft's benchmark scenarios A (throughput), B (latency), C (workflows), in the peers' JSON line shape"
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
    /// Unrecorded runs before B's and C's sequential samples.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// SDK worker concurrency (tasks in hand; a poll asks for as many as are free, at most 100).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100))]
    concurrency: u32,
    /// How often B and C poll GET /v1/runs/{id} for completion.
    #[arg(long, default_value_t = 5)]
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
}

fn expand(scenarios: &[Scenario]) -> Vec<Scenario> {
    let mut out = Vec::new();
    for &s in scenarios {
        match s {
            Scenario::All => out.extend([Scenario::A, Scenario::ABatch, Scenario::B, Scenario::C]),
            other => out.push(other),
        }
    }
    out
}

fn main() {
    let args = Args::parse();
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
    let server_options = ServerOptions {
        db_pool_size: args.db_pool_size,
        engine_tick: Duration::from_millis(args.engine_tick_ms),
    };
    let mut all_ok = true;
    for &backend in &args.backend {
        for scenario in expand(&args.scenarios) {
            let name = format!("{scenario:?}")
                .to_lowercase()
                .replace("abatch", "a-batch");
            eprintln!("[weft-bench] == scenario {name} on {}", backend.as_str());
            let database = databases.fresh(backend)?;
            let common = Common {
                backend,
                concurrency: args.concurrency as usize,
                observe_every: Duration::from_millis(args.observe_ms),
                warmup: args.warmup,
                timeout: Duration::from_secs(args.timeout_s),
            };
            foreign.take();
            let outcome = runtime.block_on(async {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
                    result = run_scenario(scenario, args, &common, &database.url, &server_options) => result,
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
                "worker": "sdk-inproc",
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
    let server = Server::start(url, options).await?;
    let result = match scenario {
        Scenario::A => {
            scenarios::throughput(
                &server,
                common,
                &ThroughputArgs {
                    n: args.n,
                    enqueue_concurrency: 1,
                },
            )
            .await
        }
        Scenario::ABatch => {
            scenarios::throughput(
                &server,
                common,
                &ThroughputArgs {
                    n: args.n,
                    enqueue_concurrency: args.enqueue_concurrency,
                },
            )
            .await
        }
        Scenario::B => scenarios::latency(&server, common, args.b_n).await,
        Scenario::C => {
            let c = WorkflowArgs {
                n: args.c_n,
                latency_n: args.c_lat_n,
                submit_concurrency: args.c_submit_concurrency,
            };
            scenarios::workflow(&server, common, &c).await
        }
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
            "B {backend}: {} runs one at a time, p50 {} ms, p95 {} ms, p99 {} ms (max {}); foreign CPU {foreign} cores",
            r["n"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"]
        ),
        Some("C") => format!(
            "C {backend}: {} workflows at {} wf/s; sequential p50 {} ms, p99 {} ms; foreign CPU {foreign} cores",
            r["n"],
            r.get("wf_per_s").unwrap_or(&Value::Null),
            r["lat"]["p50_ms"],
            r["lat"]["p99_ms"]
        ),
        _ => r.to_string(),
    }
}
