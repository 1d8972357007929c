//! The HTTP surface: every route of the API, the worker protocol, health and
//! the dashboard, registered in one table; the handlers live beside it by concern.

use axum::{
    Router,
    routing::{get, post, put},
};

use crate::{ApiError, AppState};
mod actions;
mod health;
mod openapi;
mod runs;
mod stream;
mod worker;
mod workflows;

pub(crate) use health::exposition_endpoint;
pub use openapi::openapi_document;

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workflows", get(workflows::list_workflows))
        .route(
            "/v1/workflows/{name}",
            put(workflows::put_workflow).get(workflows::get_workflow),
        )
        .route("/v1/workflows/{name}/runs", post(runs::start_run))
        .route("/v1/workflows/{name}/runs/batch", post(runs::start_runs))
        .route("/v1/runs", get(runs::list_runs))
        .route("/v1/runs/{id}", get(runs::get_run))
        .route("/v1/runs/{id}/events", get(runs::run_events))
        .route("/v1/runs/{id}/events/stream", get(stream::run_event_stream))
        .route("/v1/runs/{id}/logs", get(runs::run_logs))
        .route("/v1/runs/{id}/cancel", post(actions::cancel_run))
        .route("/v1/runs/{id}/retry", post(actions::retry_run))
        .route(
            "/v1/runs/{id}/steps/{step}/approve",
            post(actions::approve_step),
        )
        .route(
            "/v1/runs/{id}/steps/{step}/reject",
            post(actions::reject_step),
        )
        .route("/v1/worker/poll", post(worker::poll))
        .route(
            "/v1/worker/leases/{lease_id}/heartbeat",
            post(worker::heartbeat),
        )
        .route(
            "/v1/worker/leases/{lease_id}/complete",
            post(worker::complete),
        )
        .route("/v1/worker/leases/{lease_id}/fail", post(worker::fail))
        .route(
            "/v1/worker/leases/{lease_id}/release",
            post(worker::release),
        )
        .route(
            "/v1/worker/leases/{lease_id}/logs",
            post(worker::append_logs),
        )
        .route("/v1/worker/results", post(worker::results))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/healthz", get(health::ready))
        .route("/health", get(health::health))
        .route("/openapi.json", get(openapi::openapi))
        .route("/metrics", get(health::metrics))
        .merge(crate::dashboard::routes())
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
