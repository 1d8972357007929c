//! The store's read models of runs: a run as listed and as acted on
//! (`RunInfo`, `RunPage`), a run with its steps and attempts (`RunView`,
//! `StepView`, `AttemptView`), its history (`HistoryEvent`) and its step
//! logs (`LogLine`). Times are epoch milliseconds and statuses the core's
//! enums; the server turns them into wire types (`weft_server::convert`).

use std::collections::BTreeMap;

use serde_json::Value;
use weft_core::{
    AttemptKind, AttemptStatus, RunId, RunStatus, SpanId, StepStatus, TraceId, UndoStatus,
    fan_out::Children,
};

use crate::StoredTiming;

/// A run without its steps: an item of [`RunPage`], and what an operator's
/// action (cancel, retry, approve, reject, skip a compensation) answers.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// The run's id (a UUIDv7).
    pub run_id: RunId,
    /// The run's trace id.
    pub trace_id: TraceId,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow version the run started with.
    pub version: i64,
    /// Where the run stands.
    pub status: RunStatus,
    /// Why it failed or was cancelled (a reason's `as_str`); `None` otherwise.
    pub reason: Option<String>,
    /// When it was started (epoch ms).
    pub created_at_ms: i64,
    /// When it left `pending` (epoch ms); `None` before.
    pub started_at_ms: Option<i64>,
    /// When it ended (epoch ms); `None` before.
    pub finished_at_ms: Option<i64>,
    /// The metadata it was started with (empty when none).
    pub metadata: BTreeMap<String, String>,
}

/// One page of runs, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    /// At most the filter's `limit` runs; a corrupt run is left out (and logged).
    pub runs: Vec<RunInfo>,
    /// The cursor of the next page; `None` on the last page.
    pub next_cursor: Option<RunId>,
}

/// A run with its steps and their attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    /// The run's id (a UUIDv7).
    pub run_id: RunId,
    /// The run's trace id.
    pub trace_id: TraceId,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow version the run started with.
    pub version: i64,
    /// Where the run stands.
    pub status: RunStatus,
    /// Why it failed or was cancelled; `None` otherwise.
    pub reason: Option<String>,
    /// The message of the failure that ended it; `None` otherwise.
    pub error: Option<String>,
    /// The input it was started with (`Value::Null` when none).
    pub input: Value,
    /// The outputs of its last steps once completed; `None` before.
    pub output: Option<Value>,
    /// When it was started (epoch ms).
    pub created_at_ms: i64,
    /// When it left `pending` (epoch ms); `None` before.
    pub started_at_ms: Option<i64>,
    /// When it ended (epoch ms); `None` before.
    pub finished_at_ms: Option<i64>,
    /// The `x-request-id` of the request that started it.
    pub request_id: Option<String>,
    /// The metadata it was started with (empty when none).
    pub metadata: BTreeMap<String, String>,
    /// Created → first attempt claimed (ms); `None` before a claim.
    pub schedule_to_start_ms: Option<i64>,
    /// Created → finished (ms); `None` until it ends.
    pub end_to_end_ms: Option<i64>,
    /// Its steps in manifest order.
    pub steps: Vec<StepView>,
}

/// One step of a run, as its definition declares it and as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct StepView {
    /// The step's name in the manifest.
    pub name: String,
    /// `task`, `sleep` or `approval` (`StepKind::as_str`).
    pub kind: &'static str,
    /// The handler a worker must serve; `None` for a sleep or an approval.
    pub handler: Option<String>,
    /// The queue its attempts are dispatched on.
    pub queue: String,
    /// The steps it waits for, by name.
    pub depends_on: Vec<String>,
    /// Where the step stands.
    pub status: StepStatus,
    /// The reason of its latest failure, or why it was cancelled; `None` otherwise.
    pub reason: Option<String>,
    /// Its output once completed (stored JSON, or the text when it is not JSON).
    pub output: Option<Value>,
    /// The message of its latest failure; `None` otherwise.
    pub error: Option<String>,
    /// When its backoff, sleep or approval timeout ends (epoch ms).
    pub due_at_ms: Option<i64>,
    /// Its `compensate` handler, if it has one.
    pub compensate: Option<String>,
    /// Where its compensation stands; `None` when it is not being undone.
    pub undo: Option<UndoStatus>,
    /// Its attempts by attempt number.
    pub attempts: Vec<AttemptView>,
    /// A `for_each` step's children counts once its list is expanded.
    pub children: Option<Children>,
}

/// One attempt of a step: one claim by a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptView {
    /// The attempt's number, from 1.
    pub attempt: i64,
    /// For a `for_each` child's attempt: the child's index in the list.
    pub index: Option<i64>,
    /// Where the attempt stands.
    pub status: AttemptStatus,
    /// Why it did not complete; `None` otherwise.
    pub reason: Option<String>,
    /// The worker that claimed it.
    pub worker_id: String,
    /// The attempt's span id.
    pub span_id: SpanId,
    /// When it was claimed (epoch ms).
    pub claimed_at_ms: i64,
    /// When it ended (epoch ms); `None` while running.
    pub finished_at_ms: Option<i64>,
    /// The error message when it failed.
    pub error: Option<String>,
    /// Where its time went; `None` while running, for an attempt cancelled
    /// with its run, and for a stored timing that does not decode.
    pub timing: Option<StoredTiming>,
    /// The step's handler (`forward`) or its `compensate` handler.
    pub kind: AttemptKind,
    /// For a compensation: the number of the forward attempt it undoes.
    pub undoes_attempt: Option<i64>,
}

/// One event of a run's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEvent {
    /// Its place in the history, increasing across all runs.
    pub seq: i64,
    /// The kind as stored (`EventKind::as_str`, e.g. `run.created`).
    pub kind: String,
    /// When it was written (epoch ms).
    pub at_ms: i64,
    /// The step it concerns; `None` for a run's own events.
    pub step: Option<String>,
    /// The attempt it concerns; `None` for run and step events.
    pub attempt: Option<i64>,
    /// Its payload (a JSON object; the text itself when it is not JSON).
    pub data: Value,
}

/// One log line of an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Order of arrival, increasing across all runs.
    pub seq: i64,
    /// When the server received it (epoch ms).
    pub at_ms: i64,
    /// The step whose attempt logged it.
    pub step: String,
    /// The attempt's number.
    pub attempt: i64,
    /// The line as sent (cut by the server).
    pub line: String,
}
