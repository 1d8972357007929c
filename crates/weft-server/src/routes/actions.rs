//! Actions people take on a run: cancel, retry, approve and reject.

use axum::{Json, extract::State};
use weft_api::{DecisionRequest, ErrorBody, RunSummary};

use super::ApiResult;
use crate::{
    AppState,
    actor::Acting,
    convert,
    extract::{self, Path},
};

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Acting(actor): Acting,
) -> ApiResult<Json<RunSummary>> {
    let id = crate::extract::run_ref(&id)?;
    Ok(Json(convert::run_summary(
        state.store().cancel_run_as(&id, &actor).await?,
    )))
}

#[utoipa::path(post, path = "/v1/runs/{id}/retry", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn retry_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Acting(actor): Acting,
) -> ApiResult<Json<RunSummary>> {
    let id = crate::extract::run_ref(&id)?;
    Ok(Json(convert::run_summary(
        state.store().retry_run_as(&id, &actor).await?,
    )))
}

#[utoipa::path(post, path = "/v1/runs/{id}/steps/{step}/approve", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("step" = String, Path, description = "Step name", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body = DecisionRequest, responses((status = 200, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn approve_step(
    State(state): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    Acting(actor): Acting,
    extract::Json(request): extract::Json<DecisionRequest>,
) -> ApiResult<Json<RunSummary>> {
    let id = crate::extract::run_ref(&id)?;
    Ok(Json(convert::run_summary(
        state
            .store()
            .decide_as(&id, &step, true, request.into_comment(), &actor)
            .await?,
    )))
}

#[utoipa::path(post, path = "/v1/runs/{id}/steps/{step}/reject", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("step" = String, Path, description = "Step name", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body = DecisionRequest, responses((status = 200, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn reject_step(
    State(state): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    Acting(actor): Acting,
    extract::Json(request): extract::Json<DecisionRequest>,
) -> ApiResult<Json<RunSummary>> {
    let id = crate::extract::run_ref(&id)?;
    Ok(Json(convert::run_summary(
        state
            .store()
            .decide_as(&id, &step, false, request.into_comment(), &actor)
            .await?,
    )))
}
