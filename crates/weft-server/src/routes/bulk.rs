//! Bulk actions on a filtered list of runs: cancel or retry every run the
//! filter of `GET /v1/runs` matches and the action applies to, once the
//! caller's expected count is confirmed. Each run's action is its single
//! action (same state machine, same history events with the caller as
//! `actor`), one run after another.

use axum::{Extension, Json, extract::State, http::StatusCode};
use weft_api::{
    BulkActionRequest, BulkActionResponse, BulkRefusal, ErrorBody, ErrorDetail, MAX_BULK_RUNS,
};
use weft_core::RunStatus;
use weft_store::{Actor, RunFilter};

use super::ApiResult;
use crate::{
    ApiError, AppState,
    actor::Acting,
    auth::Principal,
    extract,
    limits::{self, Validate},
};

impl Validate for BulkActionRequest {
    fn validate(&self) -> ApiResult<()> {
        for (field, value) in [
            ("workflow", &self.workflow),
            ("status", &self.status),
            ("trace_id", &self.trace_id),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(value) = value {
                limits::check_text(
                    weft_core::ErrorCode::InvalidQuery,
                    field,
                    value,
                    0,
                    limits::MAX_QUERY_TEXT_LEN,
                )?;
            }
        }
        limits::check_range(
            weft_core::ErrorCode::InvalidExpected,
            "expected",
            self.expected,
            0,
            MAX_BULK_RUNS,
        )
    }
}

/// Which bulk action.
#[derive(Debug, Clone, Copy)]
enum Bulk {
    Cancel,
    Retry,
}

impl Bulk {
    /// The run statuses the action applies to.
    fn applies_to(self) -> [RunStatus; 2] {
        match self {
            Bulk::Cancel => [RunStatus::Pending, RunStatus::Running],
            Bulk::Retry => [RunStatus::Failed, RunStatus::Cancelled],
        }
    }
}

