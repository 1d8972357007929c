//! Workers and queues, and stuck runs: the views `GET /v1/workers`,
//! `GET /v1/queues` and `GET /v1/diagnostics` answer (the diagnosis
//! `weft doctor` prints), read by calling those very handlers in process.

use axum::{
    body::Body,
    extract::{Query, State},
    http::{Request, StatusCode},
};
use minijinja::context;
use serde::{Deserialize, de::DeserializeOwned};
use tower::ServiceExt;
use weft_api::{Diagnostics, QueueList, WorkerList};

use super::{PageError, PageResult, format, render};
use crate::AppState;

/// The diagnostics routes the pages read, answered as the API would answer
/// a viewer (the dashboard always redacts).
fn diagnostics_routes(state: &AppState) -> axum::Router {
    use crate::diagnostics as diag;
    let viewer = crate::auth::Principal {
        name: "dashboard".to_owned(),
        role: crate::auth::Role::Viewer,
        queues: None,
        token_id: None,
    };
    axum::Router::new()
        .route("/v1/workers", axum::routing::get(diag::list_workers))
        .route("/v1/queues", axum::routing::get(diag::list_queues))
        .route("/v1/diagnostics", axum::routing::get(diag::diagnostics))
        .with_state(state.clone())
        .layer(axum::Extension(viewer))
}

/// Answers `uri` with the diagnostics routes, as the API would.
async fn api_get<T: DeserializeOwned>(state: &AppState, uri: &str) -> Result<T, PageError> {
    let request = Request::get(uri)
        .body(Body::empty())
        .map_err(|e| PageError::bad_request(e.to_string()))?;
    let response = diagnostics_routes(state)
        .oneshot(request)
        .await
        .map_err(|e| PageError::bad_request(e.to_string()))?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .map_err(|e| PageError::bad_request(e.to_string()))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<weft_api::ErrorBody>(&bytes).map_or_else(
            |_| String::from_utf8_lossy(&bytes).into_owned(),
            |b| b.error.message,
        );
        return Err(PageError::with_status(status, message));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| PageError::with_status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Deserialize)]
pub(crate) struct WorkersQuery {
    #[serde(default)]
    all: Option<String>,
}

pub(crate) async fn workers_page(
    State(state): State<AppState>,
    Query(query): Query<WorkersQuery>,
) -> PageResult {
    let all = query
        .all
        .as_deref()
        .is_some_and(|a| !a.is_empty() && a != "0" && a != "false");
    let workers: WorkerList = api_get(
        &state,
        if all {
            "/v1/workers?all=true"
        } else {
            "/v1/workers"
        },
    )
    .await?;
    let queues: QueueList = api_get(&state, "/v1/queues").await?;
    let queues: Vec<_> = queues
        .queues
        .iter()
        .map(|q| {
            context! {
                queue => q.queue, ready => q.ready, running => q.running, pollers => q.pollers,
                handlers => q.handlers,
                oldest => if q.ready == 0 { "-".to_owned() } else { format::human_ms((q.oldest_ready_age_seconds * 1000.0) as i64) },
            }
        })
        .collect();
    let workers: Vec<_> = workers
        .workers
        .iter()
        .map(|w| {
            context! {
                worker_id => w.worker_id, live => w.live, host => w.host, pid => w.pid,
                version => w.version, queues => w.queues, handlers => w.handlers,
                slots_in_use => w.slots_in_use,
                concurrency => w.concurrency.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                last_poll => format::short_time(&w.last_poll),
                last_heartbeat => w.last_heartbeat.as_deref().map(format::short_time),
            }
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        "workers.html",
        "Workers and queues",
        "workers",
        None,
        context! { workers, queues, all },
    ))
}

pub(crate) async fn stuck_page(State(state): State<AppState>) -> PageResult {
    let d: Diagnostics = api_get(&state, "/v1/diagnostics?limit=100").await?;
    let causes: Vec<_> = d
        .causes
        .iter()
        .map(|g| {
            let runs: Vec<_> = g
                .runs
                .iter()
                .map(|r| {
                    let steps: Vec<_> = r
                        .steps
                        .iter()
                        .map(|s| {
                            context! {
                                step => s.step, cause => s.cause, evidence => s.evidence,
                                command => s.command, since => format::short_time(&s.since),
                            }
                        })
                        .collect();
                    context! { run_id => r.run_id, workflow => r.workflow, steps }
                })
                .collect();
            context! { cause => g.cause, stalled => g.stalled, count => g.count, runs }
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        "stuck.html",
        "Stuck runs",
        "stuck",
        None,
        context! { causes, stalled => d.stalled, examined => d.examined, truncated => d.truncated },
    ))
}
