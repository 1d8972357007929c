//! `weft workers`, `weft queues`, `weft doctor` and the `why` lines of
//! `weft run`: human output of the server's workers, queues and diagnoses.

use chrono::{DateTime, Utc};
use weft_api::{Diagnostics, QueueList, RunDiagnosisView, WorkerList};

use crate::table::table;

/// How long `weft start --wait` watches a run make no progress before it
/// prints the run's diagnosis.
pub const NO_PROGRESS: std::time::Duration = std::time::Duration::from_secs(5);

/// Seconds since an RFC 3339 time, as `12s`, `3m04s` or `2h05m`.
fn age(text: &str) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(text) else {
        return "-".to_owned();
    };
    let s = (Utc::now().timestamp_millis() - t.timestamp_millis()).max(0) / 1000;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

pub fn workers(list: &WorkerList) {
    if list.workers.is_empty() {
        println!(
            "no worker has polled lately (start one with `weft worker --handlers handlers.toml`)"
        );
        return;
    }
    let rows: Vec<Vec<String>> = list
        .workers
        .iter()
        .map(|w| {
            vec![
                w.worker_id.clone(),
                w.host.clone().unwrap_or_else(|| "-".to_owned()),
                w.pid.map_or("-".to_owned(), |p| p.to_string()),
                w.version.clone().unwrap_or_else(|| "-".to_owned()),
                w.queues.join(","),
                w.handlers.join(","),
                format!(
                    "{}/{}",
                    w.slots_in_use,
                    w.concurrency.map_or("?".to_owned(), |c| c.to_string())
                ),
                format!("{} ago", age(&w.last_poll)),
                w.last_heartbeat
                    .as_deref()
                    .map_or("-".to_owned(), |b| format!("{} ago", age(b))),
                if w.live { "live" } else { "gone" }.to_owned(),
            ]
        })
        .collect();
    table(
        &[
            "worker",
            "host",
            "pid",
            "version",
            "queues",
            "handlers",
            "slots",
            "last poll",
            "heartbeat",
            "state",
        ],
        &rows,
    );
}

pub fn queues(list: &QueueList) {
    if list.queues.is_empty() {
        println!("no queue has work or workers");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .queues
        .iter()
        .map(|q| {
            vec![
                q.queue.clone(),
                q.ready.to_string(),
                q.running.to_string(),
                format!("{:.1}s", q.oldest_ready_age_seconds),
                q.pollers.to_string(),
                q.throughput_last_minute.to_string(),
                if q.handlers.is_empty() {
                    "-".to_owned()
                } else {
                    q.handlers.join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            "queue",
            "ready",
            "running",
            "oldest ready",
            "pollers",
            "done/min",
            "handlers",
        ],
        &rows,
    );
}

/// The per-step lines of one diagnosis, indented by `indent`.
fn steps(run: &RunDiagnosisView, indent: &str) {
    for s in &run.steps {
        let flag = if s.stalled { "STALLED " } else { "" };
        println!(
            "{indent}{}: {flag}{} ({} ago): {}",
            s.step,
            s.cause,
            age(&s.since),
            s.evidence
        );
        println!("{indent}    → {}", s.command);
    }
}

/// `weft doctor RUN`.
pub fn run_diagnosis(run: &RunDiagnosisView) {
    let verdict = match (&run.cause, run.stalled) {
        (None, _) => "nothing to diagnose (no unfinished step)".to_owned(),
        (Some(c), true) => format!("STALLED: {c}"),
        (Some(c), false) => format!("not stalled: {c}"),
    };
    println!(
        "run {} ({}, {}): {verdict}",
        run.run_id, run.workflow, run.status
    );
    steps(run, "  ");
}

/// The `why` lines `weft run` prints under the steps of an unfinished run.
pub fn why(run: &RunDiagnosisView) {
    if run.steps.is_empty() {
        return;
    }
    println!();
    for s in &run.steps {
        let flag = if s.stalled { " (stalled)" } else { "" };
        println!(
            "why  {}: {}{flag}: {} → {}",
            s.step, s.cause, s.evidence, s.command
        );
    }
}

/// `weft doctor`: stalled causes with their runs, then the waiting ones counted.
pub fn diagnostics(d: &Diagnostics) {
    let waiting: u64 = d
        .causes
        .iter()
        .filter(|g| !g.stalled)
        .map(|g| g.count)
        .sum();
    for f in &d.findings {
        println!("STALLED: {}: {}", f.cause, f.evidence);
        println!("    → {}", f.command);
    }
    println!(
        "{} run(s) stalled, {waiting} waiting or moving, {} examined{}",
        d.stalled,
        d.examined,
        if d.truncated { " (truncated)" } else { "" }
    );
    for g in d.causes.iter().filter(|g| g.stalled) {
        println!();
        println!("{} — {} run(s)", g.cause, g.count);
        for run in &g.runs {
            println!(
                "  run {} ({}) stuck for {}",
                run.run_id,
                run.workflow,
                run.stuck_since.as_deref().map_or("-".to_owned(), age)
            );
            steps(run, "    ");
        }
        if (g.runs.len() as u64) < g.count {
            println!(
                "  … {} more (weft doctor --cause {} --offset N)",
                g.count - g.runs.len() as u64,
                g.cause
            );
        }
    }
    let healthy: Vec<String> = d
        .causes
        .iter()
        .filter(|g| !g.stalled)
        .map(|g| format!("{} {}", g.cause, g.count))
        .collect();
    if !healthy.is_empty() {
        println!();
        println!("not stalled: {}", healthy.join(", "));
    }
}

/// The lines `weft status` adds: stuck runs and queues with work but no live
/// worker. Silent when the server cannot say (an older server).
pub async fn status(client: &weft_client::Client) {
    let query = [("stalled", "true".to_owned()), ("limit", "0".to_owned())];
    if let Ok(d) = client.diagnostics(&query).await {
        println!();
        let causes: Vec<String> = d
            .causes
            .iter()
            .map(|g| format!("{} {}", g.cause, g.count))
            .collect();
        for f in &d.findings {
            println!("{}  {}", f.cause, f.evidence);
        }
        if d.stalled == 0 {
            println!("stuck runs  none");
        } else {
            println!(
                "stuck runs  {} ({}); see `weft doctor`",
                d.stalled,
                causes.join(", ")
            );
        }
    }
    if let Ok(q) = client.list_queues(&[]).await {
        let orphaned: Vec<&str> = q
            .queues
            .iter()
            .filter(|q| q.pollers == 0 && q.ready > 0)
            .map(|q| q.queue.as_str())
            .collect();
        if !orphaned.is_empty() {
            println!("queues without workers  {}", orphaned.join(", "));
        }
    }
}
