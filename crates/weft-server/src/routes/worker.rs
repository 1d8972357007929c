//! The worker protocol: long poll, heartbeats, results, releases and logs.

use std::time::Duration;

use axum::{Extension, Json, extract::State};
use weft_api::{
    Ack, CompleteRequest, ErrorBody, ErrorDetail, FailRequest, HeartbeatResponse, LogsRequest,
    PollRequest, PollResponse, ReleaseRequest, ResultAnswer, ResultsRequest, ResultsResponse,
    TaskError, WorkerTiming,
};
use weft_core::{ErrorCode, Reason};
use weft_store::{ClaimRequest, FailReport, Outcome, Recorded, WorkerResult};

use super::ApiResult;
use crate::{
    ApiError, AppState,
    auth::Principal,
    extract::{self, Path},
};

// ---- worker protocol ----

#[utoipa::path(post, path = "/v1/worker/poll", tag = "worker", request_body = PollRequest, responses((status = 200, body = PollResponse), (status = 400, body = ErrorBody)))]
pub(crate) async fn poll(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    extract::Json(request): extract::Json<PollRequest>,
) -> ApiResult<Json<PollResponse>> {
    // Bounds and identifiers were checked by the extractor (`limits.rs`).
    caller.check_queues(&request.queues)?;
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
        token_id: caller.token_id.clone(),
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
    Ok(Json(PollResponse {
        tasks: polled?.into_iter().map(crate::convert::task).collect(),
    }))
}

#[utoipa::path(post, path = "/v1/worker/leases/{lease_id}/heartbeat", tag = "worker", params(("lease_id" = String, Path, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, body = HeartbeatResponse), (status = 409, body = ErrorBody, description = "The lease is no longer held")))]
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(lease_id): Path<String>,
) -> ApiResult<Json<HeartbeatResponse>> {
    caller.check_lease(state.store(), &lease_id).await?;
    let beat = state.store().heartbeat(&lease_id).await?;
    Ok(Json(crate::convert::heartbeat(beat)))
}

#[utoipa::path(post, path = "/v1/worker/leases/{lease_id}/complete", tag = "worker", params(("lease_id" = String, Path, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body = CompleteRequest, responses((status = 200, body = Ack, description = "Applied; `already_applied` when this lease's same result had been applied before (an earlier answer was lost). An output over `Task.max_output_bytes` is applied as a permanent failure, reason `invalid_output`"), (status = 409, body = ErrorBody, description = "Stale lease: nothing changed"), (status = 413, body = ErrorBody, description = "`payload_too_large`: the body is over the server's limit")))]
pub(crate) async fn complete(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(lease_id): Path<String>,
    extract::Json(request): extract::Json<CompleteRequest>,
) -> ApiResult<Json<Ack>> {
    caller.check_lease(state.store(), &lease_id).await?;
    let received = state.store().now_ms();
    let recorded = state
        .store()
        .complete(
            &lease_id,
            request.output,
            crate::convert::reported_timing(request.timing),
            received,
        )
        .await?;
    Ok(Json(Ack {
        ok: true,
        already_applied: recorded == Recorded::AlreadyApplied,
    }))
}

