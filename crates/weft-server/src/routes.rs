//! The HTTP handlers: workflows, runs, the worker protocol and health.

use std::{collections::BTreeSet, convert::Infallible, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{
        IntoResponse,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::{Value, json};
use weft_api::{
    Ack, CompleteRequest, DecisionRequest, ErrorBody, ErrorDetail, EventList, FailRequest,
    HeartbeatResponse, LogList, LogsRequest, PollRequest, PollResponse, PutWorkflowResponse,
    ReleaseRequest, ResultAnswer, ResultsRequest, ResultsResponse, RunDetail, RunList, RunSummary,
    StartRunRequest, StartRunResponse, StartRunsRequest, StartRunsResponse, TaskError,
    WorkerTiming, WorkflowDetail, WorkflowList,
};
use weft_core::{Definition, Reason, RunStatus};
use weft_store::{
    ClaimRequest, FailReport, NewRun, Outcome, Recorded, RunFilter, WorkerResult, now_ms,
};

use crate::{
    ApiError, AppState,
    extract::{self, Path, Query},
    limits::{self, Validate},
    request_id,
};

type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workflows", get(list_workflows))
        .route("/v1/workflows/{name}", put(put_workflow).get(get_workflow))
        .route("/v1/workflows/{name}/runs", post(start_run))
        .route("/v1/workflows/{name}/runs/batch", post(start_runs))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/events", get(run_events))
        .route("/v1/runs/{id}/events/stream", get(run_event_stream))
        .route("/v1/runs/{id}/logs", get(run_logs))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/runs/{id}/retry", post(retry_run))
        .route("/v1/runs/{id}/steps/{step}/approve", post(approve_step))
        .route("/v1/runs/{id}/steps/{step}/reject", post(reject_step))
        .route("/v1/worker/poll", post(poll))
        .route("/v1/worker/leases/{lease_id}/heartbeat", post(heartbeat))
        .route("/v1/worker/leases/{lease_id}/complete", post(complete))
        .route("/v1/worker/leases/{lease_id}/fail", post(fail))
        .route("/v1/worker/leases/{lease_id}/release", post(release))
        .route("/v1/worker/leases/{lease_id}/logs", post(append_logs))
        .route("/v1/worker/results", post(results))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/healthz", get(ready))
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/", get(crate::dashboard::runs_page))
        .route("/runs/{id}", get(crate::dashboard::run_page))
        .merge(crate::diagnostics::routes())
        .fallback(not_found)
}

/// Unknown routes. A path under a resource whose name holds a raw `/` gets
/// a hint: names may contain `/` but it must be sent as `%2F`.
async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let path = uri.path();
    let shown: String = path.chars().take(200).collect();
    let nested = ["/v1/workflows/", "/v1/runs/", "/v1/worker/leases/"]
        .iter()
        .any(|prefix| path.starts_with(prefix));
    let hint = if nested {
        "; a `/` inside a workflow, step or run name must be sent percent-encoded as %2F"
    } else {
        ""
    };
    ApiError::RouteNotFound(format!("no route for {method} {shown}{hint}"))
}

impl Validate for WorkflowQuery {
    fn validate(&self) -> ApiResult<()> {
        if let Some(version) = self.version {
            limits::check_range("invalid_version", "version", version, 1, i64::MAX)?;
        }
        Ok(())
    }
}

impl Validate for ListRunsQuery {
    fn validate(&self) -> ApiResult<()> {
        for (field, value) in [
            ("workflow", &self.workflow),
            ("trace_id", &self.trace_id),
            ("since", &self.since),
            ("cursor", &self.cursor),
            ("status", &self.status),
        ] {
            if let Some(value) = value {
                limits::check_text("invalid_query", field, value, 0, limits::MAX_QUERY_TEXT_LEN)?;
            }
        }
        if let Some(limit) = self.limit {
            limits::check_range("invalid_limit", "limit", limit, 1, limits::MAX_LIST_LIMIT)?;
        }
        Ok(())
    }
}

impl Validate for GetRunQuery {
    fn validate(&self) -> ApiResult<()> {
        if let Some(ms) = self.wait_ms {
            limits::check_range("invalid_wait", "wait_ms", ms, 0, limits::MAX_WAIT_MS)?;
        }
        Ok(())
    }
}

impl Validate for EventsQuery {
    fn validate(&self) -> ApiResult<()> {
        if let Some(after) = self.after {
            limits::check_range("invalid_query", "after", after, 0, i64::MAX)?;
        }
        Ok(())
    }
}

impl Validate for LogsQuery {
    fn validate(&self) -> ApiResult<()> {
        if let Some(step) = &self.step {
            limits::check_text("invalid_query", "step", step, 1, limits::MAX_PATH_PARAM_LEN)?;
        }
        Ok(())
    }
}

// ---- workflows ----

#[utoipa::path(put, path = "/v1/workflows/{name}", tag = "workflows", params(("name" = String, Path, description = "Workflow name; a `/` in it is sent as %2F", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body(content = String, description = "The manifest, YAML or JSON. Ranges: `timeout` 1ms to 7d, `heartbeat_timeout` 1ms to 1d, a sleep's `duration` 1ms to 365d, `retry.initial` up to 1d, `retry.max` up to 7d, `retry.max_attempts` 1 to 1000, `retry.multiplier` 1 to 10, at most 2000 steps, names 1 to 128 characters of letters, digits, `.`, `_`, `-`, `/`, `description` up to 4096 characters.", content_type = "application/yaml"), responses((status = 201, body = PutWorkflowResponse, description = "A new version"), (status = 200, body = PutWorkflowResponse, description = "Unchanged"), (status = 400, body = ErrorBody, description = "The manifest is not a valid workflow, with the code and path of the first error: invalid_manifest, missing_field, unknown_field, invalid_type, invalid_name, invalid_duration (out of its documented range), invalid_retry, too_many_steps, duplicate_step, unknown_dependency, duplicate_dependency, cycle, invalid_when, name_mismatch. Most of these (cycles, dependencies, CEL) cannot be stated in JSON Schema."), (status = 413, body = ErrorBody)))]
async fn put_workflow(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> ApiResult<impl IntoResponse> {
    let body = extract::body_bytes(request, &state).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_manifest", "manifest is not UTF-8 text"))?;
    let def = Definition::parse(text)?;
    if def.name != name {
        return Err(ApiError::bad_request(
            "name_mismatch",
            format!(
                "the manifest names workflow `{}` but the URL names `{name}`",
                def.name
            ),
        ));
    }
    let response = state.store().put_workflow(&def).await?;
    let status = if response.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response)))
}

