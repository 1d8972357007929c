//! After a scenario: wait for the load to settle, then check every accepted
//! run against the server and every step against the handlers' side-effect
//! log, and count what went wrong.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    path::Path,
    time::{Duration, Instant},
};

use weft_api::{AttemptDetail, RunDetail};
use weft_client::Client;

use crate::{load::Accepted, world::parse_uptime};

/// How long a handler may outlive its killed worker (the time to notice).
const ORPHAN_GRACE_MS: i64 = 1_000;

/// One handler execution from the side-effect log: its start line, tick
/// lines and, if the handler got that far, its end line (the side effect).
/// Times are [`uptime_ms`](crate::world::uptime_ms): monotonic, one clock
/// for every process.
#[derive(Clone, Debug)]
pub struct Execution {
    pub run_id: String,
    pub step: String,
    pub attempt: i64,
    pub worker: String,
    pub pid: u64,
    pub start_ms: i64,
    /// Its last line: until when it certainly ran.
    pub last_ms: i64,
    /// When it wrote its end line, if it did.
    pub end_ms: Option<i64>,
}

/// The executions in the log, in order of their start, and the number of
/// lines that could not be read.
pub fn read_executions(log: &Path) -> (Vec<Execution>, usize) {
    let text = std::fs::read_to_string(log).expect("read the side-effect log");
    let mut executions: Vec<Execution> = Vec::new();
    // (run, step, attempt, worker, pid) → index of its execution.
    let mut open: HashMap<(String, String, i64, String, u64), usize> = HashMap::new();
    let mut malformed = 0;
    for line in text.lines() {
        let mut words = line.split(' ');
        let kind = words.next().unwrap_or_default();
        let fields: HashMap<&str, &str> = words.filter_map(|word| word.split_once('=')).collect();
        let parsed = (|| {
            Some((
                fields.get("run")?.to_string(),
                fields.get("step")?.to_string(),
                fields.get("attempt")?.parse::<i64>().ok()?,
                fields.get("worker")?.to_string(),
                fields.get("pid")?.parse::<u64>().ok()?,
                parse_uptime(fields.get("uptime")?)?,
            ))
        })();
        let Some((run_id, step, attempt, worker, pid, at_ms)) = parsed else {
            malformed += 1;
            continue;
        };
        let key = (run_id.clone(), step.clone(), attempt, worker.clone(), pid);
        match (kind, open.get(&key)) {
            ("start", _) => {
                open.insert(key, executions.len());
                executions.push(Execution {
                    run_id,
                    step,
                    attempt,
                    worker,
                    pid,
                    start_ms: at_ms,
                    last_ms: at_ms,
                    end_ms: None,
                });
            }
            ("tick", Some(&index)) => executions[index].last_ms = at_ms,
            ("end", Some(&index)) => {
                executions[index].last_ms = at_ms;
                executions[index].end_ms = Some(at_ms);
            }
            _ => malformed += 1,
        }
    }
    executions.sort_by_key(|e| e.start_ms);
    (executions, malformed)
}

/// Whether an attempt ended because its worker let go of it or vanished:
/// the only endings after which a step may run again.
pub fn lapsed(attempt: &AttemptDetail) -> bool {
    attempt.status == "released"
        || matches!(
            attempt.reason.as_deref(),
            Some("lease_expired" | "worker_shutdown")
        )
}

pub fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled" | "compensated")
}

