//! The wire types of Weft's HTTP API, shared by the server, the client and the
//! worker SDK. Field names here are the API contract (SPEC §3): add fields,
//! never rename them. Timestamps are RFC 3339 UTC strings with millisecond
//! precision (`2026-01-31T12:00:00.123Z`); durations are integers of
//! milliseconds (`*_ms`). Ids: `run_id` a UUIDv7, `trace_id` 32 lowercase hex
//! digits (the W3C / OpenTelemetry trace id), `lease_id` a UUID.
//!
//! The bounds the server enforces on request fields (`weft-server`'s
//! `limits.rs`) are stated on each field here and, as JSON Schema keywords,
//! in `/openapi.json`; a request outside them is answered 400 with the code
//! the field names. Doc comments here are the OpenAPI `description`s.

#![deny(missing_docs)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

mod diagnostics;
mod tokens;
pub use diagnostics::*;
pub use tokens::*;
mod people;
pub use people::*;
mod bulk;
pub use bulk::*;

/// Every error response of the API: `{"error": {"code", "message"}}` (SPEC
/// §3), with the 4xx or 5xx status the code belongs to. The statuses and
/// codes each operation answers are listed in `/openapi.json`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error's stable code and message.
    pub error: ErrorDetail,
}

/// One error: a stable code and a message for people. Also the refusal of
/// one item of a `POST /v1/worker/results` batch ([`ResultAnswer::error`]).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable, e.g. `workflow_not_found`, `cycle`, `stale_lease`.
    /// Match on this, never on `message`.
    pub code: String,
    /// What went wrong, for people: names the field, bound or resource
    /// involved. Its wording may change between versions.
    pub message: String,
}

/// One registered workflow at its latest version: an item of
/// `GET /v1/workflows`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowSummary {
    /// The workflow's name: 1 to 128 letters, digits, `.`, `_`, `-` or `/`.
    pub name: String,
    /// Its latest version; versions count from 1.
    pub version: i64,
    /// The manifest's `description` (at most 4096 characters), if any.
    pub description: Option<String>,
    /// How many steps that version has.
    pub steps: usize,
    /// When that version was registered (RFC 3339 UTC).
    pub created_at: String,
}

/// The answer to `GET /v1/workflows`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowList {
    /// Every registered workflow, at its latest version, by name.
    pub workflows: Vec<WorkflowSummary>,
}

/// The answer to `GET /v1/workflows/{name}`: one version of a workflow, the
/// latest unless `?version=N` asks for another. Errors: 404
/// `workflow_not_found` when the name or the version is unknown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDetail {
    /// The workflow's name.
    pub name: String,
    /// The version shown.
    pub version: i64,
    /// The manifest's `description`, if any.
    pub description: Option<String>,
    /// When this version was registered (RFC 3339 UTC).
    pub created_at: String,
    /// The manifest of this version, as JSON. It is the stored canonical
    /// form (keys sorted), whether it was registered as YAML or JSON.
    pub manifest: Value,
    /// Every version registered, oldest first.
    pub versions: Vec<i64>,
}

/// The answer to `PUT /v1/workflows/{name}`: 201 when a new version was
/// stored, 200 when the manifest was unchanged. Errors: 400 with the code and
/// path of the manifest's first error (`invalid_manifest`, `cycle`,
/// `name_mismatch`, ...), 409 `concurrent_update` when the same workflow was
/// registered at the same moment (send it again).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PutWorkflowResponse {
    /// The workflow's name.
    pub name: String,
    /// The latest version now: the new one, or the unchanged latest.
    pub version: i64,
    /// False when the manifest equals the latest version: nothing was written.
    pub created: bool,
}

/// The body of `POST /v1/workflows/{name}/runs`, and one run of a batch
/// start. An empty body reads as `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct StartRunRequest {
    /// The run's input, any JSON value (`null` when absent): each task step
    /// receives it as `input`. Bounded only by the body limit
    /// (`--max-body-bytes`, 4 MiB by default; 413 `payload_too_large`).
    #[serde(default)]
    pub input: Value,
    /// At most one run per key and workflow: a start whose key already
    /// started a run answers that run (`created: false`) when the input is
    /// equal (as canonical JSON, key order ignored), and 409
    /// `idempotency_key_reused` when it differs. Keys do not expire. 1 to 256
    /// characters without control characters (400 `invalid_idempotency_key`).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// String keys and values to find the run by (`GET /v1/runs?meta.k=v`,
    /// `weft runs --meta k=v`), like Temporal's search attributes: at most
    /// 16 keys, each 1 to 64 letters, digits, `_`, `.` or `-` (not starting
    /// with `.` or `-`), each value at most 256 characters without control
    /// characters (400 `invalid_metadata`). Stored with the run and never
    /// changed; values under sensitive keys (`api_token`, ...) are redacted
    /// like the input. Not part of an idempotency key's comparison.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Several runs of one workflow, started in one transaction.
