//! OpenTelemetry trace export over OTLP: configuration from the standard
//! `OTEL_*` variables (read by the binary, handed in as [`Vars`]), the tracer
//! provider with a batch exporter, the `tracing` layer that exports the worker's
//! `execute` spans and everything inside them, and a flush on shutdown.
//!
//! Invariant: with no endpoint configured, nothing here is built — no
//! exporter, no provider, no layer — and no export is ever attempted.

use std::time::Duration;

use opentelemetry::{
    InstrumentationScope, KeyValue,
    propagation::TextMapCompositePropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::{
    WithExportConfig, WithTonicConfig,
    tonic_types::{metadata::MetadataMap, transport::ClientTlsConfig},
};
use opentelemetry_sdk::{
    Resource,
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::{BatchSpanProcessor, Sampler, SdkTracerProvider, SpanProcessor},
};
use tracing::{Metadata, subscriber::Interest};
use tracing_subscriber::{
    Layer,
    layer::{self, Filter},
    registry::LookupSpan,
};

use crate::spans::{PresetIds, RowSpans};

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (the default; port 4317 by convention).
    Grpc,
}

/// Which traces are kept (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

impl SamplerConfig {
    /// Parses the standard sampler names; the ratio defaults to 1.0.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<SamplerConfig, String> {
        let ratio = || -> Result<f64, String> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(1.0),
                Some(text) => match text.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(format!(
                        "OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1, not `{text}`"
                    )),
                },
            }
        };
        Ok(match name.trim() {
            "always_on" => SamplerConfig::AlwaysOn,
            "always_off" => SamplerConfig::AlwaysOff,
            "traceidratio" => SamplerConfig::TraceIdRatio(ratio()?),
            "parentbased_always_on" | "" => SamplerConfig::ParentBasedAlwaysOn,
            "parentbased_always_off" => SamplerConfig::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => SamplerConfig::ParentBasedTraceIdRatio(ratio()?),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER `{other}` is not supported (always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio)"
                ));
            }
        })
    }

    pub(crate) fn sampler(self) -> Sampler {
        match self {
            SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
            SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
            SamplerConfig::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerConfig::ParentBasedAlwaysOff => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOff))
            }
            SamplerConfig::ParentBasedTraceIdRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

/// The standard OpenTelemetry variables, as the binary read them (unset is
/// `None`). Signal-specific `*_TRACES_*` variables win over the generic ones.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub sdk_disabled: Option<String>,
    pub endpoint: Option<String>,
    pub traces_endpoint: Option<String>,
    pub protocol: Option<String>,
    pub traces_protocol: Option<String>,
    pub headers: Option<String>,
    pub traces_headers: Option<String>,
    pub service_name: Option<String>,
    pub resource_attributes: Option<String>,
    pub sampler: Option<String>,
    pub sampler_arg: Option<String>,
}

impl Vars {
    /// The names of the variables, in field order, for the binary to read.
    pub const NAMES: [&'static str; 11] = [
        "OTEL_SDK_DISABLED",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
    ];

    /// Builds the set from a lookup by name (the binary passes its reader).
    pub fn from_lookup(mut lookup: impl FnMut(&str) -> Option<String>) -> Vars {
        let [a, b, c, d, e, f, g, h, i, j, k] =
            Vars::NAMES.map(|name| lookup(name).filter(|v| !v.trim().is_empty()));
        Vars {
            sdk_disabled: a,
            endpoint: b,
            traces_endpoint: c,
            protocol: d,
            traces_protocol: e,
            headers: f,
            traces_headers: g,
            service_name: h,
            resource_attributes: i,
            sampler: j,
            sampler_arg: k,
        }
    }
}

/// Where and how to export spans.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub endpoint: String,
    pub protocol: Protocol,
    pub service_name: String,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
    pub resource: Vec<(String, String)>,
    /// Sent with every export request (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
    pub sampler: SamplerConfig,
    pub timeout: Duration,
}

