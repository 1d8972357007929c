//! The vocabulary in which the store and engine report what happened, for
//! metrics (and later traces) to consume: observations after each committed
//! transition, and periodic gauge snapshots read from the database. Pure data
//! and a trait; the exporters live in weft-telemetry.

use std::time::Duration;

use crate::{AttemptStatus, Reason, RunStatus};

#[derive(Debug, Clone, PartialEq)]
pub enum Observation<'a> {
    RunStarted { workflow: &'a str },
    RunFinished { workflow: &'a str, status: RunStatus, duration_ms: i64, trace_id: &'a str },
    AttemptClaimed { queue: &'a str, queue_wait_ms: i64 },
    AttemptFinished {
        workflow: &'a str,
        step: &'a str,
        status: AttemptStatus,
        reason: Option<Reason>,
        total_ms: i64,
        handler_ms: Option<i64>,
        trace_id: &'a str,
    },
    StepRetrying { workflow: &'a str, step: &'a str },
    LeaseExpired { queue: &'a str },
    /// A store operation and how long it took.
    Operation { op: &'static str, elapsed: Duration },
}

/// A point-in-time view of the database, from which gauges are set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GaugeSnapshot {
    /// (workflow, status, runs) for runs not yet finished.
    pub runs_active: Vec<(String, String, i64)>,
    pub steps_ready: Vec<(String, i64)>,
    pub steps_running: Vec<(String, i64)>,
    pub oldest_ready_age_seconds: Vec<(String, f64)>,
    pub workers_active: Vec<(String, i64)>,
    /// (reason, runs) for runs that cannot progress.
    pub runs_stalled: Vec<(String, i64)>,
    pub pool_open: i64,
    pub pool_idle: i64,
}

pub trait Observer: Send + Sync + 'static {
    fn observe(&self, observation: &Observation<'_>);
    fn gauges(&self, snapshot: &GaugeSnapshot);
}

/// Observes nothing: the default until a process installs its metrics.
pub struct Nothing;

impl Observer for Nothing {
    fn observe(&self, _: &Observation<'_>) {}
    fn gauges(&self, _: &GaugeSnapshot) {}
}