/// The body of `POST /v1/workflows/{name}/runs/batch`: all runs start or
/// none does (the first refusal is the answer).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct StartRunsRequest {
    /// The runs to start: 1 to 500 (400 `invalid_batch`).
    pub runs: Vec<StartRunRequest>,
}

/// The started runs, in request order.
/// The answer (202) to `POST /v1/workflows/{name}/runs/batch`. Errors: 404
/// `workflow_not_found`, 409 `idempotency_key_reused` (nothing was started).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StartRunsResponse {
    /// One answer per requested run, in request order.
    pub runs: Vec<StartRunResponse>,
}

/// The answer (202) to `POST /v1/workflows/{name}/runs`, and one item of a
/// batch start's answer. Errors: 404 `workflow_not_found`, 409
/// `idempotency_key_reused`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StartRunResponse {
    /// The run's id: a UUIDv7 (time-ordered), lowercase and hyphenated.
    pub run_id: String,
    /// The run's trace id, 32 lowercase hex digits: the W3C / OpenTelemetry
    /// trace the run's spans belong to (the caller's, when the request
    /// carried a `traceparent`). Accepted wherever a run id is.
    pub trace_id: String,
    /// False when an idempotency key matched an existing run, which is returned.
    pub created: bool,
}

/// Where a run's time went (SPEC §4, timing buckets), in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RunTiming {
    /// Created → first step claimed; `null` until an attempt is claimed.
    pub schedule_to_start_ms: Option<i64>,
    /// Created → finished; `null` until the run ends.
    pub end_to_end_ms: Option<i64>,
}

/// One run without its steps: an item of `GET /v1/runs`, and the answer to
/// `POST /v1/runs/{id}/cancel`, `.../retry` and
/// `.../steps/{step}/approve|reject` (the run after the action). Errors of
/// those actions: 404 `run_not_found` (`step_not_found`), 409
/// `invalid_state` when the run or step is not in a state the action
/// applies to (cancel: a pending or running run; retry: a failed or
/// cancelled one; approve, reject: an approval step that is `waiting`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    /// The run's id (a UUIDv7).
    pub run_id: String,
    /// The run's trace id (32 lowercase hex digits).
    pub trace_id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow version the run started with; it keeps it when the
    /// workflow changes.
    pub version: i64,
    /// The run's status: `pending` (no step started yet), `running`,
    /// `completed`, `failed` or `cancelled`; `compensating` (a failed run
    /// undoing its completed steps) and `compensated` (all undone; the run
    /// keeps its failure reason) for sagas (SPEC §1, States).
    pub status: String,
    /// Why the run failed (the failing step's reason, e.g. `handler_error`,
    /// `timeout`, `rejected`) or `cancelled`; `null` otherwise. One of the
    /// closed set of failure reasons (SPEC §1, States).
    pub reason: Option<String>,
    /// When the run was started (RFC 3339 UTC).
    pub created_at: String,
    /// When the run left `pending` (usually its first claim); `null` before.
    pub started_at: Option<String>,
    /// When the run reached `completed`, `failed` or `cancelled`; `null`
    /// before.
    pub finished_at: Option<String>,
    /// The metadata the run was started with (absent when none); values
    /// under sensitive keys read `"[redacted]"` for callers shown redacted
    /// data.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The answer to `GET /v1/runs` (filters `workflow`, `status`, `trace_id`,
/// `since`, `until` and `meta.<key>=<value>`, all ANDed): one page of runs,
/// newest first. Errors: 400 `invalid_status`, `invalid_since`,
/// `invalid_until`, `invalid_metadata`, `invalid_limit`, `invalid_cursor`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    /// At most `limit` runs (default 50, at most 1000), newest first (by run
    /// id). A run whose stored row does not decode is left out (and logged).
    pub runs: Vec<RunSummary>,
    /// The `cursor` that asks for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The answer to `GET /v1/runs/{id}` (`id` a run id, or a trace id for