impl Config {
    /// `Ok(None)` when no endpoint is set (or the SDK is disabled): traces
    /// are off. `default_service` names the service unless the variables do.
    pub fn from_vars(vars: &Vars, default_service: &str) -> Result<Option<Config>, String> {
        if vars
            .sdk_disabled
            .as_deref()
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        {
            return Ok(None);
        }
        let Some(endpoint) = vars
            .traces_endpoint
            .clone()
            .or_else(|| vars.endpoint.clone())
        else {
            return Ok(None);
        };
        let protocol = match vars
            .traces_protocol
            .as_deref()
            .or(vars.protocol.as_deref())
            .map(str::trim)
        {
            None | Some("grpc") => Protocol::Grpc,
            Some("http/protobuf" | "http/json") => return Err(
                "OTEL_EXPORTER_OTLP_PROTOCOL: this build exports over grpc only; point it at the \
                            collector's gRPC port (4317) and set the protocol to grpc"
                    .to_owned(),
            ),
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not one of grpc, http/protobuf"
                ));
            }
        };
        let resource = match &vars.resource_attributes {
            Some(text) => {
                parse_key_values(text).map_err(|err| format!("OTEL_RESOURCE_ATTRIBUTES: {err}"))?
            }
            None => Vec::new(),
        };
        let headers = match vars.traces_headers.as_ref().or(vars.headers.as_ref()) {
            Some(text) => parse_key_values(text)
                .map_err(|err| format!("OTEL_EXPORTER_OTLP_HEADERS: {err}"))?,
            None => Vec::new(),
        };
        let service_name = vars
            .service_name
            .clone()
            .or_else(|| {
                resource
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| default_service.to_owned());
        let sampler = match &vars.sampler {
            Some(name) => SamplerConfig::parse(name, vars.sampler_arg.as_deref())?,
            None => SamplerConfig::ParentBasedAlwaysOn,
        };
        Ok(Some(Config {
            endpoint: endpoint.trim().to_owned(),
            protocol,
            service_name,
            resource,
            headers,
            sampler,
            timeout: Duration::from_secs(10),
        }))
    }
}

