//! OpenTelemetry trace export over OTLP: configuration from the standard
//! `OTEL_*` variables (read by the binary, handed in as [`Vars`]), the tracer
//! provider with a batch exporter, the `tracing` layer that exports the worker's
//! `execute` spans and everything inside them, and a flush on shutdown.
//!
//! Invariant: with no endpoint configured, nothing here is built — no
//! exporter, no provider, no layer — and no export is ever attempted.

use std::time::Duration;

use opentelemetry::{
    KeyValue,
    propagation::TextMapCompositePropagator,
    trace::{Span as _, SpanBuilder, SpanKind, Status, TraceContextExt, TraceFlags, Tracer as _},
};
use opentelemetry_otlp::{
    WithExportConfig, WithTonicConfig,
    tonic_types::{metadata::MetadataMap, transport::ClientTlsConfig},
};
use opentelemetry_sdk::{
    Resource,
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanProcessor},
};
use tracing::{Metadata, subscriber::Interest};
use tracing_subscriber::{
    Layer,
    layer::{self, Filter},
    registry::LookupSpan,
};

use weft_core::trace::TraceParent;

pub use crate::sampler::SamplerConfig;
use crate::{
    Error, KeyValueError,
    otlp_http::HttpExporter,
    spans::{self, RowSpans, remote},
};

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (the default; port 4317 by convention).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention).
    HttpProtobuf,
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
    /// gRPC: the collector's address. HTTP: the full traces URL, i.e.
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` verbatim or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
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
    pub fn from_vars(vars: &Vars, default_service: &str) -> Result<Option<Config>, Error> {
        if vars
            .sdk_disabled
            .as_deref()
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        {
            return Ok(None);
        }
        let (endpoint, per_signal) = match (&vars.traces_endpoint, &vars.endpoint) {
            (Some(endpoint), _) => (endpoint.trim(), true),
            (None, Some(endpoint)) => (endpoint.trim(), false),
            (None, None) => return Ok(None),
        };
        let protocol = match vars
            .traces_protocol
            .as_deref()
            .or(vars.protocol.as_deref())
            .map(str::trim)
        {
            None | Some("grpc") => Protocol::Grpc,
            Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("http/json") => return Err(Error::HttpJsonProtocol),
            Some(other) => return Err(Error::Protocol(other.to_owned())),
        };
        // The generic endpoint is a base URL for HTTP; the per-signal one is
        // used as given (the OTLP exporter specification).
        let endpoint = match protocol {
            Protocol::HttpProtobuf if !per_signal => {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            }
            _ => endpoint.to_owned(),
        };
        let resource = match &vars.resource_attributes {
            Some(text) => parse_key_values(text).map_err(|source| Error::KeyValues {
                variable: "OTEL_RESOURCE_ATTRIBUTES",
                source,
            })?,
            None => Vec::new(),
        };
        let headers = match vars.traces_headers.as_ref().or(vars.headers.as_ref()) {
            Some(text) => parse_key_values(text).map_err(|source| Error::KeyValues {
                variable: "OTEL_EXPORTER_OTLP_HEADERS",
                source,
            })?,
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
            endpoint,
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
pub fn parse_key_values(text: &str) -> Result<Vec<(String, String)>, KeyValueError> {
    let mut pairs = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| KeyValueError::NotKeyValue(item.to_owned()))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(KeyValueError::EmptyKey(item.to_owned()));
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
    tracer: SdkTracer,
    sampler: SamplerConfig,
}

impl Tracing {
    /// Builds the OTLP exporter and the provider, and installs them as the
    /// global provider and W3C trace-context + baggage propagator. Call from
    /// inside a Tokio runtime: the gRPC channel needs one.
    pub fn start(config: &Config, version: &str) -> Result<Tracing, Error> {
        let mut resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", version.to_owned()));
        for (key, value) in &config.resource {
            if key != "service.name" {
                resource = resource.with_attribute(KeyValue::new(key.clone(), value.clone()));
            }
        }
        let resource = resource.build();
        let tracing = match config.protocol {
            Protocol::Grpc => {
                let metadata = headers_metadata(&config.headers)?;
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(config.endpoint.clone())
                    .with_timeout(config.timeout)
                    .with_metadata(metadata);
                if config.endpoint.starts_with("https://") {
                    builder = builder.with_tls_config(ClientTlsConfig::new().with_enabled_roots());
                }
                let exporter = builder.build().map_err(|source| Error::Exporter {
                    endpoint: config.endpoint.clone(),
                    source,
                })?;
                Tracing::with_processor(
                    BatchSpanProcessor::builder(exporter).build(),
                    config.sampler,
                    resource,
                )
            }
            Protocol::HttpProtobuf => {
                let exporter =
                    HttpExporter::new(&config.endpoint, &config.headers, config.timeout)?;
                Tracing::with_processor(
                    BatchSpanProcessor::builder(exporter).build(),
                    config.sampler,
                    resource,
                )
            }
        };
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
        let (provider, tracer) = spans::provider(processor, sampler, resource);
        Tracing {
            provider,
            tracer,
            sampler,
        }
    }

    fn tracer(&self) -> SdkTracer {
        self.tracer.clone()
    }

    /// Starts the live server span of a request (kind server, named
    /// `<method> <route>`): a child of the caller's span when the request
    /// carried a valid `traceparent`, else the root of a new trace. End it
    /// with [`ServerSpan::finish`].
    pub fn server_span(
        &self,
        caller: Option<&TraceParent>,
        method: &str,
        route: &str,
        request_id: Option<&str>,
    ) -> ServerSpan {
        let parent = caller
            .map(|c| {
                let trace_id = crate::spans::otel_trace(c.trace_id);
                let span_id = crate::spans::otel_span(c.parent_span_id);
                let flags = if c.sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                };
                remote(trace_id, span_id, flags)
            })
            .unwrap_or_default();
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("http.route", route.to_owned()),
        ];
        if let Some(id) = request_id {
            attributes.push(KeyValue::new("weft.request_id", id.to_owned()));
        }
        let builder = SpanBuilder::from_name(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes);
        ServerSpan {
            span: self.tracer.build_with_context(builder, &parent),
            caller: caller.cloned(),
        }
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

/// The live span of the request that starts a run. The run joins the trace
/// under it: [`ServerSpan::trace_parent`] is what the store records as the
/// run's parent.
pub struct ServerSpan {
    span: opentelemetry_sdk::trace::Span,
    caller: Option<TraceParent>,
}

impl ServerSpan {
    /// The run's parent: this span when it is exported; when the sampler
    /// dropped it, the caller's span as before (the run span then decides its
    /// own sampling, and nothing points at a span that was never exported).
    pub fn trace_parent(&self) -> Option<TraceParent> {
        let sc = self.span.span_context();
        if sc.is_valid() && sc.is_sampled() {
            Some(TraceParent {
                trace_id: weft_core::TraceId::from_bytes(sc.trace_id().to_bytes())?,
                parent_span_id: weft_core::SpanId::from_bytes(sc.span_id().to_bytes())?,
                sampled: true,
            })
        } else {
            self.caller
        }
    }

    /// This span's trace id (the caller's, or generated here): the run's
    /// trace id even when this span was sampled out.
    pub fn trace_id(&self) -> Option<weft_core::TraceId> {
        let sc = self.span.span_context();
        weft_core::TraceId::from_bytes(sc.trace_id().to_bytes())
    }

    /// Ends the span with the response status (an error from 400 up) and
    /// the run it started, if any.
    pub fn finish(mut self, status: u16, run_id: Option<&str>) {
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if let Some(run_id) = run_id {
            self.span
                .set_attribute(KeyValue::new("weft.run_id", run_id.to_owned()));
        }
        if status >= 400 {
            self.span
                .set_attribute(KeyValue::new("error.type", status.to_string()));
            self.span
                .set_status(Status::error(format!("HTTP {status}")));
        }
        self.span.end();
    }
}

fn headers_metadata(headers: &[(String, String)]) -> Result<MetadataMap, Error> {
    let mut map = http::HeaderMap::new();
    for (key, value) in headers {
        let name = http::HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes())
            .map_err(|_| Error::HeaderName(key.clone()))?;
        let value =
            http::HeaderValue::from_str(value).map_err(|_| Error::HeaderValue(key.clone()))?;
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
    if !sc.is_sampled() {
        return None;
    }
    let trace_id = weft_core::TraceId::from_bytes(sc.trace_id().to_bytes())?;
    let span_id = weft_core::SpanId::from_bytes(sc.span_id().to_bytes())?;
    Some(weft_core::trace::format_traceparent(trace_id, span_id))
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
            vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
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
    fn http_protobuf_posts_to_the_traces_path() {
        let generic = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        let config = Config::from_vars(&generic, "weft").unwrap().unwrap();
        assert_eq!(config.protocol, Protocol::HttpProtobuf);
        assert_eq!(config.endpoint, "http://collector:4318/v1/traces");
        let specific = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://x.test/otlp/spans",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        let config = Config::from_vars(&specific, "weft").unwrap().unwrap();
        assert_eq!(config.protocol, Protocol::HttpProtobuf);
        assert_eq!(config.endpoint, "https://x.test/otlp/spans");
    }

    #[test]
    fn a_sampled_out_server_span_keeps_the_run_off_it() {
        use opentelemetry_sdk::{
            error::OTelSdkResult,
            trace::{SimpleSpanProcessor, SpanData, SpanExporter},
        };
        #[derive(Debug)]
        struct Nowhere;
        impl SpanExporter for Nowhere {
            async fn export(&self, _: Vec<SpanData>) -> OTelSdkResult {
                Ok(())
            }
        }
        let caller = TraceParent {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap(),
            parent_span_id: "00f067aa0ba902b7".parse().unwrap(),
            sampled: true,
        };
        let on = Tracing::with_processor(
            SimpleSpanProcessor::new(Nowhere),
            SamplerConfig::ParentBasedAlwaysOn,
            Resource::builder_empty().build(),
        );
        let span = on.server_span(Some(&caller), "POST", "/r", Some("req-1"));
        let parent = span.trace_parent().unwrap();
        assert_eq!(parent.trace_id, caller.trace_id);
        assert_ne!(parent.parent_span_id, caller.parent_span_id);
        span.finish(202, Some("r1"));

        let off = Tracing::with_processor(
            SimpleSpanProcessor::new(Nowhere),
            SamplerConfig::ParentBasedAlwaysOff,
            Resource::builder_empty().build(),
        );
        let root = off.server_span(None, "POST", "/r", None);
        assert_eq!(
            root.trace_parent(),
            None,
            "no parent that was never exported"
        );
        assert!(root.trace_id().is_some_and(|t| t.to_string().len() == 32));
        // An unsampled caller: the server span follows it and is dropped.
        let unsampled = TraceParent {
            sampled: false,
            ..caller
        };
        let joined = off.server_span(Some(&unsampled), "POST", "/r", None);
        assert_eq!(joined.trace_parent(), Some(unsampled));
        assert_eq!(joined.trace_id(), Some(unsampled.trace_id));
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%20b%2Cc"), "a b,c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