/// the newest run of that trace): the run with its steps and attempts (SPEC
/// §3). With `?wait_ms=N` (at most 60000) the answer comes once the run has
/// ended or N milliseconds have passed. With `--redact-api`, values under
/// sensitive keys in the input and outputs read `"[redacted]"`. Errors: 404
/// `run_not_found`, 400 `invalid_wait`, 500 `corrupt_row` (a stored row of
/// the run does not decode).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    /// The run's id (a UUIDv7).
    pub run_id: String,
    /// The run's trace id (32 lowercase hex digits).
    pub trace_id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow version the run started with.
    pub version: i64,
    /// The run's status: `pending` (no step started yet), `running`,
    /// `completed`, `failed` or `cancelled`; `compensating` (a failed run
    /// undoing its completed steps) and `compensated` (all undone; the run
    /// keeps its failure reason) for sagas (SPEC §1, States).
    pub status: String,
    /// Why the run failed (the failing step's reason, e.g. `handler_error`,
    /// `timeout`, `rejected`) or `cancelled`; `null` otherwise. One of the
    /// closed set of failure reasons (SPEC §1, States).
    pub reason: Option<String>,
    /// The message of the failure that ended the run (the failing step's
    /// error, or an approval's rejection message); `null` otherwise.
    pub error: Option<String>,
    /// The input the run was started with (`null` when none). Redacted with
    /// `--redact-api`.
    pub input: Value,
    /// Once `completed`: an object of the outputs of the workflow's last
    /// steps (those no other step depends on), by step name; `null` before.
    /// Redacted with `--redact-api`.
    pub output: Option<Value>,
    /// When the run was started (RFC 3339 UTC).
    pub created_at: String,
    /// When the run left `pending` (usually its first claim); `null` before.
    pub started_at: Option<String>,
    /// When the run reached `completed`, `failed` or `cancelled`; `null`
    /// before.
    pub finished_at: Option<String>,
    /// The `x-request-id` of the request that started the run.
    pub request_id: Option<String>,
    /// The metadata the run was started with (absent when none); values
    /// under sensitive keys read `"[redacted]"` for callers shown redacted
    /// data.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// A link to the run's trace in the trace backend, when the server has a
    /// trace URL template (`WEFT_TRACE_URL_TEMPLATE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    /// Where the run's time went.
    pub timing: RunTiming,
    /// In manifest order.
    pub steps: Vec<StepDetail>,
}

/// One step of a run ([`RunDetail::steps`]), as its manifest declares it and
/// as it stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepDetail {
    /// The step's name in the manifest.
    pub name: String,
    /// `task`, `sleep` or `approval`.
    pub kind: String,
    /// The handler a worker must serve to run it; `null` for a sleep or an
    /// approval.
    pub handler: Option<String>,
    /// The queue its attempts are dispatched on.
    pub queue: String,
    /// The steps it waits for, by name.
    pub depends_on: Vec<String>,
    /// `pending` (dependencies not met), `ready` (queued), `running`
    /// (claimed), `retrying` (backoff), `waiting` (sleep or approval),
    /// `completed`, `failed`, `skipped` (its `when` was false, or its
    /// `run_if: any_failed` found no failure) or `cancelled`
    /// (SPEC §1, States); while its run compensates, `compensating` (its undo
    /// is dispatched), then `compensated`, or `failed` with reason
    /// `compensation_failed`.
    pub status: String,
    /// The reason of its latest failure (kept while `retrying`),
    /// `upstream_failed` when another step's failure cancelled it, or
    /// `cancelled`; `null` otherwise.
    pub reason: Option<String>,
    /// Once `completed`: the handler's output, `{"approved": true}` for an
    /// approval (`{"approved": true, "by": "timeout"}` when its timeout
    /// approved it), `null` for a sleep; `null` before. Redacted with
    /// `--redact-api`.
    pub output: Option<Value>,
    /// The message of its latest failure (kept while `retrying`), or an
    /// approval's rejection message; `null` otherwise.
    pub error: Option<String>,
    /// When a retrying step's backoff or a sleep ends, or when a waiting
    /// approval with a `timeout` is decided by it (`on_timeout`).
    /// RFC 3339 UTC; `null` otherwise.
    pub due_at: Option<String>,
    /// The step's `compensate` handler, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<String>,
    /// Where the step's compensation stands once its run compensates:
    /// `pending` (its dependants' undos first), `ready`, `running`,
    /// `retrying`, `completed`, `failed`, `skipped` or `cancelled` (the run
    /// was cancelled first); absent when the step is not being undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
    /// Its attempts, by attempt number.
    pub attempts: Vec<AttemptDetail>,
    /// A `for_each` step's children (one per item, shown as `step[i]`),
    /// once its list is expanded; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<ChildCounts>,
}

