//! Scenario F, memory: the resident memory of the process that holds the Weft
//! server (VmRSS and VmHWM from /proc/self/status), idle after start-up, then
//! with N one-step runs queued and no worker, then (optionally) at its peak
//! while an SDK worker drains them. The server runs in this process beside
//! the driver, so the figures are the whole harness process; the size of the
//! process before the server started is reported beside them.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use weft_client::Client;
use weft_store::Store;

use crate::{
    harness::{self, BenchWorker, ONE_STEP, Server},
    scenarios::Common,
    stats::{self, round},
};

/// Targets from issue 5, carried in the result line and the report.
pub const TARGET_IDLE_MB: f64 = 30.0;
pub const TARGET_QUEUED_MB: f64 = 150.0;

static SCENARIOS_STARTED: AtomicUsize = AtomicUsize::new(0);
static RSS_BEFORE_SERVER_KB: AtomicUsize = AtomicUsize::new(0);

/// Called before each scenario's server starts: counts the scenarios this
/// process has run (an earlier one leaves its allocations behind) and notes
/// the process's size without a server.
pub fn scenario_starting() {
    SCENARIOS_STARTED.fetch_add(1, Ordering::Relaxed);
    let kb = stats::rss_mb().map_or(0, |mb| (mb * 1024.0) as usize);
    RSS_BEFORE_SERVER_KB.store(kb, Ordering::Relaxed);
}

pub struct MemoryArgs {
    /// Runs to queue.
    pub n: usize,
    /// Start requests in flight while queueing.
    pub enqueue_concurrency: usize,
    /// Runs per batch start request (`POST /v1/workflows/{name}/runs/batch`);
    /// 0: one start request per run.
    pub batch: usize,
    /// How long the server idles before the idle reading.
    pub idle: Duration,
    /// Drain the queued runs with an SDK worker afterwards.
    pub drain: bool,
}

/// Batch start requests in flight: the server works on one while the
/// driver sends the next.
const BATCHES_IN_FLIGHT: usize = 2;

fn enqueue_path(args: &MemoryArgs) -> String {
    if args.batch > 0 {
        format!(
            "POST /v1/workflows/{{name}}/runs/batch, {} runs a request, {BATCHES_IN_FLIGHT} requests in flight",
            args.batch
        )
    } else {
        format!(
            "POST /v1/workflows/{{name}}/runs, {} requests in flight",
            args.enqueue_concurrency
        )
    }
}

fn mb(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!(round(v, 1)))
}

/// Runs of `workflow` still pending or running, counted by the store.
async fn active_runs(store: &Store, workflow: &str) -> Result<i64> {
    let snapshot = store.gauge_snapshot().await.context("reading gauges")?;
    Ok(snapshot
        .runs_active
        .iter()
        .filter(|(w, _, _)| w == workflow)
        .map(|(_, _, n)| n)
        .sum())
}

