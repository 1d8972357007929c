//! Runs: start (one or a batch), list, read, history and step logs.

use std::time::Duration;

use axum::{
    Extension, Json,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode},
};
use serde::Deserialize;
use weft_api::{
    ErrorBody, EventList, LogList, RunDetail, RunList, StartRunRequest, StartRunResponse,
    StartRunsRequest, StartRunsResponse,
};
use weft_core::ErrorCode;
use weft_core::RunStatus;
use weft_store::{Actor, NewRun, RunFilter};

use super::ApiResult;
use crate::present::{RunPresenter, redacts, redacts_for, trace_url};
use crate::{
    ApiError, AppState,
    actor::Acting,
    auth::Principal,
    convert,
    extract::{self, Path, Query},
    limits::{self, Validate},
    request_id,
};

impl Validate for ListRunsQuery {
    fn validate(&self) -> ApiResult<()> {
        for (field, value) in [
            ("workflow", &self.workflow),
            ("trace_id", &self.trace_id),
            ("since", &self.since),
            ("until", &self.until),
            ("cursor", &self.cursor),
            ("status", &self.status),
        ] {
            if let Some(value) = value {
                limits::check_text(
                    ErrorCode::InvalidQuery,
                    field,
                    value,
                    0,
                    limits::MAX_QUERY_TEXT_LEN,
                )?;
            }
        }
        if let Some(limit) = self.limit {
            limits::check_range(
                ErrorCode::InvalidLimit,
                "limit",
                limit,
                1,
                limits::MAX_LIST_LIMIT,
            )?;
        }
        Ok(())
    }
}

impl Validate for GetRunQuery {
    fn validate(&self) -> ApiResult<()> {
        if let Some(ms) = self.wait_ms {
            limits::check_range(
                ErrorCode::InvalidWait,
                "wait_ms",
                ms,
                0,
                limits::MAX_WAIT_MS,
            )?;
        }
        Ok(())
    }
}

impl Validate for EventsQuery {
    fn validate(&self) -> ApiResult<()> {
        if let Some(after) = self.after {
            limits::check_range(ErrorCode::InvalidQuery, "after", after, 0, i64::MAX)?;
        }
        if let Some(limit) = self.limit {
            limits::check_range(
                ErrorCode::InvalidLimit,
                "limit",
                limit,
                1,
                weft_store::MAX_HISTORY_PAGE,
            )?;
        }
        Ok(())
    }
}

impl Validate for LogsQuery {
    fn validate(&self) -> ApiResult<()> {
        if let Some(after) = self.after {
            limits::check_range(ErrorCode::InvalidQuery, "after", after, 0, i64::MAX)?;
        }
        if let Some(limit) = self.limit {
            limits::check_range(
                ErrorCode::InvalidLimit,
                "limit",
                limit,
                1,
                weft_store::MAX_LOG_PAGE,
            )?;
        }
        if let Some(step) = &self.step {
            limits::check_text(
                ErrorCode::InvalidQuery,
                "step",
                step,
                1,
                limits::MAX_PATH_PARAM_LEN,
            )?;
        }
        Ok(())
    }
}

// ---- runs ----

#[utoipa::path(post, path = "/v1/workflows/{name}/runs", tag = "runs", params(("name" = String, Path, description = "Workflow name; a `/` in it is sent as %2F", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("traceparent" = Option<String>, Header, description = "W3C trace context: the run joins this trace"), ("baggage" = Option<String>, Header, description = "W3C baggage, handed to every attempt's worker")), request_body = StartRunRequest, responses((status = 202, body = StartRunResponse, description = "Started, or the run its idempotency key already started with an equal input (`created: false`)"), (status = 400, body = ErrorBody, description = "Invalid input, or a name or key with control characters"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "`idempotency_key_reused`: the key already started a run with a different input (compared as canonical JSON, key order ignored)")))]
pub(crate) async fn start_run(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Acting(actor): Acting,
    headers: HeaderMap,
    body: Result<extract::Json<StartRunRequest>, ApiError>,
) -> ApiResult<(StatusCode, Json<StartRunResponse>)> {
    let caller = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(weft_core::trace::parse_traceparent);
    let Some(tracing) = &state.config.tracing else {
        return start_run_in(&state, name, actor, &headers, body, caller, None).await;
    };
    // The live server span: the run joins the trace under it.
    let span = tracing.server_span(
        caller.as_ref(),
        "POST",
        START_RUN_ROUTE,
        request_id(&headers).as_deref(),
    );
    let (parent, trace_id) = (span.trace_parent(), span.trace_id());
    let result = start_run_in(&state, name, actor, &headers, body, parent, trace_id).await;
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
    actor: Actor,
    headers: &HeaderMap,
    body: Result<extract::Json<StartRunRequest>, ApiError>,
    parent: Option<weft_core::trace::TraceParent>,
    trace_id: Option<weft_core::TraceId>,
) -> ApiResult<(StatusCode, Json<StartRunResponse>)> {
    let extract::Json(request) = body?;
    let baggage = baggage(headers);
    let started = state
        .store()
        .start_run(NewRun {
            workflow: name,
            input: request.input,
            idempotency_key: request.idempotency_key,
            metadata: request.metadata,
            parent,
            trace_id,
            baggage,
            request_id: request_id(headers),
            actor: Some(actor),
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(crate::convert::started_run(started)),
    ))
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
pub(crate) async fn start_runs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Acting(actor): Acting,
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
            metadata: run.metadata,
            parent,
            trace_id: None,
            baggage: baggage.clone(),
            request_id: request_id.clone(),
            actor: Some(actor.clone()),
        });
    }
    let runs = state
        .store()
        .start_runs_all_or_none(&batch)
        .await?
        .into_iter()
        .map(crate::convert::started_run)
        .collect();
    Ok((StatusCode::ACCEPTED, Json(StartRunsResponse { runs })))
}