#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", responses((status = 200, body = WorkflowList)))]
async fn list_workflows(State(state): State<AppState>) -> ApiResult<Json<WorkflowList>> {
    Ok(Json(WorkflowList {
        workflows: state.store().list_workflows().await?,
    }))
}

#[derive(Deserialize)]
struct WorkflowQuery {
    version: Option<i64>,
}

#[utoipa::path(get, path = "/v1/workflows/{name}", tag = "workflows", params(("name" = String, Path, description = "Workflow name; a `/` in it is sent as %2F", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("version" = Option<i64>, Query, minimum = 1)), responses((status = 200, body = WorkflowDetail), (status = 404, body = ErrorBody)))]
async fn get_workflow(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<WorkflowQuery>,
) -> ApiResult<Json<WorkflowDetail>> {
    Ok(Json(
        state.store().get_workflow(&name, query.version).await?,
    ))
}

// ---- runs ----

#[utoipa::path(post, path = "/v1/workflows/{name}/runs", tag = "runs", params(("name" = String, Path, description = "Workflow name; a `/` in it is sent as %2F", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("traceparent" = Option<String>, Header, description = "W3C trace context: the run joins this trace"), ("baggage" = Option<String>, Header, description = "W3C baggage, handed to every attempt's worker")), request_body = StartRunRequest, responses((status = 202, body = StartRunResponse, description = "Started, or the run its idempotency key already started with an equal input (`created: false`)"), (status = 400, body = ErrorBody, description = "Invalid input, or a name or key with control characters"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "`idempotency_key_reused`: the key already started a run with a different input (compared as canonical JSON, key order ignored)")))]
async fn start_run(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<extract::Json<StartRunRequest>, ApiError>,
) -> ApiResult<(StatusCode, Json<StartRunResponse>)> {
    let caller = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(weft_core::trace::parse_traceparent);
    let Some(tracing) = &state.config.tracing else {
        return start_run_in(&state, name, &headers, body, caller, None).await;
    };
    // The live server span: the run joins the trace under it.
    let span = tracing.server_span(
        caller.as_ref(),
        "POST",
        START_RUN_ROUTE,
        request_id(&headers).as_deref(),
    );
    let (parent, trace_id) = (span.trace_parent(), span.trace_id());
    let result = start_run_in(&state, name, &headers, body, parent, trace_id).await;
    match &result {
        Ok((status, Json(started))) => span.finish(status.as_u16(), Some(&started.run_id)),
        Err(err) => span.finish(err.status().as_u16(), None),
    }
    result
}

const START_RUN_ROUTE: &str = "/v1/workflows/{name}/runs";

async fn start_run_in(
    state: &AppState,
    name: String,
    headers: &HeaderMap,
    body: Result<extract::Json<StartRunRequest>, ApiError>,
    parent: Option<weft_core::trace::TraceParent>,
    trace_id: Option<String>,
) -> ApiResult<(StatusCode, Json<StartRunResponse>)> {
    let extract::Json(request) = body?;
    let baggage = baggage(headers);
    let started = state
        .store()
        .start_run(NewRun {
            workflow: name,
            input: request.input,
            idempotency_key: request.idempotency_key,
            parent,
            trace_id,
            baggage,
            request_id: request_id(headers),
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(started)))
}

/// W3C baggage is kept as sent (ASCII, within the spec's 8192-byte cap)
/// and handed to every attempt's worker.
fn baggage(headers: &HeaderMap) -> Option<String> {
    headers
        .get("baggage")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|b| !b.is_empty() && b.len() <= 8192)
        .map(str::to_owned)
}

/// Starts several runs of a workflow in one transaction: all or none. A
/// caller's `traceparent` is joined by every run; without one each run has
/// a trace of its own.
#[utoipa::path(post, path = "/v1/workflows/{name}/runs/batch", tag = "runs", params(("name" = String, Path, description = "Workflow name; a `/` in it is sent as %2F", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("traceparent" = Option<String>, Header, description = "W3C trace context: every run joins this trace"), ("baggage" = Option<String>, Header, description = "W3C baggage, handed to every attempt's worker")), request_body = StartRunsRequest, responses((status = 202, body = StartRunsResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "`idempotency_key_reused` by one of the runs: nothing was started")))]
async fn start_runs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    extract::Json(request): extract::Json<StartRunsRequest>,
) -> ApiResult<(StatusCode, Json<StartRunsResponse>)> {
    let parent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(weft_core::trace::parse_traceparent);
    let baggage = baggage(&headers);
    let request_id = request_id(&headers);
    let mut batch = Vec::with_capacity(request.runs.len());
    for run in request.runs {
        batch.push(NewRun {
            workflow: name.clone(),
            input: run.input,
            idempotency_key: run.idempotency_key,
            parent: parent.clone(),
            trace_id: None,
            baggage: baggage.clone(),
            request_id: request_id.clone(),
        });
    }
    let runs = state.store().start_runs_all_or_none(&batch).await?;
    Ok((StatusCode::ACCEPTED, Json(StartRunsResponse { runs })))
}

