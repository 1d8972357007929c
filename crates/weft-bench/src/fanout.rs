//! Scenario D, fan-out: one run of a workflow with a root step, `width`
//! parallel steps that depend on it and one join step that depends on all of
//! them (no-op SDK handlers), timed from the start request until the store
//! shows the run completed; repeated `rounds` times, median reported, with
//! Weft's own timing of each run read back from `GET /v1/runs/{id}`. With
//! `for_each`, the parallel steps are the `width` children of one `for_each`
//! step over the run's input, all ready at once.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use weft_client::Client;

use crate::{
    harness::{self, BenchWorker, NOOP_HANDLER, Server},
    scenarios::Common,
    stats::{self, round},
};

pub struct FanoutArgs {
    /// Parallel steps between the root and the join.
    pub width: usize,
    /// Runs, one after the other; the median is reported.
    pub rounds: usize,
    /// One `for_each` step of `width` children instead of `width` steps.
    pub for_each: bool,
}

const WORKFLOW: &str = "bench_fanout";
const WORKFLOW_FOR_EACH: &str = "bench_fanout_each";

/// The `for_each` manifest: `root`, `fan` over `input.items` (at most
/// `width`, all in parallel) and `join`.
pub fn manifest_for_each(width: usize) -> String {
    json!({
        "name": WORKFLOW_FOR_EACH,
        "description": format!("weft-bench D: 1 -> for_each of {width} -> 1, no-op steps"),
        "steps": [
            {"name": "root", "handler": NOOP_HANDLER},
            {"name": "fan", "handler": NOOP_HANDLER, "depends_on": ["root"],
             "for_each": "input.items", "max_items": width},
            {"name": "join", "handler": NOOP_HANDLER, "depends_on": ["fan"]},
        ],
    })
    .to_string()
}

/// The manifest as JSON text: `root`, `fan_0000`..`fan_{width-1}` each
/// depending on `root`, and `join` depending on every fan step.
pub fn manifest(width: usize) -> String {
    let fan: Vec<String> = (0..width).map(|i| format!("fan_{i:04}")).collect();
    let mut steps = vec![json!({"name": "root", "handler": NOOP_HANDLER})];
    steps.extend(
        fan.iter()
            .map(|name| json!({"name": name, "handler": NOOP_HANDLER, "depends_on": ["root"]})),
    );
    steps.push(json!({"name": "join", "handler": NOOP_HANDLER, "depends_on": fan}));
    json!({
        "name": WORKFLOW,
        "description": format!("weft-bench D: 1 -> {width} -> 1 fan-out and fan-in of no-op steps"),
        "steps": steps,
    })
    .to_string()
}

