//! Weft's HTTP server: the API of SPEC §3, the worker protocol and health
//! endpoints, on axum. The only crate that knows HTTP on the server side.

mod actor;
pub mod auth;
mod conform;
pub mod convert;
mod dashboard;
mod diagnostics;
mod error;
mod extract;
mod forgery;
mod layers;
pub mod limits;
mod metadata;
mod present;
pub mod ratelimit;
mod routes;
mod sessions;
pub mod tls;
pub mod wiring;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Extension, Router,
    extract::{DefaultBodyLimit, Request},
    http::HeaderName,
    middleware,
    response::{IntoResponse, Response},
};
pub use layers::MAX_REQUEST_ID_LEN;
use tokio_util::sync::CancellationToken;
use weft_engine::Engine;
pub use weft_telemetry::metrics::Metrics;

pub use error::ApiError;

/// The input of [`weft_core::critical_path::critical_path`] from a run's
/// rows and history as the API answers them: each step's dependencies and
/// attempt times, and the `step.ready`/`step.waiting`/end events since the
/// run's last retry. The dashboard's run page and `weft run` both draw the
/// critical path from it.
pub fn critical_path_steps(
    run: &weft_api::RunDetail,
    events: &[weft_api::EventRecord],
) -> Vec<weft_core::critical_path::StepTimes> {
    dashboard::step_times(run, events)
}
pub use routes::{RouteAccess, route_table};

#[derive(Clone)]
pub struct Config {
    /// Largest request body accepted (manifests, inputs, outputs).
    pub max_body_bytes: usize,
    /// Shown in health output and `weft_build_info`.
    pub version: &'static str,
    /// The process's metrics; a fresh set when `None`. The router installs
    /// them as the store's observer.
    pub metrics: Option<Metrics>,
    /// Which keys count as sensitive, and the free-text patterns.
    pub redactor: weft_core::redact::Redactor,
    /// Redact API responses for admins too (viewers and operators always
    /// get redacted data, and the dashboard always redacts).
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
    /// How long a client may take to send a request body once its headers
    /// are in; past it the request is answered 408 `request_timeout` and the
    /// connection closed. A read timeout only: long polls, `?wait_ms` and
    /// event streams are not cut short by it.
    pub body_read_timeout: Duration,
    /// Whether the listener serves HTTPS (set by [`wiring::Wiring::build`]
    /// from [`ServeOptions::tls`]): cookies the dashboard sets are then
    /// `Secure`.
    pub tls: bool,
    /// Per-caller limits: requests per second and concurrent long polls.
    pub rate_limits: ratelimit::Config,
    /// API tokens: whether they are required, the pepper, the cache.
    pub auth: auth::AuthConfig,
    /// Marks the dashboard's cookies `Secure` (sent over HTTPS only) even
    /// when this listener serves plain HTTP: behind a proxy that terminates
    /// TLS. With [`Config::tls`] they are `Secure` anyway.
    pub secure_cookies: bool,
}

