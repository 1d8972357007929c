//! The errors of telemetry setup: logging (`init`), the OTLP configuration
//! read from the `OTEL_*` values (`traces::Config::from_vars`) and the
//! exporters (`traces::Tracing::start`). Each message names the setting or
//! variable at fault, as the binary prints it before exiting.

use std::path::PathBuf;

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log filter directive does not parse.
    #[error("bad log filter `{filter}`: {source}")]
    LogFilter {
        /// The directive as configured (`--log`, `WEFT_LOG`).
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The log file directory cannot be created.
    #[error("cannot create log dir {}: {source}", dir.display())]
    LogDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A global subscriber is installed already (`init` called twice).
    #[error("{0}")]
    SubscriberInstalled(#[source] tracing_subscriber::util::TryInitError),
    /// `OTEL_TRACES_SAMPLER` names a sampler Weft does not support.
    #[error(
        "OTEL_TRACES_SAMPLER `{0}` is not supported (always_on, always_off, traceidratio, \
         parentbased_always_on, parentbased_always_off, parentbased_traceidratio)"
    )]
    Sampler(String),
    /// `OTEL_TRACES_SAMPLER_ARG` is not a ratio from 0 to 1.
    #[error("OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1, not `{0}`")]
    SamplerRatio(String),
    /// `http/json`, a protocol of the specification Weft does not export.
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL: http/json is not supported; use http/protobuf \
         (port 4318) or grpc (port 4317)"
    )]
    HttpJsonProtocol,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` is none of the specification's values.
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL `{0}` is not one of grpc, http/protobuf")]
    Protocol(String),
    /// A `key=value` list variable does not parse.
    #[error("{variable}: {source}")]
    KeyValues {
        /// `OTEL_RESOURCE_ATTRIBUTES` or `OTEL_EXPORTER_OTLP_HEADERS`.
        variable: &'static str,
        #[source]
        source: KeyValueError,
    },
    /// A header key of `OTEL_EXPORTER_OTLP_HEADERS` is not an HTTP header name.
    #[error("OTEL_EXPORTER_OTLP_HEADERS: `{0}` is not a valid header name")]
    HeaderName(String),
    /// The value of that header key is not an HTTP header value.
    #[error("OTEL_EXPORTER_OTLP_HEADERS: the value of `{0}` is not a valid header value")]
    HeaderValue(String),
    /// The OTLP/gRPC exporter could not be built.
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The OTLP/HTTP exporter was built outside a Tokio runtime.
    #[error("the OTLP/HTTP exporter must be built inside a Tokio runtime")]
    NoRuntime,
    /// The OTLP/HTTP exporter's HTTP client could not be built.
    #[error("cannot build the OTLP/HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// Why a W3C-style `key1=value1,key2=value2` list does not parse
/// (`traces::parse_key_values`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyValueError {
    /// An item without `=`.
    #[error("`{0}` is not key=value")]
    NotKeyValue(String),
    /// An item whose key is empty.
    #[error("`{0}` has an empty key")]
    EmptyKey(String),
}

#[cfg(test)]
mod tests {
    use super::{Error, KeyValueError};
    use crate::{
        LogConfig, LogFormat,
        traces::{Config, Vars},
    };

    fn config(vars: Vars) -> Result<Option<Config>, Error> {
        Config::from_vars(
            &Vars {
                endpoint: Some("http://127.0.0.1:4317".to_owned()),
                ..vars
            },
            "weft",
        )
    }

    #[test]
    fn setup_errors_are_typed_and_name_the_setting() {
        let err = config(Vars {
            sampler: Some("sometimes".to_owned()),
            ..Vars::default()
        })
        .unwrap_err();
        assert!(matches!(&err, Error::Sampler(name) if name == "sometimes"));
        assert!(
            err.to_string()
                .starts_with("OTEL_TRACES_SAMPLER `sometimes` is not supported (always_on,"),
            "{err}"
        );
        let err = config(Vars {
            sampler: Some("traceidratio".to_owned()),
            sampler_arg: Some("2".to_owned()),
            ..Vars::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1, not `2`"
        );
        let err = config(Vars {
            headers: Some("a=1,=2".to_owned()),
            ..Vars::default()
        })
        .unwrap_err();
        assert!(matches!(
            &err,
            Error::KeyValues {
                variable: "OTEL_EXPORTER_OTLP_HEADERS",
                source: KeyValueError::EmptyKey(item),
            } if item == "=2"
        ));
        assert_eq!(
            err.to_string(),
            "OTEL_EXPORTER_OTLP_HEADERS: `=2` has an empty key"
        );
        let err = config(Vars {
            protocol: Some("http/json".to_owned()),
            ..Vars::default()
        })
        .unwrap_err();
        assert!(matches!(err, Error::HttpJsonProtocol), "{err}");
        let err = crate::init(&LogConfig {
            format: LogFormat::Text,
            filter: "weft=[".to_owned(),
            dir: None,
        })
        .err()
        .expect("a bad filter is refused");
        assert!(matches!(&err, Error::LogFilter { filter, .. } if filter == "weft=["));
        assert!(
            err.to_string().starts_with("bad log filter `weft=[`: "),
            "{err}"
        );
    }
}
