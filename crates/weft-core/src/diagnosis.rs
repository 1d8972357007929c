//! Why a run is not moving: one pure function from plain descriptions of a
//! run (its unfinished steps, their attempts and leases), the live workers and
//! the thresholds, to a closed set of causes with their evidence and the
//! command that resolves or inspects each. `weft doctor`, the diagnosis
//! endpoints, the `why` lines of `weft run` and `weft_runs_stalled` all come
//! from here, so they cannot disagree.
//!
//! Times are epoch milliseconds; `now` is an argument (no clock here).

use std::{collections::BTreeSet, fmt};

use crate::{
    RunId,
    status::{AttemptStatus, RunStatus, StepStatus, UndoStatus},
};

/// Declares the closed set of causes, each with its stable code, whether it is
/// a stalled cause (feeds the gauge, the exit status of `weft doctor`) and its
/// rank (lower is worse, "worst first").
macro_rules! causes {
    ($($(#[$meta:meta])* $variant:ident => $text:literal, stalled: $stalled:literal, rank: $rank:literal;)+) => {
        /// Why one step (and, through its worst step, one run) is not moving.
        /// Stable codes: they are JSON values and metric labels.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Cause { $($(#[$meta])* $variant),+ }

        impl Cause {
            /// Every cause, reserved ones included, so a label set is stable.
            pub const ALL: &'static [Cause] = &[$(Cause::$variant),+];

            /// The stable code (`no_worker_for_queue`, ...).
            pub fn as_str(self) -> &'static str {
                match self { $(Cause::$variant => $text),+ }
            }

            /// The cause a code names, if any.
            pub fn parse(text: &str) -> Option<Cause> {
                match text { $($text => Some(Cause::$variant),)+ _ => None }
            }

            /// True for causes that mean "stuck" (as opposed to a healthy wait).
            pub fn is_stalled(self) -> bool {
                match self { $(Cause::$variant => $stalled),+ }
            }

            /// Severity order, 0 the worst.
            pub fn rank(self) -> u8 {
                match self { $(Cause::$variant => $rank),+ }
            }
        }
    };
}

causes! {
    /// A ready step on a queue that no live worker polls.
    NoWorkerForQueue => "no_worker_for_queue", stalled: true, rank: 0;
    /// A ready step whose queue is polled, but by no live worker with its handler.
    NoWorkerForHandler => "no_worker_for_handler", stalled: true, rank: 1;
    /// The step's last attempts all failed with the same reason and message.
    PoisonInput => "poison_input", stalled: true, rank: 2;
    /// The step's last attempts all lost their lease: a worker crashing on it.
    LeaseExpiredLoop => "lease_expired_loop", stalled: true, rank: 3;
    /// A timer (backoff or sleep) due longer ago than the overdue threshold: the
    /// engine is not sweeping.
    OverdueTimer => "overdue_timer", stalled: true, rank: 4;
    /// Ready work, live workers able to take it, no free slot, for longer than
    /// the threshold.
    WorkerSaturated => "worker_saturated", stalled: true, rank: 5;
    /// Running past the threshold, or past the p99 of the step's recent
    /// attempts.
    RunningLong => "running_long", stalled: true, rank: 6;
    /// The run was cancelled but a handler still holds a live lease.
    CancelPending => "cancel_pending", stalled: true, rank: 7;
    /// Reserved: the workflow is paused.
    WorkflowPaused => "workflow_paused", stalled: true, rank: 8;
    /// Database claim or commit latency above its threshold: a system finding
    /// ([`system_findings`]), never the cause of one run.
    DatabaseSlow => "database_slow", stalled: true, rank: 9;
    /// An approval step waiting for a decision.
    WaitingApproval => "waiting_approval", stalled: false, rank: 10;
    /// In backoff before its next attempt.
    Retrying => "retrying", stalled: false, rank: 11;
    /// Reserved: held back by a concurrency limit.
    WaitingConcurrency => "waiting_concurrency", stalled: false, rank: 12;
    /// Reserved: held back by a rate limit.
    WaitingRateLimit => "waiting_rate_limit", stalled: false, rank: 13;
    /// A sleep step (or a backoff) until its due time.
    WaitingTimer => "waiting_timer", stalled: false, rank: 14;
    /// Waiting on steps it depends on.
    WaitingDependencies => "waiting_dependencies", stalled: false, rank: 15;
    /// Ready, with a live worker able to take it: just queued.
    Queued => "queued", stalled: false, rank: 16;
    /// Running under a live lease, within its threshold.
    Running => "running", stalled: false, rank: 17;
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The labels `weft_runs_stalled{reason}` always carries (0 when none).
pub fn stalled_labels() -> impl Iterator<Item = Cause> {
    Cause::ALL
        .iter()
        .copied()
        .filter(|c| c.is_stalled() || *c == Cause::WaitingApproval)
        .filter(|c| *c != Cause::DatabaseSlow)
}

/// Thresholds of the rules, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// A worker is live while it polled within this window (longer than the
    /// longest poll wait).
    pub worker_live_ms: i64,
    /// A running attempt older than this is `running_long` (so is one older
    /// than the p99 of its step's recent attempts, [`StepView::p99_ms`]).
    pub running_long_ms: i64,
    /// An approval waiting longer than this is stalled.
    pub approval_ms: i64,
    /// A timer due longer ago than this is `overdue_timer`.
    pub overdue_timer_ms: i64,
    /// A ready step waiting on busy workers longer than this is `worker_saturated`.
    pub saturated_ms: i64,
    /// How many of the last attempts must agree for `poison_input` and
    /// `lease_expired_loop` (at least 2).
    pub repeat_attempts: usize,
    /// Claims or commits whose recent p99 latency is above this are
    /// `database_slow`.
    pub database_slow_ms: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            worker_live_ms: 45_000,
            running_long_ms: 3_600_000,
            approval_ms: 86_400_000,
            overdue_timer_ms: 60_000,
            saturated_ms: 300_000,
            repeat_attempts: 2,
            database_slow_ms: 500,
        }
    }
}