#[derive(Deserialize)]
struct ListRunsQuery {
    workflow: Option<String>,
    status: Option<String>,
    trace_id: Option<String>,
    /// RFC 3339 time, or a duration back from now such as `1h`.
    since: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(("workflow" = Option<String>, Query, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("status" = Option<String>, Query), ("trace_id" = Option<String>, Query, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("since" = Option<String>, Query, description = "RFC 3339 time, or a duration back from now (`90s`, `1h30m`)"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000), ("cursor" = Option<String>, Query, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, body = RunList), (status = 400, body = ErrorBody)))]
async fn list_runs(
    State(state): State<AppState>,
    Query(query): Query<ListRunsQuery>,
) -> ApiResult<Json<RunList>> {
    let status = match &query.status {
        None => None,
        Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
            let known: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(
                "invalid_status",
                format!("unknown run status `{text}` (one of {})", known.join(", ")),
            )
        })?),
    };
    let since_ms = match &query.since {
        None => None,
        Some(text) => Some(parse_since(text, state.store().now_ms())?),
    };
    if let Some(limit) = query.limit
        && (limit == 0 || limit > 1000)
    {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be from 1 to 1000",
        ));
    }
    let filter = RunFilter {
        workflow: query.workflow,
        status,
        trace_id: query.trace_id,
        since_ms,
        limit: query.limit,
        cursor: query.cursor,
    };
    Ok(Json(state.store().list_runs(&filter).await?))
}

/// Applies the redaction rule to everything user data reaches in a run view.
pub(crate) fn redact_run(redactor: &weft_core::redact::Redactor, run: &mut RunDetail) {
    run.input = redactor.redact(&run.input);
    run.output = run.output.as_ref().map(|v| redactor.redact(v));
    for step in &mut run.steps {
        step.output = step.output.as_ref().map(|v| redactor.redact(v));
    }
}

/// The run's trace in the trace backend, from the configured template.
pub(crate) fn trace_url(template: Option<&str>, trace_id: &str) -> Option<String> {
    template.map(|t| t.replace("{trace_id}", trace_id))
}

fn parse_since(text: &str, now_ms: i64) -> ApiResult<i64> {
    if let Some(ms) = weft_store::parse_rfc3339(text) {
        return Ok(ms);
    }
    let invalid = || {
        ApiError::bad_request(
            "invalid_since",
            format!("`{text}` is neither an RFC 3339 time nor a duration like 1h"),
        )
    };
    // The documented form only (digits then a unit, repeated, no spaces).
    let well_formed = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_alphanumeric())
        && text
            .split(|c: char| c.is_ascii_alphabetic())
            .all(|digits| digits.len() <= 9);
    if !well_formed {
        return Err(invalid());
    }
    let ago = weft_core::duration::parse_ms(text).map_err(|_| invalid())?;
    Ok(now_ms.saturating_sub(i64::try_from(ago).unwrap_or(i64::MAX)))
}

#[derive(Deserialize)]
struct GetRunQuery {
    /// Hold the request until the run has ended, at most this long.
    wait_ms: Option<u64>,
}

/// The longest `wait_ms` a caller may ask for.
const MAX_RUN_WAIT: Duration = Duration::from_secs(60);

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("wait_ms" = Option<u64>, Query, minimum = 0, maximum = 60000, description = "Answer once the run has ended, or after this many milliseconds (at most 60000)")), responses((status = 200, body = RunDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody, description = "`corrupt_row`: a stored row of the run does not decode; the message names the column and run")))]
async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<GetRunQuery>,
) -> ApiResult<Json<RunDetail>> {
    let mut run = match query.wait_ms {
        None | Some(0) => state.store().get_run(&id).await?,
        Some(ms) if ms > MAX_RUN_WAIT.as_millis() as u64 => {
            return Err(ApiError::bad_request(
                "invalid_wait",
                format!("wait_ms is at most {}", MAX_RUN_WAIT.as_millis()),
            ));
        }
        Some(ms) => {
            state
                .store()
                .wait_run(&id, Duration::from_millis(ms))
                .await?
        }
    };
    run.trace_url = trace_url(state.config.trace_url_template.as_deref(), &run.trace_id);
    if state.config.redact_api {
        redact_run(&state.config.redactor, &mut run);
    }
    Ok(Json(run))
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<i64>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("after" = Option<i64>, Query, minimum = 0, description = "Only events after this `seq`")), responses((status = 200, body = EventList), (status = 404, body = ErrorBody)))]
async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> ApiResult<Json<EventList>> {
    let mut events = state.store().run_events(&id, query.after).await?;
    if state.config.redact_api {
        for event in &mut events {
            event.data = state.config.redactor.redact(&event.data);
        }
    }
    Ok(Json(EventList { events }))
}

/// Server-sent events: the run's history, then new events as they are
/// written, until the run ends. Each SSE event's id is the history `seq`.
#[utoipa::path(get, path = "/v1/runs/{id}/events/stream", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, description = "Server-sent events, one per history event", content_type = "text/event-stream"), (status = 404, body = ErrorBody)))]
async fn run_event_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>>> {
    let run_id = state.store().resolve_run_id(&id).await?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let store = state.store().clone();
    let follower = EventFollower {
        store,
        run_id,
        low_water: after.unwrap_or(0),
        delivered: BTreeSet::new(),
        done: false,
    };
    let stream = futures::stream::unfold(follower, |mut follower| async move {
        let batch = follower.next_batch().await?;
        Some((futures::stream::iter(batch), follower))
    });
    use futures::StreamExt;
    Ok(Sse::new(stream.flatten()).keep_alive(KeepAlive::default()))
}

/// Follows a run's history for the SSE stream.
///
/// On Postgres, sequence numbers are taken before commit, so two
/// transactions can commit out of `seq` order: a reader that only asks for
/// `seq > last seen` could skip an event committed late. The follower
/// therefore re-reads a window behind its newest event and remembers what it
/// sent, and moves the window's floor only past events older than any
/// transaction can plausibly stay open.
struct EventFollower {
    store: weft_store::Store,
    run_id: String,
    low_water: i64,
    delivered: BTreeSet<i64>,
    done: bool,
}