/// Default of [`Config::body_read_timeout`].
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Default of [`ServeOptions::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How a listener's connections are served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long a client may take to send a request's headers (from its
    /// first byte, and for an idle keep-alive connection from the previous
    /// answer); past it the connection is closed without an answer. Over
    /// TLS it also bounds the handshake.
    pub header_read_timeout: Duration,
    /// Serve HTTPS with this certificate; `None` serves plain HTTP.
    pub tls: Option<tls::Tls>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            tls: None,
        }
    }
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
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            tls: false,
            rate_limits: ratelimit::Config::default(),
            auth: auth::AuthConfig::default(),
            secure_cookies: false,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    engine: Engine,
    config: Arc<Config>,
    metrics: Metrics,
    started: Instant,
    auth: Arc<auth::Authenticator>,
}

impl AppState {
    fn store(&self) -> &weft_store::Store {
        self.engine.store()
    }
}

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the router; `serve` runs it.
pub fn router(engine: Engine, config: Config) -> Router {
    let max_body = config.max_body_bytes;
    let body_timeout = extract::BodyReadTimeout(config.body_read_timeout);
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
    let rate_limits = ratelimit::Limits::new(&config.rate_limits);
    let authenticator = auth::Authenticator::new(engine.store().clone(), config.auth.clone());
    let metrics_open = config.auth.metrics_open;
    let state = AppState {
        auth: authenticator.clone(),
        engine,
        config: Arc::new(config),
        metrics: metrics.clone(),
        started: Instant::now(),
    };
    let (routes, accesses) = routes::routes(metrics_open);
    let guard = layers::Guard {
        accesses: Arc::new(accesses),
        limits: rate_limits,
        metrics,
    };
    // From the outside in: the request's frame (id, log, JSON errors), the
    // panic catcher, body limits, the caller's identity, then on each route
    // its guard (HTTP metrics, limits, access) and handler.
    routes
        .route_layer(middleware::from_fn_with_state(guard, layers::guard_route))
        .layer(middleware::from_fn_with_state(
            authenticator,
            layers::identify,
        ))
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(Extension(body_timeout))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_answer,
        ))
        .layer(middleware::from_fn(layers::frame))
}

/// A handler that panicked answers 500 `internal` in the JSON error shape
/// (and is logged as a failed request), rather than a dropped connection.
fn panic_answer(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(component = "server", panic = %what, "handler panicked");
    ApiError::Internal("the request handler failed".to_owned()).into_response()
}

/// The request id of a request (client-supplied or generated).
pub(crate) fn request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Serves the server's `/metrics` on its own, for a separate metrics port;
/// a scrape reads `engine`'s database gauges as the main port's does.
pub fn metrics_router(engine: Engine, metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(routes::metrics_endpoint))
        .with_state((engine, metrics))
}

/// Renders an exposition: OpenMetrics when asked, else the Prometheus text format.
pub type Render = Arc<dyn Fn(bool) -> String + Send + Sync>;

/// `/metrics` over any exposition, e.g. a worker process's own metrics.
pub fn exposition_router(render: Render) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(routes::exposition_endpoint))
        .with_state(render)
}
/// Serves until `shutdown` is cancelled, then finishes in-flight requests;
/// with the default [`ServeOptions`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, ServeOptions::default()).await
}

/// Serves HTTP/1.1 (over TLS when `options.tls` is set) until `shutdown`
/// is cancelled, then stops accepting and waits for in-flight requests.
/// Unlike `axum::serve`, a connection whose headers do not arrive within
/// `options.header_read_timeout` is closed, and so is a TLS connection whose
/// handshake does not finish within it. Each request carries its peer's
/// address as `ConnectInfo<SocketAddr>`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> std::io::Result<()> {
    use hyper_util::server::graceful::GracefulShutdown;
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let shown = addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    tracing::info!(component = "server", addr = %shown, tls = options.tls.is_some(), "listening");
    // The forgery check holds a loopback listener to loopback `Host`s.
    let app = match addr {
        Some(addr) => app.layer(Extension(forgery::ListenerAddr(addr))),
        None => app,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(component = "server", error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let Some(tls) = options.tls.clone() else {
            tokio::spawn(serve_connection(builder, watcher, stream, app, peer));
            continue;
        };
        let shutdown = shutdown.clone();
        let handshake_timeout = options.header_read_timeout;
        // The handshake runs on the connection's own task: a slow or silent
        // client holds neither the accept loop nor, past the timeout, a task.
        tokio::spawn(async move {
            let accepted = tokio::select! {
                accepted = tls.accept(stream, handshake_timeout) => accepted,
                () = shutdown.cancelled() => None,
            };
            match accepted {
                Some(tls::Accepted::Tls(stream)) => {
                    serve_connection(builder, watcher, *stream, app, peer).await
                }
                Some(tls::Accepted::PlainHttp(stream)) => {
                    let answer = tower::service_fn(|_: Request<hyper::body::Incoming>| async {
                        Ok::<_, std::convert::Infallible>(tls::plain_http_answer())
                    });
                    serve_connection(builder, watcher, stream, answer, peer).await
                }
                None => {}
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Serves one connection (plain or TLS) with `service` until it closes,
/// putting the peer's address into each request's extensions.
async fn serve_connection<I, S>(
    builder: hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    io: I,
    service: S,
    peer: SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    use hyper_util::{rt::TokioIo, service::TowerToHyperService};
    use tower::ServiceExt as _;
    let service = service.map_request(move |mut request: Request<hyper::body::Incoming>| {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        request
    });
    let connection = watcher
        .watch(builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)));
    if let Err(err) = connection.await {
        tracing::debug!(component = "server", error = %err, "connection ended");
    }
}