/// The recent latency of one class of database operation, as one server
/// measured it around its own calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyView {
    /// `claim` (taking ready steps) or `commit` (a result or a start written).
    pub operation: &'static str,
    /// Operations measured within the window.
    pub samples: usize,
    /// The 99th percentile of those, in microseconds.
    pub p99_us: u64,
    /// The slowest of those, in microseconds.
    pub max_us: u64,
    /// How far back the window reaches, in milliseconds.
    pub window_ms: i64,
}

/// A finding about the whole system rather than one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemFinding {
    /// Always a system cause (today only [`Cause::DatabaseSlow`]).
    pub cause: Cause,
    /// What was seen, for a human.
    pub evidence: String,
    /// The command that inspects it.
    pub command: String,
}

fn millis(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// The system findings from recent database latencies: `database_slow` when
/// the p99 of claims or of commits is above `t.database_slow_ms`.
pub fn system_findings(latency: &[LatencyView], t: &Thresholds) -> Vec<SystemFinding> {
    let limit_us = u64::try_from(t.database_slow_ms.max(0))
        .unwrap_or(0)
        .saturating_mul(1000);
    let slow: Vec<String> = latency
        .iter()
        .filter(|l| l.samples > 0 && l.p99_us > limit_us)
        .map(|l| {
            format!(
                "{} p99 {} (max {}) over {} in the last {}",
                l.operation,
                millis(l.p99_us),
                millis(l.max_us),
                l.samples,
                secs(l.window_ms)
            )
        })
        .collect();
    if slow.is_empty() {
        return Vec::new();
    }
    vec![SystemFinding {
        cause: Cause::DatabaseSlow,
        evidence: format!("{}; threshold {} ms", slow.join("; "), t.database_slow_ms),
        command: "weft status".to_owned(),
    }]
}

/// One worker as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerView {
    pub worker_id: String,
    pub queues: Vec<String>,
    pub handlers: Vec<String>,
    /// Tasks at once, when the worker said.
    pub concurrency: Option<u32>,
    /// Live leases held (from the lease rows).
    pub slots_in_use: u32,
    /// Epoch ms of the last poll recorded.
    pub last_poll_ms: i64,
}

impl WorkerView {
    /// Live: polled within the window.
    pub fn is_live(&self, now: i64, t: &Thresholds) -> bool {
        now - self.last_poll_ms <= t.worker_live_ms
    }

    fn has_free_slot(&self) -> bool {
        self.concurrency.is_none_or(|c| self.slots_in_use < c)
    }
}

/// One finished or running attempt of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptView {
    pub attempt: u32,
    pub status: AttemptStatus,
    /// Failure reason code (`handler_error`, `lease_expired`, ...).
    pub reason: Option<String>,
    pub message: Option<String>,
    pub worker_id: String,
    pub claimed_at: i64,
    pub finished_at: Option<i64>,
}

/// What kind of step, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKindView {
    Task,
    Sleep,
    Approval,
}

/// A live lease on a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub worker_id: String,
    pub attempt: u32,
    pub claimed_at: i64,
    /// Last heartbeat: expiry minus lease length.
    pub last_heartbeat_ms: i64,
}

/// One unfinished step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepView {
    pub name: String,
    pub kind: StepKindView,
    pub queue: String,
    pub handler: Option<String>,
    pub status: StepStatus,
    /// The steps it depends on, with their status.
    pub depends_on: Vec<(String, StepStatus)>,
    /// Attempts oldest first (the current ones only, since the last retry of the run).
    pub attempts: Vec<AttemptView>,
    /// The retry policy's maximum attempts.
    pub max_attempts: u32,
    pub ready_at: Option<i64>,
    pub due_at: Option<i64>,
    pub updated_at: i64,
    pub lease: Option<LeaseView>,
    /// The p99 duration (ms) of this step's recent completed attempts in its
    /// workflow ([`p99_of`]), when enough are known; a running attempt past it
    /// is `running_long`.
    pub p99_ms: Option<i64>,
    /// For a `for_each` step undone child by child: the index of the child
    /// whose undo the step is diagnosed by ([`child_undo`]); its status,
    /// `ready_at`/`due_at` and lease are that undo's. `None` otherwise.
    pub child: Option<u32>,
}

/// One child undo of a `for_each` step being compensated that has not
/// settled (`ready` or `running`), as the store reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildUndoView {
    /// The child's index.
    pub index: u32,
    /// `ready` (claimable from `ready_at`, which is later than now while it
    /// backs off before a retry) or `running`.
    pub undo: UndoStatus,
    /// When a ready undo may be claimed, epoch ms.
    pub ready_at: Option<i64>,
    /// When a running undo's lease was claimed, epoch ms (none without a
    /// live lease).
    pub claimed_at: Option<i64>,
}

/// Where one child undo stands, as far as the diagnosis of its step cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildUndo {
    /// Ready and due: waiting for a worker.
    Due,
    /// Claimed: running under a lease.
    Running,
    /// Ready but not yet due: backing off before its next attempt.
    BackingOff,
}

/// The order in which the child undos of a `for_each` step being
/// compensated are looked at, and the status the step is then judged as:
/// the first kind some child undo is in names it (one waiting for a worker
/// says the most, then one running, then every one backing off). The
/// store's aggregate SQL is built from this list too.
pub const CHILD_UNDO_ORDER: [(ChildUndo, StepStatus); 3] = [
    (ChildUndo::Due, StepStatus::Ready),
    (ChildUndo::Running, StepStatus::Running),
    (ChildUndo::BackingOff, StepStatus::Retrying),
];

impl ChildUndo {
    /// Where `child` stands at `now`; `None` once its undo has settled.
    pub fn of(child: &ChildUndoView, now: i64) -> Option<ChildUndo> {
        match child.undo {
            UndoStatus::Running => Some(ChildUndo::Running),
            UndoStatus::Ready if child.ready_at.is_some_and(|at| at > now) => {
                Some(ChildUndo::BackingOff)
            }
            UndoStatus::Ready => Some(ChildUndo::Due),
            _ => None,
        }
    }
}

