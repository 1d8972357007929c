//! Weft's HTTP server: the API of SPEC §3, the worker protocol and health
//! endpoints, on axum. The only crate that knows HTTP on the server side.

mod dashboard;
mod diagnostics;
mod error;
mod extract;
mod routes;

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::HeaderName,
    middleware::{self, Next},
    response::Response,
};
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use weft_engine::Engine;
pub use weft_telemetry::metrics::Metrics;

pub use error::ApiError;

#[derive(Clone)]
pub struct Config {
    /// Largest request body accepted (manifests, inputs, outputs).
    pub max_body_bytes: usize,
    /// Shown in health output and `weft_build_info`.
    pub version: &'static str,
    /// The process's metrics; a fresh set when `None`. The router installs
    /// them as the store's observer.
    pub metrics: Option<Metrics>,
    /// Which keys count as sensitive.
    pub redactor: weft_core::redact::Redactor,
    /// Also redact inputs, outputs and event data in API responses (the
    /// dashboard always redacts).
    pub redact_api: bool,
    /// Another observer of committed transitions, beside the metrics: the
    /// trace spans built from rows, when traces are exported.
    pub observer: Option<Arc<dyn weft_core::observe::Observer>>,
    /// `http://jaeger:16686/trace/{trace_id}`: run details then carry a
    /// `trace_url` with the run's trace id in place of `{trace_id}`.
    pub trace_url_template: Option<String>,
    /// The trace pipeline, when traces are exported: requests that start a
    /// run then get a live server span, the parent of the run's span.
    /// `None` does no span work at all.
    pub tracing: Option<weft_telemetry::traces::Tracing>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            version: env!("CARGO_PKG_VERSION"),
            metrics: None,
            redactor: Default::default(),
            redact_api: false,
            observer: None,
            trace_url_template: None,
            tracing: None,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    engine: Engine,
    config: Arc<Config>,
    metrics: Metrics,
    started: Instant,
}

impl AppState {
    fn store(&self) -> &weft_store::Store {
        self.engine.store()
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the router; `serve` runs it.
pub fn router(engine: Engine, config: Config) -> Router {
    let max_body = config.max_body_bytes;
    let metrics = config
        .metrics
        .clone()
        .unwrap_or_else(|| Metrics::new(config.version, weft_telemetry::metrics::Caps::default()));
    let observer: Arc<dyn weft_core::observe::Observer> = match &config.observer {
        Some(extra) => Arc::new(weft_core::observe::Fanout(vec![
            Arc::new(metrics.clone()),
            extra.clone(),
        ])),
        None => Arc::new(metrics.clone()),
    };
    engine.store().set_observer(observer);
    let state = AppState {
        engine,
        config: Arc::new(config),
        metrics: metrics.clone(),
        started: Instant::now(),
    };
    routes::routes()
        .route_layer(middleware::from_fn_with_state(metrics, record_http))
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(log_request))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The request id of a request (client-supplied or generated).
pub(crate) fn request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Counts requests by method, route template and status. A route layer, so
/// it sees the matched template; unmatched paths never become labels.
async fn record_http(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let response = next.run(request).await;
    metrics.http_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Serves the metrics exposition on its own, for a separate metrics port.
pub fn metrics_router(metrics: Metrics) -> Router {
    exposition_router(Arc::new(move |openmetrics| metrics.encode(openmetrics)))
}

/// Renders an exposition: OpenMetrics when asked, else the Prometheus text format.
pub type Render = Arc<dyn Fn(bool) -> String + Send + Sync>;

/// `/metrics` over any exposition, e.g. a worker process's own metrics.
pub fn exposition_router(render: Render) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(routes::exposition_endpoint))
        .with_state(render)
}
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // Every line logged while handling the request carries its id.
    let span = tracing::info_span!("request", request_id = %request_id);
    let response = tracing::Instrument::instrument(next.run(request), span).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let code = response.extensions().get::<error::ErrorCode>().map(|c| c.0);
    if status >= 500 {
        tracing::error!(component = "server", request_id, method = %method, path, status, elapsed_ms, code, "request failed");
    } else if status >= 400 {
        tracing::info!(component = "server", request_id, method = %method, path, status, elapsed_ms, code, "request rejected");
    } else {
        tracing::debug!(component = "server", request_id, method = %method, path, status, elapsed_ms, "request");
    }
    response
}

/// Serves until `shutdown` is cancelled, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(component = "server", addr = ?addr, "listening");
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