/// A scenario's figures; `violations` explains every non-zero failing count.
#[derive(Default, Debug)]
pub struct Figures {
    pub scenario: String,
    pub accepted: usize,
    /// Starts answered 4xx or never accepted (load side).
    pub refused: usize,
    pub gave_up: usize,
    /// Accepted starts the server does not know (404).
    pub lost: usize,
    /// Accepted runs not terminal when the settle bound passed.
    pub stuck: usize,
    pub completed: usize,
    pub failed: usize,
    /// Runs of the scenario's workflows the server has that no accepted start
    /// names (a start whose answer was lost and never retried: none expected).
    pub unaccounted: usize,
    /// Handler executions in the side-effect log.
    pub executions: usize,
    /// Steps whose handler started more than once.
    pub duplicated: usize,
    /// Executions beyond the first of a step (the re-runs).
    pub reruns: usize,
    /// Attempts that ended `lease_expired`, `released` or `worker_shutdown`.
    pub lapsed_attempts: usize,
    /// Steps with two completed attempts.
    pub double_completed: usize,
    /// Pairs of executions of one step that ran at the same time.
    pub overlaps: usize,
    /// Re-runs not preceded by a lapsed attempt of the same step.
    pub unjustified_reruns: usize,
    /// Executions that ended (wrote their side effect) more than a second
    /// after their worker was killed: handlers must die with their worker.
    pub orphans: usize,
    /// Executions that finished (logged their end) on a worker that was never
    /// killed, yet whose attempt ended `lease_expired`: a finished result the
    /// worker did not deliver within its lease. Printed, not failed on (a
    /// lease can lapse for real on a starved machine), but each one is a
    /// re-run that should not have been.
    pub dropped_results: usize,
    /// Completed attempts with no end line of that attempt in the log.
    pub unlogged: usize,
    pub malformed_lines: usize,
    pub settle_seconds: f64,
    pub violations: Vec<String>,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chaos {}: accepted={} lost={} stuck={} completed={} failed={} refused={} gave_up={} \
             unaccounted={} executions={} duplicated={} reruns={} lapsed_attempts={} \
             double_completed={} overlaps={} unjustified_reruns={} orphans={} dropped_results={} unlogged={} malformed_lines={} \
             settle={:.1}s",
            self.scenario,
            self.accepted,
            self.lost,
            self.stuck,
            self.completed,
            self.failed,
            self.refused,
            self.gave_up,
            self.unaccounted,
            self.executions,
            self.duplicated,
            self.reruns,
            self.lapsed_attempts,
            self.double_completed,
            self.overlaps,
            self.unjustified_reruns,
            self.orphans,
            self.dropped_results,
            self.unlogged,
            self.malformed_lines,
            self.settle_seconds,
        )
    }
}