/// The child undo a `for_each` step being compensated is diagnosed by, and
/// the status it is judged as ([`CHILD_UNDO_ORDER`]): among the children
/// in the first kind present, the longest waiting (earliest `ready_at`),
/// the longest running (earliest lease) or the first due again (earliest
/// `ready_at`), lowest index on a tie. `None` when no child undo is left.
pub fn child_undo(children: &[ChildUndoView], now: i64) -> Option<(ChildUndoView, StepStatus)> {
    CHILD_UNDO_ORDER.iter().find_map(|&(kind, status)| {
        children
            .iter()
            .filter(|c| ChildUndo::of(c, now) == Some(kind))
            .min_by_key(|c| {
                let at = match kind {
                    ChildUndo::Running => c.claimed_at,
                    ChildUndo::Due | ChildUndo::BackingOff => c.ready_at,
                };
                (at.unwrap_or(i64::MAX), c.index)
            })
            .map(|c| (*c, status))
    })
}

/// How many of a step's latest completed attempts its p99 is taken over.
pub const P99_ATTEMPTS: usize = 1_000;

/// Fewer completed attempts than this give no p99: a handful of quick runs
/// would make every slower one "long".
pub const P99_MIN_SAMPLES: usize = 20;

/// The nearest-rank `p`th percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// The p99 of a step's recent attempt durations (ms, any order), or `None`
/// with fewer than [`P99_MIN_SAMPLES`].
pub fn p99_of(mut durations_ms: Vec<u64>) -> Option<i64> {
    if durations_ms.len() < P99_MIN_SAMPLES {
        return None;
    }
    durations_ms.sort_unstable();
    i64::try_from(percentile(&durations_ms, 99)).ok()
}

/// What the live workers offer, as far as the rules for a ready step care:
/// one value computed per diagnosis, used by [`diagnose`] and handed to the
/// store's aggregate form of the rules, so the two cannot disagree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerFacts {
    /// Queues some live worker polls.
    pub queues: BTreeSet<String>,
    /// `(queue, handler)` pairs some live worker serves.
    pub served: BTreeSet<(String, String)>,
    /// Served pairs none of whose live workers has a free slot.
    pub full: BTreeSet<(String, String)>,
}

impl WorkerFacts {
    /// The facts from the workers that are live at `now`.
    pub fn of(workers: &[WorkerView], t: &Thresholds, now: i64) -> WorkerFacts {
        let mut facts = WorkerFacts::default();
        let mut free: BTreeSet<(String, String)> = BTreeSet::new();
        for w in workers.iter().filter(|w| w.is_live(now, t)) {
            for q in &w.queues {
                facts.queues.insert(q.clone());
                for h in &w.handlers {
                    let pair = (q.clone(), h.clone());
                    if w.has_free_slot() {
                        free.insert(pair.clone());
                    }
                    facts.served.insert(pair);
                }
            }
        }
        facts.full = facts.served.difference(&free).cloned().collect();
        facts
    }

    /// The cause of a ready step on `queue` for `handler` that has waited
    /// `waited_ms`: the most specific of no worker for the queue, none for
    /// the handler, every able worker full (past the threshold), or queued.
    pub fn ready_cause(&self, queue: &str, handler: &str, waited_ms: i64, t: &Thresholds) -> Cause {
        let pair = (queue.to_owned(), handler.to_owned());
        if !self.queues.contains(queue) {
            Cause::NoWorkerForQueue
        } else if !self.served.contains(&pair) {
            Cause::NoWorkerForHandler
        } else if self.full.contains(&pair) && waited_ms > t.saturated_ms {
            Cause::WorkerSaturated
        } else {
            Cause::Queued
        }
    }
}

/// The status a step of a `compensating` run is diagnosed as, from its
/// undo: `pending` (waiting for its dependants' undos), `ready`, `retrying`
/// or `running`, with its `compensate` handler as the handler; `None` once
/// its undo has settled, or for a step not being undone (nothing to
/// diagnose). The store's views and its aggregate SQL both map through
/// this, so the rules judge an undo as they judge a forward step.
pub fn undo_status(undo: Option<UndoStatus>) -> Option<StepStatus> {
    match undo? {
        UndoStatus::Pending => Some(StepStatus::Pending),
        UndoStatus::Ready => Some(StepStatus::Ready),
        UndoStatus::Retrying => Some(StepStatus::Retrying),
        UndoStatus::Running => Some(StepStatus::Running),
        UndoStatus::Completed
        | UndoStatus::Failed
        | UndoStatus::Skipped
        | UndoStatus::Cancelled => None,
    }
}

/// Whether an attempt running for `elapsed_ms` is `running_long`: past the
/// threshold, or past its step's p99.
pub fn is_running_long(elapsed_ms: i64, p99_ms: Option<i64>, t: &Thresholds) -> bool {
    elapsed_ms > t.running_long_ms || p99_ms.is_some_and(|p| elapsed_ms > p)
}

/// A run to diagnose: not terminal, or cancelled with leases still live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunView {
    pub run_id: RunId,
    pub workflow: String,
    pub status: RunStatus,
    /// Unfinished steps, and for a cancelled run the steps still leased.
    pub steps: Vec<StepView>,
}

/// The diagnosis of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepDiagnosis {
    pub step: String,
    pub cause: Cause,
    /// Since when the step has been in this situation (epoch ms).
    pub since_ms: i64,
    /// What was seen, for a human.
    pub evidence: String,
    /// The command that resolves or inspects it.
    pub command: String,
}

/// The diagnosis of one run: each unfinished step's cause and the worst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDiagnosis {
    pub run_id: RunId,
    pub workflow: String,
    pub status: RunStatus,
    /// The worst step's cause (`None` for a run with no unfinished step).
    pub cause: Option<Cause>,
    pub stalled: bool,
    /// The worst step's `since_ms`.
    pub since_ms: Option<i64>,
    pub steps: Vec<StepDiagnosis>,
}