/// How a `for_each` step's children stand ([`StepDetail::children`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChildCounts {
    /// Children in all: the items of its list.
    pub total: i64,
    /// Not yet started: waiting for a slot (`max_parallel`).
    pub pending: i64,
    /// Ready, running or waiting out a retry's backoff.
    pub in_flight: i64,
    /// Completed.
    pub completed: i64,
    /// Failed for good (the first one fails the step).
    pub failed: i64,
}

/// One attempt of a step: one claim by a worker (SPEC §1).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptDetail {
    /// The attempt's number, from 1. A `for_each` step numbers its
    /// children's attempts in one sequence.
    pub attempt: i64,
    /// For an attempt of a `for_each` child: the child's index in the list
    /// (`step[index]`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<i64>,
    /// `running`, `completed`, `failed`, `cancelled` (its run ended while it
    /// was out) or `released` (handed back by a worker shutting down).
    pub status: String,
    /// Why it did not complete: the worker's reported kind (`handler_error`,
    /// ...), `timeout`, `heartbeat_timeout`, `lease_expired`, `cancelled` or
    /// `worker_shutdown`; `null` otherwise.
    pub reason: Option<String>,
    /// The `worker_id` of the worker that claimed it.
    pub worker_id: String,
    /// The attempt's span id in the run's trace, 16 lowercase hex digits: the
    /// `step.<step> attempt <n>` span, parent of the worker's `execute` span
    /// (SPEC §4, Traces).
    pub span_id: String,
    /// When it was claimed (RFC 3339 UTC).
    pub claimed_at: String,
    /// When it ended; `null` while running.
    pub finished_at: Option<String>,
    /// The error message when it failed (the worker's, cut to 16 KiB, or the
    /// engine's for a timeout or a lapsed lease); `null` otherwise.
    pub error: Option<String>,
    /// Where its time went; `null` while running, and for an attempt
    /// cancelled because its run ended.
    pub timing: Option<AttemptTiming>,
    /// `forward` (the step's handler) or `compensate` (its `compensate`
    /// handler, undoing the step: span `compensate.<step>`).
    #[serde(default = "forward")]
    pub kind: String,
    /// For a compensation: the number of the forward attempt it undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes_attempt: Option<i64>,
}

fn forward() -> String {
    "forward".to_owned()
}

/// Where an attempt's time went (SPEC §4, timing buckets).
/// All in milliseconds. The worker-reported buckets are clamped to the
/// server's own claim → result window: shown, never trusted to move state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptTiming {
    /// Ready → claimed.
    pub queue_wait_ms: i64,
    /// Claimed → handler start, reported by the worker.
    pub dispatch_ms: Option<i64>,
    /// Handler run time, reported by the worker.
    pub handler_ms: Option<i64>,
    /// Result received → committed.
    /// 0 for an attempt the engine ended (timeout, lapsed lease).
    pub ingest_ms: i64,
    /// Claimed → committed.
    pub total_ms: i64,
}

/// The answer to `GET /v1/runs/{id}/events` (`?after=SEQ` for the events
/// after one, `?limit=N` for at most N, 1 to 1000, default 1000). Errors:
/// 400 `invalid_limit`, 404 `run_not_found`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    /// One page of the run's history, in `seq` order.
    pub events: Vec<EventRecord>,
    /// When more events follow this page: the `seq` to pass as `after` for
    /// the next one. `null` on the last page (absent from older servers).
    #[serde(default)]
    pub next_after: Option<i64>,
}