const COMMIT_LAG_MS: i64 = 10_000;

impl EventFollower {
    async fn run_ended(&self) -> bool {
        let statuses = self
            .store
            .run_statuses(std::slice::from_ref(&self.run_id))
            .await
            .unwrap_or_default();
        statuses
            .get(&self.run_id)
            .and_then(|s| RunStatus::parse(s))
            .is_some_and(|s| s.is_terminal())
    }

    async fn next_batch(&mut self) -> Option<Vec<Result<SseEvent, Infallible>>> {
        if self.done {
            return None;
        }
        loop {
            let events = self
                .store
                .run_events(&self.run_id, Some(self.low_water))
                .await
                .unwrap_or_default();
            let settled_before = self.store.now_ms() - COMMIT_LAG_MS;
            let mut batch = Vec::new();
            let mut ended = false;
            let mut settled_prefix = true;
            for event in &events {
                ended |= weft_core::EventKind::parse(&event.kind).is_some_and(|k| k.ends_run());
                if self.delivered.insert(event.seq) {
                    batch.push(Ok(SseEvent::default()
                        .id(event.seq.to_string())
                        .event(event.kind.clone())
                        .data(serde_json::to_string(event).unwrap_or_default())));
                }
                // Events come in seq order: the floor moves over a settled prefix.
                settled_prefix &=
                    weft_store::parse_rfc3339(&event.at).is_some_and(|at| at < settled_before);
                if settled_prefix {
                    self.low_water = event.seq;
                }
            }
            self.delivered.retain(|&seq| seq > self.low_water);
            if !batch.is_empty() {
                return Some(batch);
            }
            // Nothing new: after the run's end event, or when a client
            // reconnected past the end of a finished run, the stream is over.
            if (ended || events.is_empty()) && self.run_ended().await {
                self.done = true;
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    step: Option<String>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/logs", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("step" = Option<String>, Query, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, body = LogList), (status = 404, body = ErrorBody)))]
async fn run_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<LogsQuery>,
) -> ApiResult<Json<LogList>> {
    Ok(Json(LogList {
        lines: state.store().run_logs(&id, query.step.as_deref()).await?,
    }))
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunSummary>> {
    Ok(Json(state.store().cancel_run(&id).await?))
}

#[utoipa::path(post, path = "/v1/runs/{id}/retry", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn retry_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunSummary>> {
    Ok(Json(state.store().retry_run(&id).await?))
}

#[utoipa::path(post, path = "/v1/runs/{id}/steps/{step}/approve", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("step" = String, Path, description = "Step name", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body = DecisionRequest, responses((status = 200, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn approve_step(
    State(state): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    extract::Json(request): extract::Json<DecisionRequest>,
) -> ApiResult<Json<RunSummary>> {
    Ok(Json(
        state
            .store()
            .decide(&id, &step, true, request.message)
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/runs/{id}/steps/{step}/reject", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("step" = String, Path, description = "Step name", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body = DecisionRequest, responses((status = 200, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn reject_step(
    State(state): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    extract::Json(request): extract::Json<DecisionRequest>,
) -> ApiResult<Json<RunSummary>> {
    Ok(Json(
        state
            .store()
            .decide(&id, &step, false, request.message)
            .await?,
    ))
}

// ---- worker protocol ----

#[utoipa::path(post, path = "/v1/worker/poll", tag = "worker", request_body = PollRequest, responses((status = 200, body = PollResponse), (status = 400, body = ErrorBody)))]
async fn poll(
    State(state): State<AppState>,
    extract::Json(request): extract::Json<PollRequest>,
) -> ApiResult<Json<PollResponse>> {
    // Bounds and identifiers were checked by the extractor (`limits.rs`).
    let claim = ClaimRequest {
        worker_id: request.worker_id,
        queues: request.queues,
        handlers: request.handlers,
        max_tasks: request.max_tasks,
        meta: weft_store::WorkerMeta {
            host: request.host,
            pid: request.pid,
            version: request.version,
            concurrency: request.concurrency,
        },
    };
    let started = std::time::Instant::now();
    let polled = state
        .engine
        .poll(&claim, Duration::from_millis(request.wait_ms))
        .await;
    let outcome = match &polled {
        Ok(tasks) if tasks.is_empty() => "empty",
        Ok(_) => "tasks",
        Err(_) => "error",
    };
    for queue in &claim.queues {
        state
            .metrics
            .worker_poll(queue, outcome, started.elapsed().as_secs_f64());
    }
    Ok(Json(PollResponse { tasks: polled? }))
}

#[utoipa::path(post, path = "/v1/worker/leases/{lease_id}/heartbeat", tag = "worker", params(("lease_id" = String, Path, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, body = HeartbeatResponse), (status = 409, body = ErrorBody, description = "The lease is no longer held")))]
async fn heartbeat(
    State(state): State<AppState>,
    Path(lease_id): Path<String>,
) -> ApiResult<Json<HeartbeatResponse>> {
    Ok(Json(state.store().heartbeat(&lease_id).await?))
}

#[utoipa::path(post, path = "/v1/worker/leases/{lease_id}/complete", tag = "worker", params(("lease_id" = String, Path, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body = CompleteRequest, responses((status = 200, body = Ack, description = "Applied; `already_applied` when this lease's same result had been applied before (an earlier answer was lost). An output over `Task.max_output_bytes` is applied as a permanent failure, reason `invalid_output`"), (status = 409, body = ErrorBody, description = "Stale lease: nothing changed"), (status = 413, body = ErrorBody, description = "`payload_too_large`: the body is over the server's limit")))]
async fn complete(
    State(state): State<AppState>,
    Path(lease_id): Path<String>,
    extract::Json(request): extract::Json<CompleteRequest>,
) -> ApiResult<Json<Ack>> {
    let received = state.store().now_ms();
    let recorded = state
        .store()
        .complete(&lease_id, request.output, request.timing, received)
        .await?;
    Ok(Json(Ack {
        ok: true,
        already_applied: recorded == Recorded::AlreadyApplied,
    }))
}

#[utoipa::path(post, path = "/v1/worker/leases/{lease_id}/fail", tag = "worker", params(("lease_id" = String, Path, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body = FailRequest, responses((status = 200, body = Ack, description = "Applied; `already_applied` when this lease's same failure had been applied before"), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody, description = "Stale lease: nothing changed")))]
async fn fail(
    State(state): State<AppState>,
    Path(lease_id): Path<String>,
    extract::Json(request): extract::Json<FailRequest>,
) -> ApiResult<Json<Ack>> {
    let received = state.store().now_ms();
    let report = fail_report(request.error, request.timing)?;
    let recorded = state.store().fail(&lease_id, report, received).await?;
    Ok(Json(Ack {
        ok: true,
        already_applied: recorded == Recorded::AlreadyApplied,
    }))
}

/// A worker shutting down hands an attempt back: the attempt ends
/// `released` (reason `worker_shutdown`), the step is ready again at once
/// and the release spends no attempt, for at most 3 releases per step; past
/// that a release counts as a failed attempt with reason `worker_shutdown`.
#[utoipa::path(post, path = "/v1/worker/leases/{lease_id}/release", tag = "worker", params(("lease_id" = String, Path, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body = ReleaseRequest, responses((status = 200, body = Ack, description = "Released: the step is ready again (or, past 3 releases of the step, the release was recorded as a failed attempt); `already_applied` when sent again after the release was made"), (status = 409, body = ErrorBody, description = "`stale_lease`: the lease is gone; `attempt_not_running`: its run ended meanwhile; `deadline_exceeded`: past the step's start-to-close timeout, recorded as timed out")))]
async fn release(
    State(state): State<AppState>,
    Path(lease_id): Path<String>,
    extract::Json(request): extract::Json<ReleaseRequest>,
) -> ApiResult<Json<Ack>> {
    let received = state.store().now_ms();
    let recorded = state
        .store()
        .release(&lease_id, request.message, received)
        .await?;
    Ok(Json(Ack {
        ok: true,
        already_applied: recorded == Recorded::AlreadyApplied,
    }))
}

/// A worker's failure report, with only the reasons that are theirs to know.
fn fail_report(error: TaskError, timing: Option<WorkerTiming>) -> ApiResult<FailReport> {
    let reason = match error.kind.as_deref() {
        None | Some("handler_error") => Reason::HandlerError,
        Some("timeout") => Reason::Timeout,
        Some("invalid_output") => Reason::InvalidOutput,
        Some("cancelled") => Reason::Cancelled,
        Some("no_handler") => Reason::NoHandler,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_error_kind",
                format!(
                    "`{other}` is not a reason a worker may report ({})",
                    weft_api::WORKER_FAILURE_KINDS.join(", ")
                ),
            ));
        }
    };
    let retryable = error
        .retryable
        .unwrap_or(!matches!(reason, Reason::InvalidOutput | Reason::NoHandler));
    Ok(FailReport {
        reason,
        message: error.message,
        retryable,
        timing,
    })
}

/// Most results one batch may carry.
const MAX_RESULTS_PER_BATCH: usize = 1000;

/// Several attempts' results in one transaction. Each is answered as its
/// own `complete`/`fail` call would have been (`status`, `error`); a bad
/// entry fails the whole request with 400 and changes nothing.
#[utoipa::path(post, path = "/v1/worker/results", tag = "worker", request_body = ResultsRequest, responses((status = 200, body = ResultsResponse), (status = 400, body = ErrorBody)))]
async fn results(
    State(state): State<AppState>,
    extract::Json(request): extract::Json<ResultsRequest>,
) -> ApiResult<Json<ResultsResponse>> {
    let received = state.store().now_ms();
    if request.results.len() > MAX_RESULTS_PER_BATCH {
        return Err(ApiError::bad_request(
            "too_many_results",
            format!(
                "{} results in one request; at most {MAX_RESULTS_PER_BATCH}",
                request.results.len()
            ),
        ));
    }
    let mut batch = Vec::with_capacity(request.results.len());
    for result in request.results {
        let outcome = match result.error {
            Some(error) => Outcome::Failed(fail_report(error, result.timing.clone())?),
            None => Outcome::Completed(result.output),
        };
        batch.push(WorkerResult {
            lease_id: result.lease_id,
            outcome,
            timing: result.timing,
            received_ms: received,
        });
    }
    let answers = state.store().finish_batch(&batch).await?;
    let results = batch
        .into_iter()
        .zip(answers)
        .map(|(result, answer)| match answer {
            Ok(recorded) => ResultAnswer {
                lease_id: result.lease_id,
                status: 200,
                already_applied: recorded == Recorded::AlreadyApplied,
                error: None,
            },
            Err(err) => {
                let err = ApiError::from(err);
                ResultAnswer {
                    lease_id: result.lease_id,
                    status: err.status().as_u16(),
                    already_applied: false,
                    error: Some(ErrorDetail {
                        code: err.code().to_owned(),
                        message: err.to_string(),
                    }),
                }
            }
        })
        .collect();
    Ok(Json(ResultsResponse { results }))
}

#[utoipa::path(post, path = "/v1/worker/leases/{lease_id}/logs", tag = "worker", params(("lease_id" = String, Path, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body = LogsRequest, responses((status = 200, body = Ack), (status = 409, body = ErrorBody)))]
async fn append_logs(
    State(state): State<AppState>,
    Path(lease_id): Path<String>,
    extract::Json(request): extract::Json<LogsRequest>,
) -> ApiResult<Json<Ack>> {
    if request.lines.len() > 10_000 {
        return Err(ApiError::bad_request(
            "too_many_lines",
            "at most 10000 log lines per request",
        ));
    }
    state.store().append_logs(&lease_id, &request.lines).await?;
    Ok(Json(Ack {
        ok: true,
        already_applied: false,
    }))
}

// ---- metrics ----

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> axum::response::Response {
    metrics_endpoint(State(state.metrics.clone()), headers).await
}

/// Prometheus text by default; OpenMetrics (with trace_id exemplars) when the
/// scraper asks for it in `Accept`.
pub(crate) async fn metrics_endpoint(
    State(metrics): State<weft_telemetry::metrics::Metrics>,
    headers: HeaderMap,
) -> axum::response::Response {
    exposition(&headers, |openmetrics| metrics.encode(openmetrics))
}

pub(crate) async fn exposition_endpoint(
    State(render): State<crate::Render>,
    headers: HeaderMap,
) -> axum::response::Response {
    exposition(&headers, |openmetrics| render(openmetrics))
}

fn exposition(
    headers: &HeaderMap,
    render: impl FnOnce(bool) -> String,
) -> axum::response::Response {
    let openmetrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        weft_telemetry::metrics::OPENMETRICS_CONTENT_TYPE
    } else {
        weft_telemetry::metrics::TEXT_CONTENT_TYPE
    };
    (
        [(axum::http::header::CONTENT_TYPE, content_type)],
        render(openmetrics),
    )
        .into_response()
}

