//! Telemetry for every Weft process: logging setup (`tracing` with a human
//! text format or one JSON object per line, filtered by a directive string),
//! the metric catalogue (`metrics`), OTLP trace export (`traces`, over gRPC
//! or HTTP/protobuf via `otlp_http`) and the run and attempt spans built from
//! durable rows (`spans`). Callers pass
//! configuration in; this crate reads no environment variables.
//!
//! Invariant: this is the only crate that knows exporters and exposition
//! formats (Prometheus, OTLP).

mod error;
pub mod metrics;
pub mod otlp_http;
pub mod sampler;
pub mod spans;
pub mod traces;

pub use error::{Error, KeyValueError};

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(text: &str) -> Option<LogFormat> {
        match text {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `weft=debug,sqlx=warn`.
    pub filter: String,
    /// Also write JSON lines to a daily-rotated file `weft.log.YYYY-MM-DD` here.
    pub dir: Option<std::path::PathBuf>,
}

/// Keeps the file writer flushing; drop it last, at exit.
pub struct LogGuard {
    _file: Option<tracing_appender::non_blocking::WorkerGuard>,
}

type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

fn stderr_layer(format: LogFormat) -> BoxedLayer {
    match format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        // Fields of the enclosing span (a request's `request_id`) ride along
        // under "span", so every line inside a request can be found by it.
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    }
}

/// Installs the global subscriber. Call once, early in `main`. Noisy
/// dependency logs are capped at `warn` unless the filter names them.
pub fn init(config: &LogConfig) -> Result<LogGuard, Error> {
    init_with_traces(config, None)
}

/// [`init`], and when `traces` is given, also exports the worker's
/// `execute` spans (and the handler spans inside them) through it.
pub fn init_with_traces(
    config: &LogConfig,
    traces: Option<&traces::Tracing>,
) -> Result<LogGuard, Error> {
    let mut directives = config.filter.clone();
    for noisy in ["sqlx", "hyper", "h2", "tower", "reqwest", "rustls"] {
        if !directives.contains(noisy) {
            directives.push_str(&format!(",{noisy}=warn"));
        }
    }
    let filter = EnvFilter::try_new(&directives).map_err(|source| Error::LogFilter {
        filter: config.filter.clone(),
        source,
    })?;
    let mut layers: Vec<BoxedLayer> = vec![stderr_layer(config.format)];
    if let Some(traces) = traces {
        layers.push(traces.layer().boxed());
    }
    let mut guard = LogGuard { _file: None };
    if let Some(dir) = &config.dir {
        std::fs::create_dir_all(dir).map_err(|source| Error::LogDir {
            dir: dir.clone(),
            source,
        })?;
        let (writer, file_guard) =
            tracing_appender::non_blocking(tracing_appender::rolling::daily(dir, "weft.log"));
        layers.push(
            fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_ansi(false)
                .with_writer(writer)
                .boxed(),
        );
        guard._file = Some(file_guard);
    }
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init()
        .map_err(Error::SubscriberInstalled)?;
    Ok(guard)
}