/// One history event: a state transition of a run, a step or an attempt
/// (SPEC §4, History). It is also the `data` of each event of
/// `GET /v1/runs/{id}/events/stream` (SSE), whose `id` is its `seq` and
/// whose `event` is its `type`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventRecord {
    /// Its place in the history: increasing and unique across all runs (so
    /// not contiguous within one run).
    pub seq: i64,
    /// The kind (JSON `type`): `run.created`, `run.started`, `step.ready`,
    /// `attempt.claimed`, `attempt.completed`, `attempt.failed`,
    /// `step.retrying`, `lease.expired`, `run.completed`, ... (SPEC §4).
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was written (RFC 3339 UTC).
    pub at: String,
    /// The step it concerns; `null` for a run's own events.
    pub step: Option<String>,
    /// The attempt number it concerns; `null` for run and step events.
    pub attempt: Option<i64>,
    /// The kind's payload, a JSON object (`{}` when it has none); e.g. an
    /// `attempt.failed` carries `timing`, `reason`, `error` and `retryable`.
    /// Redacted with `--redact-api`.
    pub data: Value,
}

/// The answer to `GET /v1/runs/{id}/logs` (`?step=NAME` for one step's,
/// `?after=SEQ&limit=N` for at most N lines after one, 1 to 1000, default
/// 1000). Errors: 400 `invalid_limit`, 404 `run_not_found`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogList {
    /// One page of the run's log lines, in the order they arrived.
    pub lines: Vec<LogRecord>,
    /// When more lines follow this page: the `seq` to pass as `after` for
    /// the next one. `null` on the last page (absent from older servers).
    #[serde(default)]
    pub next_after: Option<i64>,
}

/// One log line of an attempt, as its worker sent it
/// (`POST /v1/worker/leases/{lease_id}/logs`): an exec handler's stderr, or
/// the SDK's `TaskContext::log`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogRecord {
    /// Order of arrival: increasing and unique across all runs.
    pub seq: i64,
    /// When the server received it (RFC 3339 UTC); the lines of one request
    /// share it.
    pub at: String,
    /// The step whose attempt logged it.
    pub step: String,
    /// The attempt's number.
    pub attempt: i64,
    /// The line as sent, cut to 8192 bytes (then ending with `…`).
    pub line: String,
}

/// The body of `POST /v1/runs/{id}/steps/{step}/approve` and `.../reject`
/// (may be empty). Answered with the run's [`RunSummary`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DecisionRequest {
    /// Why: recorded as `comment` in the history events of the decision
    /// (beside its `actor`), and for a rejection the step's and the run's
    /// error message (default `rejected`). At most 4096 characters (400
    /// `invalid_message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The former name of `comment`, still accepted (`comment` wins when
    /// both are sent). At most 4096 characters (400 `invalid_message`).
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

/// The body of `POST /v1/worker/poll` (long poll): claim up to `max_tasks`
/// ready steps on `queues` whose handler is one of `handlers`, waiting up to
/// `wait_ms` for one. Each poll also records the worker (`GET /v1/workers`).
/// Answered with [`PollResponse`]; a bound broken answers 400 with the
/// field's code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PollRequest {
    /// The worker's id, the same for every poll of one worker process: it
    /// names the worker on attempts and in `weft workers`. 1 to 256
    /// characters without control characters (400 `invalid_worker_id`).
    pub worker_id: String,
    /// The queues it serves (default `["default"]`): 1 to 100 names of 1 to
    /// 128 characters without control characters (400 `invalid_queues`).
    #[serde(default = "default_queues")]
    pub queues: Vec<String>,
    /// The handlers it serves: only steps whose handler is one of these are
    /// claimed. 1 to 1000 names of 1 to 128 characters without control
    /// characters (400 `no_handlers`, `too_many_handlers`,
    /// `invalid_handler`).
    pub handlers: Vec<String>,
    /// The most tasks this poll may claim: 1 (default) to 100 (400
    /// `invalid_max_tasks`).
    #[serde(default = "default_max_tasks")]
    pub max_tasks: u32,
    /// How long the server may hold the request when there is no work.
    /// Milliseconds, 0 (default: answer at once) to 60000 (400
    /// `invalid_wait`).
    #[serde(default)]
    pub wait_ms: u64,
    /// The worker's host name, shown by `weft workers`. 1 to 256 characters
    /// without control characters (400 `invalid_worker_meta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The worker's process id: 1 to 4194304 (400 `invalid_worker_meta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The worker's build version: 1 to 128 characters without control
    /// characters (400 `invalid_worker_meta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Tasks the worker runs at once (its slots): 1 to 100000 (400
    /// `invalid_worker_meta`). Without it, a diagnosis never calls the
    /// worker saturated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