// ---- health ----

#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "The process is up")))]
async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

struct Check {
    name: &'static str,
    ok: bool,
    latency_ms: f64,
    message: String,
}

/// A check with no answer by then fails. Probes must answer promptly, and a
/// pool facing a database that is down retries connecting for its whole
/// acquire timeout (10 s) before giving up.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one check's query within [`CHECK_TIMEOUT`]; also returns its latency.
async fn bounded<T>(
    query: impl std::future::Future<Output = weft_store::Result<T>>,
) -> (Result<T, String>, f64) {
    let started = std::time::Instant::now();
    let result = match tokio::time::timeout(CHECK_TIMEOUT, query).await {
        Ok(result) => result.map_err(|err| err.to_string()),
        Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
    };
    (result, started.elapsed().as_secs_f64() * 1000.0)
}

async fn checks(state: &AppState) -> Vec<Check> {
    let ((ping, db_latency), (version, migrations_latency)) = tokio::join!(
        bounded(state.store().ping()),
        bounded(state.store().schema_version())
    );
    let database = Check {
        name: "database",
        ok: ping.is_ok(),
        latency_ms: db_latency,
        message: ping.err().unwrap_or_else(|| "reachable".to_owned()),
    };
    let expected = weft_store::Store::expected_schema_version();
    let (ok, message) = match version {
        Ok(v) if v >= expected => (true, format!("schema version {v}")),
        Ok(v) => (false, format!("schema version {v}, expected {expected}")),
        Err(err) => (false, err),
    };
    let migrations = Check {
        name: "migrations",
        ok,
        latency_ms: migrations_latency,
        message,
    };
    // The engine sweeps every `tick`; allow twice that, with a floor so a
    // slow database round does not flap readiness.
    let allowed_ms = (state.engine.config().tick.as_millis() as i64 * 2).max(5_000);
    let last = state.engine.last_tick_ms();
    let age = now_ms() - last;
    let engine = Check {
        name: "engine",
        ok: last > 0 && age <= allowed_ms,
        latency_ms: 0.0,
        message: if last == 0 {
            "engine has not completed a sweep yet".to_owned()
        } else {
            format!("last sweep {age} ms ago")
        },
    };
    vec![database, migrations, engine]
}

