//! Wire types of the workers, queues and diagnosis views (`GET /v1/workers`,
//! `GET /v1/queues`, `GET /v1/runs/{id}/diagnosis`, `GET /v1/diagnostics`).
//! Times are RFC 3339 strings, ages in seconds.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One worker the store has heard from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub queues: Vec<String>,
    pub handlers: Vec<String>,
    /// Tasks at once, when the worker said.
    pub concurrency: Option<u32>,
    /// Live leases it holds.
    pub slots_in_use: u32,
    pub first_seen: String,
    pub last_poll: String,
    /// The latest heartbeat (or claim) among its live leases.
    pub last_heartbeat: Option<String>,
    /// Polled within the liveness window.
    pub live: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// One queue: its backlog and who serves it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueInfo {
    pub queue: String,
    pub ready: i64,
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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueInfo>,
}

/// Why one step is not moving.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepDiagnosisView {
    pub step: String,
    /// A stable cause code (`no_worker_for_queue`, `poison_input`, ...).
    pub cause: String,
    /// A stalled cause (or a wait past its threshold), as opposed to a healthy wait.
    pub stalled: bool,
    /// Since when the step has been in this situation.
    pub since: String,
    pub evidence: String,
    /// The command that resolves or inspects it.
    pub command: String,
}

/// Why one run is not moving: its worst step's cause, and each unfinished step.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDiagnosisView {
    pub run_id: String,
    pub workflow: String,
    pub status: String,
    /// The worst step's cause; `null` when no step is unfinished.
    pub cause: Option<String>,
    pub stalled: bool,
    /// The worst step's `since`: orders "worst first".
    pub stuck_since: Option<String>,
    pub steps: Vec<StepDiagnosisView>,
}

/// The runs of one cause.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CauseGroup {
    pub cause: String,
    pub stalled: bool,
    /// All runs under this cause (counted whatever `limit`, `offset` and
    /// the filters list).
    pub count: u64,
    /// The first of them, worst first, from `offset`.
    pub runs: Vec<RunDiagnosisView>,
}

/// Every run not moving, grouped by cause, worst first.
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
    pub evidence: String,
    /// The command that inspects it.
    pub command: String,
}
