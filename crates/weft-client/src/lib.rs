//! A typed HTTP client for Weft's API, used by the CLI and the worker SDK.

use std::{sync::Once, time::Duration};

use reqwest::{Method, StatusCode};
use serde::{Serialize, de::DeserializeOwned};
use weft_api::*;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error body.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the Weft server at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected response from the server: {0}")]
    Decode(String),
}

impl Error {
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the same call may succeed later (network trouble, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api { status, .. } => *status >= 500,
            Error::Decode(_) => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // reqwest is built without a default TLS provider; pick ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(base_url: &str) -> Client {
        install_crypto();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Below the server's default header read timeout (10 s), which
            // also closes idle keep-alive connections: a pooled connection is
            // dropped here before the server can close it under a request.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client builds");
        Client {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            token: None,
        }
    }

    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|source| Error::Transport {
            url: self.base.clone(),
            source,
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|source| Error::Transport {
            url: self.base.clone(),
            source,
        })?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => Error::Api {
                    status: status.as_u16(),
                    code: body.error.code,
                    message: body.error.message,
                },
                Err(_) => Error::Api {
                    status: status.as_u16(),
                    code: if status == StatusCode::NOT_FOUND {
                        "not_found".into()
                    } else {
                        "http_error".into()
                    },
                    message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|err| Error::Decode(err.to_string()))
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// Registers a manifest (YAML or JSON text) under its name.
    pub async fn put_workflow(&self, name: &str, manifest: &str) -> Result<PutWorkflowResponse> {
        let request = self
            .request(Method::PUT, &format!("/v1/workflows/{}", encode(name)))
            .header("content-type", "application/yaml")
            .body(manifest.to_owned());
        self.send(request).await
    }

    pub async fn list_workflows(&self) -> Result<WorkflowList> {
        self.get("/v1/workflows").await
    }

    pub async fn get_workflow(&self, name: &str) -> Result<WorkflowDetail> {
        self.get(&format!("/v1/workflows/{}", encode(name))).await
    }

    pub async fn start_run(
        &self,
        workflow: &str,
        request: &StartRunRequest,
    ) -> Result<StartRunResponse> {
        self.post(&format!("/v1/workflows/{}/runs", encode(workflow)), request)
            .await
    }

    /// Starts several runs of a workflow in one request and one transaction.
    pub async fn start_runs(
        &self,
        workflow: &str,
        request: &StartRunsRequest,
    ) -> Result<StartRunsResponse> {
        self.post(
            &format!("/v1/workflows/{}/runs/batch", encode(workflow)),
            request,
        )
        .await
    }

    /// Starts a run carrying the caller's W3C `traceparent`.
    pub async fn start_run_traced(
        &self,
        workflow: &str,
        request: &StartRunRequest,
        traceparent: &str,
    ) -> Result<StartRunResponse> {
        let builder = self
            .request(
                Method::POST,
                &format!("/v1/workflows/{}/runs", encode(workflow)),
            )
            .header("traceparent", traceparent)
            .json(request);
        self.send(builder).await
    }

    /// Starts a run with the caller's W3C trace context: `traceparent` makes
    /// the run join that trace, `baggage` is handed to every attempt's worker.
    pub async fn start_run_with_context(
        &self,
        workflow: &str,
        request: &StartRunRequest,
        traceparent: Option<&str>,
        baggage: Option<&str>,
    ) -> Result<StartRunResponse> {
        let mut builder = self.request(
            Method::POST,
            &format!("/v1/workflows/{}/runs", encode(workflow)),
        );
        if let Some(traceparent) = traceparent {
            builder = builder.header("traceparent", traceparent);
        }
        if let Some(baggage) = baggage {
            builder = builder.header("baggage", baggage);
        }
        self.send(builder.json(request)).await
    }

    /// Lists runs; `query` holds `(name, value)` filter pairs such as `("status", "failed")`.
    pub async fn list_runs(&self, query: &[(&str, String)]) -> Result<RunList> {
        let pairs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let path = if pairs.is_empty() {
            "/v1/runs".to_owned()
        } else {
            format!("/v1/runs?{}", pairs.join("&"))
        };
        self.get(&path).await
    }

    /// `GET /v1/workers`, with query pairs such as `("queue", q)` or `("all", "true")`.
    pub async fn list_workers(&self, query: &[(&str, String)]) -> Result<weft_api::WorkerList> {
        self.get(&with_query("/v1/workers", query)).await
    }

    /// `GET /v1/queues`, optionally `("queue", q)`.
    pub async fn list_queues(&self, query: &[(&str, String)]) -> Result<weft_api::QueueList> {
        self.get(&with_query("/v1/queues", query)).await
    }

