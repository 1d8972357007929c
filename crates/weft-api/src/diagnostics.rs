//! Wire types of the workers, queues and diagnosis views (`GET /v1/workers`,
//! `GET /v1/queues`, `GET /v1/runs/{id}/diagnosis`, `GET /v1/diagnostics`).
//! Times are RFC 3339 strings, ages in seconds.
//! A worker is live while it polled within the liveness window (45 s by
//! default, `--worker-live-window`); causes and thresholds are those of
//! `weft_core::diagnosis`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One worker the store has heard from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    /// The `worker_id` of its polls.
    pub worker_id: String,
    /// The host name it reported (`PollRequest.host`), if any.
    pub host: Option<String>,
    /// The process id it reported, if any.
    pub pid: Option<u32>,
    /// The build version it reported, if any.
    pub version: Option<String>,
    /// The queues of its latest recorded poll.
    pub queues: Vec<String>,
    /// The handlers of its latest recorded poll.
    pub handlers: Vec<String>,
    /// Tasks at once, when the worker said.
    pub concurrency: Option<u32>,
    /// Live leases it holds.
    pub slots_in_use: u32,
    /// Its first recorded poll (RFC 3339 UTC).
    pub first_seen: String,
    /// Its latest recorded poll (RFC 3339 UTC). Polls are recorded at most
    /// every 5 s per worker, so this may lag by that much.
    pub last_poll: String,
    /// The latest heartbeat (or claim) among its live leases.
    pub last_heartbeat: Option<String>,
    /// Polled within the liveness window.
    pub live: bool,
}

/// The answer to `GET /v1/workers` (`?queue=` for one queue's pollers,
/// `?all=true` for workers past the liveness window too, kept for
/// `--worker-retention`, 24 h by default).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    /// By worker id.
    pub workers: Vec<WorkerInfo>,
}

/// One queue: its backlog and who serves it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueInfo {
    /// The queue's name.
    pub queue: String,
    /// Steps `ready` on it (queued, waiting for a worker).
    pub ready: i64,
    /// Steps `running` on it (claimed).
    pub running: i64,
    /// Seconds the oldest ready step has waited (0 when none).
    pub oldest_ready_age_seconds: f64,
    /// Live workers polling it.
    pub pollers: u32,
    /// Handlers its live workers serve, sorted.
    pub handlers: Vec<String>,
    /// Attempts completed in the last 60 seconds.
    #[serde(default)]
    pub throughput_last_minute: i64,
}

/// The answer to `GET /v1/queues` (`?queue=` for one): every queue with
/// ready or running steps or a live poller.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    /// By queue name.
    pub queues: Vec<QueueInfo>,
}

/// Why one step is not moving.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepDiagnosisView {
    /// The step's name.
    pub step: String,
    /// A stable cause code (`no_worker_for_queue`, `poison_input`, ...).
    pub cause: String,
    /// A stalled cause (or a wait past its threshold), as opposed to a healthy wait.
    pub stalled: bool,
    /// Since when the step has been in this situation.
    /// RFC 3339 UTC.
    pub since: String,
    /// What was seen, for people (e.g. the last error, the queue's pollers).
    pub evidence: String,
    /// The command that resolves or inspects it.
    pub command: String,
}

/// Why one run is not moving: its worst step's cause, and each unfinished step.
/// The answer to `GET /v1/runs/{id}/diagnosis` (404 `run_not_found`), and a
/// run of a [`CauseGroup`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDiagnosisView {
    /// The run's id.
    pub run_id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The run's status (`pending`, `running`, ...).
    pub status: String,
    /// The worst step's cause; `null` when no step is unfinished.
    pub cause: Option<String>,
    /// Its worst cause is a stalled one (as opposed to a healthy wait).
    pub stalled: bool,
    /// The worst step's `since`: orders "worst first".
    /// RFC 3339 UTC; `null` when no step is unfinished.
    pub stuck_since: Option<String>,
    /// Each unfinished step's diagnosis.
    pub steps: Vec<StepDiagnosisView>,
}

/// The runs of one cause.
/// Runs are grouped by worst cause and by `stalled`, so one cause may head
/// two groups (an approval waiting past its threshold is stalled).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CauseGroup {
    /// The cause's stable code.
    pub cause: String,
    /// Whether this group's runs are stalled.
    pub stalled: bool,
    /// All runs under this cause (counted whatever `limit`, `offset` and
    /// the filters list).
    pub count: u64,
    /// The first of them, worst first, from `offset`.
    /// At most `limit` (default 20, at most 500).
    pub runs: Vec<RunDiagnosisView>,
}

/// Every run not moving, grouped by cause, worst first.
/// The answer to `GET /v1/diagnostics` (`?cause=`, `?stalled=true`,
/// `limit`, `offset`). Errors: 400 `invalid_cause`, `invalid_limit`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Diagnostics {
    /// Runs whose worst cause is a stalled one.
    pub stalled: u64,
    /// Runs examined: every run with an unfinished step, and cancelled runs
    /// with a live lease.
    pub examined: u64,
    /// Always false: every run is counted (kept for clients of servers that
    /// stopped at 10,000 runs).
    pub truncated: bool,
    /// The groups, worst first, after the `cause` and `stalled` filters.
    pub causes: Vec<CauseGroup>,
    /// Findings about the whole system rather than one run
    /// (`database_slow`), as the answering server measured them.
    #[serde(default)]
    pub findings: Vec<SystemFindingView>,
}

/// A finding about the whole system (`database_slow`: claim or commit
/// latency above its threshold).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SystemFindingView {
    /// A stable cause code (`database_slow`).
    pub cause: String,
    /// What was measured, in words: the operation class, its p99 over the
    /// last minute (ms) and the threshold it is above.
    pub evidence: String,
    /// The command that inspects it.
    pub command: String,
}
