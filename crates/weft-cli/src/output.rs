//! Human output: tables, the run view with its attempt timeline, and live
//! progress for `start --wait` and `watch`.

use std::{collections::HashMap, time::Duration};

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde_json::Value;
use weft_api::{EventRecord, RunDetail, RunList, StepDetail, WorkflowSummary};
use weft_client::Client;

use crate::table::table;

fn opt(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".to_owned())
}

fn millis(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn human_ms(ms: i64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

pub fn workflows(list: &[WorkflowSummary]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                w.version.to_string(),
                w.steps.to_string(),
                w.created_at.clone(),
                w.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["workflow", "version", "steps", "registered", "description"],
        &rows,
    );
}

/// Prints a page of runs; when there are more, the command for the next
/// page: `next_page` (this listing's command and filters) with `--cursor`.
pub fn runs(list: &RunList, next_page: &str) {
    let now = Utc::now().timestamp_millis();
    let rows: Vec<Vec<String>> = list
        .runs
        .iter()
        .map(|r| {
            let created = millis(&r.created_at).unwrap_or(now);
            let end = r.finished_at.as_deref().and_then(millis).unwrap_or(now);
            vec![
                r.run_id.clone(),
                r.workflow.clone(),
                r.status.clone(),
                opt(&r.reason),
                r.created_at.clone(),
                human_ms(end - created),
                r.trace_id.clone(),
            ]
        })
        .collect();
    table(
        &[
            "run_id", "workflow", "status", "reason", "created", "duration", "trace_id",
        ],
        &rows,
    );
    if let Some(cursor) = &list.next_cursor {
        println!("(more: {next_page} --cursor {cursor})");
    }
}

/// A run's view. A `for_each` step's children are collapsed into one row
/// with their counts, unless `expand_children` lists each child's attempts
/// as `step[i]`.
pub fn run(run: &RunDetail, expand_children: bool) {
    if !expand_children {
        return run_view(&crate::fan_out::collapsed(run));
    }
    run_view(run)
}

fn run_view(run: &RunDetail) {
    println!("run       {}", run.run_id);
    println!("trace_id  {}", run.trace_id);
    if let Some(url) = &run.trace_url {
        println!("trace     {url}");
    }
    println!("workflow  {} v{}", run.workflow, run.version);
    if !run.metadata.is_empty() {
        let pairs: Vec<String> = run
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("metadata  {}", pairs.join(" "));
    }
    let reason = run
        .reason
        .as_ref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    println!("status    {}{reason}", run.status);
    println!("created   {}", run.created_at);
    if let Some(ms) = run.timing.schedule_to_start_ms {
        println!("start     {} after creation", human_ms(ms));
    }
    if let Some(ms) = run.timing.end_to_end_ms {
        println!("took      {}", human_ms(ms));
    }
    if let Some(error) = &run.error {
        println!("error     {error}");
    }
    println!();
    let mut rows = Vec::new();
    for step in &run.steps {
        if let Some(row) = crate::fan_out::collapsed_row(step) {
            rows.push(row);
            continue;
        }
        if step.attempts.is_empty() {
            // A sleep, or an approval with a `timeout`, says when it wakes.
            let status = match (&step.due_at, step.status.as_str()) {
                (Some(t), "waiting") => format!("waiting until {t}"),
                _ => step.status.clone(),
            };
            rows.push(vec![
                step.name.clone(),
                "-".into(),
                status,
                opt(&step.reason),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                opt(&step.error),
            ]);
        }
        for a in &step.attempts {
            let t = a.timing.clone().unwrap_or_default();
            let attempt = if a.kind == "compensate" {
                format!("{} undo", a.attempt)
            } else {
                a.attempt.to_string()
            };
            rows.push(vec![
                crate::fan_out::attempt_name(&step.name, a),
                attempt,
                a.status.clone(),
                opt(&a.reason),
                a.worker_id.clone(),
                if a.timing.is_some() {
                    human_ms(t.queue_wait_ms)
                } else {
                    "-".into()
                },
                t.handler_ms.map_or_else(|| "-".into(), human_ms),
                if a.timing.is_some() {
                    human_ms(t.total_ms)
                } else {
                    "-".into()
                },
                opt(&a.error),
            ]);
        }
        // A step between attempts (retrying, ready again after a release)
        // gets a row of its own: its status is no attempt's.
        if let Some(last) = step.attempts.last()
            && last.status != step.status
            && !matches!(
                step.status.as_str(),
                "completed" | "failed" | "cancelled" | "compensated"
            )
        {
            let due = step
                .due_at
                .as_ref()
                .map_or_else(|| "-".into(), |t| format!("until {t}"));
            rows.push(vec![
                step.name.clone(),
                "-".into(),
                step.status.clone(),
                "-".into(),
                "-".into(),
                due,
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    table(
        &[
            "step", "attempt", "status", "reason", "worker", "queued", "handler", "total", "error",
        ],
        &rows,
    );
    undo_chain(run);
    timeline(run);
}

/// The saga's undo chain: the steps undone, in the order their undos ran,
/// then those whose undo did not finish, with where it stands.
fn undo_chain(run: &RunDetail) {
    let mut undone: Vec<(&str, String, &str)> = run
        .steps
        .iter()
        .filter_map(|s| {
            let undo = s.undo.as_deref()?;
            let first = s
                .attempts
                .iter()
                .find(|a| a.kind == "compensate")
                .map(|a| a.claimed_at.clone())
                .unwrap_or_else(|| "~".into());
            Some((s.name.as_str(), first, undo))
        })
        .collect();
    if undone.is_empty() {
        return;
    }
    undone.sort_by(|a, b| a.1.cmp(&b.1));
    let chain: Vec<String> = undone
        .iter()
        .map(|(name, _, undo)| match *undo {
            "completed" => (*name).to_owned(),
            other => format!("{name} ({other})"),
        })
        .collect();
    println!();
    println!("undo: {}", chain.join(" → "));
}

/// The run's critical path (`weft_core::critical_path`): the steps that set
/// its duration, then each stretch of time on it.
pub fn critical_path(run: &RunDetail, events: &[EventRecord]) {
    let steps = weft_server::critical_path_steps(run, events);
    let now = run
        .finished_at
        .as_deref()
        .and_then(millis)
        .unwrap_or_else(|| Utc::now().timestamp_millis());
    let path = weft_core::critical_path::critical_path(&steps, now);
    if path.steps.is_empty() {
        return;
    }
    println!();
    println!(
        "critical path  {}  ({})",
        path.steps.join(" → "),
        human_ms(path.total_ms)
    );
    for s in &path.segments {
        let attempt = s.attempt.map_or_else(String::new, |a| format!("#{a}"));
        println!(
            "  {:<20} {:<4} {:<11} {}",
            s.step,
            attempt,
            s.kind.as_str(),
            human_ms(s.duration_ms())
        );
    }
}

/// One bar per attempt on a shared time axis: `.` waiting in the queue,
/// `#` running, `x` ended in failure.
fn timeline(run: &RunDetail) {
    let Some(start) = millis(&run.created_at) else {
        return;
    };
    let now = Utc::now().timestamp_millis();
    let end = run
        .finished_at
        .as_deref()
        .and_then(millis)
        .unwrap_or(now)
        .max(start + 1);
    let width = 50usize;
    let scale = |t: i64| {
        (((t - start).max(0) as f64 / (end - start) as f64) * width as f64).round() as usize
    };
    println!(
        "\ntimeline  0 {:─^w$} {}",
        "",
        human_ms(end - start),
        w = width - 2
    );
    for step in &run.steps {
        for a in &step.attempts {
            let Some(claimed) = millis(&a.claimed_at) else {
                continue;
            };
            let finished = a.finished_at.as_deref().and_then(millis).unwrap_or(now);
            let queued_from = claimed - a.timing.as_ref().map_or(0, |t| t.queue_wait_ms);
            let mut bar = vec![' '; width + 1];
            let (q, c, f) = (
                scale(queued_from).min(width),
                scale(claimed).min(width),
                scale(finished).min(width),
            );
            for cell in bar.iter_mut().take(c).skip(q) {
                *cell = '.';
            }
            for cell in bar.iter_mut().take(f.max(c + 1)).skip(c) {
                *cell = '#';
            }
            if a.status == "failed" {
                bar[f.min(width)] = 'x';
            }
            let label = format!(
                "{}#{}",
                crate::fan_out::attempt_name(&step.name, a),
                a.attempt
            );
            println!("{label:>16} |{}|", bar.iter().collect::<String>());
        }
    }
}

/// Follows a run until it ends, printing each step status change.
pub async fn follow(client: &Client, id: &str, quiet: bool) -> Result<RunDetail> {
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    let mut failures = 0;
    // After this long without a step changing, say why (once per stall).
    let mut last_change = std::time::Instant::now();
    let mut explained = false;
    loop {
        let run = match client.get_run(id).await {
            Ok(run) => run,
            Err(err) if err.is_transient() && failures < 20 => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        if !quiet {
            for step in &run.steps {
                let state = (step.status.clone(), step.attempts.len());
                if seen.get(&step.name) != Some(&state) {
                    println!("  {:<16} {}", step.name, progress(step));
                    seen.insert(step.name.clone(), state);
                    last_change = std::time::Instant::now();
                    explained = false;
                }
            }
            if !explained && last_change.elapsed() >= crate::doctor::NO_PROGRESS {
                if let Ok(why) = client.run_diagnosis(id).await {
                    crate::doctor::why(&why);
                }
                explained = true;
            }
        }
        if matches!(
            run.status.as_str(),
            "completed" | "failed" | "cancelled" | "compensated"
        ) {
            if !quiet {
                let took = run.timing.end_to_end_ms.map(human_ms).unwrap_or_default();
                println!("run {} {} in {took}", run.run_id, run.status);
                if let Some(output) = &run.output
                    && run.status == "completed"
                    && *output != Value::Null
                {
                    println!("output: {output}");
                }
            }
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A step's progress line after its name: its status, the attempt it is on,
/// and a reason and error only where they describe that state. A step's
/// `reason` and `error` keep the last failed attempt's until the step ends,
/// so a step running (or queued for) a new attempt shows none of them, and a
/// step waiting to retry names the attempt they came from.
fn progress(step: &StepDetail) -> String {
    let detail = |reason: &Option<String>, error: &Option<String>| match (reason, error) {
        (Some(reason), Some(error)) => format!(" ({reason}: {error})"),
        (Some(reason), None) => format!(" ({reason})"),
        (None, Some(error)) => format!(" ({error})"),
        (None, None) => String::new(),
    };
    let attempts = step.attempts.len();
    match step.status.as_str() {
        "retrying" => {
            let last = step.attempts.last();
            format!(
                "retrying after attempt {attempts}{}",
                detail(
                    &last.and_then(|a| a.reason.clone()).or(step.reason.clone()),
                    &last.and_then(|a| a.error.clone()).or(step.error.clone()),
                )
            )
        }
        "failed" | "cancelled" | "skipped" => {
            let attempt = if attempts == 0 {
                String::new()
            } else {
                format!(" attempt {attempts}")
            };
            format!(
                "{}{attempt}{}",
                step.status,
                detail(&step.reason, &step.error)
            )
        }
        status if attempts == 0 || status == "ready" || status == "pending" => status.to_owned(),
        status => format!("{status} attempt {attempts}"),
    }
}

pub fn health(health: &Value) {
    println!("status   {}", health["status"].as_str().unwrap_or("?"));
    println!("version  {}", health["version"].as_str().unwrap_or("?"));
    println!("uptime   {}s", health["uptime_seconds"]);
    if let Some(checks) = health["checks"].as_array() {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                vec![
                    c["name"].as_str().unwrap_or("").to_owned(),
                    c["status"].as_str().unwrap_or("").to_owned(),
                    format!("{:.1}ms", c["latency_ms"].as_f64().unwrap_or(0.0)),
                    c["message"].as_str().unwrap_or("").to_owned(),
                ]
            })
            .collect();
        println!();
        table(&["check", "status", "latency", "message"], &rows);
    }
}