impl Figures {
    /// Panics, listing the violations, on any loss, stuck run, refused or
    /// abandoned start, step completed twice, overlap, unjustified re-run,
    /// orphaned handler or unlogged completion.
    pub fn assert_clean(&self) {
        let failing = [
            ("lost", self.lost),
            ("stuck", self.stuck),
            ("refused", self.refused),
            ("gave_up", self.gave_up),
            ("double_completed", self.double_completed),
            ("overlaps", self.overlaps),
            ("unjustified_reruns", self.unjustified_reruns),
            ("orphans", self.orphans),
            ("unlogged", self.unlogged),
        ];
        let failing: Vec<String> = failing
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name}={n}"))
            .collect();
        if !failing.is_empty() {
            let shown: Vec<&String> = self.violations.iter().take(40).collect();
            panic!(
                "chaos {} failed: {}\n{}\n{}",
                self.scenario,
                failing.join(" "),
                self,
                shown
                    .iter()
                    .map(|v| format!("  - {v}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// Waits up to `settle` for every accepted run to end, then checks the runs
/// and the side-effect log. `clients` are the servers to ask (any of them).
pub async fn audit(
    scenario: &str,
    clients: &[Client],
    accepted: &[Accepted],
    workflows: &[&str],
    effects: &Path,
    kills: &[(String, i64)],
    settle: Duration,
) -> Figures {
    let mut figures = Figures {
        scenario: scenario.to_owned(),
        accepted: accepted.len(),
        ..Figures::default()
    };
    let began = Instant::now();
    let mut details: BTreeMap<String, RunDetail> = BTreeMap::new();
    let mut lost: HashSet<String> = HashSet::new();
    let mut pending: Vec<&Accepted> = accepted.iter().collect();
    let mut round = 0usize;
    while !pending.is_empty() && began.elapsed() < settle {
        let mut still = Vec::new();
        for start in pending {
            let client = &clients[round % clients.len()];
            match get_run(client, &start.run_id).await {
                Some(Ok(run)) => {
                    let done = is_terminal(&run.status);
                    details.insert(run.run_id.clone(), run);
                    if !done {
                        still.push(start);
                    }
                }
                Some(Err(404)) => {
                    lost.insert(start.run_id.clone());
                }
                _ => still.push(start),
            }
        }
        pending = still;
        round += 1;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    figures.settle_seconds = began.elapsed().as_secs_f64();
    figures.lost = lost.len();
    for run_id in &lost {
        figures.violations.push(format!(
            "run {run_id} was accepted but the server does not know it"
        ));
    }
    for start in &pending {
        figures.stuck += 1;
        let state = details
            .get(&start.run_id)
            .map(describe)
            .unwrap_or_else(|| "never read".to_owned());
        figures.violations.push(format!(
            "run {} ({}) not terminal after {settle:?}: {state}",
            start.run_id, start.key
        ));
    }
    for run in details.values() {
        match run.status.as_str() {
            "completed" => figures.completed += 1,
            "failed" => figures.failed += 1,
            _ => {}
        }
    }
    figures.unaccounted = count_unaccounted(&clients[0], accepted, workflows).await;

    let (executions, malformed) = read_executions(effects);
    figures.executions = executions.len();
    figures.malformed_lines = malformed;
    for (worker, killed_ms) in kills {
        for e in executions.iter().filter(|e| &e.worker == worker) {
            if e.last_ms > killed_ms + ORPHAN_GRACE_MS {
                figures.orphans += 1;
                figures.violations.push(format!(
                    "run {} step {}: attempt {} (pid {}) still ran {} ms after its worker {worker} was killed{}",
                    e.run_id,
                    e.step,
                    e.attempt,
                    e.pid,
                    e.last_ms - killed_ms,
                    if e.end_ms.is_some() { ", and did its side effect" } else { "" }
                ));
            }
        }
    }
    let mut by_step: BTreeMap<(String, String), Vec<&Execution>> = BTreeMap::new();
    for execution in &executions {
        by_step
            .entry((execution.run_id.clone(), execution.step.clone()))
            .or_default()
            .push(execution);
    }
    for run in details.values() {
        for step in &run.steps {
            figures.lapsed_attempts += step.attempts.iter().filter(|a| lapsed(a)).count();
            let completed: Vec<i64> = step
                .attempts
                .iter()
                .filter(|a| a.status == "completed")
                .map(|a| a.attempt)
                .collect();
            if completed.len() > 1 {
                figures.double_completed += 1;
                figures.violations.push(format!(
                    "run {} step {}: attempts {completed:?} all completed",
                    run.run_id, step.name
                ));
            }
            let runs_of_step = by_step
                .get(&(run.run_id.clone(), step.name.clone()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            for attempt in &completed {
                let logged = runs_of_step
                    .iter()
                    .any(|e| e.attempt == *attempt && e.end_ms.is_some());
                if !logged {
                    figures.unlogged += 1;
                    figures.violations.push(format!(
                        "run {} step {}: attempt {attempt} completed but its handler logged no end",
                        run.run_id, step.name
                    ));
                }
            }
            for e in runs_of_step {
                let attempt = step.attempts.iter().find(|a| a.attempt == e.attempt);
                let expired = attempt.is_some_and(|a| a.reason.as_deref() == Some("lease_expired"));
                let worker_killed = kills.iter().any(|(worker, _)| worker == &e.worker);
                if e.end_ms.is_some() && expired && !worker_killed {
                    figures.dropped_results += 1;
                }
            }
            check_step(
                &run.run_id,
                &step.name,
                &step.attempts,
                runs_of_step,
                &mut figures,
            );
        }
    }
    figures
}

/// Re-runs, overlaps and their justification for one step.
fn check_step(
    run_id: &str,
    step: &str,
    attempts: &[AttemptDetail],
    executions: &[&Execution],
    figures: &mut Figures,
) {
    if executions.len() > 1 {
        figures.duplicated += 1;
        figures.reruns += executions.len() - 1;
    }
    let show = |e: &Execution| {
        format!(
            "attempt {} on {} (pid {}) {}..{} ms{}",
            e.attempt,
            e.worker,
            e.pid,
            e.start_ms,
            e.last_ms,
            if e.end_ms.is_some() { "" } else { " (no end)" }
        )
    };
    for (i, later) in executions.iter().enumerate().skip(1) {
        let earlier = executions[i - 1];
        let earlier_attempt = attempts.iter().find(|a| a.attempt == earlier.attempt);
        let justified = later.attempt > earlier.attempt && earlier_attempt.is_some_and(lapsed);
        if !justified {
            figures.unjustified_reruns += 1;
            let ending = earlier_attempt
                .map(|a| format!("{} ({})", a.status, a.reason.as_deref().unwrap_or("-")))
                .unwrap_or_else(|| "no such attempt".to_owned());
            figures.violations.push(format!(
                "run {run_id} step {step}: ran again ({}) after {} that ended {ending}, not a lapsed lease",
                show(later),
                show(earlier)
            ));
        }
        for other in &executions[..i] {
            if later.start_ms < other.last_ms {
                figures.overlaps += 1;
                figures.violations.push(format!(
                    "run {run_id} step {step}: {} overlaps {} by {} ms",
                    show(later),
                    show(other),
                    other.last_ms - later.start_ms
                ));
            }
        }
    }
}

fn describe(run: &RunDetail) -> String {
    let steps: Vec<String> = run
        .steps
        .iter()
        .map(|s| {
            let attempts: Vec<String> = s
                .attempts
                .iter()
                .map(|a| {
                    format!(
                        "#{} {} {} {}",
                        a.attempt,
                        a.status,
                        a.reason.as_deref().unwrap_or("-"),
                        a.worker_id
                    )
                })
                .collect();
            format!("{}={} [{}]", s.name, s.status, attempts.join(", "))
        })
        .collect();
    format!("{} {}", run.status, steps.join(" "))
}

/// The run, `Err(status)` for an HTTP error, `None` when nothing answered.
async fn get_run(client: &Client, run_id: &str) -> Option<Result<RunDetail, u16>> {
    match tokio::time::timeout(Duration::from_secs(10), client.get_run(run_id)).await {
        Ok(Ok(run)) => Some(Ok(run)),
        Ok(Err(err)) => err.status().map(Err),
        Err(_) => None,
    }
}

/// Runs of `workflows` on the server that no accepted start names.
async fn count_unaccounted(client: &Client, accepted: &[Accepted], workflows: &[&str]) -> usize {
    let known: HashSet<&str> = accepted.iter().map(|a| a.run_id.as_str()).collect();
    let mut unaccounted = 0;
    for workflow in workflows {
        let mut cursor: Option<String> = None;
        // Bounded: 100 pages of 1,000 is far beyond any profile.
        for _ in 0..100 {
            let mut query = vec![
                ("workflow", workflow.to_string()),
                ("limit", "1000".to_owned()),
            ];
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let page = client.list_runs(&query).await.expect("list runs");
            unaccounted += page
                .runs
                .iter()
                .filter(|r| !known.contains(r.run_id.as_str()))
                .count();
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    unaccounted
}

/// The auditor itself, on a made-up log: what it must see and must not.
#[test]
fn the_audit_tells_lapsed_reruns_from_overlaps_and_unjustified_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("effects.log");
    let line = |kind: &str, step: &str, attempt: i64, worker: &str, pid: u64, uptime: &str| {
        format!(
            "{kind} run=r step={step} attempt={attempt} worker={worker} pid={pid} uptime={uptime} epoch_ns=-\n"
        )
    };
    let text = [
        // a: attempt 1 killed mid-step (no end), attempt 2 after its lapse: fine.
        line("start", "a", 1, "w1", 10, "100.00"),
        line("tick", "a", 1, "w1", 10, "100.25"),
        line("start", "a", 2, "w2", 20, "106.00"),
        line("end", "a", 2, "w2", 20, "106.50"),
        // b: attempt 1 still ticking when attempt 2 starts: an overlap.
        line("start", "b", 1, "w1", 11, "100.00"),
        line("tick", "b", 1, "w1", 11, "107.00"),
        line("start", "b", 2, "w2", 21, "106.00"),
        line("end", "b", 2, "w2", 21, "108.00"),
        // c: ran again after an attempt that ended as a cancel: unjustified.
        line("start", "c", 1, "w1", 12, "100.00"),
        line("start", "c", 2, "w2", 22, "101.00"),
        line("end", "c", 2, "w2", 22, "102.00"),
        "garbage\n".to_owned(),
    ]
    .concat();
    std::fs::write(&log, text).expect("write the log");
    let (executions, malformed) = read_executions(&log);
    assert_eq!((executions.len(), malformed), (6, 1));
    let attempts = |first: serde_json::Value| -> Vec<AttemptDetail> {
        let attempt = |n: i64, extra: serde_json::Value| {
            let mut a = serde_json::json!({
                "attempt": n, "worker_id": "w", "span_id": "s",
                "claimed_at": "2026-01-01T00:00:00Z", "reason": null, "status": "completed"
            });
            a.as_object_mut()
                .expect("an object")
                .extend(extra.as_object().expect("an object").clone());
            serde_json::from_value(a).expect("an attempt")
        };
        vec![attempt(1, first), attempt(2, serde_json::json!({}))]
    };
    let lapsed = attempts(serde_json::json!({"status": "failed", "reason": "lease_expired"}));
    let cancelled = attempts(serde_json::json!({"status": "failed", "reason": "cancelled"}));
    let of =
        |step: &str| -> Vec<&Execution> { executions.iter().filter(|e| e.step == step).collect() };

    let mut figures = Figures::default();
    check_step("r", "a", &lapsed, &of("a"), &mut figures);
    assert_eq!(
        (figures.reruns, figures.overlaps, figures.unjustified_reruns),
        (1, 0, 0)
    );

    let mut figures = Figures::default();
    check_step("r", "b", &lapsed, &of("b"), &mut figures);
    assert_eq!(
        (figures.overlaps, figures.unjustified_reruns),
        (1, 0),
        "{:?}",
        figures.violations
    );

    let mut figures = Figures::default();
    check_step("r", "c", &cancelled, &of("c"), &mut figures);
    assert_eq!(
        (figures.overlaps, figures.unjustified_reruns),
        (0, 1),
        "{:?}",
        figures.violations
    );
}
