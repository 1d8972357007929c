//! The scenarios, each returning one result object in the peers' JSON shape
//! (see ../shared/peers/common/benchlib.py and aggregate.py):
//!
//! - A, throughput: N one-step runs started over HTTP (one request per run,
//!   sequentially, or `enqueue_concurrency` requests in flight), then drained
//!   by the worker (`--worker`) started afterwards.
//! - B, latency: one-step runs one at a time, start -> completion observed by
//!   polling `GET /v1/runs/{id}`.
//! - C, workflow: three-step linear workflows; the latency of sequential
//!   ones, then the throughput of N submitted at once and all awaited.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use serde_json::{Value, json};
use weft_client::Client;

use crate::{
    harness::{self, Backend, BenchWorker, ONE_STEP, Server, THREE_STEPS, WorkerSpec},
    stats::{self, round},
};

/// Settings shared by every scenario.
#[derive(Debug, Clone)]
pub struct Common {
    pub backend: Backend,
    pub concurrency: usize,
    pub observe_every: Duration,
    pub warmup: usize,
    pub timeout: Duration,
    pub worker: WorkerSpec,
}

impl Common {
    /// `, worker=<mode>`: every variant label names where handlers ran.
    fn worker_label(&self) -> String {
        format!(", worker={}", self.worker.mode.label())
    }

    fn observe(&self) -> String {
        if self.observe_every.is_zero() {
            return "GET /v1/runs/{id}?wait_ms (held until the run ends)".to_owned();
        }
        format!(
            "poll GET /v1/runs/{{id}} every {} ms",
            self.observe_every.as_millis()
        )
    }
}

pub struct ThroughputArgs {
    pub n: usize,
    pub enqueue: Enqueue,
}

/// How a scenario starts its runs.
#[derive(Debug, Clone, Copy)]
pub struct Enqueue {
    /// 1: one start request at a time; more: that many in flight.
    pub in_flight: usize,
    /// More than 1: runs per request to the batch start endpoint.
    pub batch: usize,
}

impl Enqueue {
    pub const SEQUENTIAL: Enqueue = Enqueue {
        in_flight: 1,
        batch: 1,
    };

    fn label(self) -> String {
        if self.batch > 1 {
            return format!("batch start endpoint, {} runs per request", self.batch);
        }
        if self.in_flight <= 1 {
            "sequential".to_owned()
        } else {
            format!("{} concurrent requests", self.in_flight)
        }
    }
}

/// Starts `n` runs of `workflow` as `how` says; returns the run ids in
/// start order and the seconds it took. Progress is shown as `what (how)`.
async fn enqueue(
    client: &Client,
    workflow: &str,
    n: usize,
    how: Enqueue,
    what: &str,
) -> Result<(Vec<String>, f64)> {
    let Enqueue { in_flight, batch } = how;
    let label = format!("{what} ({})", how.label());
    let label = label.as_str();
    let mut progress = harness::Progress::new(label, n as u64);
    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    if batch > 1 {
        for lo in (0..n).step_by(batch) {
            ids.extend(harness::start_runs(client, workflow, lo..(lo + batch).min(n)).await?);
            progress.show(ids.len() as u64);
        }
    } else if in_flight <= 1 {
        for i in 0..n {
            ids.push(harness::start_run(client, workflow, i).await?);
            progress.show(ids.len() as u64);
        }
    } else {
        // The first start alone: it loads the definition into the store's
        // cache. On Postgres, a burst of cold starts deadlocks the pool: each
        // holds its transaction's connection and waits for a second one to
        // read the definition, until the acquire timeout (503s after 10 s).
        if n > 0 {
            ids.push(harness::start_run(client, workflow, 0).await?);
        }
        let mut results = futures::stream::iter(1..n)
            .map(|i| harness::start_run(client, workflow, i))
            .buffered(in_flight);
        while let Some(id) = results.next().await {
            ids.push(id?);
            progress.show(ids.len() as u64);
        }
    }
    Ok((ids, started.elapsed().as_secs_f64()))
}

