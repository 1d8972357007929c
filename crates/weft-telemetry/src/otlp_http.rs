//! OTLP over HTTP with protobuf bodies (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`):
//! a span exporter that encodes each batch as an `ExportTraceServiceRequest`
//! and POSTs it as `application/x-protobuf` to the traces URL, on the
//! workspace's reqwest (rustls with the ring provider).
//!
//! The batch processor exports from its own thread, outside the Tokio
//! runtime, so each request is spawned onto the runtime the exporter was
//! built in and awaited from there.

use std::time::Duration;

use opentelemetry_proto::{
    tonic::collector::trace::v1::ExportTraceServiceRequest,
    transform::{
        common::tonic::ResourceAttributesWithSchema,
        trace::tonic::group_spans_by_resource_and_scope,
    },
};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use prost::Message as _;

use crate::Error;

/// Exports spans to `url` (the full traces URL, e.g.
/// `http://collector:4318/v1/traces`).
#[derive(Debug)]
pub struct HttpExporter {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    resource: ResourceAttributesWithSchema,
    runtime: tokio::runtime::Handle,
}

impl HttpExporter {
    /// Builds the exporter; call inside a Tokio runtime, which then carries
    /// every export request.
    pub fn new(
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<HttpExporter, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        // reqwest is built without a default TLS provider; pick ring, as the
        // client does. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(Error::HttpClient)?;
        let mut map = reqwest::header::HeaderMap::new();
        for (key, value) in headers {
            let name = reqwest::header::HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes())
                .map_err(|_| Error::HeaderName(key.clone()))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| Error::HeaderValue(key.clone()))?;
            map.insert(name, value);
        }
        Ok(HttpExporter {
            client,
            url: url.to_owned(),
            headers: map,
            resource: ResourceAttributesWithSchema::from(&Resource::builder_empty().build()),
            runtime,
        })
    }
}

impl SpanExporter for HttpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        let body = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        }
        .encode_to_vec();
        let request = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body);
        let url = self.url.clone();
        let sent = self.runtime.spawn(async move {
            let response = request
                .send()
                .await
                .map_err(|err| format!("OTLP/HTTP export to {url} failed: {err}"))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(200).collect();
            Err(format!(
                "OTLP/HTTP export to {url} was refused: {status} {text}"
            ))
        });
        match sent.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(OTelSdkError::InternalFailure(message)),
            Err(err) => Err(OTelSdkError::InternalFailure(format!(
                "OTLP/HTTP export did not run: {err}"
            ))),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = ResourceAttributesWithSchema::from(resource);
    }
}
