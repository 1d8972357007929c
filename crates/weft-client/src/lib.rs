//! A typed HTTP client for Weft's API, used by the CLI and the worker SDK.
//!
//! Every method sends one HTTP request (JSON bodies, the types of
//! `weft_api`) and answers the decoded 2xx body, or an [`Error`]:
//! [`Error::Api`] when the server answered an error status (its JSON error
//! `code`, e.g. 404 `run_not_found`, 409 `stale_lease`, 413
//! `payload_too_large`), [`Error::Transport`] when it could not be reached,
//! [`Error::Decode`] when a 2xx body is not the expected JSON. Errors common
//! to every endpoint are not repeated on each method: 400 `invalid_json` /
//! `invalid_body` / `invalid_path` / `invalid_query` for a malformed
//! request (a path parameter is 1 to 256 characters without control
//! characters), 413 `payload_too_large` for a body over the server's
//! `--max-body-bytes`, 503 `unavailable` when the database cannot be
//! reached, 500 `internal`. The bounds behind each 400 are stated in the
//! server's `/openapi.json`.

#![deny(missing_docs)]

use std::{sync::Once, time::Duration};

use reqwest::{Method, StatusCode};
use serde::{Serialize, de::DeserializeOwned};
use weft_api::*;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a non-2xx status.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// The HTTP status (400, 404, 409, 413, 503, ...).
        status: u16,
        /// The stable error code of the JSON error body (`run_not_found`,
        /// `stale_lease`, ...). When the body is not Weft's JSON error (a
        /// proxy's page), `not_found` for a 404 and `http_error` otherwise.
        code: String,
        /// The human-readable message of the error body, or the first 500
        /// characters of a body that is not Weft's JSON error.
        message: String,
        /// How long the server asked to wait before trying again (its
        /// `Retry-After` header, in seconds, on 429 `rate_limited` and 503).
        retry_after: Option<Duration>,
    },
    /// The server could not be reached, the connection broke, or the request
    /// timed out (connecting is limited to 5 s; long polls and waits to their
    /// wait plus 10 s).
    #[error("cannot reach the Weft server at {url}: {source}")]
    Transport {
        /// The base URL the client was made with.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// A 2xx answer whose body is not the JSON this call expects (a server of
    /// another version, or not a Weft server); the serde error's text.
    #[error("unexpected response from the server: {0}")]
    Decode(String),
}