/// Samples VmRSS every 100 ms until dropped; the peak seen.
struct Sampler {
    peak: Arc<Mutex<f64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start() -> Sampler {
        let peak = Arc::new(Mutex::new(0.0f64));
        let sampled = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                let now = stats::rss_mb().unwrap_or(0.0);
                {
                    let mut peak = sampled.lock().expect("rss lock");
                    *peak = peak.max(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Sampler { peak, task }
    }

    /// The kernel's high-water mark when it could be reset, else the sampled peak.
    fn finish(self, resettable: bool) -> Option<f64> {
        self.task.abort();
        let sampled = self
            .peak
            .lock()
            .expect("rss lock")
            .max(stats::rss_mb().unwrap_or(0.0));
        if resettable {
            stats::peak_rss_mb().map(|hwm| hwm.max(sampled))
        } else {
            Some(sampled)
        }
    }
}

pub async fn memory(server: &Server, common: &Common, args: &MemoryArgs) -> Result<Value> {
    let prior = SCENARIOS_STARTED.load(Ordering::Relaxed).saturating_sub(1);
    let before_server = RSS_BEFORE_SERVER_KB.load(Ordering::Relaxed) as f64 / 1024.0;
    let client = Client::new(&server.url);
    harness::register(&client, ONE_STEP).await?;

    // Idle: the server and its engine loops, nothing to do.
    eprintln!(
        "[weft-bench]   F idle for {:.0}s after start-up",
        args.idle.as_secs_f64()
    );
    tokio::time::sleep(args.idle).await;
    let idle_rss = stats::rss_mb();
    let idle_hwm = stats::peak_rss_mb();
    eprintln!(
        "[weft-bench]   F idle: VmRSS {:.1} MB, VmHWM {:.1} MB (process before the server: {before_server:.1} MB)",
        idle_rss.unwrap_or(f64::NAN),
        idle_hwm.unwrap_or(f64::NAN)
    );

    // N runs queued, no worker. Only a count is kept, not the run ids, so
    // the driver's own memory stays flat.
    let resettable = stats::reset_peak_rss();
    let sampler = Sampler::start();
    let path = enqueue_path(args);
    let mut progress = harness::Progress::new(&format!("F enqueue ({path})"), args.n as u64);
    let started = Instant::now();
    let mut done = 0usize;
    if args.n > 0 {
        // The first start alone warms the definition cache (see scenarios::enqueue).
        harness::start_run(&client, ONE_STEP.0, 0).await?;
        done += 1;
    }
    if args.batch > 0 {
        let batches: Vec<(usize, usize)> = (1..args.n)
            .step_by(args.batch)
            .map(|lo| (lo, (lo + args.batch).min(args.n)))
            .collect();
        let mut results = futures::stream::iter(batches)
            .map(|(lo, hi)| harness::start_runs(&client, ONE_STEP.0, lo..hi))
            .buffer_unordered(BATCHES_IN_FLIGHT);
        while let Some(started) = results.next().await {
            done += started?.len();
            progress.show(done as u64);
        }
    } else {
        let mut results = futures::stream::iter(1..args.n)
            .map(|i| harness::start_run(&client, ONE_STEP.0, i))
            .buffer_unordered(args.enqueue_concurrency.max(1));
        while let Some(result) = results.next().await {
            result?;
            done += 1;
            progress.show(done as u64);
        }
    }
    let enqueue_s = started.elapsed().as_secs_f64();
    let enqueue_peak = sampler.finish(resettable);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let queued = active_runs(&server.store, ONE_STEP.0).await?;
    let queued_rss = stats::rss_mb();
    eprintln!(
        "[weft-bench]   F queued {} runs in {enqueue_s:.1}s ({:.0}/s): VmRSS {:.1} MB, peak while queueing {:.1} MB",
        args.n,
        args.n as f64 / enqueue_s,
        queued_rss.unwrap_or(f64::NAN),
        enqueue_peak.unwrap_or(f64::NAN)
    );
    if queued != args.n as i64 {
        bail!("the store shows {queued} runs pending, not {}", args.n);
    }

    let mut result = json!({
        "test": "F",
        "config": format!(
            "{}, enqueue={}",
            common.backend.as_str(),
            if args.batch > 0 {
                format!("batches of {}", args.batch)
            } else {
                format!("{} concurrent requests", args.enqueue_concurrency)
            }
        ),
        "concurrency": common.concurrency,
        "n": args.n,
        "measured": "VmRSS (resident now) and VmHWM (peak) of /proc/self/status: the harness process holding the Weft server (axum, engine loops, store pool; SQLite's page cache too) and the driver's HTTP client; Postgres's own processes are not included",
        "target_mb": {"idle": TARGET_IDLE_MB, "queued": TARGET_QUEUED_MB},
        "before_server_rss_mb": round(before_server, 1),
        "prior_scenarios_in_process": prior,
        "idle_s": args.idle.as_secs_f64(),
        "idle_rss_mb": mb(idle_rss),
        "idle_hwm_mb": mb(idle_hwm),
        "enqueue_path": path,
        "enqueue_s": round(enqueue_s, 3),
        "enqueue_per_s": round(args.n as f64 / enqueue_s, 1),
        "enqueue_peak_rss_mb": mb(enqueue_peak),
        "queued_rss_mb": mb(queued_rss),
        "queued_note": "VmRSS 2 s after the last start request, no worker running, every run pending in the store",
    });
    if let Some(v) = idle_rss {
        result["idle_within_target"] = json!(v <= TARGET_IDLE_MB);
    }
    if let Some(v) = queued_rss {
        result["queued_within_target"] = json!(v <= TARGET_QUEUED_MB);
    }
    if prior > 0 {
        eprintln!(
            "[weft-bench]   F: {prior} scenario(s) ran earlier in this process: its memory figures include what they left behind; run `weft-bench f` alone for clean ones"
        );
    }
    if !args.drain {
        result["drained"] = Value::Null;
        return Ok(result);
    }

    // Drain with an SDK worker, sampling the peak.
    let resettable = stats::reset_peak_rss();
    let sampler = Sampler::start();
    let spawned = Instant::now();
    let worker_in_process = common.worker.mode == harness::WorkerMode::Inproc;
    let worker = BenchWorker::start(&common.worker, server, common.concurrency)?;
    let timeout = common.timeout.max(Duration::from_secs(args.n as u64 / 100));
    let mut progress = harness::Progress::new("F drain", args.n as u64);
    let drained = loop {
        let calls = worker.calls.count();
        progress.show(calls);
        if calls >= args.n as u64 && active_runs(&server.store, ONE_STEP.0).await? == 0 {
            break Some(Instant::now());
        }
        if spawned.elapsed() > timeout {
            eprintln!(
                "[weft-bench]   F drain: timed out after {timeout:?} ({calls} handler calls)"
            );
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let drain_peak = sampler.finish(resettable);
    let first = worker.calls.first();
    worker.stop().await;
    result["drain_peak_rss_mb"] = mb(drain_peak);
    result["after_drain_rss_mb"] = mb(stats::rss_mb());
    result["drain_worker"] = json!(common.worker.mode.label());
    result["drain_rss_scope"] = json!(if worker_in_process {
        "harness process: server + engine + driver + the SDK worker"
    } else {
        "harness process: server + engine + driver (the worker runs in its own process, not counted)"
    });
    match (drained, first) {
        (Some(at), Some(first)) => {
            let drain_s = (at - first).as_secs_f64();
            result["drained"] = json!(true);
            result["drain_s"] = json!(round(drain_s, 3));
            result["drain_per_s"] = json!(round(args.n as f64 / drain_s, 1));
        }
        _ => result["drained"] = json!(false),
    }
    Ok(result)
}

/// The human line for stderr.
pub fn summary(r: &Value) -> String {
    let drain = match r["drained"].as_bool() {
        Some(true) => format!(
            "; drained at {}/s, peak {} MB during the drain",
            r["drain_per_s"], r["drain_peak_rss_mb"]
        ),
        Some(false) => "; drain timed out".to_owned(),
        None => String::new(),
    };
    format!(
        "F {}: RSS idle {} MB (target <= {}), with {} runs queued {} MB (target <= {}); queued at {}/s{drain}; foreign CPU {} cores",
        r["backend"].as_str().unwrap_or("?"),
        r["idle_rss_mb"],
        TARGET_IDLE_MB,
        r["n"],
        r["queued_rss_mb"],
        TARGET_QUEUED_MB,
        r["enqueue_per_s"],
        r["foreign_cpu_cores"],
    )
}