/// Diagnoses a run against the live workers.
pub fn diagnose(run: &RunView, workers: &[WorkerView], t: &Thresholds, now: i64) -> RunDiagnosis {
    let live: Vec<&WorkerView> = workers.iter().filter(|w| w.is_live(now, t)).collect();
    let facts = WorkerFacts::of(workers, t, now);
    let steps: Vec<StepDiagnosis> = run
        .steps
        .iter()
        .map(|s| diagnose_step(run, s, &live, &facts, t, now))
        .collect();
    let worst = steps
        .iter()
        .min_by_key(|d| (d.cause.rank(), d.since_ms))
        .cloned();
    RunDiagnosis {
        run_id: run.run_id,
        workflow: run.workflow.clone(),
        status: run.status,
        cause: worst.as_ref().map(|d| d.cause),
        stalled: worst.as_ref().is_some_and(|d| is_stalled(d, t, now)),
        since_ms: worst.map(|d| d.since_ms),
        steps,
    }
}

/// A step diagnosis counts as stalled: a stalled cause, or an approval older
/// than its threshold.
pub fn is_stalled(d: &StepDiagnosis, t: &Thresholds, now: i64) -> bool {
    d.cause.is_stalled() || (d.cause == Cause::WaitingApproval && now - d.since_ms > t.approval_ms)
}

/// Orders diagnoses worst first: stalled before waiting, then by cause rank,
/// then the longest stuck first.
pub fn worst_first(runs: &mut [RunDiagnosis]) {
    runs.sort_by_key(|r| {
        (
            !r.stalled,
            r.cause.map_or(u8::MAX, Cause::rank),
            r.since_ms.unwrap_or(i64::MAX),
            r.run_id,
        )
    });
}

fn step_diag(
    step: &StepView,
    cause: Cause,
    since_ms: i64,
    evidence: String,
    command: String,
) -> StepDiagnosis {
    StepDiagnosis {
        step: step.name.clone(),
        cause,
        since_ms,
        evidence,
        command,
    }
}

fn secs(ms: i64) -> String {
    let s = (ms.max(0) as f64) / 1000.0;
    if s < 10.0 {
        format!("{s:.1}s")
    } else {
        format!("{}s", s.round() as i64)
    }
}

fn diagnose_step(
    run: &RunView,
    step: &StepView,
    live: &[&WorkerView],
    facts: &WorkerFacts,
    t: &Thresholds,
    now: i64,
) -> StepDiagnosis {
    let mut d = diagnose_forward(run, step, live, facts, t, now);
    if run.status == RunStatus::Compensating {
        // The step's undo (see [`undo_status`]), or one of its children's
        // ([`child_undo`]): say so, and whose handler.
        let whose = match step.child {
            Some(index) => format!(" of {}[{index}]", step.name),
            None => String::new(),
        };
        d.evidence = format!(
            "undo{whose} by compensate handler {}: {}",
            step.handler.as_deref().unwrap_or("?"),
            d.evidence
        );
    }
    d
}

fn diagnose_forward(
    run: &RunView,
    step: &StepView,
    live: &[&WorkerView],
    facts: &WorkerFacts,
    t: &Thresholds,
    now: i64,
) -> StepDiagnosis {
    let rid = &run.run_id;
    let logs = format!("weft logs {rid} --step {}", step.name);
    if run.status == RunStatus::Cancelled {
        let (worker, since) = step
            .lease
            .as_ref()
            .map_or((String::from("?"), step.updated_at), |l| {
                (l.worker_id.clone(), l.claimed_at)
            });
        return step_diag(
            step,
            Cause::CancelPending,
            since,
            format!(
                "run cancelled; worker {worker} still holds the lease of attempt {} (the handler has not stopped)",
                step.lease.as_ref().map_or(0, |l| l.attempt)
            ),
            format!("weft workers --queue {}", step.queue),
        );
    }
    // A repeated failure says more than the state it left the step in.
    if matches!(step.status, StepStatus::Ready | StepStatus::Retrying)
        && let Some(d) = repeated_failure(step, t, &logs)
    {
        return d;
    }
    match step.status {
        StepStatus::Pending => {
            let waiting: Vec<String> = step
                .depends_on
                .iter()
                .filter(|(_, s)| !s.satisfies_dependants())
                .map(|(n, s)| format!("{n} ({s})"))
                .collect();
            step_diag(
                step,
                Cause::WaitingDependencies,
                step.updated_at,
                format!(
                    "waits on {}",
                    if waiting.is_empty() {
                        "its dependencies".to_owned()
                    } else {
                        waiting.join(", ")
                    }
                ),
                format!("weft run {rid}"),
            )
        }
        StepStatus::Ready => ready_step(step, live, facts, t, now),
        StepStatus::Retrying | StepStatus::Waiting => {
            let due = step.due_at;
            // An approval with a `timeout` (a due time) is a timer: it is
            // decided when due, never stalled waiting for a person.
            if (step.kind == StepKindView::Approval && due.is_none())
                || (step.status == StepStatus::Waiting && due.is_none())
            {
                return step_diag(
                    step,
                    Cause::WaitingApproval,
                    step.updated_at,
                    format!("approval requested {} ago", secs(now - step.updated_at)),
                    format!("weft approve {rid} {}", step.name),
                );
            }
            let due = due.unwrap_or(step.updated_at);
            if now - due > t.overdue_timer_ms {
                return step_diag(
                    step,
                    Cause::OverdueTimer,
                    due,
                    format!(
                        "timer due {} ago and not fired: is the engine sweeping?",
                        secs(now - due)
                    ),
                    "weft status".to_owned(),
                );
            }
            if step.status == StepStatus::Retrying {
                let last = step.attempts.last();
                let n = step.attempts.len();
                let error = last.map_or(String::new(), |a| {
                    format!(
                        "; last error {}: {}",
                        a.reason.as_deref().unwrap_or("?"),
                        a.message.as_deref().unwrap_or("")
                    )
                });
                // A child undo's attempts are counted on its child.
                let next = if step.child.is_some() {
                    "backing off: next attempt".to_owned()
                } else {
                    format!("attempt {} of {} next,", n + 1, step.max_attempts)
                };
                return step_diag(
                    step,
                    Cause::Retrying,
                    step.updated_at,
                    format!("{next} in {}{error}", secs(due - now)),
                    logs,
                );
            }
            let evidence = if step.kind == StepKindView::Approval {
                format!(
                    "approval requested {} ago; its timeout decides in {}",
                    secs(now - step.updated_at),
                    secs(due - now)
                )
            } else {
                format!("sleeping until due in {}", secs(due - now))
            };
            step_diag(
                step,
                Cause::WaitingTimer,
                step.updated_at,
                evidence,
                format!("weft run {rid}"),
            )
        }
        StepStatus::Running => {
            let (since, beat, worker, attempt) = step.lease.as_ref().map_or(
                (
                    step.updated_at,
                    None,
                    "?".to_owned(),
                    step.attempts.len() as u32,
                ),
                |l| {
                    (
                        l.claimed_at,
                        Some(l.last_heartbeat_ms),
                        l.worker_id.clone(),
                        l.attempt,
                    )
                },
            );
            let beat = beat.map_or("no live lease".to_owned(), |b| {
                format!("last heartbeat {} ago", secs(now - b))
            });
            let elapsed = now - since;
            let (cause, past) = if elapsed > t.running_long_ms {
                (
                    Cause::RunningLong,
                    format!("; past the {} threshold", secs(t.running_long_ms)),
                )
            } else if is_running_long(elapsed, step.p99_ms, t) {
                (
                    Cause::RunningLong,
                    format!(
                        "; past the p99 of this step's recent attempts ({})",
                        secs(step.p99_ms.unwrap_or(0))
                    ),
                )
            } else {
                (Cause::Running, String::new())
            };
            step_diag(
                step,
                cause,
                since,
                format!(
                    "attempt {attempt} running on worker {worker} for {}, {beat}{past}",
                    secs(elapsed)
                ),
                logs,
            )
        }
        // Terminal statuses are not passed in; say what was seen anyway.
        other => step_diag(
            step,
            Cause::Running,
            step.updated_at,
            format!("step is {other}"),
            format!("weft run {rid}"),
        ),
    }
}