#[utoipa::path(get, path = "/health/ready", tag = "health", responses((status = 200, description = "Ready"), (status = 503, description = "A check fails")))]
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let checks = checks(&state).await;
    let failing: Vec<Value> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| json!({"name": c.name, "message": c.message}))
        .collect();
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "failing": failing})),
        )
    }
}

#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "Status, version, uptime and checks"), (status = 503, description = "Degraded")))]
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let checks = checks(&state).await;
    let ok = checks.iter().all(|c| c.ok);
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "version": state.config.version,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "checks": checks.iter().map(|c| json!({
            "name": c.name,
            "status": if c.ok { "ok" } else { "failing" },
            "latency_ms": (c.latency_ms * 1000.0).round() / 1000.0,
            "message": c.message,
        })).collect::<Vec<_>>(),
    });
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Weft", description = "Durable workflows you can see into"),
    paths(
        put_workflow,
        list_workflows,
        get_workflow,
        start_run,
        start_runs,
        list_runs,
        get_run,
        run_events,
        run_event_stream,
        run_logs,
        cancel_run,
        retry_run,
        approve_step,
        reject_step,
        poll,
        heartbeat,
        complete,
        fail,
        release,
        results,
        append_logs,
        live,
        ready,
        health
    )
)]
pub(crate) struct ApiDoc;