impl Error {
    /// The HTTP status of an [`Error::Api`]; `None` for the other kinds.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code of an [`Error::Api`] (`stale_lease`, ...); `None` for
    /// the other kinds.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The wait the server asked for before trying again (`Retry-After` of
    /// a 429 or 503); `None` when it gave none.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the server could not be reached because its TLS certificate
    /// is not trusted (signed by a CA that is neither in the system's roots
    /// nor given with [`Client::with_ca_cert`], expired, or for another
    /// name).
    pub fn is_untrusted_certificate(&self) -> bool {
        let Error::Transport { source, .. } = self else {
            return false;
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(error) = cause {
            // An I/O error's `source` skips the error it wraps (and I/O
            // errors wrap each other): look inside each.
            let mut inside = Some(error);
            while let Some(candidate) = inside {
                if let Some(rustls::Error::InvalidCertificate(_)) =
                    candidate.downcast_ref::<rustls::Error>()
                {
                    return true;
                }
                inside = candidate
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .map(|inner| inner as &(dyn std::error::Error + 'static));
            }
            cause = error.source();
        }
        false
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

/// The value of `X-Weft-Client` this client sends.
pub const CLIENT_NAME: &str = concat!("weft-client/", env!("CARGO_PKG_VERSION"));

/// The result of every [`Client`] call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A handle on one Weft server. Cheap to clone: clones share one connection
/// pool (idle connections are kept 60 s). Its `Debug` never shows the token.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    actor: Option<String>,
}

/// A CA certificate file that cannot be used ([`Client::with_ca_cert`]).
#[derive(Debug, thiserror::Error)]
#[error("the CA certificate is not usable: {reason}")]
pub struct CaCertError {
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "[hidden]"))
            .finish()
    }
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
    /// A client of the server at `base_url` (`http://127.0.0.1:8080`; a
    /// trailing `/` is ignored). Nothing is sent until the first call.
    ///
    /// # Panics
    ///
    /// If the HTTP client cannot be built (no usable TLS provider), which
    /// does not happen with the crate's own `rustls` setup.
    pub fn new(base_url: &str) -> Client {
        let http = Client::http_builder()
            .build()
            .expect("an HTTP client builds");
        Client {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            token: None,
            actor: None,
        }
    }

    /// A client of the server at `base_url` (usually `https://...`) that
    /// also trusts the CA certificates in `ca_pem` (one or more PEM
    /// `CERTIFICATE` sections), beside the system's roots: for a server whose
    /// certificate a private CA signed.
    ///
    /// # Errors
    ///
    /// [`CaCertError`] when `ca_pem` holds no certificate or one that does
    /// not parse.
    pub fn with_ca_cert(base_url: &str, ca_pem: &[u8]) -> Result<Client, CaCertError> {
        let invalid = |err: reqwest::Error| CaCertError {
            reason: err.to_string(),
        };
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem).map_err(invalid)?;
        if certs.is_empty() {
            return Err(CaCertError {
                reason: "it holds no PEM certificate".to_owned(),
            });
        }
        let http = Client::http_builder()
            .tls_certs_merge(certs)
            .build()
            .map_err(invalid)?;
        Ok(Client {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            token: None,
            actor: None,
        })
    }

    fn http_builder() -> reqwest::ClientBuilder {
        install_crypto();
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Below the server's default header read timeout (10 s), which
            // also closes idle keep-alive connections: a pooled connection is
            // dropped here before the server can close it under a request.
            .pool_idle_timeout(Duration::from_secs(5))
    }

    /// Sends `token` as `Authorization: Bearer <token>` on every request
    /// (`None`: no header).
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    /// Sends `actor` as `X-Weft-Actor` on every request: the person this
    /// client acts for. With authentication on, the server records it as
    /// `on_behalf_of` beside the token's name; with it off, as the `actor`
    /// of starts, cancels, retries, decisions and registrations. `None`
    /// (the default) sends no header.
    pub fn with_actor(mut self, actor: Option<String>) -> Client {
        self.actor = actor;
        self
    }

