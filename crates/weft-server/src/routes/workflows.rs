//! Workflow definitions: register, list and read versions.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Deserialize;
use weft_api::{ErrorBody, PutWorkflowResponse, WorkflowDetail, WorkflowList};
use weft_core::Definition;
use weft_core::ErrorCode;

use super::ApiResult;
use crate::{
    ApiError, AppState,
    actor::Acting,
    extract::{self, Path, Query},
    limits::{self, Validate},
};

impl Validate for WorkflowQuery {
    fn validate(&self) -> ApiResult<()> {
        if let Some(version) = self.version {
            limits::check_range(ErrorCode::InvalidVersion, "version", version, 1, i64::MAX)?;
        }
        Ok(())
    }
}

// ---- workflows ----

#[utoipa::path(put, path = "/v1/workflows/{name}", tag = "workflows", params(("name" = String, Path, description = "Workflow name; a `/` in it is sent as %2F", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), request_body(content = String, description = "The manifest, YAML or JSON. Ranges: `timeout` 1ms to 7d (an approval's 1ms to 365d, with `on_timeout` `reject` or `approve`), `heartbeat_timeout` 1ms to 1d, a sleep's `duration` 1ms to 365d, `retry.initial` up to 1d, `retry.max` up to 7d, `retry.max_attempts` 1 to 1000, `retry.multiplier` 1 to 10, at most 2000 steps, names 1 to 128 characters of letters, digits, `.`, `_`, `-`, `/`, `description` up to 4096 characters.", content_type = "application/yaml"), responses((status = 201, body = PutWorkflowResponse, description = "A new version"), (status = 200, body = PutWorkflowResponse, description = "Unchanged"), (status = 400, body = ErrorBody, description = "The manifest is not a valid workflow, with the code and path of the first error: invalid_manifest, missing_field, unknown_field, invalid_type, invalid_name, invalid_duration (out of its documented range), invalid_retry, invalid_value, too_many_steps, duplicate_step, unknown_dependency, duplicate_dependency, cycle, invalid_when, name_mismatch. Most of these (cycles, dependencies, CEL) cannot be stated in JSON Schema."), (status = 413, body = ErrorBody)))]
pub(crate) async fn put_workflow(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Acting(actor): Acting,
    request: axum::extract::Request,
) -> ApiResult<impl IntoResponse> {
    let body = extract::body_bytes(request, &state).await?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::bad_request(ErrorCode::InvalidManifest, "manifest is not UTF-8 text")
    })?;
    let def = Definition::parse(text)?;
    if def.name != name {
        return Err(ApiError::bad_request(
            ErrorCode::NameMismatch,
            format!(
                "the manifest names workflow `{}` but the URL names `{name}`",
                def.name
            ),
        ));
    }
    let response = state.store().put_workflow_as(&def, &actor).await?;
    let status = if response.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(crate::convert::registered(response))))
}

#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", responses((status = 200, body = WorkflowList)))]
pub(crate) async fn list_workflows(State(state): State<AppState>) -> ApiResult<Json<WorkflowList>> {
    Ok(Json(WorkflowList {
        workflows: state
            .store()
            .list_workflows()
            .await?
            .into_iter()
            .map(crate::convert::workflow_summary)
            .collect(),
    }))
}

#[derive(Deserialize)]
pub(crate) struct WorkflowQuery {
    version: Option<i64>,
}

#[utoipa::path(get, path = "/v1/workflows/{name}", tag = "workflows", params(("name" = String, Path, description = "Workflow name; a `/` in it is sent as %2F", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("version" = Option<i64>, Query, minimum = 1)), responses((status = 200, body = WorkflowDetail), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_workflow(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<WorkflowQuery>,
) -> ApiResult<Json<WorkflowDetail>> {
    let version = state.store().get_workflow(&name, query.version).await?;
    Ok(Json(crate::convert::workflow_detail(version)))
}