/// The OpenAPI document, generated from the handlers' annotations and the
/// `weft-api` types.
async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// The OpenAPI document as served: the generated one, plus what the
/// annotations cannot say. Every operation lists each error status it can
/// answer with the error schema (400 for malformed or out-of-range input,
/// 404, 408 and 413 for bodies, 500 and 503); the run status filter is an
/// enum and `since` either a date-time or a duration.
pub fn openapi_document() -> Value {
    use utoipa::OpenApi;
    let mut api = ApiDoc::openapi();
    api.merge(crate::diagnostics::DiagnosticsDoc::openapi());
    let mut doc = serde_json::to_value(api).expect("the document serializes");
    let statuses: Vec<Value> = RunStatus::ALL.iter().map(|s| json!(s.as_str())).collect();
    let causes: Vec<Value> = weft_core::diagnosis::Cause::ALL
        .iter()
        .map(|c| json!(c.as_str()))
        .collect();
    for (schema, property, bounds) in schema_bounds() {
        let Some(target) = doc
            .pointer_mut(&format!(
                "/components/schemas/{schema}/properties/{property}"
            ))
            .and_then(Value::as_object_mut)
        else {
            // A schema no route refers to is not in the document.
            continue;
        };
        for (key, value) in bounds.as_object().expect("bounds are an object") {
            target.insert(key.clone(), value.clone());
        }
    }
    let schemas_without_required: Vec<String> = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .map(|schemas| {
            schemas
                .iter()
                .filter(|(_, s)| s.get("required").is_none())
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (_method, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            let has_body = op.contains_key("requestBody");
            // An empty body reads as `{}`: optional when nothing in it is required.
            let body_ref = op
                .get("requestBody")
                .and_then(|b| b.pointer("/content/application~1json/schema/$ref"))
                .and_then(Value::as_str)
                .map(|r| r.trim_start_matches("#/components/schemas/").to_owned());
            if let Some(name) = body_ref
                && schemas_without_required.contains(&name)
                && let Some(body) = op.get_mut("requestBody")
            {
                body["required"] = json!(false);
            }
            let params = op
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let has_path_param = params.iter().any(|p| p["in"] == "path");
            for param in op
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                match (param["in"].as_str(), param["name"].as_str()) {
                    (Some("query"), Some("status")) => {
                        param["schema"] = json!({"type": "string", "enum": statuses});
                    }
                    (Some("query"), Some("cause")) => {
                        param["schema"] = json!({"type": "string", "enum": causes});
                    }
                    (Some("query"), Some("cursor")) => {
                        param["schema"] = json!({"type": "string", "pattern": CURSOR_PATTERN});
                    }
                    (Some("query"), Some("since")) => {
                        param["schema"] = json!({"oneOf": [
                            {"type": "string", "format": "date-time"},
                            {"type": "string", "pattern": SINCE_DURATION_PATTERN},
                        ]});
                    }
                    _ => {}
                }
            }
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let api = path.starts_with("/v1/");
            let mut add = |status: &str, description: &str| {
                responses.entry(status.to_owned()).or_insert_with(|| {
                    json!({
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                    })
                });
            };
            if api && (has_body || !params.is_empty()) {
                add(
                    "400",
                    "Malformed or out-of-range input: `invalid_json`, `invalid_path`, `invalid_query` or the field's own code",
                );
            }
            if api && has_path_param {
                add(
                    "404",
                    "No such resource, or no such route (`route_not_found`)",
                );
            }
            if has_body {
                add("408", "The body did not arrive in time (`request_timeout`)");
                add(
                    "413",
                    "The body is larger than `--max-body-bytes` (`payload_too_large`)",
                );
            }
            if api {
                add("500", "Unexpected server error (`internal`)");
                add("503", "The database is unavailable (`unavailable`)");
            }
        }
    }
    doc
}

