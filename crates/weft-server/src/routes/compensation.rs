//! Operators' actions on a run's saga compensation: skipping a failed undo.

use axum::{Json, extract::State};
use weft_api::{DecisionRequest, ErrorBody, RunSummary};

use super::ApiResult;
use crate::{
    AppState,
    actor::Acting,
    extract::{self, Path},
};

/// Marks the failed compensation (undo) of a step as skipped, recorded as a
/// `compensation.skipped` event with the actor and `comment`: when no other
/// undo failed, the run ends `compensated`. 409 `no_failed_compensation`
/// unless the step's undo failed for good.
#[utoipa::path(post, path = "/v1/runs/{id}/steps/{step}/compensation/skip", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("step" = String, Path, description = "Step name", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body = DecisionRequest, responses((status = 200, body = RunSummary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn skip_compensation(
    State(state): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    Acting(actor): Acting,
    extract::Json(request): extract::Json<DecisionRequest>,
) -> ApiResult<Json<RunSummary>> {
    let id = crate::extract::run_ref(&id)?;
    Ok(Json(crate::convert::run_summary(
        state
            .store()
            .skip_compensation_as(&id, &step, request.into_comment(), &actor)
            .await?,
    )))
}