fn default_queues() -> Vec<String> {
    vec!["default".to_owned()]
}

fn default_max_tasks() -> u32 {
    1
}

/// The answer to `POST /v1/worker/poll`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PollResponse {
    /// The tasks claimed for this worker, at most `max_tasks`; empty when
    /// nothing was ready within `wait_ms`.
    pub tasks: Vec<Task>,
}

/// One claimed step attempt, handed to a worker.
/// The worker holds it under a lease: it renews the lease by heartbeat
/// within `lease_ms` and reports the attempt's end by `lease_id` (complete,
/// fail, release, or `POST /v1/worker/results`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Task {
    /// The lease (a UUID): the path parameter of the heartbeat, complete,
    /// fail, release and logs calls. A lease ends with its attempt; a call
    /// under an ended lease answers 409 `stale_lease`.
    pub lease_id: String,
    /// The run's id (a UUIDv7).
    pub run_id: String,
    /// The run's trace id (32 lowercase hex digits).
    pub trace_id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The step's name.
    pub step: String,
    /// The attempt's number, from 1.
    pub attempt: i64,
    /// The handler to run: one of the poll's `handlers`.
    pub handler: String,
    /// `{"input": <run input>, "steps": {<dependency>: <output>},
    /// "upstream": {<dependency>: {"status", "reason", "error"}}}`; a
    /// dependency's output is `null` unless it completed.
    pub input: Value,
    /// W3C traceparent of the attempt's span: the worker's span is its child.
    /// `00-<trace_id>-<span_id>-01` (W3C Trace Context).
    pub traceparent: String,
    /// Start-to-close deadline (RFC 3339), if the step has a timeout.
    /// Claim time + the step's `timeout`. A result after it is recorded as a
    /// timeout and answered 409 `deadline_exceeded`; heartbeats then answer
    /// `cancel_requested`.
    pub deadline: Option<String>,
    /// Milliseconds from claim to the deadline, for clocks that disagree.
    pub timeout_ms: Option<i64>,
    /// The lease lapses unless renewed within this many milliseconds.
    /// The step's `heartbeat_timeout`, else the server's `--lease-timeout`
    /// (30 s by default). A lapsed lease ends the attempt
    /// (`heartbeat_timeout` or `lease_expired`) and the step may run again.
    pub lease_ms: i64,
    /// The W3C `baggage` header the run was started with, if any.
    /// As sent, at most 8192 bytes (W3C Baggage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baggage: Option<String>,
    /// Largest serialized output (bytes of JSON) the server accepts for this
    /// attempt. A worker whose handler returns more fails the attempt at
    /// once, not retried, with kind `invalid_output` and a message naming the
    /// size and the limit. `0` (from servers that predate it) means unknown.
    #[serde(default)]
    pub max_output_bytes: u64,
    /// The same for every attempt of this unit of work (its retries, a
    /// retry of the run, a redelivery after a lost lease) and different for
    /// any other: a UUID (version 5, 36 characters) named by the run, the
    /// step, the phase (forward or compensate) and the `for_each` index.
    /// Pass it to downstream APIs (`Idempotency-Key`) so a side effect
    /// happens once. Empty from servers that predate it.
    #[serde(default)]
    pub idempotency_key: String,
}

/// The answer to `POST /v1/worker/leases/{lease_id}/heartbeat`, which
/// renews the lease for another `Task.lease_ms` from now. Errors: 409
/// `stale_lease` when the lease is gone (lapsed, reaped or its attempt
/// ended): stop work, its result would be refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// The run was cancelled or failed, or the attempt timed out: stop work.
    /// Also true when the attempt no longer counts. The lease is then not
    /// renewed.
    pub cancel_requested: bool,
}

/// Worker-measured parts of an attempt's time.
/// Milliseconds, each 0 to 31622400000 (366 days; 400 `invalid_timing`). The
/// server clamps them to its own claim → result window (see
/// [`AttemptTiming`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct WorkerTiming {
    /// Task received (claimed) → handler started, as the worker measured it.
    pub dispatch_ms: Option<i64>,
    /// The handler's run time, as the worker measured it.
    pub handler_ms: Option<i64>,
}