#[derive(Deserialize)]
pub(crate) struct ListRunsQuery {
    workflow: Option<String>,
    status: Option<String>,
    trace_id: Option<String>,
    /// RFC 3339 time, or a duration back from now such as `1h`.
    since: Option<String>,
    /// Like `since`: only runs created before it.
    until: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", description = "Runs newest first, one page at a time. Every filter given must hold (AND), including any number (at most 16) of metadata filters `meta.<key>=<value>` (for example `?meta.customer=42`): runs started with that metadata key and value. A metadata key is 1 to 64 letters, digits, `_`, `.` or `-`; a value at most 256 characters; callers shown redacted data cannot filter on a sensitive key (400 `invalid_metadata`).", params(("workflow" = Option<String>, Query, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("status" = Option<String>, Query), ("trace_id" = Option<String>, Query, min_length = 32, max_length = 32, pattern = "^[0-9a-f]*[1-9a-f][0-9a-f]*$", description = "The run's trace id: 32 lowercase hex digits, not all zero (400 `invalid_trace_id` otherwise)"), ("since" = Option<String>, Query, description = "Created at or after: RFC 3339 time, or a duration back from now (`90s`, `1h30m`)"), ("until" = Option<String>, Query, description = "Created before: RFC 3339 time, or a duration back from now (`90s`, `1h30m`)"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000), ("cursor" = Option<String>, Query, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$", description = "The `next_cursor` of the previous page (400 `invalid_cursor` for any other text)")), responses((status = 200, body = RunList), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_runs(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    RawQuery(raw): RawQuery,
    Query(query): Query<ListRunsQuery>,
) -> ApiResult<Json<RunList>> {
    let status = match &query.status {
        None => None,
        Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
            let known: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(
                ErrorCode::InvalidStatus,
                format!("unknown run status `{text}` (one of {})", known.join(", ")),
            )
        })?),
    };
    let now = state.store().now_ms();
    let since_ms = match &query.since {
        None => None,
        Some(text) => Some(parse_since(text, now)?),
    };
    let until_ms = match &query.until {
        None => None,
        Some(text) => Some(parse_time(weft_core::ErrorCode::InvalidUntil, text, now)?),
    };
    let redacted = redacts(&state.config, &caller);
    let metadata = crate::metadata::filters(raw.as_deref(), &state.config.redactor, redacted)?;
    let filter = RunFilter {
        workflow: query.workflow,
        status,
        trace_id: query.trace_id.as_deref().map(trace_filter).transpose()?,
        since_ms,
        until_ms,
        metadata,
        limit: query.limit,
        cursor: query
            .cursor
            .as_deref()
            .map(|cursor| {
                cursor.parse().map_err(|_| {
                    ApiError::bad_request(
                        ErrorCode::InvalidCursor,
                        format!("`{cursor}` is not a cursor from this API"),
                    )
                })
            })
            .transpose()?,
    };
    let mut list = convert::run_list(state.store().list_runs(&filter).await?);
    if redacted {
        for run in &mut list.runs {
            crate::metadata::redact(&state.config.redactor, &mut run.metadata);
        }
    }
    Ok(Json(list))
}

/// A `trace_id` filter: 32 lowercase hex digits, not all zero (W3C Trace
/// Context), else 400 `invalid_trace_id`.
pub(super) fn trace_filter(text: &str) -> ApiResult<weft_core::TraceId> {
    text.parse().map_err(|err: weft_core::IdError| {
        ApiError::bad_request(ErrorCode::InvalidTraceId, err.to_string())
    })
}

pub(super) fn parse_since(text: &str, now_ms: i64) -> ApiResult<i64> {
    parse_time(ErrorCode::InvalidSince, text, now_ms)
}