/// Parses the W3C-style `key1=value1,key2=value2` lists of
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`; values may be
/// percent-encoded.
pub fn parse_key_values(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("`{item}` has an empty key"));
        }
        pairs.push((key.to_owned(), percent_decode(value.trim())));
    }
    Ok(pairs)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The process's trace pipeline: a cheap-to-clone handle on the provider.
#[derive(Clone)]
pub struct Tracing {
    provider: SdkTracerProvider,
    sampler: SamplerConfig,
}

impl Tracing {
    /// Builds the OTLP exporter and the provider, and installs them as the
    /// global provider and W3C trace-context + baggage propagator. Call from
    /// inside a Tokio runtime: the gRPC channel needs one.
    pub fn start(config: &Config, version: &str) -> Result<Tracing, String> {
        let Protocol::Grpc = config.protocol;
        let metadata = headers_metadata(&config.headers)?;
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .with_metadata(metadata);
        if config.endpoint.starts_with("https://") {
            builder = builder.with_tls_config(ClientTlsConfig::new().with_enabled_roots());
        }
        let exporter = builder.build().map_err(|err| {
            format!(
                "cannot build the OTLP exporter for {}: {err}",
                config.endpoint
            )
        })?;
        let mut resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", version.to_owned()));
        for (key, value) in &config.resource {
            if key != "service.name" {
                resource = resource.with_attribute(KeyValue::new(key.clone(), value.clone()));
            }
        }
        let tracing = Tracing::with_processor(
            BatchSpanProcessor::builder(exporter).build(),
            config.sampler,
            resource.build(),
        );
        opentelemetry::global::set_tracer_provider(tracing.provider.clone());
        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        Ok(tracing)
    }

    /// A pipeline over any span processor, for tests.
    pub fn with_processor(
        processor: impl SpanProcessor + 'static,
        sampler: SamplerConfig,
        resource: Resource,
    ) -> Tracing {
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler.sampler())
            .with_id_generator(PresetIds)
            .with_resource(resource)
            .build();
        Tracing { provider, sampler }
    }

    fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        let scope = InstrumentationScope::builder("weft")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        self.provider.tracer_with_scope(scope)
    }

    /// The observer that turns committed runs and attempts into spans.
    pub fn row_spans(&self) -> RowSpans {
        RowSpans::new(self.tracer(), self.sampler)
    }

    /// The `tracing` layer that exports the worker's `execute` spans and
    /// every span and event inside one; nothing else (requests, polls) is
    /// exported, so traces hold runs only.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer())
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_filter(ExecuteSpans)
    }

    /// Exports what is buffered. Blocking inside the SDK, so it runs on the
    /// blocking pool (on a runtime worker thread it could deadlock).
    pub async fn flush(&self) {
        let provider = self.provider.clone();
        let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        if let Ok(Err(err)) = flushed {
            tracing::warn!(component = "telemetry", error = %err, "could not flush spans");
        }
    }

    /// Flushes and stops the exporter; call once, at exit.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let stopped = tokio::task::spawn_blocking(move || {
            let _ = provider.force_flush();
            provider.shutdown()
        })
        .await;
        if let Ok(Err(err)) = stopped {
            tracing::warn!(component = "telemetry", error = %err, "could not export the last spans");
        }
    }
}

fn headers_metadata(headers: &[(String, String)]) -> Result<MetadataMap, String> {
    let mut map = http::HeaderMap::new();
    for (key, value) in headers {
        let name =
            http::HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes()).map_err(|_| {
                format!("OTEL_EXPORTER_OTLP_HEADERS: `{key}` is not a valid header name")
            })?;
        let value = http::HeaderValue::from_str(value).map_err(|_| {
            format!("OTEL_EXPORTER_OTLP_HEADERS: the value of `{key}` is not a valid header value")
        })?;
        map.insert(name, value);
    }
    Ok(MetadataMap::from_headers(map))
}

/// Enables the worker SDK's `execute` span and whatever runs inside one.
struct ExecuteSpans;

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Filter<S> for ExecuteSpans {
    fn enabled(&self, meta: &Metadata<'_>, cx: &layer::Context<'_, S>) -> bool {
        if meta.is_span() && meta.name() == "execute" && meta.target().starts_with("weft_worker") {
            return true;
        }
        // The context is filtered by this filter: the current span is found
        // only if it (or an ancestor) was exported.
        cx.lookup_current().is_some()
    }

    fn callsite_enabled(&self, _meta: &'static Metadata<'static>) -> Interest {
        // Depends on the current span, so it is decided per call.
        Interest::sometimes()
    }
}

/// The `traceparent` of a `tracing` span when it is exported (sampled), else
/// `None`.
pub fn span_traceparent(span: &tracing::Span) -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| format!("00-{}-{}-01", sc.trace_id(), sc.span_id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(Config::from_vars(&vars(&[]), "weft").unwrap(), None);
        assert_eq!(
            Config::from_vars(
                &vars(&[
                    ("OTEL_SERVICE_NAME", "x"),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", " ")
                ]),
                "weft"
            )
            .unwrap(),
            None
        );
        let disabled = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(Config::from_vars(&disabled, "weft").unwrap(), None);
    }

    #[test]
    fn reads_the_standard_variables() {
        let config = Config::from_vars(
            &vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer%20abc, x-tenant=t1",
                ),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod,service.name=from-resource",
                ),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ]),
            "weft",
        )
        .unwrap()
        .unwrap();
        assert_eq!(config.endpoint, "http://collector:4317");
        assert_eq!(config.protocol, Protocol::Grpc);
        assert_eq!(config.service_name, "from-resource");
        assert_eq!(
            config.headers,
            vec![
                ("authorization".into(), "Bearer abc".into()),
                ("x-tenant".into(), "t1".into())
            ]
        );
        assert_eq!(
            config.resource[0],
            ("deployment.environment".into(), "prod".into())
        );
        assert_eq!(config.sampler, SamplerConfig::ParentBasedTraceIdRatio(0.25));

        let named = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
            ("OTEL_SERVICE_NAME", "weft-prod"),
        ]);
        let config = Config::from_vars(&named, "weft").unwrap().unwrap();
        assert_eq!(
            (config.endpoint.as_str(), config.service_name.as_str()),
            ("http://traces:4317", "weft-prod")
        );
        assert_eq!(config.sampler, SamplerConfig::ParentBasedAlwaysOn);
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        for bad in [
            vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")],
            vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")],
            vec![("OTEL_TRACES_SAMPLER", "sometimes")],
            vec![
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ],
            vec![("OTEL_RESOURCE_ATTRIBUTES", "novalue")],
        ] {
            let mut pairs = bad.clone();
            pairs.push(("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"));
            assert!(Config::from_vars(&vars(&pairs), "weft").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%20b%2Cc"), "a b,c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
