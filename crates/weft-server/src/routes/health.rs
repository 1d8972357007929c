//! Health probes and the Prometheus / OpenMetrics exposition.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use serde_json::{Value, json};
use weft_store::now_ms;

use crate::AppState;

// ---- metrics ----

pub(crate) async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> axum::response::Response {
    metrics_endpoint(
        State((state.engine.clone(), state.metrics.clone())),
        headers,
    )
    .await
}

/// Prometheus text by default; OpenMetrics (with trace_id exemplars) when the
/// scraper asks for it in `Accept`. The database gauges are brought up to
/// date first ([`weft_engine::Engine::collect_gauges`]).
pub(crate) async fn metrics_endpoint(
    State((engine, metrics)): State<(weft_engine::Engine, weft_telemetry::metrics::Metrics)>,
    headers: HeaderMap,
) -> axum::response::Response {
    engine.collect_gauges().await;
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
pub(crate) async fn live() -> Json<Value> {
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
pub(crate) async fn ready(State(state): State<AppState>) -> impl IntoResponse {
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
pub(crate) async fn health(State(state): State<AppState>) -> impl IntoResponse {
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