/// `poison_input` or `lease_expired_loop` from the last attempts.
fn repeated_failure(step: &StepView, t: &Thresholds, logs: &str) -> Option<StepDiagnosis> {
    let k = t.repeat_attempts.max(2);
    let finished: Vec<&AttemptView> = step
        .attempts
        .iter()
        .filter(|a| a.status != AttemptStatus::Running)
        .collect();
    if finished.len() < k {
        return None;
    }
    let last = &finished[finished.len() - k..];
    let since = last[0].finished_at.unwrap_or(last[0].claimed_at);
    let lost = |a: &AttemptView| {
        matches!(
            a.reason.as_deref(),
            Some("lease_expired" | "heartbeat_timeout")
        )
    };
    if last.iter().all(|a| lost(a)) {
        let workers: Vec<&str> = last.iter().map(|a| a.worker_id.as_str()).collect();
        return Some(step_diag(
            step,
            Cause::LeaseExpiredLoop,
            since,
            format!(
                "the last {k} attempts lost their lease (workers {}): a worker crashing on it",
                workers.join(", ")
            ),
            logs.to_owned(),
        ));
    }
    let first = last[0];
    let same = first.status == AttemptStatus::Failed
        && first.reason.is_some()
        && !lost(first)
        && first.reason.as_deref() != Some("cancelled")
        && last.iter().all(|a| {
            a.status == AttemptStatus::Failed
                && a.reason == first.reason
                && a.message == first.message
        });
    if same {
        return Some(step_diag(
            step,
            Cause::PoisonInput,
            since,
            format!(
                "the last {k} attempts failed the same way: {}: {}",
                first.reason.as_deref().unwrap_or("?"),
                first.message.as_deref().unwrap_or("")
            ),
            logs.to_owned(),
        ));
    }
    None
}