fn ms(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// One round's figures, all milliseconds.
struct Round {
    wall_ms: f64,
    /// Weft's own run timing: created -> finished, created -> first claim.
    end_to_end_ms: Option<f64>,
    schedule_to_start_ms: Option<f64>,
    /// Root finished -> the last fan step claimed.
    fan_dispatch_ms: Option<f64>,
    /// Root finished -> the last fan step finished.
    fan_ms: Option<f64>,
    /// Last fan step finished -> join claimed.
    fan_in_ms: Option<f64>,
    /// Per-attempt medians over the run's attempts.
    queue_wait_p50_ms: Option<f64>,
    queue_wait_max_ms: Option<f64>,
    ingest_p50_ms: Option<f64>,
    total_p50_ms: Option<f64>,
}

async fn one_round(
    server: &Server,
    client: &Client,
    common: &Common,
    args: &FanoutArgs,
    round_no: usize,
) -> Result<Round> {
    let started = Instant::now();
    let run_id = if args.for_each {
        let request = weft_api::StartRunRequest {
            input: json!({ "i": round_no, "items": (0..args.width).collect::<Vec<_>>() }),
            ..Default::default()
        };
        client
            .start_run(WORKFLOW_FOR_EACH, &request)
            .await
            .with_context(|| format!("starting round {round_no}"))?
            .run_id
    } else {
        harness::start_run(client, WORKFLOW, round_no).await?
    };
    let ids = [run_id.parse::<weft_core::RunId>()?];
    loop {
        let statuses = server
            .store
            .run_statuses(&ids)
            .await
            .context("reading the run's status")?;
        match statuses.get(&ids[0]).map(String::as_str) {
            Some("completed") => break,
            Some(status @ ("failed" | "cancelled")) => bail!("run {run_id} ended {status}"),
            _ => {}
        }
        if started.elapsed() > common.timeout {
            bail!("run {run_id} not completed after {:?}", common.timeout);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;

    let run = client.get_run(&run_id).await.context("GET /v1/runs/{id}")?;
    let finished = |name: &str| -> Option<i64> {
        let step = run.steps.iter().find(|s| s.name == name)?;
        step.attempts.last()?.finished_at.as_deref().and_then(ms)
    };
    let claimed = |name: &str| -> Option<i64> {
        let step = run.steps.iter().find(|s| s.name == name)?;
        ms(&step.attempts.last()?.claimed_at)
    };
    // The fan's attempts: each declared step's last, or every child's.
    let fan: Vec<&weft_api::AttemptDetail> = run
        .steps
        .iter()
        .filter(|s| s.name.starts_with("fan_"))
        .filter_map(|s| s.attempts.last())
        .chain(
            run.steps
                .iter()
                .filter(|s| s.name == "fan")
                .flat_map(|s| &s.attempts),
        )
        .collect();
    let last_of = |f: &dyn Fn(&weft_api::AttemptDetail) -> Option<i64>| -> Option<i64> {
        fan.iter().filter_map(|a| f(a)).max()
    };
    let root_done = finished("root");
    let last_fan_claimed = last_of(&|a| ms(&a.claimed_at));
    let last_fan_done = last_of(&|a| a.finished_at.as_deref().and_then(ms));
    let diff = |a: Option<i64>, b: Option<i64>| a.zip(b).map(|(a, b)| (b - a) as f64);
    let attempts: Vec<&weft_api::AttemptTiming> = run
        .steps
        .iter()
        .flat_map(|s| &s.attempts)
        .filter_map(|a| a.timing.as_ref())
        .collect();
    let pick = |f: &dyn Fn(&weft_api::AttemptTiming) -> i64| -> Vec<f64> {
        attempts.iter().map(|t| f(t) as f64).collect()
    };
    let p50 = |v: Vec<f64>| (!v.is_empty()).then(|| stats::percentile(&v, 50.0));
    let queue_wait = pick(&|t| t.queue_wait_ms);
    Ok(Round {
        wall_ms,
        end_to_end_ms: run.timing.end_to_end_ms.map(|v| v as f64),
        schedule_to_start_ms: run.timing.schedule_to_start_ms.map(|v| v as f64),
        fan_dispatch_ms: diff(root_done, last_fan_claimed),
        fan_ms: diff(root_done, last_fan_done),
        fan_in_ms: diff(last_fan_done, claimed("join")),
        queue_wait_max_ms: queue_wait.iter().copied().reduce(f64::max),
        queue_wait_p50_ms: p50(queue_wait),
        ingest_p50_ms: p50(pick(&|t| t.ingest_ms)),
        total_p50_ms: p50(pick(&|t| t.total_ms)),
    })
}

pub async fn fanout(server: &Server, common: &Common, args: &FanoutArgs) -> Result<Value> {
    if args.width == 0 || args.rounds == 0 {
        bail!("--d-width and --d-rounds must be at least 1");
    }
    let client = Client::new(&server.url);
    let (workflow, manifest) = if args.for_each {
        (WORKFLOW_FOR_EACH, manifest_for_each(args.width))
    } else {
        (WORKFLOW, manifest(args.width))
    };
    harness::register(&client, (workflow, &manifest)).await?;
    let steps = args.width + 2;
    let worker = BenchWorker::start(&common.worker, server, common.concurrency)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stats::reset_peak_rss();
    let mut rounds = Vec::with_capacity(args.rounds);
    let mut progress = harness::Progress::new("D rounds", args.rounds as u64);
    let outcome = async {
        for i in 0..args.rounds {
            let r = one_round(server, &client, common, args, i).await?;
            eprintln!(
                "[weft-bench]   D round {}/{}: {steps} steps in {:.0} ms ({:.0} steps/s)",
                i + 1,
                args.rounds,
                r.wall_ms,
                steps as f64 / (r.wall_ms / 1000.0)
            );
            rounds.push(r);
            progress.show(rounds.len() as u64);
        }
        anyhow::Ok(())
    }
    .await;
    worker.stop().await;
    outcome?;

    let median = |f: &dyn Fn(&Round) -> Option<f64>| -> Value {
        let v: Vec<f64> = rounds.iter().filter_map(f).collect();
        if v.is_empty() {
            Value::Null
        } else {
            json!(round(stats::percentile(&v, 50.0), 1))
        }
    };
    let wall: Vec<f64> = rounds.iter().map(|r| r.wall_ms).collect();
    let wall_p50 = stats::percentile(&wall, 50.0);
    Ok(json!({
        "test": "D",
        "config": format!("{}, worker={}", common.backend.as_str(), common.worker.mode.label()),
        "mode": if args.for_each {
            format!("1 -> for_each of {} -> 1, no-op steps", args.width)
        } else {
            format!("1 -> {} -> 1 fan-out/fan-in, no-op steps", args.width)
        },
        "for_each": args.for_each,
        "concurrency": common.concurrency,
        "width": args.width,
        "steps": steps,
        "rounds": args.rounds,
        "observe": format!("store run status every 5 ms (GET /v1/runs/{{id}} of a {steps}-step run is itself heavy)"),
        "measure": "start request sent -> store shows the run completed; median over rounds",
        "wall_ms": round(wall_p50, 1),
        "wall_ms_rounds": wall.iter().map(|v| round(*v, 1)).collect::<Vec<_>>(),
        "steps_per_s": round(steps as f64 / (wall_p50 / 1000.0), 1),
        "weft_timing_ms": {
            "run_end_to_end": median(&|r| r.end_to_end_ms),
            "run_schedule_to_start": median(&|r| r.schedule_to_start_ms),
            "fan_dispatch": median(&|r| r.fan_dispatch_ms),
            "fan": median(&|r| r.fan_ms),
            "fan_in": median(&|r| r.fan_in_ms),
            "attempt_queue_wait_p50": median(&|r| r.queue_wait_p50_ms),
            "attempt_queue_wait_max": median(&|r| r.queue_wait_max_ms),
            "attempt_ingest_p50": median(&|r| r.ingest_p50_ms),
            "attempt_total_p50": median(&|r| r.total_p50_ms),
        },
        "weft_timing_note": "from GET /v1/runs/{id} after each round, median over rounds: run_end_to_end created -> finished; fan_dispatch root finished -> last fan step claimed; fan root finished -> last fan step finished; fan_in last fan step finished -> join claimed",
        "peak_rss_mb": stats::peak_rss_mb().map(|v| round(v, 1)),
        "rss_scope": "harness process (server + engine + driver, and the SDK worker when in process) since the worker started",
    }))
}

/// The human line for stderr.
pub fn summary(r: &Value) -> String {
    format!(
        "D {} [{}]: {} steps (1 -> {} -> 1) in {} ms median of {} ({}), {} steps/s; Weft: end-to-end {} ms, fan {} ms, fan-in {} ms; foreign CPU {} cores",
        r["backend"].as_str().unwrap_or("?"),
        r["config"].as_str().unwrap_or(""),
        r["steps"],
        r["width"],
        r["wall_ms"],
        r["rounds"],
        r["wall_ms_rounds"]
            .as_array()
            .map(|v| v
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        r["steps_per_s"],
        r["weft_timing_ms"]["run_end_to_end"],
        r["weft_timing_ms"]["fan"],
        r["weft_timing_ms"]["fan_in"],
        r["foreign_cpu_cores"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_has_root_fan_and_join() {
        let m: Value = serde_json::from_str(&manifest(3)).unwrap();
        let steps = m["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 5);
        assert_eq!(steps[1]["depends_on"], json!(["root"]));
        assert_eq!(
            steps[4]["depends_on"],
            json!(["fan_0000", "fan_0001", "fan_0002"])
        );
    }

    #[test]
    fn for_each_manifest_fans_out_over_the_input() {
        let m: Value = serde_json::from_str(&manifest_for_each(7)).unwrap();
        let steps = m["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[1]["for_each"], "input.items");
        assert_eq!(steps[1]["max_items"], 7);
        assert_eq!(steps[2]["depends_on"], json!(["fan"]));
        weft_core::Definition::parse(&manifest_for_each(7)).expect("a valid workflow");
    }
}