/// The bounds of [`crate::limits`] on the request schemas' properties:
/// `(schema, property, constraints)`; `items` constrains a list's items.
fn schema_bounds() -> Vec<(&'static str, &'static str, Value)> {
    use limits::*;
    let name = json!({"type": "string", "minLength": 1, "maxLength": MAX_NAME_LEN, "pattern": NO_CONTROL_PATTERN});
    let timing = json!({"minimum": 0, "maximum": MAX_TIMING_MS});
    vec![
        (
            "StartRunRequest",
            "idempotency_key",
            json!({"minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LEN, "pattern": NO_CONTROL_PATTERN}),
        ),
        (
            "StartRunsRequest",
            "runs",
            json!({"minItems": 1, "maxItems": limits::MAX_RUNS_PER_START}),
        ),
        (
            "DecisionRequest",
            "message",
            json!({"maxLength": MAX_MESSAGE_LEN}),
        ),
        (
            "ReleaseRequest",
            "message",
            json!({"maxLength": MAX_MESSAGE_LEN}),
        ),
        (
            "PollRequest",
            "worker_id",
            json!({"minLength": 1, "maxLength": MAX_WORKER_ID_LEN, "pattern": NO_CONTROL_PATTERN}),
        ),
        (
            "PollRequest",
            "handlers",
            json!({"minItems": 1, "maxItems": MAX_HANDLERS_PER_POLL, "items": name}),
        ),
        (
            "PollRequest",
            "queues",
            json!({"minItems": 1, "maxItems": MAX_QUEUES_PER_POLL, "items": name}),
        ),
        (
            "PollRequest",
            "max_tasks",
            json!({"minimum": 1, "maximum": MAX_TASKS_PER_POLL}),
        ),
        (
            "PollRequest",
            "wait_ms",
            json!({"minimum": 0, "maximum": MAX_WAIT_MS}),
        ),
        (
            "PollRequest",
            "host",
            json!({"minLength": 1, "maxLength": MAX_NAME_LEN * 2, "pattern": NO_CONTROL_PATTERN}),
        ),
        (
            "PollRequest",
            "version",
            json!({"minLength": 1, "maxLength": MAX_NAME_LEN, "pattern": NO_CONTROL_PATTERN}),
        ),
        (
            "PollRequest",
            "pid",
            json!({"minimum": 1, "maximum": limits::MAX_PID}),
        ),
        (
            "PollRequest",
            "concurrency",
            json!({"minimum": 1, "maximum": limits::MAX_WORKER_CONCURRENCY}),
        ),
        ("WorkerTiming", "dispatch_ms", timing.clone()),
        ("WorkerTiming", "handler_ms", timing),
        (
            "TaskError",
            "message",
            json!({"maxLength": MAX_ERROR_MESSAGE_LEN}),
        ),
        (
            "TaskError",
            "kind",
            json!({"enum": ["handler_error", "timeout", "invalid_output", "cancelled", "no_handler", null]}),
        ),
        (
            "TaskResult",
            "lease_id",
            json!({"minLength": 1, "maxLength": MAX_LEASE_ID_LEN, "pattern": NO_CONTROL_PATTERN}),
        ),
        (
            "ResultsRequest",
            "results",
            json!({"maxItems": MAX_RESULTS_PER_BATCH}),
        ),
        (
            "LogsRequest",
            "lines",
            json!({"maxItems": MAX_LOG_LINES, "items": {"type": "string", "maxLength": MAX_LOG_LINE_LEN}}),
        ),
    ]
}

/// A run list's cursor: the `next_cursor` of a page, a run id (a UUID).
const CURSOR_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// What `since` accepts besides an RFC 3339 time: a duration back from now.
const SINCE_DURATION_PATTERN: &str = "^([0-9]{1,9}(ms|s|m|h|d))+$";

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::openapi_document;
    use crate::limits;

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                ops.push((path.clone(), method.clone(), op.clone()));
            }
        }
        ops
    }

    fn param<'a>(doc: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
    }

    /// Case 19: every status an operation can answer is documented with the
    /// error schema.
    #[test]
    fn every_operation_documents_its_error_statuses() {
        let doc = openapi_document();
        for (path, method, op) in operations(&doc) {
            if !path.starts_with("/v1/") {
                continue;
            }
            let responses = op["responses"].as_object().unwrap();
            let mut expected = vec!["500", "503"];
            if op.get("requestBody").is_some() || op.get("parameters").is_some() {
                expected.push("400");
            }
            if op.get("requestBody").is_some() {
                expected.extend(["408", "413"]);
            }
            if path.contains('{') {
                expected.push("404");
            }
            for status in expected {
                let response = responses
                    .get(status)
                    .unwrap_or_else(|| panic!("{method} {path} does not document {status}"));
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }

    /// Case 19: the bounds the server checks are the ones the document states.
    #[test]
    fn the_document_states_every_bound_the_server_checks() {
        let doc = openapi_document();
        let schema = |name: &str, field: &str| {
            doc.pointer(&format!("/components/schemas/{name}/properties/{field}"))
                .unwrap_or_else(|| panic!("no {name}.{field}"))
                .clone()
        };
        assert_eq!(
            schema("PollRequest", "handlers")["maxItems"],
            limits::MAX_HANDLERS_PER_POLL
        );
        assert_eq!(
            schema("PollRequest", "handlers")["items"]["maxLength"],
            limits::MAX_NAME_LEN
        );
        assert_eq!(
            schema("PollRequest", "queues")["maxItems"],
            limits::MAX_QUEUES_PER_POLL
        );
        assert_eq!(
            schema("PollRequest", "max_tasks")["maximum"],
            limits::MAX_TASKS_PER_POLL
        );
        assert_eq!(
            schema("PollRequest", "wait_ms")["maximum"],
            limits::MAX_WAIT_MS
        );
        assert_eq!(
            schema("PollRequest", "worker_id")["pattern"],
            limits::NO_CONTROL_PATTERN
        );
        assert_eq!(
            schema("StartRunsRequest", "runs")["maxItems"],
            limits::MAX_RUNS_PER_START
        );
        assert_eq!(
            schema("ResultsRequest", "results")["maxItems"],
            limits::MAX_RESULTS_PER_BATCH
        );
        assert_eq!(
            schema("LogsRequest", "lines")["maxItems"],
            limits::MAX_LOG_LINES
        );
        assert_eq!(
            schema("LogsRequest", "lines")["items"]["maxLength"],
            limits::MAX_LOG_LINE_LEN
        );
        assert_eq!(
            schema("TaskError", "message")["maxLength"],
            limits::MAX_ERROR_MESSAGE_LEN
        );
        assert_eq!(
            schema("WorkerTiming", "handler_ms")["maximum"],
            limits::MAX_TIMING_MS
        );
        assert_eq!(
            schema("StartRunRequest", "idempotency_key")["maxLength"],
            limits::MAX_IDEMPOTENCY_KEY_LEN
        );
        assert_eq!(
            schema("DecisionRequest", "message")["maxLength"],
            limits::MAX_MESSAGE_LEN
        );

        let limit = param(&doc, "/v1/runs", "get", "limit");
        assert_eq!(limit["schema"]["maximum"], limits::MAX_LIST_LIMIT);
        assert_eq!(limit["schema"]["minimum"], 1);
        let statuses: Vec<&str> = weft_core::RunStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            param(&doc, "/v1/runs", "get", "status")["schema"]["enum"],
            serde_json::json!(statuses)
        );
        let wait = param(&doc, "/v1/runs/{id}", "get", "wait_ms");
        assert_eq!(wait["schema"]["maximum"], limits::MAX_WAIT_MS);
        for (path, method) in [
            ("/v1/workflows/{name}", "get"),
            ("/v1/runs/{id}", "get"),
            ("/v1/worker/leases/{lease_id}/complete", "post"),
        ] {
            let p = &param(
                &doc,
                path,
                method,
                path.rsplit('{').next().unwrap().split('}').next().unwrap(),
            )["schema"];
            assert_eq!(p["maxLength"], limits::MAX_PATH_PARAM_LEN, "{path}");
            assert_eq!(p["pattern"], limits::NO_CONTROL_PATTERN, "{path}");
        }
        // Semantic manifest errors cannot be JSON Schema: their 400 says so.
        let put = &doc["paths"]["/v1/workflows/{name}"]["put"];
        let refused = put["responses"]["400"]["description"].as_str().unwrap();
        assert!(
            refused.contains("cycle") && refused.contains("invalid_when"),
            "{refused}"
        );
        let manifest = put["requestBody"]["description"].as_str().unwrap();
        assert!(
            manifest.contains("7d") && manifest.contains("2000 steps"),
            "{manifest}"
        );
        // An empty body reads as `{}`: optional exactly where nothing in it is required.
        assert_eq!(
            doc["paths"]["/v1/workflows/{name}/runs"]["post"]["requestBody"]["required"],
            false
        );
        assert_eq!(
            doc["paths"]["/v1/worker/poll"]["post"]["requestBody"]["required"],
            true
        );
    }
}