/// The body of `POST /v1/worker/leases/{lease_id}/complete`: the attempt
/// succeeded. Answered with [`Ack`]. Errors: 409 `stale_lease` (the lease is
/// gone), `attempt_not_running` (its run ended meanwhile),
/// `deadline_exceeded` (past the step's start-to-close deadline: recorded
/// as timed out); 413 `payload_too_large`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompleteRequest {
    /// The step's output, any JSON (`null` when absent); dependants receive
    /// it under `steps.<name>`. Larger than [`Task::max_output_bytes`]
    /// serialized, it is recorded as a permanent failure, reason
    /// `invalid_output`.
    #[serde(default)]
    pub output: Value,
    /// The worker's measurements, if any.
    #[serde(default)]
    pub timing: Option<WorkerTiming>,
}

/// The body of `POST /v1/worker/leases/{lease_id}/fail`: the attempt
/// failed. The step is retried per its `retry` policy unless the error is
/// permanent or its attempts are spent. Answered with [`Ack`]. Errors: as
/// [`CompleteRequest`]'s, and 400 `invalid_error_kind`, `invalid_message`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FailRequest {
    /// What went wrong.
    pub error: TaskError,
    /// The worker's measurements, if any.
    #[serde(default)]
    pub timing: Option<WorkerTiming>,
}

/// Several attempts' results in one request, written in one transaction.
/// The body of `POST /v1/worker/results`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultsRequest {
    /// 0 to 1000 results (400 `too_many_results`). One entry out of bounds
    /// fails the whole request with 400 and changes nothing.
    pub results: Vec<TaskResult>,
}

/// One attempt's result: `error` set means it failed, else it completed
/// with `output`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskResult {
    /// The attempt's lease ([`Task::lease_id`]): 1 to 256 characters without
    /// control characters (400 `invalid_lease_id`).
    pub lease_id: String,
    /// The output, when `error` is absent: as [`CompleteRequest::output`].
    #[serde(default)]
    pub output: Value,
    /// The failure, as [`FailRequest::error`]; absent for a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// The worker's measurements, if any.
    #[serde(default)]
    pub timing: Option<WorkerTiming>,
}

/// The answer to each result of a batch, in request order: `status` is the
/// HTTP status the single `complete`/`fail` call would have answered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultsResponse {
    /// One answer per result, in request order.
    pub results: Vec<ResultAnswer>,
}

/// The answer to one result of a `POST /v1/worker/results` batch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultAnswer {
    /// The result's lease id, as sent.
    pub lease_id: String,
    /// The HTTP status its own `complete` or `fail` call would have
    /// answered: 200 applied; 409 refused (`stale_lease`,
    /// `attempt_not_running`, `deadline_exceeded`): nothing to retry. A
    /// failure to write fails the whole request instead (500, 503).
    pub status: u16,
    /// True when this lease's same outcome had already been applied (the
    /// answer to an earlier send was lost): nothing changed, nothing to retry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub already_applied: bool,
    /// Why it was refused; absent when `status` is 200.
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

/// A worker's report of why an attempt failed ([`FailRequest::error`],
/// [`TaskResult::error`]).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskError {
    /// The error, shown on the attempt and the step: at most 262144
    /// characters (400 `invalid_message`), stored cut to 16 KiB.
    pub message: String,
    /// A failure reason the worker may report: `handler_error` (default),
    /// `timeout`, `invalid_output`, `no_handler` (the command could not be
    /// started) or `cancelled`.
    /// Any other answers 400 `invalid_error_kind`.
    #[serde(default)]
    pub kind: Option<String>,
    /// False marks the error as permanent: no further attempt is made.
    /// Default: permanent for `invalid_output` and `no_handler`, retryable
    /// otherwise.
    #[serde(default)]
    pub retryable: Option<bool>,
}

/// The body of `POST /v1/worker/leases/{lease_id}/logs`: log lines of the
/// lease's attempt, read back by `GET /v1/runs/{id}/logs` and `weft logs`.
/// Answered with [`Ack`]. Errors: 409 `stale_lease` when the lease is gone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogsRequest {
    /// 0 to 10000 lines (400 `too_many_lines`), each at most 65536
    /// characters (400 `line_too_long`); each is stored cut to 8192 bytes.
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

/// The answer to the complete, fail, release and logs calls of the worker
/// protocol: the request was applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Ack {
    /// Always `true`: a refusal answers an error status instead.
    pub ok: bool,
    /// True when a result was sent again for a lease whose same outcome was
    /// already applied (the first answer was lost): nothing changed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub already_applied: bool,
}