    /// The server's base URL, without a trailing `/`.
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
        self.answer(response).await
    }

    /// A response's 2xx body, decoded, or its error.
    async fn answer<T: DeserializeOwned>(&self, response: reqwest::Response) -> Result<T> {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
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
                    retry_after,
                },
                Err(_) => Error::Api {
                    status: status.as_u16(),
                    code: if status == StatusCode::NOT_FOUND {
                        "not_found".into()
                    } else {
                        "http_error".into()
                    },
                    message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                    retry_after,
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|err| Error::Decode(err.to_string()))
    }

    /// Every request names its client (`X-Weft-Client`, which the server's
    /// forgery protection asks of a POST, PUT or DELETE without a JSON
    /// body) and, if set, its actor.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header(weft_api::CLIENT_HEADER, CLIENT_NAME);
        match &self.actor {
            Some(actor) => request.header(weft_api::ACTOR_HEADER, actor),
            None => request,
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// `PUT /v1/workflows/{name}`: registers a manifest (YAML or JSON text)
    /// as the next version of workflow `name`. Answers the version: a new one
    /// (HTTP 201) or the latest when the manifest is unchanged (200, same
    /// version). 400 with a validation code (`name_mismatch` when the
    /// manifest's `name` is not `name`, `invalid_manifest`, or the code of
    /// the manifest error, whose message names the field); 409
    /// `concurrent_update` when another registration of the same name won
    /// the race (try again).
    pub async fn put_workflow(&self, name: &str, manifest: &str) -> Result<PutWorkflowResponse> {
        let request = self
            .request(Method::PUT, &format!("/v1/workflows/{}", encode(name)))
            .header("content-type", "application/yaml")
            .body(manifest.to_owned());
        self.send(request).await
    }

    /// `POST /v1/tokens` (admin): creates an API token; the answer's `token`
    /// is the only time its text is shown. 400 `invalid_role`,
    /// `invalid_queues`, `invalid_expiry`; 409 `token_name_taken`.
    pub async fn create_token(&self, request: &CreateTokenRequest) -> Result<CreatedToken> {
        self.post("/v1/tokens", request).await
    }

    /// `GET /v1/tokens` (admin): every token, revoked ones included, without
    /// their secrets.
    pub async fn list_tokens(&self) -> Result<TokenList> {
        self.get("/v1/tokens").await
    }

    /// `DELETE /v1/tokens/{id}` (admin): revokes a token by id or by the name
    /// of a live token. 404 `token_not_found`.
    pub async fn revoke_token(&self, name_or_id: &str) -> Result<TokenInfo> {
        self.send(self.request(
            Method::DELETE,
            &format!("/v1/tokens/{}", encode(name_or_id)),
        ))
        .await
    }

    /// `GET /v1/workflows`: every workflow with its latest version.
    pub async fn list_workflows(&self) -> Result<WorkflowList> {
        self.get("/v1/workflows").await
    }

    /// `GET /v1/workflows/{name}`: the latest version of a workflow, its
    /// manifest and steps. 404 `workflow_not_found`.
    pub async fn get_workflow(&self, name: &str) -> Result<WorkflowDetail> {
        self.get(&format!("/v1/workflows/{}", encode(name))).await
    }

    /// `POST /v1/workflows/{workflow}/runs`: starts a run of the latest
    /// version with `request.input`. Answers (HTTP 202) the run's id and
    /// trace id; with an `idempotency_key` that already started a run of
    /// this workflow with an equal input (compared as canonical JSON), that
    /// run, `created: false` (nothing new is started). 404
    /// `workflow_not_found`; 400 for an invalid input or key
    /// (`invalid_idempotency_key`); 409 `idempotency_key_reused` when the key
    /// started a run with a different input, or `concurrent_update` when two
    /// starts with the same key raced (try again).
    pub async fn start_run(
        &self,
        workflow: &str,
        request: &StartRunRequest,
    ) -> Result<StartRunResponse> {
        self.post(&format!("/v1/workflows/{}/runs", encode(workflow)), request)
            .await
    }

    /// `POST /v1/workflows/{workflow}/runs/batch`: starts several runs of a
    /// workflow in one request and one transaction. Answers (HTTP 202) one
    /// entry per requested run, in order, each what [`Client::start_run`]
    /// would have answered. 400 `invalid_batch` (empty or too many runs);
    /// 404 `workflow_not_found`.
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

    /// [`Client::start_run`] carrying the caller's W3C `traceparent`
    /// (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`): the run joins
    /// that trace. A malformed header is ignored by the server (the run gets
    /// a trace of its own).
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

    /// [`Client::start_run`] with the caller's W3C trace context:
    /// `traceparent` makes the run join that trace, `baggage` (the W3C
    /// `baggage` header value) is handed to every attempt's worker. `None`
    /// sends no header.
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

    /// `GET /v1/audit`: one page of the audit log (registrations, token
    /// changes), newest first. `query` holds `(name, value)` pairs: `action`
    /// (`workflow.registered`, `token.created`, `token.revoked`), `actor`,
    /// `since` (RFC 3339 time or a duration back from now), `limit` (1 to
    /// 1000, default 50) and `cursor` (the previous page's `next_cursor`).
    /// 400 `invalid_action`, `invalid_since`, `invalid_limit` or
    /// `invalid_cursor`.
    pub async fn list_audit(&self, query: &[(&str, String)]) -> Result<weft_api::AuditList> {
        self.get(&with_query("/v1/audit", query)).await
    }

    /// `GET /v1/runs`: one page of runs, newest first. `query` holds
    /// `(name, value)` pairs, sent URL-encoded: `workflow`, `status`
    /// (`pending`, `running`, `succeeded`, `failed`, `cancelled`, ...),
    /// `trace_id`, `since` (RFC 3339 time or a duration back from now, `1h`),
    /// `limit` (page size) and `cursor` (the previous page's `next_cursor`).
    /// 400 `invalid_status`, `invalid_since`, `invalid_limit` or
    /// `invalid_cursor`.
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

    /// `GET /v1/workers`: the workers seen polling, live ones only unless
    /// `("all", "true")` (then also those past the liveness window, until
    /// their retention ends); `("queue", q)` keeps the workers polling `q`
    /// (1 to 128 characters). Pairs are sent URL-encoded.
    pub async fn list_workers(&self, query: &[(&str, String)]) -> Result<weft_api::WorkerList> {
        self.get(&with_query("/v1/workers", query)).await
    }

    /// `GET /v1/queues`: every queue's ready and running steps, the age in
    /// seconds of its oldest ready step, and its live pollers and their
    /// handlers; `("queue", q)` keeps one queue.
    pub async fn list_queues(&self, query: &[(&str, String)]) -> Result<weft_api::QueueList> {
        self.get(&with_query("/v1/queues", query)).await
    }

    /// `GET /v1/runs/{id}/diagnosis`: why the run's steps are not moving, a
    /// stable cause code per step; `id` is a run id or a trace id. 404
    /// `run_not_found`.
    pub async fn run_diagnosis(&self, id: &str) -> Result<weft_api::RunDiagnosisView> {
        self.get(&format!("/v1/runs/{}/diagnosis", encode(id)))
            .await
    }

    /// `GET /v1/diagnostics`: every run not moving, by cause, worst first.
    /// Query pairs: `limit` (runs per cause, default 20, 1 to 500), `offset`
    /// (runs of each cause skipped, at most 10,000), `cause` (only that
    /// cause), `stalled` (`true`: only stalled causes). 400 `invalid_cause`
    /// for an unknown cause, `invalid_query` for a bad number.
    pub async fn diagnostics(&self, query: &[(&str, String)]) -> Result<weft_api::Diagnostics> {
        self.get(&with_query("/v1/diagnostics", query)).await
    }

    /// `GET /v1/runs/{id}`: a run with its steps, attempts and timing; `id` is
    /// a run id or a trace id (32 hex digits). 404 `run_not_found`.
    pub async fn get_run(&self, id: &str) -> Result<RunDetail> {
        self.get(&format!("/v1/runs/{}", encode(id))).await
    }

    /// `GET /v1/runs/{id}?wait_ms=`: the run once it has ended, or as it is
    /// after `wait` (sent in whole milliseconds, at most 60 s), whichever
    /// comes first: one request instead of polling. The HTTP request times
    /// out after `wait` + 10 s ([`Error::Transport`]). 400 `invalid_wait`
    /// for a `wait` over 60 s; 404 `run_not_found`.
    pub async fn wait_run(&self, id: &str, wait: Duration) -> Result<RunDetail> {
        let path = format!("/v1/runs/{}?wait_ms={}", encode(id), wait.as_millis());
        self.send(
            self.request(Method::GET, &path)
                .timeout(wait + Duration::from_secs(10)),
        )
        .await
    }

    /// `GET /v1/runs/{id}/events`: the run's history events in order, only
    /// those with a `seq` greater than `after` when given (to follow), every
    /// page of them (it follows `next_after`; the answer's own `next_after`
    /// is `None`). 404 `run_not_found`.
    pub async fn run_events(&self, id: &str, after: Option<i64>) -> Result<EventList> {
        let mut all = self.run_events_page(id, after, None).await?;
        while let Some(next) = all.next_after.take() {
            let page = self.run_events_page(id, Some(next), None).await?;
            all.events.extend(page.events);
            all.next_after = page.next_after;
        }
        Ok(all)
    }

    /// One page of `GET /v1/runs/{id}/events`: at most `limit` events (1 to
    /// 1000, the server's default 1000 when `None`) after `after`, with the
    /// `next_after` cursor of the next page when there is one. 400
    /// `invalid_limit`; 404 `run_not_found`.
    pub async fn run_events_page(
        &self,
        id: &str,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<EventList> {
        let mut query: Vec<String> = Vec::new();
        if let Some(after) = after {
            query.push(format!("after={after}"));
        }
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        let mut path = format!("/v1/runs/{}/events", encode(id));
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        self.get(&path).await
    }

    /// `GET /v1/runs/{id}/logs`: the log lines workers sent for the run's
    /// attempts (exec handlers' stderr), of one step when `step` is given,
    /// every page of them (it follows `next_after`; the answer's own
    /// `next_after` is `None`). 404 `run_not_found`.
    pub async fn run_logs(&self, id: &str, step: Option<&str>) -> Result<LogList> {
        let mut all = self.run_logs_page(id, step, None, None).await?;
        while let Some(next) = all.next_after.take() {
            let page = self.run_logs_page(id, step, Some(next), None).await?;
            all.lines.extend(page.lines);
            all.next_after = page.next_after;
        }
        Ok(all)
    }

    /// One page of `GET /v1/runs/{id}/logs`: at most `limit` lines (1 to
    /// 1000, the server's default 1000 when `None`) after `after`, of one
    /// step when `step` is given, with the `next_after` cursor of the next
    /// page when there is one. 400 `invalid_limit`; 404 `run_not_found`.
    pub async fn run_logs_page(
        &self,
        id: &str,
        step: Option<&str>,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<LogList> {
        let mut query: Vec<String> = Vec::new();
        if let Some(step) = step {
            query.push(format!("step={}", encode(step)));
        }
        if let Some(after) = after {
            query.push(format!("after={after}"));
        }
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        let mut path = format!("/v1/runs/{}/logs", encode(id));
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        self.get(&path).await
    }

    /// `POST /v1/runs/{id}/cancel`: cancels a pending or running run and
    /// answers it as it now is; its running attempts learn it from their next
    /// heartbeat. 404 `run_not_found`; 409 `invalid_state` when the run has
    /// already ended.
    pub async fn cancel_run(&self, id: &str) -> Result<RunSummary> {
        self.post(
            &format!("/v1/runs/{}/cancel", encode(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// `POST /v1/runs/{id}/retry`: runs a failed or cancelled run again from
    /// its failed and cancelled steps, and answers it as it now is. 404
    /// `run_not_found`; 409 `invalid_state` when the run did not fail and was
    /// not cancelled.
    pub async fn retry_run(&self, id: &str) -> Result<RunSummary> {
        self.post(
            &format!("/v1/runs/{}/retry", encode(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// `POST /v1/runs/cancel`: cancels every pending or running run the
    /// filter matches, if there are exactly `request.expected` of them (else
    /// 409 `count_changed`, nothing done; more than 1000 is 400
    /// `too_many_runs`). Answers the runs cancelled and those refused.
    pub async fn cancel_runs(
        &self,
        request: &weft_api::BulkActionRequest,
    ) -> Result<weft_api::BulkActionResponse> {
        self.post("/v1/runs/cancel", request).await
    }

    /// `POST /v1/runs/retry`: [`Client::cancel_runs`] for retrying every
    /// failed or cancelled run the filter matches.
    pub async fn retry_runs(
        &self,
        request: &weft_api::BulkActionRequest,
    ) -> Result<weft_api::BulkActionResponse> {
        self.post("/v1/runs/retry", request).await
    }

    /// `POST /v1/runs/{id}/steps/{step}/approve` (`approve`) or `.../reject`:
    /// decides an approval step that is waiting, recording `comment` (at most
    /// 4096 characters, else 400 `invalid_message`) in the decision's history
    /// events; a rejection fails the run, with `comment` (default `rejected`)
    /// as the reason's message. Answers the run as it now
    /// is. 404 `run_not_found` or `step_not_found`; 409 `invalid_state` when
    /// the step is not waiting for a decision.
    pub async fn decide(
        &self,
        id: &str,
        step: &str,
        approve: bool,
        comment: Option<String>,
    ) -> Result<RunSummary> {
        let verb = if approve { "approve" } else { "reject" };
        self.post(
            &format!("/v1/runs/{}/steps/{}/{verb}", encode(id), encode(step)),
            &DecisionRequest {
                comment,
                message: None,
            },
        )
        .await
    }

    /// `POST /v1/runs/{id}/steps/{step}/compensation/skip`: marks the step's
    /// failed compensation as skipped, with an optional `comment` recorded
    /// beside the actor. [`Error::Api`] 409 `no_failed_compensation` unless
    /// the step's undo failed.
    pub async fn skip_compensation(
        &self,
        id: &str,
        step: &str,
        comment: Option<String>,
    ) -> Result<RunSummary> {
        self.post(
            &format!(
                "/v1/runs/{}/steps/{}/compensation/skip",
                encode(id),
                encode(step)
            ),
            &DecisionRequest {
                comment,
                message: None,
            },
        )
        .await
    }

    /// `GET /health`: the server's status (`ok` or `degraded`), version,
    /// uptime in seconds and its checks (database, migrations, engine), as
    /// JSON. Answered whether the server is healthy (HTTP 200) or degraded
    /// (503): read `status`. [`Error::Api`] only for another status (400
    /// `tls_required` when `http://` reached an HTTPS server).
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
        if response.status() != StatusCode::SERVICE_UNAVAILABLE {
            // 200, or another error (a plain-HTTP request to an HTTPS port).
            return self.answer(response).await;
        }
        response
            .json()
            .await
            .map_err(|err| Error::Decode(err.to_string()))
    }

    // ---- worker protocol ----

    /// `POST /v1/worker/poll`: claims up to `request.max_tasks` (1 to 100)
    /// ready steps whose handler is in `request.handlers`, each under a new
    /// lease. With none ready the server holds the request up to
    /// `request.wait_ms` milliseconds (at most 60,000; the server holds it no
    /// longer than its `--max-poll-wait`, 30 s by default) and answers an
    /// empty list. The HTTP request times out after `wait_ms` + 10 s
    /// ([`Error::Transport`]). 400 `invalid_worker_id` (empty or over 256
    /// characters), `no_handlers`, `too_many_handlers`, `invalid_handler`,
    /// `invalid_queues`, `invalid_max_tasks`, `invalid_wait`, or
    /// `invalid_worker_meta` (the `host`, `version`, `pid` or `concurrency`
    /// a worker describes itself with, out of bounds).
    pub async fn poll(&self, request: &PollRequest) -> Result<PollResponse> {
        let timeout = Duration::from_millis(request.wait_ms) + Duration::from_secs(10);
        self.send(
            self.request(Method::POST, "/v1/worker/poll")
                .timeout(timeout)
                .json(request),
        )
        .await
    }

    /// `POST /v1/worker/leases/{lease_id}/heartbeat`: extends the lease by
    /// its duration from now. `cancel_requested` is true, and the lease is
    /// not extended, when the handler should stop: its run ended or was
    /// cancelled, its attempt no longer runs, or its start-to-close deadline
    /// passed. 409 `stale_lease` when the lease is no longer held (expired,
    /// reaped, or its result applied): the step may belong to another worker.
    pub async fn heartbeat(&self, lease_id: &str) -> Result<HeartbeatResponse> {
        self.post(
            &format!("/v1/worker/leases/{}/heartbeat", encode(lease_id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// `POST /v1/worker/leases/{lease_id}/complete`: the attempt succeeded
    /// with `request.output`; ends the attempt and releases the lease. An
    /// output over the task's `max_output_bytes` is applied as a permanent
    /// failure with reason `invalid_output`. `Ack.already_applied` is true
    /// when the server answers a re-sent result (after a lost answer) whose
    /// same outcome it had already applied. 409 `stale_lease` (the
    /// lease is gone: nothing changed), `attempt_not_running` (the run ended
    /// or the step was retried meanwhile: only the lease is released) or
    /// `deadline_exceeded` (sent after the step's timeout: recorded as a
    /// timeout, not a success); 413 for an output over the body limit.
    pub async fn complete(&self, lease_id: &str, request: &CompleteRequest) -> Result<Ack> {
        self.post(
            &format!("/v1/worker/leases/{}/complete", encode(lease_id)),
            request,
        )
        .await
    }

    /// `POST /v1/worker/results`: several attempts' results (at most 1000) in
    /// one request and one transaction on the server. Answers one
    /// `ResultAnswer` per result, in order, each with the status and error
    /// its own [`Client::complete`] or [`Client::fail`] call would have got
    /// (200, or 409 `stale_lease`, ...). The whole request fails, changing
    /// nothing, with 400 `too_many_results`, `invalid_error_kind`,
    /// `invalid_lease_id`, `invalid_message` or `invalid_timing`, 413 when
    /// the batch is over the body limit (split it and send the halves), or
    /// 503 when the database cannot be reached.
    pub async fn results(&self, request: &ResultsRequest) -> Result<ResultsResponse> {
        self.post("/v1/worker/results", request).await
    }

    /// `POST /v1/worker/leases/{lease_id}/fail`: the attempt failed with
    /// `request.error`; ends the attempt and releases the lease, and the step
    /// is retried or fails by its retry policy (`error.retryable: false` never
    /// retries; by default `invalid_output` and `no_handler` do not either).
    /// 400 `invalid_error_kind` when `error.kind` is not one of
    /// `handler_error`, `timeout`, `invalid_output`, `cancelled`,
    /// `no_handler`, `invalid_message` for a message over 262,144 characters;
    /// 409 as [`Client::complete`].
    pub async fn fail(&self, lease_id: &str, request: &FailRequest) -> Result<Ack> {
        self.post(
            &format!("/v1/worker/leases/{}/fail", encode(lease_id)),
            request,
        )
        .await
    }

    /// `POST /v1/worker/leases/{lease_id}/release`: gives a claimed attempt
    /// back without a result (worker shutdown): the attempt ends `released`
    /// (reason `worker_shutdown`, with `request.message`), the step is ready
    /// again at once and the release spends no attempt; past 3 releases of
    /// the step, a release counts as a failed attempt with reason
    /// `worker_shutdown`. `Ack.already_applied` when sent again after the
    /// release was made. 400 `invalid_message` for a message over 4096
    /// characters; 409 `stale_lease` (the lease is gone),
    /// `attempt_not_running` (its run ended meanwhile) or
    /// `deadline_exceeded` (past the step's start-to-close timeout: recorded
    /// as timed out); a server older than this endpoint answers 404.
    pub async fn release(&self, lease_id: &str, request: &ReleaseRequest) -> Result<Ack> {
        self.post(
            &format!("/v1/worker/leases/{}/release", encode(lease_id)),
            request,
        )
        .await
    }

    /// `POST /v1/worker/leases/{lease_id}/logs`: appends `lines` (at most
    /// 10,000 of at most 65,536 characters each; the handler's stderr, one
    /// entry per line) to the attempt's log. 400 `too_many_lines` or
    /// `line_too_long`; 409 `stale_lease` when the lease is no longer held.
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

#[cfg(test)]
mod tests {
    use super::Client;

    #[test]
    fn debug_hides_the_token() {
        let client = Client::new("http://127.0.0.1:1").with_token(Some("weft_0_secret".into()));
        let shown = format!("{client:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("[hidden]"), "{shown}");
    }
}