fn ready_step(
    step: &StepView,
    live: &[&WorkerView],
    facts: &WorkerFacts,
    t: &Thresholds,
    now: i64,
) -> StepDiagnosis {
    let since = step.ready_at.unwrap_or(step.updated_at);
    let q = &step.queue;
    let handler = step.handler.as_deref().unwrap_or("");
    let on_queue: Vec<&&WorkerView> = live.iter().filter(|w| w.queues.contains(q)).collect();
    let able: Vec<&&&WorkerView> = on_queue
        .iter()
        .filter(|w| w.handlers.iter().any(|h| h == handler))
        .collect();
    let waited = secs(now - since);
    match facts.ready_cause(q, handler, now - since, t) {
        Cause::NoWorkerForQueue => step_diag(
            step,
            Cause::NoWorkerForQueue,
            since,
            format!("ready for {waited}; no live worker polls queue {q}"),
            format!("weft worker --handlers handlers.toml --queue {q}"),
        ),
        Cause::NoWorkerForHandler => step_diag(
            step,
            Cause::NoWorkerForHandler,
            since,
            format!(
                "ready for {waited}; {} live worker(s) poll queue {q} but none serves handler {handler}",
                on_queue.len()
            ),
            format!("weft workers --queue {q}"),
        ),
        Cause::WorkerSaturated => {
            let used: u32 = able.iter().map(|w| w.slots_in_use).sum();
            step_diag(
                step,
                Cause::WorkerSaturated,
                since,
                format!(
                    "ready for {waited}; {} live worker(s) serve it, all {used} slots in use",
                    able.len()
                ),
                format!("weft queues --queue {q}"),
            )
        }
        cause => step_diag(
            step,
            cause,
            since,
            format!("ready for {waited}; {} live worker(s) serve it", able.len()),
            format!("weft workers --queue {q}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn t() -> Thresholds {
        Thresholds {
            worker_live_ms: 10_000,
            running_long_ms: 60_000,
            approval_ms: 120_000,
            overdue_timer_ms: 5_000,
            saturated_ms: 30_000,
            repeat_attempts: 2,
            database_slow_ms: 250,
        }
    }

    fn step(name: &str, status: StepStatus) -> StepView {
        StepView {
            name: name.to_owned(),
            kind: StepKindView::Task,
            queue: "default".to_owned(),
            handler: Some("h".to_owned()),
            status,
            depends_on: Vec::new(),
            attempts: Vec::new(),
            max_attempts: 3,
            ready_at: Some(NOW - 20_000),
            due_at: None,
            updated_at: NOW - 20_000,
            lease: None,
            p99_ms: None,
            child: None,
        }
    }

    fn failed(attempt: u32, reason: &str, message: &str) -> AttemptView {
        AttemptView {
            attempt,
            status: AttemptStatus::Failed,
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            worker_id: format!("w{attempt}"),
            claimed_at: NOW - 50_000 + i64::from(attempt) * 1000,
            finished_at: Some(NOW - 49_500 + i64::from(attempt) * 1000),
        }
    }

    fn worker(handlers: &[&str], concurrency: Option<u32>, used: u32) -> WorkerView {
        WorkerView {
            worker_id: "w".to_owned(),
            queues: vec!["default".to_owned()],
            handlers: handlers.iter().map(|h| (*h).to_owned()).collect(),
            concurrency,
            slots_in_use: used,
            last_poll_ms: NOW - 1_000,
        }
    }

    /// Run `n`'s id; `render` prints it as `r<n>`.
    fn rid(n: u8) -> RunId {
        format!("00000000-0000-7000-8000-00000000000{n}")
            .parse()
            .unwrap()
    }

    /// A run id as the snapshots name it: `r<n>`.
    fn short(id: RunId) -> String {
        format!("r{}", id.as_uuid().as_u128() & 0xf)
    }

    fn run(status: RunStatus, steps: Vec<StepView>) -> RunView {
        RunView {
            run_id: rid(1),
            workflow: "wf".to_owned(),
            status,
            steps,
        }
    }

    /// One line per step: cause, stalled, since (relative to now), evidence, command.
    fn render(run: &RunView, workers: &[WorkerView]) -> String {
        let d = diagnose(run, workers, &t(), NOW);
        let mut out = format!(
            "run {} cause={} stalled={}\n",
            d.run_id,
            d.cause.map_or("-", Cause::as_str),
            d.stalled
        );
        for s in &d.steps {
            out.push_str(&format!(
                "  {}: {} (-{}ms) {} | {}\n",
                s.step,
                s.cause,
                NOW - s.since_ms,
                s.evidence,
                s.command
            ));
        }
        out.replace(&d.run_id.to_string(), &short(d.run_id))
    }

    fn check(run: &RunView, workers: &[WorkerView], expect: expect_test::Expect) {
        expect.assert_eq(&render(run, workers));
    }

    use expect_test::expect;

    #[test]
    fn codes_round_trip_and_reserved_names_exist() {
        for c in Cause::ALL {
            assert_eq!(Cause::parse(c.as_str()), Some(*c));
        }
        for reserved in [
            "workflow_paused",
            "waiting_concurrency",
            "waiting_rate_limit",
            "database_slow",
        ] {
            assert!(Cause::parse(reserved).is_some(), "{reserved}");
        }
        // Cause names never reuse a failure reason.
        for r in crate::status::Reason::ALL {
            assert!(Cause::parse(r.as_str()).is_none(), "{r}");
        }
        let labels: Vec<&str> = stalled_labels().map(Cause::as_str).collect();
        assert!(labels.contains(&"no_worker_for_queue"));
        assert!(!labels.contains(&"queued"));
    }

    #[test]
    fn no_worker_for_queue_then_handler_then_saturated() {
        let r = run(RunStatus::Running, vec![step("a", StepStatus::Ready)]);
        check(
            &r,
            &[],
            expect![[r#"
            run r1 cause=no_worker_for_queue stalled=true
              a: no_worker_for_queue (-20000ms) ready for 20s; no live worker polls queue default | weft worker --handlers handlers.toml --queue default
        "#]],
        );
        // A worker gone quiet past the window is not live.
        let mut gone = worker(&["h"], None, 0);
        gone.last_poll_ms = NOW - 11_000;
        assert_eq!(
            diagnose(&r, &[gone], &t(), NOW).cause,
            Some(Cause::NoWorkerForQueue)
        );
        check(
            &r,
            &[worker(&["other"], None, 0)],
            expect![[r#"
            run r1 cause=no_worker_for_handler stalled=true
              a: no_worker_for_handler (-20000ms) ready for 20s; 1 live worker(s) poll queue default but none serves handler h | weft workers --queue default
        "#]],
        );
        check(
            &r,
            &[worker(&["h"], Some(2), 2)],
            expect![[r#"
            run r1 cause=queued stalled=false
              a: queued (-20000ms) ready for 20s; 1 live worker(s) serve it | weft workers --queue default
        "#]],
        );
        let mut old = r.clone();
        old.steps[0].ready_at = Some(NOW - 40_000);
        check(
            &old,
            &[worker(&["h"], Some(2), 2)],
            expect![[r#"
            run r1 cause=worker_saturated stalled=true
              a: worker_saturated (-40000ms) ready for 40s; 1 live worker(s) serve it, all 2 slots in use | weft queues --queue default
        "#]],
        );
        // A free slot anywhere: just queued.
        check(
            &old,
            &[worker(&["h"], Some(2), 1)],
            expect![[r#"
            run r1 cause=queued stalled=false
              a: queued (-40000ms) ready for 40s; 1 live worker(s) serve it | weft workers --queue default
        "#]],
        );
    }

    #[test]
    fn repeated_failures_win_over_retrying_and_no_worker() {
        let mut s = step("charge", StepStatus::Retrying);
        s.due_at = Some(NOW + 3_000);
        s.attempts = vec![failed(1, "handler_error", "boom")];
        let r = run(RunStatus::Running, vec![s.clone()]);
        check(
            &r,
            &[worker(&["h"], None, 0)],
            expect![[r#"
                run r1 cause=retrying stalled=false
                  charge: retrying (-20000ms) attempt 2 of 3 next, in 3.0s; last error handler_error: boom | weft logs r1 --step charge
            "#]],
        );
        s.attempts.push(failed(2, "handler_error", "boom"));
        check(
            &run(RunStatus::Running, vec![s.clone()]),
            &[worker(&["h"], None, 0)],
            expect![[r#"
            run r1 cause=poison_input stalled=true
              charge: poison_input (-48500ms) the last 2 attempts failed the same way: handler_error: boom | weft logs r1 --step charge
        "#]],
        );
        // Different messages: just retrying.
        s.attempts[1].message = Some("other".to_owned());
        assert_eq!(
            diagnose(&run(RunStatus::Running, vec![s.clone()]), &[], &t(), NOW).cause,
            Some(Cause::Retrying)
        );
        // Lost leases, now ready with no worker at all: the crash loop wins.
        let mut s = step("charge", StepStatus::Ready);
        s.attempts = vec![
            failed(1, "lease_expired", "lease expired"),
            failed(2, "heartbeat_timeout", "x"),
        ];
        check(
            &run(RunStatus::Running, vec![s]),
            &[],
            expect![[r#"
            run r1 cause=lease_expired_loop stalled=true
              charge: lease_expired_loop (-48500ms) the last 2 attempts lost their lease (workers w1, w2): a worker crashing on it | weft logs r1 --step charge
        "#]],
        );
    }

    #[test]
    fn timers_approvals_dependencies() {
        let mut nap = step("nap", StepStatus::Waiting);
        nap.kind = StepKindView::Sleep;
        nap.handler = None;
        nap.due_at = Some(NOW + 60_000);
        let mut ok = step("ok", StepStatus::Pending);
        ok.kind = StepKindView::Approval;
        ok.depends_on = vec![
            ("nap".to_owned(), StepStatus::Waiting),
            ("x".to_owned(), StepStatus::Completed),
        ];
        let r = run(RunStatus::Running, vec![nap.clone(), ok]);
        check(
            &r,
            &[],
            expect![[r#"
            run r1 cause=waiting_timer stalled=false
              nap: waiting_timer (-20000ms) sleeping until due in 60s | weft run r1
              ok: waiting_dependencies (-20000ms) waits on nap (waiting) | weft run r1
        "#]],
        );
        nap.due_at = Some(NOW - 6_000);
        check(
            &run(RunStatus::Running, vec![nap]),
            &[],
            expect![[r#"
            run r1 cause=overdue_timer stalled=true
              nap: overdue_timer (-6000ms) timer due 6.0s ago and not fired: is the engine sweeping? | weft status
        "#]],
        );
        let mut ap = step("ok", StepStatus::Waiting);
        ap.kind = StepKindView::Approval;
        ap.handler = None;
        check(
            &run(RunStatus::Running, vec![ap.clone()]),
            &[],
            expect![[r#"
            run r1 cause=waiting_approval stalled=false
              ok: waiting_approval (-20000ms) approval requested 20s ago | weft approve r1 ok
        "#]],
        );
        ap.updated_at = NOW - 200_000;
        let d = diagnose(&run(RunStatus::Running, vec![ap.clone()]), &[], &t(), NOW);
        assert_eq!((d.cause, d.stalled), (Some(Cause::WaitingApproval), true));
        // With a `timeout`, the approval is a timer: never stalled on a
        // person, overdue only when its timeout passed unfired.
        ap.due_at = Some(NOW + 60_000);
        check(
            &run(RunStatus::Running, vec![ap.clone()]),
            &[],
            expect![[r#"
                run r1 cause=waiting_timer stalled=false
                  ok: waiting_timer (-200000ms) approval requested 200s ago; its timeout decides in 60s | weft run r1
            "#]],
        );
        ap.due_at = Some(NOW - 6_000);
        let d = diagnose(&run(RunStatus::Running, vec![ap]), &[], &t(), NOW);
        assert_eq!((d.cause, d.stalled), (Some(Cause::OverdueTimer), true));
    }

    #[test]
    fn running_long_and_cancel_pending() {
        let mut s = step("slow", StepStatus::Running);
        s.lease = Some(LeaseView {
            worker_id: "w9".to_owned(),
            attempt: 1,
            claimed_at: NOW - 70_000,
            last_heartbeat_ms: NOW - 2_000,
        });
        check(
            &run(RunStatus::Running, vec![s.clone()]),
            &[],
            expect![[r#"
                run r1 cause=running_long stalled=true
                  slow: running_long (-70000ms) attempt 1 running on worker w9 for 70s, last heartbeat 2.0s ago; past the 60s threshold | weft logs r1 --step slow
            "#]],
        );
        s.lease.as_mut().unwrap().claimed_at = NOW - 5_000;
        assert_eq!(
            diagnose(&run(RunStatus::Running, vec![s.clone()]), &[], &t(), NOW).cause,
            Some(Cause::Running)
        );
        // Within the threshold but past the p99 of the step's history.
        let mut quick = s.clone();
        quick.p99_ms = Some(1_200);
        check(
            &run(RunStatus::Running, vec![quick.clone()]),
            &[],
            expect![[r#"
                run r1 cause=running_long stalled=true
                  slow: running_long (-5000ms) attempt 1 running on worker w9 for 5.0s, last heartbeat 2.0s ago; past the p99 of this step's recent attempts (1.2s) | weft logs r1 --step slow
            "#]],
        );
        quick.p99_ms = Some(6_000);
        assert_eq!(
            diagnose(&run(RunStatus::Running, vec![quick]), &[], &t(), NOW).cause,
            Some(Cause::Running)
        );
        check(
            &run(RunStatus::Cancelled, vec![s]),
            &[],
            expect![[r#"
            run r1 cause=cancel_pending stalled=true
              slow: cancel_pending (-5000ms) run cancelled; worker w9 still holds the lease of attempt 1 (the handler has not stopped) | weft workers --queue default
        "#]],
        );
    }

    #[test]
    fn p99_needs_enough_samples() {
        assert_eq!(p99_of(vec![5; P99_MIN_SAMPLES - 1]), None);
        let mut durations: Vec<u64> = (1..=200).collect();
        durations.reverse();
        assert_eq!(p99_of(durations), Some(198));
        assert_eq!(percentile(&[], 99), 0);
        assert_eq!(percentile(&[7], 99), 7);
        let thousand: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&thousand, 99), 990);
    }

    #[test]
    fn worker_facts_decide_ready_steps() {
        let mut busy = worker(&["h", "g"], Some(1), 1);
        busy.queues.push("other".to_owned());
        let mut gone = worker(&["x"], None, 0);
        gone.last_poll_ms = NOW - 60_000;
        let facts = WorkerFacts::of(&[busy.clone(), gone], &t(), NOW);
        let pairs = |list: &[(&str, &str)]| -> BTreeSet<(String, String)> {
            list.iter()
                .map(|(q, h)| ((*q).to_owned(), (*h).to_owned()))
                .collect()
        };
        assert_eq!(facts.queues, ["default", "other"].map(str::to_owned).into());
        let all = pairs(&[
            ("default", "h"),
            ("default", "g"),
            ("other", "h"),
            ("other", "g"),
        ]);
        assert_eq!((&facts.served, &facts.full), (&all, &all));
        // A free slot on one able worker is enough.
        let mut idle = worker(&["h"], Some(2), 1);
        idle.worker_id = "w2".to_owned();
        let facts = WorkerFacts::of(&[busy, idle], &t(), NOW);
        assert!(!facts.full.contains(&("default".to_owned(), "h".to_owned())));
        assert_eq!(
            facts.ready_cause("default", "h", 99_000, &t()),
            Cause::Queued
        );
        assert_eq!(
            facts.ready_cause("default", "g", 99_000, &t()),
            Cause::WorkerSaturated
        );
        assert_eq!(
            facts.ready_cause("default", "g", 1_000, &t()),
            Cause::Queued
        );
        assert_eq!(
            facts.ready_cause("default", "x", 0, &t()),
            Cause::NoWorkerForHandler
        );
        assert_eq!(
            facts.ready_cause("q", "h", 0, &t()),
            Cause::NoWorkerForQueue
        );
    }

    #[test]
    fn database_slow_from_the_p99_of_claims_or_commits() {
        let view = |operation, samples, p99_us| LatencyView {
            operation,
            samples,
            p99_us,
            max_us: p99_us + 5_000,
            window_ms: 60_000,
        };
        // Under the threshold, or nothing measured: no finding.
        assert!(system_findings(&[view("claim", 10, 250_000)], &t()).is_empty());
        assert!(system_findings(&[view("claim", 0, 900_000)], &t()).is_empty());
        let findings = system_findings(
            &[view("claim", 40, 812_300), view("commit", 12, 1_000)],
            &t(),
        );
        expect![[r#"
            [
                SystemFinding {
                    cause: DatabaseSlow,
                    evidence: "claim p99 812.3 ms (max 817.3 ms) over 40 in the last 60s; threshold 250 ms",
                    command: "weft status",
                },
            ]
        "#]]
        .assert_debug_eq(&findings);
    }

    #[test]
    fn worst_step_names_the_run_and_runs_sort_worst_first() {
        let mut a = step("a", StepStatus::Ready);
        a.ready_at = Some(NOW - 1_000);
        let mut b = step("b", StepStatus::Waiting);
        b.kind = StepKindView::Approval;
        b.handler = None;
        let r = run(RunStatus::Running, vec![b, a]);
        let d = diagnose(&r, &[], &t(), NOW);
        assert_eq!(
            (d.cause, d.since_ms),
            (Some(Cause::NoWorkerForQueue), Some(NOW - 1_000))
        );
        let mut waiting = d.clone();
        waiting.run_id = rid(0);
        waiting.cause = Some(Cause::WaitingApproval);
        waiting.stalled = false;
        let mut older = d.clone();
        older.run_id = rid(2);
        older.since_ms = Some(NOW - 9_000);
        let mut handler = d.clone();
        handler.run_id = rid(3);
        handler.cause = Some(Cause::NoWorkerForHandler);
        let mut all = vec![waiting, handler, d, older];
        worst_first(&mut all);
        let order: Vec<String> = all.iter().map(|r| short(r.run_id)).collect();
        assert_eq!(order, ["r2", "r1", "r3", "r0"]);
    }

    #[test]
    fn a_step_undone_child_by_child_is_judged_by_one_child_undo() {
        let child = |index, undo, ready_at, claimed_at| ChildUndoView {
            index,
            undo,
            ready_at,
            claimed_at,
        };
        let running = child(0, UndoStatus::Running, None, Some(NOW - 5_000));
        let older = child(3, UndoStatus::Running, None, Some(NOW - 9_000));
        let backing_off = child(1, UndoStatus::Ready, Some(NOW + 60_000), None);
        let sooner = child(4, UndoStatus::Ready, Some(NOW + 1_000), None);
        let due = child(2, UndoStatus::Ready, Some(NOW - 1_000), None);
        let settled = child(5, UndoStatus::Completed, None, None);
        // Waiting for a worker says the most, then running, then backing off.
        let all = [running, older, backing_off, sooner, due, settled];
        assert_eq!(child_undo(&all, NOW), Some((due, StepStatus::Ready)));
        let no_due = [running, older, backing_off, sooner, settled];
        assert_eq!(
            child_undo(&no_due, NOW),
            Some((older, StepStatus::Running)),
            "the longest running"
        );
        assert_eq!(
            child_undo(&[backing_off, sooner], NOW),
            Some((sooner, StepStatus::Retrying)),
            "the first due again"
        );
        assert_eq!(child_undo(&[settled], NOW), None);

        // The diagnosis names the child.
        let mut s = step("work", StepStatus::Retrying);
        s.child = Some(4);
        s.due_at = Some(NOW + 1_000);
        s.attempts = vec![failed(1, "handler_error", "no refund")];
        let run = RunView {
            run_id: rid(1),
            workflow: "w".into(),
            status: RunStatus::Compensating,
            steps: vec![s],
        };
        let d = diagnose(&run, &[], &t(), NOW);
        assert_eq!(d.cause, Some(Cause::Retrying));
        assert_eq!(
            d.steps[0].evidence,
            "undo of work[4] by compensate handler h: backing off: next attempt in 1.0s; last error handler_error: no refund"
        );
    }
}