#[utoipa::path(post, path = "/v1/runs/cancel", tag = "runs", request_body = BulkActionRequest, responses((status = 200, body = BulkActionResponse, description = "Every matching pending or running run cancelled (a run that ended meanwhile is listed in `refused`)"), (status = 400, body = ErrorBody, description = "An invalid filter, or `too_many_runs`: more than 1000 runs match"), (status = 404, body = ErrorBody, description = "`workflow_not_found`: the filter names a workflow never registered"), (status = 409, body = ErrorBody, description = "`count_changed`: the number of matching runs is not `expected`; nothing was done")))]
pub(crate) async fn cancel_runs(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Acting(actor): Acting,
    extract::Json(request): extract::Json<BulkActionRequest>,
) -> ApiResult<Json<BulkActionResponse>> {
    bulk(&state, Bulk::Cancel, &caller, &actor, request)
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/v1/runs/retry", tag = "runs", request_body = BulkActionRequest, responses((status = 200, body = BulkActionResponse, description = "Every matching failed or cancelled run retried (a run retried meanwhile is listed in `refused`)"), (status = 400, body = ErrorBody, description = "An invalid filter, or `too_many_runs`: more than 1000 runs match"), (status = 404, body = ErrorBody, description = "`workflow_not_found`: the filter names a workflow never registered"), (status = 409, body = ErrorBody, description = "`count_changed`: the number of matching runs is not `expected`; nothing was done")))]
pub(crate) async fn retry_runs(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Acting(actor): Acting,
    extract::Json(request): extract::Json<BulkActionRequest>,
) -> ApiResult<Json<BulkActionResponse>> {
    bulk(&state, Bulk::Retry, &caller, &actor, request)
        .await
        .map(Json)
}

async fn bulk(
    state: &AppState,
    action: Bulk,
    caller: &Principal,
    actor: &Actor,
    request: BulkActionRequest,
) -> ApiResult<BulkActionResponse> {
    let runs = matching(state, action, caller, &request).await?;
    let matched = u32::try_from(runs.len()).unwrap_or(u32::MAX);
    if request.dry_run {
        return Ok(BulkActionResponse {
            matched,
            runs: runs.into_iter().map(crate::convert::run_summary).collect(),
            refused: Vec::new(),
        });
    }
    if matched != request.expected {
        return Err(ApiError::Other {
            status: StatusCode::CONFLICT,
            code: weft_core::ErrorCode::CountChanged,
            message: format!(
                "{matched} runs match now, not the {} expected: nothing was done; count again",
                request.expected
            ),
        });
    }
    let store = state.store();
    let mut answer = BulkActionResponse {
        matched,
        ..BulkActionResponse::default()
    };
    for id in runs.into_iter().map(|r| r.run_id) {
        let done = match action {
            Bulk::Cancel => store.cancel_run_as(id, actor).await,
            Bulk::Retry => store.retry_run_as(id, actor).await,
        };
        match done {
            Ok(run) => answer.runs.push(crate::convert::run_summary(run)),
            Err(
                err @ (weft_store::Error::Conflict { .. } | weft_store::Error::NotFound { .. }),
            ) => {
                let err = ApiError::from(err);
                answer.refused.push(BulkRefusal {
                    run_id: id.to_string(),
                    error: ErrorDetail {
                        code: err.code().as_str().to_owned(),
                        message: err.to_string(),
                    },
                });
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(answer)
}

/// The runs the filter matches and the action applies to, newest first;
/// more than [`MAX_BULK_RUNS`] is 400 `too_many_runs`.
async fn matching(
    state: &AppState,
    action: Bulk,
    caller: &Principal,
    request: &BulkActionRequest,
) -> ApiResult<Vec<weft_store::RunInfo>> {
    let store = state.store();
    // The metadata filters of `GET /v1/runs`, with its rule on sensitive keys.
    let metadata = crate::metadata::body_filters(
        &request.metadata,
        &state.config.redactor,
        crate::present::redacts(&state.config, caller),
    )?;
    let now = store.now_ms();
    let status = match request.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
            let known: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(
                weft_core::ErrorCode::InvalidStatus,
                format!("unknown run status `{text}` (one of {})", known.join(", ")),
            )
        })?),
    };
    let time = |text: &Option<String>| -> ApiResult<Option<i64>> {
        match text.as_deref().filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(text) => super::runs::parse_since(text, now).map(Some),
        }
    };
    let since_ms = time(&request.since)?;
    // Run ids are UUIDv7: "created before" is "run id below" that instant's
    // smallest id, the key range a cursor walks.
    let until = time(&request.until)?.map(weft_core::RunId::floor);
    let empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    // A workflow that was never registered is a typo, not "nothing matched".
    if let Some(workflow) = empty(&request.workflow) {
        store.get_workflow(&workflow, None).await?;
    }
    let trace_id = empty(&request.trace_id)
        .as_deref()
        .map(super::runs::trace_filter)
        .transpose()?;
    let mut runs = Vec::new();
    for applies in action.applies_to() {
        if status.is_some_and(|s| s != applies) {
            continue;
        }
        let mut cursor = until;
        loop {
            let page = store
                .list_runs(&RunFilter {
                    workflow: empty(&request.workflow),
                    status: Some(applies),
                    trace_id,
                    since_ms,
                    // `until` is the starting cursor above.
                    until_ms: None,
                    metadata: metadata.clone(),
                    limit: Some(MAX_BULK_RUNS),
                    cursor,
                })
                .await?;
            runs.extend(page.runs);
            if runs.len() > MAX_BULK_RUNS as usize {
                return Err(ApiError::bad_request(
                    weft_core::ErrorCode::TooManyRuns,
                    format!(
                        "more than {MAX_BULK_RUNS} runs match: narrow the filter (workflow, status, time range) or act in several calls"
                    ),
                ));
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    runs.sort_unstable_by_key(|r| std::cmp::Reverse(r.run_id));
    Ok(runs)
}
