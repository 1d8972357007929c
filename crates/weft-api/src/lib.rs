//! The wire types of Weft's HTTP API, shared by the server, the client and the
//! worker SDK. Field names here are the API contract (SPEC §3): add fields,
//! never rename them. Timestamps are RFC 3339 UTC strings.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

mod diagnostics;
pub use diagnostics::*;
mod people;
pub use people::*;

/// Every error response: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable, e.g. `workflow_not_found`, `cycle`, `stale_lease`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowSummary {
    pub name: String,
    pub version: i64,
    pub description: Option<String>,
    pub steps: usize,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDetail {
    pub name: String,
    pub version: i64,
    pub description: Option<String>,
    pub created_at: String,
    /// The manifest of this version, as JSON.
    pub manifest: Value,
    /// Every version registered, oldest first.
    pub versions: Vec<i64>,
}

/// The answer to `PUT /v1/workflows/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PutWorkflowResponse {
    pub name: String,
    pub version: i64,
    /// False when the manifest equals the latest version: nothing was written.
    pub created: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct StartRunRequest {
    #[serde(default)]
    pub input: Value,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Several runs of one workflow, started in one transaction.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct StartRunsRequest {
    pub runs: Vec<StartRunRequest>,
}

/// The started runs, in request order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StartRunsResponse {
    pub runs: Vec<StartRunResponse>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StartRunResponse {
    pub run_id: String,
    pub trace_id: String,
    /// False when an idempotency key matched an existing run, which is returned.
    pub created: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RunTiming {
    /// Created → first step claimed.
    pub schedule_to_start_ms: Option<i64>,
    /// Created → finished.
    pub end_to_end_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub run_id: String,
    pub trace_id: String,
    pub workflow: String,
    pub version: i64,
    pub status: String,
    pub reason: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    pub run_id: String,
    pub trace_id: String,
    pub workflow: String,
    pub version: i64,
    pub status: String,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub input: Value,
    pub output: Option<Value>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub request_id: Option<String>,
    /// A link to the run's trace in the trace backend, when the server has a
    /// trace URL template (`WEFT_TRACE_URL_TEMPLATE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    pub timing: RunTiming,
    /// In manifest order.
    pub steps: Vec<StepDetail>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepDetail {
    pub name: String,
    pub kind: String,
    pub handler: Option<String>,
    pub queue: String,
    pub depends_on: Vec<String>,
    pub status: String,
    pub reason: Option<String>,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// When a retrying step's backoff or a sleep ends.
    pub due_at: Option<String>,
    pub attempts: Vec<AttemptDetail>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptDetail {
    pub attempt: i64,
    pub status: String,
    pub reason: Option<String>,
    pub worker_id: String,
    pub span_id: String,
    pub claimed_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub timing: Option<AttemptTiming>,
}

/// Where an attempt's time went (SPEC §4, timing buckets).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptTiming {
    /// Ready → claimed.
    pub queue_wait_ms: i64,
    /// Claimed → handler start, reported by the worker.
    pub dispatch_ms: Option<i64>,
    /// Handler run time, reported by the worker.
    pub handler_ms: Option<i64>,
    /// Result received → committed.
    pub ingest_ms: i64,
    /// Claimed → committed.
    pub total_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventRecord {
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: String,
    pub step: Option<String>,
    pub attempt: Option<i64>,
    pub data: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogList {
    pub lines: Vec<LogRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogRecord {
    pub seq: i64,
    pub at: String,
    pub step: String,
    pub attempt: i64,
    pub line: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DecisionRequest {
    /// Why: recorded as `comment` in the history event of the decision, and
    /// a rejection's reason (default `rejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The former name of `comment`, still accepted (`comment` wins when
    /// both are sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(deprecated)]
    pub message: Option<String>,
}

impl DecisionRequest {
    /// The decision's comment: `comment`, else `message`.
    pub fn into_comment(self) -> Option<String> {
        self.comment.or(self.message)
    }
}

// ---- worker protocol ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PollRequest {
    pub worker_id: String,
    #[serde(default = "default_queues")]
    pub queues: Vec<String>,
    pub handlers: Vec<String>,
    #[serde(default = "default_max_tasks")]
    pub max_tasks: u32,
    /// How long the server may hold the request when there is no work.
    #[serde(default)]
    pub wait_ms: u64,
    /// The worker's host name, shown by `weft workers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The worker's process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The worker's build version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Tasks the worker runs at once (its slots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

fn default_queues() -> Vec<String> {
    vec!["default".to_owned()]
}

fn default_max_tasks() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PollResponse {
    pub tasks: Vec<Task>,
}

/// One claimed step attempt, handed to a worker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub lease_id: String,
    pub run_id: String,
    pub trace_id: String,
    pub workflow: String,
    pub step: String,
    pub attempt: i64,
    pub handler: String,
    /// `{"input": <run input>, "steps": {<dependency>: <output>}}`.
    pub input: Value,
    /// W3C traceparent of the attempt's span: the worker's span is its child.
    pub traceparent: String,
    /// Start-to-close deadline (RFC 3339), if the step has a timeout.
    pub deadline: Option<String>,
    /// Milliseconds from claim to the deadline, for clocks that disagree.
    pub timeout_ms: Option<i64>,
    /// The lease lapses unless renewed within this many milliseconds.
    pub lease_ms: i64,
    /// The W3C `baggage` header the run was started with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baggage: Option<String>,
    /// Largest serialized output (bytes of JSON) the server accepts for this
    /// attempt. A worker whose handler returns more fails the attempt at
    /// once, not retried, with kind `invalid_output` and a message naming the
    /// size and the limit. `0` (from servers that predate it) means unknown.
    #[serde(default)]
    pub max_output_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// The run was cancelled or failed, or the attempt timed out: stop work.
    pub cancel_requested: bool,
}

/// Worker-measured parts of an attempt's time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct WorkerTiming {
    pub dispatch_ms: Option<i64>,
    pub handler_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompleteRequest {
    #[serde(default)]
    pub output: Value,
    #[serde(default)]
    pub timing: Option<WorkerTiming>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FailRequest {
    pub error: TaskError,
    #[serde(default)]
    pub timing: Option<WorkerTiming>,
}

/// Several attempts' results in one request, written in one transaction.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultsRequest {
    pub results: Vec<TaskResult>,
}

/// One attempt's result: `error` set means it failed, else it completed
/// with `output`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskResult {
    pub lease_id: String,
    #[serde(default)]
    pub output: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    #[serde(default)]
    pub timing: Option<WorkerTiming>,
}

/// The answer to each result of a batch, in request order: `status` is the
/// HTTP status the single `complete`/`fail` call would have answered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultsResponse {
    pub results: Vec<ResultAnswer>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultAnswer {
    pub lease_id: String,
    pub status: u16,
    /// True when this lease's same outcome had already been applied (the
    /// answer to an earlier send was lost): nothing changed, nothing to retry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub already_applied: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The failure kinds a worker may report in [`TaskError::kind`]; any other
/// is refused with 400 `invalid_error_kind`.
pub const WORKER_FAILURE_KINDS: &[&str] = &[
    "handler_error",
    "timeout",
    "invalid_output",
    "cancelled",
    "no_handler",
];

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskError {
    pub message: String,
    /// A failure reason the worker may report: `handler_error` (default),
    /// `timeout`, `invalid_output`, `no_handler` (the command could not be
    /// started) or `cancelled`.
    #[serde(default)]
    pub kind: Option<String>,
    /// False marks the error as permanent: no further attempt is made.
    #[serde(default)]
    pub retryable: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogsRequest {
    pub lines: Vec<String>,
}

/// `POST /v1/worker/leases/{lease_id}/release`: the worker gives a claimed
/// attempt back without a result (it is shutting down). The attempt ends
/// `released` with reason `worker_shutdown` and the step is ready again at
/// once; a release does not count against `max_attempts` (at most 3 releases
/// per step, after which a release counts as a failed attempt).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ReleaseRequest {
    /// Why, for the history event and logs; free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Ack {
    pub ok: bool,
    /// True when a result was sent again for a lease whose same outcome was
    /// already applied (the first answer was lost): nothing changed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub already_applied: bool,
}