pub async fn throughput(server: &Server, common: &Common, args: &ThroughputArgs) -> Result<Value> {
    let client = Client::new(&server.url);
    harness::register(&client, ONE_STEP).await?;
    let (ids, enqueue_s) = enqueue(&client, ONE_STEP.0, args.n, args.enqueue, "A enqueue").await?;
    eprintln!(
        "[weft-bench]   enqueued {} runs in {enqueue_s:.2}s ({:.0}/s)",
        args.n,
        args.n as f64 / enqueue_s
    );

    // The drain's peak: the kernel's high-water mark reset now, or else
    // samples every 100 ms as the peers take them. A worker process's tree
    // (the exec worker's handler processes too) is sampled beside it.
    let rss_peak_resettable = stats::reset_peak_rss();
    let spawned = Instant::now();
    let worker = BenchWorker::start(&common.worker, server, common.concurrency)?;
    let worker_pid = worker.pid();
    let sampled_peak = std::sync::Arc::new(std::sync::Mutex::new((0.0f64, 0.0f64)));
    let rss_sampler = {
        let sampled_peak = sampled_peak.clone();
        tokio::spawn(async move {
            loop {
                let now = stats::rss_mb().unwrap_or(0.0);
                let tree = worker_pid.map(stats::tree_rss_mb).unwrap_or(0.0);
                {
                    let mut peak = sampled_peak.lock().expect("rss lock");
                    *peak = (peak.0.max(now), peak.1.max(tree));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let drained = harness::wait_completed(
        &server.store,
        &ids,
        &worker.calls,
        harness::CallTarget {
            base: 0,
            expected: args.n as u64,
        },
        Duration::from_millis(10),
        common.timeout,
        "A drain",
    )
    .await;
    rss_sampler.abort();
    let (sampled_peak, worker_tree_peak) = *sampled_peak.lock().expect("rss lock");
    let sampled_peak = sampled_peak.max(stats::rss_mb().unwrap_or(0.0));
    let harness_peak_mb = if rss_peak_resettable {
        stats::peak_rss_mb()
    } else {
        None
    }
    .unwrap_or(sampled_peak);
    // The worker process started after the reset: its own high-water mark
    // covers the drain; its handler processes only as sampled.
    let worker_peak_mb = worker_pid.map(|pid| {
        stats::pid_peak_rss_mb(pid)
            .unwrap_or(0.0)
            .max(worker_tree_peak)
    });
    let first = worker.calls.first();
    worker.stop().await;
    let drained = drained?;

    let mut result = json!({
        "test": "A",
        "config": format!("{}, enqueue={}{}", common.backend.as_str(), args.enqueue.label(), common.worker_label()),
        "concurrency": common.concurrency,
        "enqueue_concurrency": args.enqueue.in_flight,
        "n": args.n,
        "enqueue_s": round(enqueue_s, 3),
        "enqueue_per_s": round(args.n as f64 / enqueue_s, 1),
        "peak_rss_mb": round(harness_peak_mb + worker_peak_mb.unwrap_or(0.0), 1),
        "rss_scope": match worker_peak_mb {
            None => "whole harness process during the drain: server + engine + SDK worker + driver (Postgres not included)",
            Some(_) => "harness process (server + engine + driver) + worker process tree (its VmHWM, or the tree's VmRSS sum sampled every 100 ms when larger: short-lived handler processes only as sampled), each one's peak during the drain, summed (Postgres not included)",
        },
    });
    if let Some(worker_peak_mb) = worker_peak_mb {
        result["harness_peak_rss_mb"] = json!(round(harness_peak_mb, 1));
        result["worker_peak_rss_mb"] = json!(round(worker_peak_mb, 1));
    }
    match (drained.at, first) {
        (Some(done_at), Some(first)) => {
            let drain_s = (done_at - first).as_secs_f64();
            let from_spawn_s = (done_at - spawned).as_secs_f64();
            result["drained"] = json!(true);
            result["drain_s"] = json!(round(drain_s, 3));
            result["drain_per_s"] = json!(round(args.n as f64 / drain_s, 1));
            result["from_spawn_s"] = json!(round(from_spawn_s, 3));
            result["from_spawn_per_s"] = json!(round(args.n as f64 / from_spawn_s, 1));
            result["drain_measure"] = json!(if worker_pid.is_none() {
                "first handler call -> store shows every run completed"
            } else {
                "first claim committed -> store shows every run completed"
            });
        }
        _ => {
            result["drained"] = json!(false);
            result["done"] = json!(drained.done);
            result["from_spawn_s"] = json!(round(spawned.elapsed().as_secs_f64(), 3));
        }
    }
    Ok(result)
}

pub async fn latency(server: &Server, common: &Common, n: usize) -> Result<Value> {
    let client = Client::new(&server.url);
    harness::register(&client, ONE_STEP).await?;
    let worker = BenchWorker::start(&common.worker, server, common.concurrency)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = sequential(&client, common, ONE_STEP.0, n, "B").await;
    worker.stop().await;
    let (samples, run_ids) = samples?;
    let mut result = json!({
        "test": "B",
        "config": format!("{}{}", common.backend.as_str(), common.worker_label()),
        "concurrency": common.concurrency,
        "observe": common.observe(),
        "weft_timing_p50_ms": timing_breakdown(&client, &run_ids).await?,
    });
    merge(&mut result, stats::latency_summary(&samples));
    Ok(result)
}

/// Medians of the timing Weft records itself for these runs (whole ms):
/// created -> first claim and -> finished per run; per attempt ready ->
/// claimed (`queue_wait`), claimed -> handler start (`dispatch`), handler,
/// result received -> committed (`ingest`), claimed -> committed (`total`).
async fn timing_breakdown(client: &Client, run_ids: &[String]) -> Result<Value> {
    let mut buckets: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for id in run_ids {
        let run = client.get_run(id).await?;
        let mut push = |k, v: Option<i64>| {
            if let Some(v) = v {
                buckets.entry(k).or_default().push(v as f64);
            }
        };
        push("run_schedule_to_start", run.timing.schedule_to_start_ms);
        push("run_end_to_end", run.timing.end_to_end_ms);
        for attempt in run.steps.iter().flat_map(|s| &s.attempts) {
            if let Some(t) = &attempt.timing {
                push("attempt_queue_wait", Some(t.queue_wait_ms));
                push("attempt_dispatch", t.dispatch_ms);
                push("attempt_handler", t.handler_ms);
                push("attempt_ingest", Some(t.ingest_ms));
                push("attempt_total", Some(t.total_ms));
            }
        }
    }
    Ok(Value::Object(
        buckets
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(round(stats::percentile(&v, 50.0), 1))))
            .collect(),
    ))
}

/// `warmup` unrecorded runs, then `n` recorded, one at a time: their
/// latencies (ms) and run ids.
async fn sequential(
    client: &Client,
    common: &Common,
    workflow: &str,
    n: usize,
    label: &str,
) -> Result<(Vec<f64>, Vec<String>)> {
    for i in 0..common.warmup {
        harness::run_to_completion(client, workflow, i, common.observe_every, common.timeout)
            .await?;
    }
    let mut progress = harness::Progress::new(&format!("{label} sequential runs"), n as u64);
    let (mut samples, mut run_ids) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let (ms, run_id) = harness::run_to_completion(
            client,
            workflow,
            common.warmup + i,
            common.observe_every,
            common.timeout,
        )
        .await?;
        samples.push(ms);
        run_ids.push(run_id);
        progress.show(samples.len() as u64);
    }
    Ok((samples, run_ids))
}

pub struct WorkflowArgs {
    pub n: usize,
    pub latency_n: usize,
    pub submit: Enqueue,
}

pub async fn workflow(server: &Server, common: &Common, args: &WorkflowArgs) -> Result<Value> {
    let client = Client::new(&server.url);
    harness::register(&client, THREE_STEPS).await?;
    let worker = BenchWorker::start(&common.worker, server, common.concurrency)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outcome = async {
        let (samples, lat_run_ids) =
            sequential(&client, common, THREE_STEPS.0, args.latency_n, "C").await?;
        let breakdown = timing_breakdown(&client, &lat_run_ids).await?;
        let calls_before = worker.calls.count();
        let started = Instant::now();
        let (ids, submit_s) =
            enqueue(&client, THREE_STEPS.0, args.n, args.submit, "C submit").await?;
        let drained = harness::wait_completed(
            &server.store,
            &ids,
            &worker.calls,
            harness::CallTarget {
                base: calls_before,
                expected: 3 * args.n as u64,
            },
            Duration::from_millis(10),
            common.timeout,
            "C steps",
        )
        .await?;
        anyhow::Ok((
            samples,
            breakdown,
            submit_s,
            drained.at.map(|at| (at - started).as_secs_f64()),
            drained.done,
        ))
    }
    .await;
    worker.stop().await;
    let (samples, breakdown, submit_s, total_s, done) = outcome?;
    let mut result = json!({
        "test": "C",
        "config": format!("{}{}", common.backend.as_str(), common.worker_label()),
        "mode": format!("3-step linear workflow, submit={}", args.submit.label()),
        "concurrency": common.concurrency,
        "observe": common.observe(),
        "lat": stats::latency_summary(&samples),
        "weft_timing_p50_ms": breakdown,
        "n": args.n,
        "submit_s": round(submit_s, 3),
    });
    match total_s {
        Some(total_s) => {
            result["total_s"] = json!(round(total_s, 3));
            result["wf_per_s"] = json!(round(args.n as f64 / total_s, 1));
        }
        None => {
            result["drained"] = json!(false);
            result["done"] = json!(done);
            result["wf_per_s"] = Value::Null;
        }
    }
    Ok(result)
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}
