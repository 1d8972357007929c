//! The vocabulary in which the store and engine report what happened, for
//! metrics and traces to consume: observations after each committed
//! transition, and periodic gauge snapshots read from the database. Pure data
//! and a trait; the exporters live in weft-telemetry.
//!
//! Invariant: an observation carries everything a consumer needs, read from
//! the rows just committed (ids, timestamps, outcome), so that a trace span
//! can be built from it alone, whichever process or restart emits it.

use std::{sync::Arc, time::Duration};

use crate::{AttemptStatus, Reason, RunId, RunStatus, SpanId, TraceId};

#[derive(Debug, Clone, PartialEq)]
pub enum Observation<'a> {
    RunStarted {
        workflow: &'a str,
    },
    /// A run reached a final status (again, after `weft retry`).
    RunFinished(RunRecord<'a>),
    /// A terminal run was retried (`weft retry`): it is active again and
    /// will finish once more. Started + retried − finished = active.
    RunRetried {
        workflow: &'a str,
    },
    AttemptClaimed {
        queue: &'a str,
        queue_wait_ms: i64,
    },
    /// An attempt ended: its result was committed, it was reaped, or its run
    /// ended while it was out (`cancelled`).
    AttemptFinished(AttemptRecord<'a>),
    StepRetrying {
        workflow: &'a str,
        step: &'a str,
    },
    LeaseExpired {
        queue: &'a str,
    },
    /// A step's `when` was decided, in a committed transition: the
    /// condition's span is emitted whole.
    ConditionDecided(ConditionRecord<'a>),
    /// A store operation and how long it took.
    Operation {
        op: &'static str,
        elapsed: Duration,
    },
}

/// A `when` decided: everything its span (`condition.<step>`, a child of
/// the run span) needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionRecord<'a> {
    pub run_id: RunId,
    /// The run's trace id .
    pub trace_id: TraceId,
    /// The run span's id: the condition span's parent.
    pub run_span_id: SpanId,
    /// The caller's span the run joined, if any: the run's sampling follows it.
    pub run_parent_span_id: Option<SpanId>,
    pub workflow: &'a str,
    pub version: i64,
    pub step: &'a str,
    /// Epoch ms of the transition that evaluated it: the span's end.
    pub decided_at_ms: i64,
    /// How long the evaluation took, ms: the span's length.
    pub condition_ms: u64,
    /// `true` (the step runs), `false` (skipped) or `error`
    /// (`condition_error`).
    pub result: &'static str,
}

/// A finished run as its row stands: everything the run's span needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord<'a> {
    pub run_id: RunId,
    /// The run's trace id , also its OpenTelemetry trace id.
    pub trace_id: TraceId,
    /// The run span's id, stored when the run was created.
    pub span_id: SpanId,
    /// The caller's span, when the start request carried a `traceparent`.
    pub parent_span_id: Option<SpanId>,
    pub workflow: &'a str,
    pub version: i64,
    /// Epoch milliseconds.
    pub created_at_ms: i64,
    pub finished_at_ms: i64,
    pub status: RunStatus,
    pub reason: Option<Reason>,
    pub error: Option<&'a str>,
}

impl RunRecord<'_> {
    pub fn duration_ms(&self) -> i64 {
        (self.finished_at_ms - self.created_at_ms).max(0)
    }
}

/// An attempt's timing buckets (SPEC §4), in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    pub queue_wait_ms: i64,
    pub dispatch_ms: Option<i64>,
    pub handler_ms: Option<i64>,
    pub ingest_ms: i64,
    pub total_ms: i64,
}

/// An ended attempt as its row stands: everything the attempt's span needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord<'a> {
    pub run_id: RunId,
    pub trace_id: TraceId,
    /// The run span's id: the attempt span's parent.
    pub run_span_id: SpanId,
    /// The caller's span the run joined, if any: the run's sampling follows it.
    pub run_parent_span_id: Option<SpanId>,
    /// The attempt span's id, handed to the worker in `traceparent`.
    pub span_id: SpanId,
    /// The previous attempt of the same step, for a link from a retry.
    pub previous_span_id: Option<SpanId>,
    pub workflow: &'a str,
    pub version: i64,
    pub step: &'a str,
    pub attempt: i64,
    /// A `for_each` child's index (`step[index]`); `None` for a step's own
    /// attempt. Never a metric label: metrics keep the step name.
    pub index: Option<i64>,
    pub queue: &'a str,
    pub worker_id: &'a str,
    /// Epoch milliseconds: claimed, and result committed.
    pub claimed_at_ms: i64,
    pub finished_at_ms: i64,
    pub status: AttemptStatus,
    pub reason: Option<Reason>,
    pub error: Option<&'a str>,
    pub timing: Timing,
    /// `compensate` for an attempt of the step's `compensate` handler (its
    /// span is `compensate.<step>`, linked through `previous_span_id` to the
    /// forward attempt it undoes; counted by `weft_compensations_total`).
    pub kind: crate::AttemptKind,
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

/// Hands every observation to several observers in turn (metrics, traces).
pub struct Fanout(pub Vec<Arc<dyn Observer>>);

impl Observer for Fanout {
    fn observe(&self, observation: &Observation<'_>) {
        for observer in &self.0 {
            observer.observe(observation);
        }
    }

    fn gauges(&self, snapshot: &GaugeSnapshot) {
        for observer in &self.0 {
            observer.gauges(snapshot);
        }
    }
}