    /// `GET /v1/runs/{id}/diagnosis`: why the run is not moving.
    pub async fn run_diagnosis(&self, id: &str) -> Result<weft_api::RunDiagnosisView> {
        self.get(&format!("/v1/runs/{}/diagnosis", encode(id)))
            .await
    }

    /// `GET /v1/diagnostics`: every run not moving, by cause, worst first
    /// (query pairs `limit`, `offset`, `cause`, `stalled`).
    pub async fn diagnostics(&self, query: &[(&str, String)]) -> Result<weft_api::Diagnostics> {
        self.get(&with_query("/v1/diagnostics", query)).await
    }

    pub async fn get_run(&self, id: &str) -> Result<RunDetail> {
        self.get(&format!("/v1/runs/{}", encode(id))).await
    }

    /// The run once it has ended, or after `wait` (at most 60 s), whichever
    /// comes first: one request instead of polling.
    pub async fn wait_run(&self, id: &str, wait: Duration) -> Result<RunDetail> {
        let path = format!("/v1/runs/{}?wait_ms={}", encode(id), wait.as_millis());
        self.send(
            self.request(Method::GET, &path)
                .timeout(wait + Duration::from_secs(10)),
        )
        .await
    }

    pub async fn run_events(&self, id: &str, after: Option<i64>) -> Result<EventList> {
        let mut path = format!("/v1/runs/{}/events", encode(id));
        if let Some(after) = after {
            path.push_str(&format!("?after={after}"));
        }
        self.get(&path).await
    }

    pub async fn run_logs(&self, id: &str, step: Option<&str>) -> Result<LogList> {
        let mut path = format!("/v1/runs/{}/logs", encode(id));
        if let Some(step) = step {
            path.push_str(&format!("?step={}", encode(step)));
        }
        self.get(&path).await
    }

    pub async fn cancel_run(&self, id: &str) -> Result<RunSummary> {
        self.post(
            &format!("/v1/runs/{}/cancel", encode(id)),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn retry_run(&self, id: &str) -> Result<RunSummary> {
        self.post(
            &format!("/v1/runs/{}/retry", encode(id)),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn decide(
        &self,
        id: &str,
        step: &str,
        approve: bool,
        message: Option<String>,
    ) -> Result<RunSummary> {
        let verb = if approve { "approve" } else { "reject" };
        self.post(
            &format!("/v1/runs/{}/steps/{}/{verb}", encode(id), encode(step)),
            &DecisionRequest { message },
        )
        .await
    }

    pub async fn health(&self) -> Result<serde_json::Value> {
        // /health answers 503 with the same body when degraded: return it either way.
        let response = self
            .request(Method::GET, "/health")
            .send()
            .await
            .map_err(|source| Error::Transport {
                url: self.base.clone(),
                source,
            })?;
        response
            .json()
            .await
            .map_err(|err| Error::Decode(err.to_string()))
    }

    // ---- worker protocol ----

    /// Long-polls for tasks. The HTTP timeout is the wait plus a margin.
    pub async fn poll(&self, request: &PollRequest) -> Result<PollResponse> {
        let timeout = Duration::from_millis(request.wait_ms) + Duration::from_secs(10);
        self.send(
            self.request(Method::POST, "/v1/worker/poll")
                .timeout(timeout)
                .json(request),
        )
        .await
    }

    pub async fn heartbeat(&self, lease_id: &str) -> Result<HeartbeatResponse> {
        self.post(
            &format!("/v1/worker/leases/{}/heartbeat", encode(lease_id)),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn complete(&self, lease_id: &str, request: &CompleteRequest) -> Result<Ack> {
        self.post(
            &format!("/v1/worker/leases/{}/complete", encode(lease_id)),
            request,
        )
        .await
    }

    /// Several attempts' results in one request (one transaction on the server).
    pub async fn results(&self, request: &ResultsRequest) -> Result<ResultsResponse> {
        self.post("/v1/worker/results", request).await
    }

    pub async fn fail(&self, lease_id: &str, request: &FailRequest) -> Result<Ack> {
        self.post(
            &format!("/v1/worker/leases/{}/fail", encode(lease_id)),
            request,
        )
        .await
    }

    /// Gives a claimed attempt back without a result (worker shutdown): the
    /// step is ready again at once and the release spends no attempt.
    pub async fn release(&self, lease_id: &str, request: &ReleaseRequest) -> Result<Ack> {
        self.post(
            &format!("/v1/worker/leases/{}/release", encode(lease_id)),
            request,
        )
        .await
    }

    pub async fn append_logs(&self, lease_id: &str, lines: Vec<String>) -> Result<Ack> {
        self.post(
            &format!("/v1/worker/leases/{}/logs", encode(lease_id)),
            &LogsRequest { lines },
        )
        .await
    }
}

/// `path?k=v&...` with each part encoded, or `path` alone.
fn with_query(path: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let pairs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("{path}?{}", pairs.join("&"))
}