/// An RFC 3339 time, or a duration back from `now_ms` (`1h30m`), as epoch
/// ms; `code` names the parameter in the 400.
pub(super) fn parse_time(code: ErrorCode, text: &str, now_ms: i64) -> ApiResult<i64> {
    if let Some(ms) = weft_store::parse_rfc3339(text) {
        return Ok(ms);
    }
    let invalid = || {
        ApiError::bad_request(
            code,
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
pub(crate) struct GetRunQuery {
    /// Hold the request until the run has ended, at most this long.
    wait_ms: Option<u64>,
    /// Answer redacted even where the caller's role would see clear data.
    redact: Option<bool>,
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("wait_ms" = Option<u64>, Query, minimum = 0, maximum = 60000, description = "Answer once the run has ended, or after this many milliseconds (at most 60000)"), ("redact" = Option<bool>, Query, description = "Answer redacted even where the caller's role sees clear data (viewers and operators always get redacted data; admins with `--redact-api`)")), responses((status = 200, body = RunDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody, description = "`corrupt_row`: a stored row of the run does not decode; the message names the column and run")))]
pub(crate) async fn get_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    Query(query): Query<GetRunQuery>,
) -> ApiResult<Json<RunDetail>> {
    let id = crate::extract::run_ref(&id)?;
    let mut run = convert::run_detail(match query.wait_ms {
        None | Some(0) => state.store().get_run(&id).await?,
        Some(ms) => {
            state
                .store()
                .wait_run(&id, Duration::from_millis(ms))
                .await?
        }
    });
    run.trace_url = trace_url(state.config.trace_url_template.as_deref(), &run.trace_id);
    if redacts_for(&state.config, &caller, query.redact) {
        let presenter = RunPresenter::new(&state.config.redactor, &run);
        presenter.run(&mut run);
    }
    Ok(Json(run))
}

/// The events `GET /v1/runs/{id}/events` answers without a `limit`: the
/// most it allows, so a history of up to that many events reads as before.
const DEFAULT_EVENTS_LIMIT: u32 = weft_store::MAX_HISTORY_PAGE;

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    after: Option<i64>,
    /// The most events answered (1 to 1000, default 1000).
    limit: Option<u32>,
    /// Answer redacted even where the caller's role would see clear data.
    redact: Option<bool>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", description = "A run's history in `seq` order, one page at a time: at most `limit` events after `after`. When more events follow the page, `next_after` is the `seq` to pass as `after` for the next page; it is `null` on the last page (a run still going may write more later).", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("after" = Option<i64>, Query, minimum = 0, description = "Only events after this `seq` (the previous page's `next_after`)"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "The most events answered: 1 to 1000, default 1000 (400 `invalid_limit` outside that)"), ("redact" = Option<bool>, Query, description = "Answer redacted even where the caller's role sees clear data")), responses((status = 200, body = EventList), (status = 400, body = ErrorBody, description = "`invalid_limit` or `invalid_query`"), (status = 404, body = ErrorBody)))]
pub(crate) async fn run_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> ApiResult<Json<EventList>> {
    let id = crate::extract::run_ref(&id)?;
    let page = state
        .store()
        .run_history_page(
            &id,
            weft_store::HistoryFrom::After(query.after.unwrap_or(0)),
            query.limit.unwrap_or(DEFAULT_EVENTS_LIMIT),
        )
        .await?;
    let next_after = page.has_newer.then(|| page.last_seq()).flatten();
    let mut events = convert::events(page.events);
    if redacts_for(&state.config, &caller, query.redact) {
        // The run's data names the secrets to mask in the events' text.
        let run = convert::run_detail(state.store().get_run(&id).await?);
        RunPresenter::new(&state.config.redactor, &run).events(&mut events);
    }
    Ok(Json(EventList { events, next_after }))
}

#[derive(Deserialize)]
pub(crate) struct LogsQuery {
    step: Option<String>,
    /// Only lines after this `seq`.
    after: Option<i64>,
    /// The most lines answered (1 to 1000, default 1000).
    limit: Option<u32>,
    /// Answer redacted even where the caller's role would see clear data.
    redact: Option<bool>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/logs", tag = "runs", description = "A run's step log lines in `seq` order, one page at a time: at most `limit` lines after `after`. When more lines follow the page, `next_after` is the `seq` to pass as `after` for the next page; it is `null` on the last page.", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("step" = Option<String>, Query, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("after" = Option<i64>, Query, minimum = 0, description = "Only lines after this `seq` (the previous page's `next_after`)"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "The most lines answered: 1 to 1000, default 1000 (400 `invalid_limit` outside that)"), ("redact" = Option<bool>, Query, description = "Answer redacted even where the caller's role sees clear data")), responses((status = 200, body = LogList), (status = 400, body = ErrorBody, description = "`invalid_limit` or `invalid_query`"), (status = 404, body = ErrorBody)))]
pub(crate) async fn run_logs(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    Query(query): Query<LogsQuery>,
) -> ApiResult<Json<LogList>> {
    let id = crate::extract::run_ref(&id)?;
    let page = state
        .store()
        .run_logs_page(
            &id,
            query.step.as_deref(),
            query.after.unwrap_or(0),
            query.limit.unwrap_or(weft_store::MAX_LOG_PAGE),
        )
        .await?;
    let next_after = page
        .has_newer
        .then(|| page.lines.last().map(|l| l.seq))
        .flatten();
    let mut lines = convert::log_lines(page.lines);
    if redacts_for(&state.config, &caller, query.redact) {
        let run = convert::run_detail(state.store().get_run(&id).await?);
        RunPresenter::new(&state.config.redactor, &run).logs(&mut lines);
    }
    Ok(Json(LogList { lines, next_after }))
}
