//! Logging setup for every Weft process: `tracing` with a human text format
//! or one JSON object per line, filtered by a directive string. Callers pass
//! configuration in; this crate reads no environment variables.
//!
//! Invariant: this is the only crate that knows exporters and exposition
//! formats (Prometheus today).

pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

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
}

/// Installs the global subscriber. Call once, early in `main`. Noisy
/// dependency logs are capped at `warn` unless the filter names them.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let mut directives = config.filter.clone();
    for noisy in ["sqlx", "hyper", "h2", "tower", "reqwest", "rustls"] {
        if !directives.contains(noisy) {
            directives.push_str(&format!(",{noisy}=warn"));
        }
    }
    let filter = EnvFilter::try_new(&directives).map_err(|err| format!("bad log filter `{}`: {err}", config.filter))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(false).with_writer(std::io::stderr))
            .try_init(),
    };
    result.map_err(|err| err.to_string())
}
