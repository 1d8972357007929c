//! An OTLP trace receiver inside the test process, keeping every span it
//! receives so tests can wait for the spans of one trace: either the
//! generated gRPC `TraceService` served by tonic, or OTLP/HTTP (`POST
//! /v1/traces`, protobuf body decoded with prost) served by axum, on a
//! loopback port.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, any_value::Value},
    trace::v1::{Span as ProtoSpan, status::StatusCode},
};

/// A received span, with ids as lowercase hex.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_INTERNAL`, ...
    pub kind: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: BTreeMap<String, String>,
    pub events: Vec<String>,
    pub links: Vec<String>,
    pub error: bool,
    pub service_name: Option<String>,
    /// The whole span as received (attributes, events with their
    /// attributes, status message), for tests that look for text anywhere
    /// (weft-cli's end-to-end tests, which share this receiver).
    #[allow(dead_code)]
    pub text: String,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

pub fn convert(span: ProtoSpan, service_name: Option<String>) -> Span {
    Span {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        name: span.name.clone(),
        kind: span.kind().as_str_name().to_owned(),
        start_ns: span.start_time_unix_nano,
        end_ns: span.end_time_unix_nano,
        attributes: span
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), text(&kv.value)))
            .collect(),
        events: span.events.iter().map(|e| e.name.clone()).collect(),
        links: span.links.iter().map(|l| hex(&l.span_id)).collect(),
        error: span
            .status
            .as_ref()
            .is_some_and(|s| s.code() == StatusCode::Error),
        service_name,
        text: format!("{span:?}"),
    }
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    /// The headers of every HTTP export request.
    requests: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl Receiver {
    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.resource_spans {
            let service_name = resource_spans.resource.as_ref().and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .map(|kv| text(&kv.value))
            });
            for scope_spans in resource_spans.scope_spans {
                spans.extend(
                    scope_spans
                        .spans
                        .into_iter()
                        .map(|s| convert(s, service_name.clone())),
                );
            }
        }
    }
}

/// `POST /v1/traces` of OTLP/HTTP: a protobuf `ExportTraceServiceRequest`
/// in, a protobuf `ExportTraceServiceResponse` out.
async fn http_export(
    axum::extract::State(receiver): axum::extract::State<Receiver>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> (
    http::StatusCode,
    [(http::HeaderName, &'static str); 1],
    Vec<u8>,
) {
    use prost::Message as _;
    let protobuf = [(http::header::CONTENT_TYPE, "application/x-protobuf")];
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (http::StatusCode::BAD_REQUEST, protobuf, Vec::new());
    };
    receiver.requests.lock().unwrap().push(headers);
    receiver.keep(request);
    let response = ExportTraceServiceResponse {
        partial_success: None,
    };
    (http::StatusCode::OK, protobuf, response.encode_to_vec())
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    requests: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::default();
        let (spans, requests) = (receiver.spans.clone(), receiver.requests.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(receiver))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .expect("collector serves");
        });
        Collector {
            addr,
            spans,
            requests,
        }
    }

    /// An OTLP/HTTP receiver; its traces URL is [`Collector::traces_url`].
    pub async fn start_http() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::default();
        let (spans, requests) = (receiver.spans.clone(), receiver.requests.clone());
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(http_export))
            .with_state(receiver);
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("collector serves");
        });
        Collector {
            addr,
            spans,
            requests,
        }
    }

    pub fn traces_url(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// The headers of the HTTP export requests received so far.
    pub fn requests(&self) -> Vec<http::HeaderMap> {
        self.requests.lock().unwrap().clone()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans_of(&self, trace_id: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until the spans of `trace_id` satisfy `done`, or panics with
    /// what arrived.
    pub async fn wait_for(
        &self,
        trace_id: &str,
        what: &str,
        done: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans_of(trace_id);
            if done(&spans) {
                return spans;
            }
            if Instant::now() > deadline {
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{} {}<-{}", s.name, s.span_id, s.parent_span_id))
                    .collect();
                panic!("timed out waiting for {what}; received for {trace_id}: {names:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
