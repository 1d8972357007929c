//! Scenario H, diagnosis at scale: `GET /v1/diagnostics` (counts per cause
//! and the first runs of each, what `weft doctor` asks) and its counts-only
//! form (what `weft status` asks; the stalled gauge runs the same statement)
//! timed through the HTTP API with G's seed of finished runs in the store
//! (`--g-runs`, default 1,000,000) and `--h-active` runs not moving, started
//! through the batch endpoint: a third wait for a queue no worker polls
//! (`no_worker_for_queue`), a third for an approval, a third sleep an hour.
//! Target from issue 12: within 100 ms.

use std::time::Instant;

use anyhow::{Result, bail};
use serde_json::{Value, json};
use weft_api::{StartRunRequest, StartRunsRequest};
use weft_client::Client;

use crate::{
    harness::{self, Server},
    scale::{self, ScaleArgs},
    scenarios::Common,
    stats::{self, round},
};

/// The target, on the p99.
pub const TARGET_MS: f64 = 100.0;

pub struct DiagnoseArgs {
    /// G's seeding (its `reps` and `explain` are unused here).
    pub seed: ScaleArgs,
    /// Runs not moving, beside the seeded finished ones.
    pub active: usize,
    /// Timed requests of each kind.
    pub reps: usize,
    /// Runs listed per cause (`limit`).
    pub limit: usize,
}

/// The workflows of the active runs: the first one's runs are stalled
/// (`no_worker_for_queue`), the others wait (`waiting_approval`,
/// `waiting_timer`).
const ACTIVE: &[(&str, &str)] = &[
    (
        "bench_diag_orphan",
        "name: bench_diag_orphan\nsteps:\n  - {name: only, handler: bench.nobody, queue: bench_diag_nowhere}\n",
    ),
    (
        "bench_diag_gate",
        "name: bench_diag_gate\nsteps:\n  - {name: ok, kind: approval}\n",
    ),
    (
        "bench_diag_nap",
        "name: bench_diag_nap\nsteps:\n  - {name: nap, kind: sleep, duration: 1h}\n",
    ),
];

const QUERIES: &[(&str, &str)] = &[
    (
        "diagnostics",
        "GET /v1/diagnostics (counts per cause and the first `limit` runs of each, with their evidence)",
    ),
    (
        "counts",
        "GET /v1/diagnostics?stalled=true&limit=0 (the counts alone, as weft status asks)",
    ),
];

/// One timed request; checks the answer counts every active run and finds
/// exactly the orphans stalled.
async fn query(client: &Client, kind: &str, args: &DiagnoseArgs, orphans: u64) -> Result<()> {
    let query: Vec<(&str, String)> = match kind {
        "diagnostics" => vec![("limit", args.limit.to_string())],
        _ => vec![("stalled", "true".to_owned()), ("limit", "0".to_owned())],
    };
    let d = client.diagnostics(&query).await?;
    if d.examined != args.active as u64 || d.stalled != orphans {
        bail!(
            "{kind}: {} runs examined and {} stalled, expected {} and {orphans}",
            d.examined,
            d.stalled,
            args.active
        );
    }
    Ok(())
}

pub async fn diagnose(
    server: &Server,
    common: &Common,
    url: &str,
    args: &DiagnoseArgs,
) -> Result<Value> {
    let seeded = scale::seed_store(server, common, url, &args.seed).await?;
    let client = Client::new(&server.url);
    let started = Instant::now();
    let mut progress = harness::Progress::new("H active runs", args.active as u64);
    for (name, manifest) in ACTIVE {
        client.put_workflow(name, manifest).await?;
    }
    let batch = weft_store::MAX_STARTS_PER_BATCH;
    let mut made = 0;
    let mut orphans = 0;
    while made < args.active {
        // Round-robin over the workflows, a batch at a time.
        let which = (made / batch) % ACTIVE.len();
        let (name, _) = ACTIVE[which];
        let n = batch.min(args.active - made);
        if which == 0 {
            orphans += n as u64;
        }
        let request = StartRunsRequest {
            runs: (0..n)
                .map(|_| StartRunRequest {
                    input: json!({}),
                    idempotency_key: None,
                    ..Default::default()
                })
                .collect(),
        };
        client.start_runs(name, &request).await?;
        made += n;
        progress.show(made as u64);
    }
    let start_s = started.elapsed().as_secs_f64();
    // Which cause each run is under, from the server itself.
    let d = client.diagnostics(&[("limit", "0".to_owned())]).await?;
    let causes: serde_json::Map<String, Value> = d
        .causes
        .iter()
        .map(|g| {
            (
                format!("{}{}", g.cause, if g.stalled { " (stalled)" } else { "" }),
                json!(g.count),
            )
        })
        .collect();
    eprintln!("[weft-bench]   H causes: {}", Value::Object(causes.clone()));
    // Warm-up, unrecorded.
    for _ in 0..3 {
        for (kind, _) in QUERIES {
            query(&client, kind, args, orphans).await?;
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); QUERIES.len()];
    let mut progress = harness::Progress::new("H queries", args.reps as u64);
    for rep in 0..args.reps {
        for (i, (kind, _)) in QUERIES.iter().enumerate() {
            let t = Instant::now();
            query(&client, kind, args, orphans).await?;
            samples[i].push(t.elapsed().as_secs_f64() * 1000.0);
        }
        progress.show(rep as u64 + 1);
    }
    let total_runs = seeded.total_runs;
    let seed_s = seeded.insert_s;
    seeded.close().await;
    let mut queries = serde_json::Map::new();
    for (i, (kind, description)) in QUERIES.iter().enumerate() {
        let ms = &samples[i];
        let mut summary = stats::latency_summary(ms);
        summary["within_target"] = json!(stats::percentile(ms, 99.0) <= TARGET_MS);
        summary["query"] = json!(description);
        queries.insert((*kind).to_owned(), summary);
    }
    Ok(json!({
        "test": "H",
        "config": common.backend.as_str(),
        "n": args.seed.runs,
        "runs_in_store": total_runs,
        "active_runs": args.active,
        "causes": causes,
        "limit": args.limit,
        "seed_s": round(seed_s, 1),
        "start_active_s": round(start_s, 1),
        "reps": args.reps,
        "target_ms": TARGET_MS,
        "target_on": "p99",
        "measure": "client-side HTTP round trip (weft-client), one request at a time, after 3 unrecorded rounds",
        "queries": queries,
    }))
}

pub fn summary(r: &Value) -> String {
    let queries = crate::scale::query_summaries(r, QUERIES.iter().map(|(kind, _)| *kind));
    format!(
        "H {}: {} runs in the store, {} not moving; target p99 <= {TARGET_MS} ms: {}; foreign CPU {} cores",
        r["backend"].as_str().unwrap_or("?"),
        r["runs_in_store"],
        r["active_runs"],
        queries,
        r["foreign_cpu_cores"],
    )
}