#[utoipa::path(post, path = "/v1/worker/leases/{lease_id}/fail", tag = "worker", params(("lease_id" = String, Path, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body = FailRequest, responses((status = 200, body = Ack, description = "Applied; `already_applied` when this lease's same failure had been applied before"), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody, description = "Stale lease: nothing changed")))]
pub(crate) async fn fail(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(lease_id): Path<String>,
    extract::Json(request): extract::Json<FailRequest>,
) -> ApiResult<Json<Ack>> {
    caller.check_lease(state.store(), &lease_id).await?;
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
pub(crate) async fn release(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(lease_id): Path<String>,
    extract::Json(request): extract::Json<ReleaseRequest>,
) -> ApiResult<Json<Ack>> {
    caller.check_lease(state.store(), &lease_id).await?;
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
    let timing = crate::convert::reported_timing(timing);
    let reason = match error.kind.as_deref() {
        None | Some("handler_error") => Reason::HandlerError,
        Some("timeout") => Reason::Timeout,
        Some("invalid_output") => Reason::InvalidOutput,
        Some("cancelled") => Reason::Cancelled,
        Some("no_handler") => Reason::NoHandler,
        Some(other) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidErrorKind,
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

/// Several attempts' results in one transaction. Each is answered as its
/// own `complete`/`fail` call would have been (`status`, `error`); a bad
/// entry fails the whole request with 400 and changes nothing.
#[utoipa::path(post, path = "/v1/worker/results", tag = "worker", request_body = ResultsRequest, responses((status = 200, body = ResultsResponse), (status = 400, body = ErrorBody)))]
pub(crate) async fn results(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    extract::Json(request): extract::Json<ResultsRequest>,
) -> ApiResult<Json<ResultsResponse>> {
    let received = state.store().now_ms();
    let mut batch = Vec::with_capacity(request.results.len());
    let lease_ids_order: Vec<String> = request.results.iter().map(|r| r.lease_id.clone()).collect();
    for result in request.results {
        let outcome = match result.error {
            Some(error) => Outcome::Failed(fail_report(error, result.timing.clone())?),
            None => Outcome::Completed(result.output),
        };
        batch.push(WorkerResult {
            lease_id: result.lease_id,
            outcome,
            timing: crate::convert::reported_timing(result.timing),
            received_ms: received,
        });
    }
    // Results for leases claimed with another token are answered 403 each,
    // as their single calls would be, and not applied; the answers keep the
    // request's order.
    let lease_ids: Vec<&str> = batch.iter().map(|r| r.lease_id.as_str()).collect();
    let foreign = caller.foreign_leases(state.store(), &lease_ids).await?;
    let (refused, batch): (Vec<WorkerResult>, Vec<WorkerResult>) = batch
        .into_iter()
        .partition(|r| foreign.contains(&r.lease_id));
    let applied = state.store().finish_batch(&batch).await?;
    let mut answers: Vec<ResultAnswer> = batch
        .into_iter()
        .zip(applied)
        .map(|(result, answer)| match answer {
            Ok(recorded) => ResultAnswer {
                lease_id: result.lease_id,
                status: 200,
                already_applied: recorded == Recorded::AlreadyApplied,
                error: None,
            },
            Err(err) => error_answer(result.lease_id, ApiError::from(err)),
        })
        .collect();
    answers.extend(refused.into_iter().map(|result| {
        let err = Principal::foreign_lease(&result.lease_id);
        error_answer(result.lease_id, err)
    }));
    let position = |lease_id: &str| lease_ids_order.iter().position(|id| id == lease_id);
    answers.sort_by_key(|answer| position(&answer.lease_id));
    let results = answers;
    Ok(Json(ResultsResponse { results }))
}

/// A refused item's answer, as its single call's error would be.
fn error_answer(lease_id: String, err: ApiError) -> ResultAnswer {
    ResultAnswer {
        lease_id,
        status: err.status().as_u16(),
        already_applied: false,
        error: Some(ErrorDetail {
            code: err.code().as_str().to_owned(),
            message: err.to_string(),
        }),
    }
}

#[utoipa::path(post, path = "/v1/worker/leases/{lease_id}/logs", tag = "worker", params(("lease_id" = String, Path, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body = LogsRequest, responses((status = 200, body = Ack), (status = 409, body = ErrorBody)))]
pub(crate) async fn append_logs(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(lease_id): Path<String>,
    extract::Json(request): extract::Json<LogsRequest>,
) -> ApiResult<Json<Ack>> {
    caller.check_lease(state.store(), &lease_id).await?;
    state.store().append_logs(&lease_id, &request.lines).await?;
    Ok(Json(Ack {
        ok: true,
        already_applied: false,
    }))
}
