//! The worker SDK: register handlers, and the worker polls the server,
//! runs claimed steps with a concurrency limit, heartbeats their leases,
//! cancels handlers whose run was cancelled or whose lease was lost, and
//! reports results. `exec` runs handlers as external commands. Each handler
//! runs inside an `execute <handler>` span whose parent is the attempt's span
//! (the task's `traceparent`); it is exported when the process installs a
//! `tracing-opentelemetry` layer, and is then the `traceparent` handlers see.
//!
//! Invariant: a handler's result is reported only under the lease it was
//! claimed with; a lost lease (409) means another worker may own the step,
//! so the result is dropped, never retried under another lease.

#![deny(missing_docs)]

pub mod exec;
mod report;
mod supervise;

pub use report::MAX_RESULTS_PER_REQUEST;

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use weft_api::{PollRequest, ReleaseRequest, Task, TaskError, TaskResult, WorkerTiming};
use weft_client::Client;

/// Why a handler failed: sent to the server as the attempt's `TaskError`
/// (`POST /v1/worker/leases/{lease_id}/fail` or in a results batch). Any
/// `Display` error converts into a retryable one, so handlers can use `?`.
#[derive(Debug, Clone)]
pub struct HandlerError {
    /// The failure's text, shown as the step's error and in history; sent
    /// cut to [`MAX_ERROR_MESSAGE_BYTES`] (ending in `…`).
    pub message: String,
    /// The failure's reason; `None` is `handler_error`. The server knows only
    /// [`weft_api::WORKER_FAILURE_KINDS`] (`handler_error`, `timeout`,
    /// `invalid_output`, `cancelled`, `no_handler`); any other kind is sent
    /// as a `handler_error` whose message starts with `[kind]`.
    pub kind: Option<String>,
    /// False: do not retry, fail the step now. True: retried while the
    /// step's retry policy has attempts left.
    pub retryable: bool,
}

impl HandlerError {
    /// A failure worth retrying (the default for errors).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: None,
            retryable: true,
        }
    }

    /// A failure no retry will fix: the step fails at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: None,
            retryable: false,
        }
    }

    /// The same error with [`HandlerError::kind`] set to `kind` (one of the
    /// reasons listed there).
    pub fn with_kind(mut self, kind: &str) -> Self {
        self.kind = Some(kind.to_owned());
        self
    }
}

impl<E: std::fmt::Display> From<E> for HandlerError {
    fn from(err: E) -> Self {
        HandlerError::retryable(err.to_string())
    }
}

/// What a handler gets: the task, a cancellation token, and a way to log.
#[derive(Clone)]
pub struct TaskContext {
    /// The claimed attempt as the server handed it out: run, step, attempt
    /// number, lease id, input, timeouts in ms, trace context.
    pub task: Arc<Task>,
    cancel: CancellationToken,
    client: Client,
    /// The `execute` span's traceparent when it is exported, else the attempt's.
    traceparent: String,
}

impl TaskContext {
    /// `{"input": <run input>, "steps": {<dependency>: <output>},
    /// "upstream": {<dependency>: {"status", "reason", "error"}}}`; a
    /// dependency's output is `null` unless it completed.
    pub fn input(&self) -> &Value {
        &self.task.input
    }

    /// The run's input.
    pub fn run_input(&self) -> &Value {
        &self.task.input["input"]
    }

    /// The W3C traceparent to make the handler's spans children of: the
    /// worker's `execute` span when this process exports spans, else the
    /// attempt's span (the task's `traceparent`).
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The key that is the same for every attempt of this step (retries,
    /// redeliveries) and different for any other step, phase or `for_each`
    /// index: pass it to downstream APIs so a side effect happens once.
    /// A UUID; empty from servers that predate it.
    pub fn idempotency_key(&self) -> &str {
        &self.task.idempotency_key
    }

    /// The W3C `baggage` the run was started with, if any.
    pub fn baggage(&self) -> Option<&str> {
        self.task.baggage.as_deref()
    }

    /// Cancelled when the run is cancelled, the attempt timed out, the lease
    /// was lost, or the worker's shutdown grace is over.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether [`TaskContext::cancellation`] has fired: the handler should
    /// stop (the attempt is reported cancelled or timed out, or, at
    /// shutdown, released unless the handler ends within the stop timeout).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Sends log lines to the server (`POST /v1/worker/leases/{lease_id}/logs`),
    /// kept with this attempt. Each line is first cut to
    /// [`exec::MAX_LOG_LINE_BYTES`] (ending in `…`). A batch the server finds
    /// too large (413) is sent in halves, a single line too large is cut to
    /// [`LOG_LINE_CUT_BYTES`]; a failed send (no answer, 5xx, 408, 429) is
    /// tried again a few times (within about a second), then the lines are
    /// dropped. Any other refusal drops the batch at once: more than 10,000
    /// lines (400 `too_many_lines`), a lease no longer held (409
    /// `stale_lease`). Never fails the handler; a dropped batch is logged at
    /// debug level.
    pub async fn log(&self, lines: Vec<String>) {
        let lines: Vec<String> = lines
            .into_iter()
            .map(|line| cut_text(line, exec::MAX_LOG_LINE_BYTES))
            .collect();
        let mut queue = std::collections::VecDeque::from([(lines, false)]);
        let mut retries = 0u32;
        while let Some((batch, cut)) = queue.pop_front() {
            let sent =
                report::bounded(self.client.append_logs(&self.task.lease_id, batch.clone())).await;
            let err = match sent {
                Some(Ok(_)) => continue,
                Some(Err(err)) => Some(err),
                None => None,
            };
            let status = err.as_ref().and_then(|err| err.status());
            let transient = err
                .as_ref()
                .is_none_or(|err| err.is_transient() || matches!(err.status(), Some(408 | 429)));
            match status {
                Some(413) if batch.len() > 1 => {
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    queue.push_front((second, false));
                    queue.push_front((first, false));
                }
                Some(413) if !cut => {
                    let line = &batch[0];
                    let mut end = LOG_LINE_CUT_BYTES.min(line.len());
                    while !line.is_char_boundary(end) {
                        end -= 1;
                    }
                    let short = format!(
                        "{}… [cut from {} bytes: too large for the server]",
                        &line[..end],
                        line.len()
                    );
                    queue.push_front((vec![short], true));
                }
                _ if transient && retries < 3 => {
                    tokio::time::sleep(report::jittered(Duration::from_millis(200 << retries)))
                        .await;
                    retries += 1;
                    queue.push_front((batch, cut));
                }
                _ => {
                    let error = err.map_or_else(|| "no answer".to_owned(), |err| err.to_string());
                    tracing::debug!(
                        component = "worker",
                        error,
                        lines = batch.len(),
                        "could not send step logs"
                    );
                }
            }
        }
    }
}

/// What a [`Handler`] returns: the step's output (any JSON value, at most
/// the task's `max_output_bytes` when the server says it) or why it failed.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>;

/// A step handler. Closures `Fn(TaskContext) -> impl Future<Output = Result<Value, HandlerError>>` are handlers.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt. The future runs in its own task: a panic fails the
    /// attempt (retryable, "handler panicked: ..."), and the future is
    /// dropped when the step's timeout passes (kind `timeout`), when the
    /// attempt is cancelled (kind `cancelled`), or at shutdown when it has
    /// not ended within [`Builder::stop_timeout`] after the grace (the lease
    /// is then released).
    fn call(&self, ctx: TaskContext) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        Box::pin(self(ctx))
    }
}

/// A log line the server refuses as too large is cut to this many bytes.
pub const LOG_LINE_CUT_BYTES: usize = 1024;

/// The most tasks one poll may ask for (the server's limit).
pub const MAX_TASKS_PER_POLL: usize = 100;

/// How long running handlers may finish after a shutdown begins, unless
/// [`Builder::shutdown_grace`] says otherwise.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long a handler stopped at shutdown (cancelled; exec handlers get
/// SIGTERM) may take to end before it is killed, unless
/// [`Builder::stop_timeout`] says otherwise.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// First pause before polling again after a failed poll; doubles per failure.
const POLL_RETRY_FIRST: Duration = Duration::from_millis(200);
/// Longest pause between polls while the server is unreachable.
const POLL_RETRY_MAX: Duration = Duration::from_secs(5);

/// Receives what a worker does, for handler-side metrics. Implemented by the
/// binary over weft-telemetry; the SDK itself knows no exporter.
pub trait WorkerObserver: Send + Sync + 'static {
    /// A handler was called for a claimed task.
    fn task_started(&self, handler: &str);
    /// A handler ended; `outcome`: completed, failed, timeout or cancelled;
    /// `seconds`: from its call to its end.
    fn task_finished(&self, handler: &str, outcome: &str, seconds: f64);
    /// A poll was answered; `outcome`: tasks, empty or error; `seconds`: how
    /// long the request took (long polls included).
    fn polled(&self, outcome: &str, seconds: f64);
}

struct NoObserver;

impl WorkerObserver for NoObserver {
    fn task_started(&self, _: &str) {}
    fn task_finished(&self, _: &str, _: &str, _: f64) {}
    fn polled(&self, _: &str, _: f64) {}
}

/// A worker process's poll loop and its handlers, built by
/// [`Worker::builder`] and started with [`Worker::run`].
#[derive(Clone)]
pub struct Worker {
    observer: Arc<dyn WorkerObserver>,
    client: Client,
    worker_id: String,
    queues: Vec<String>,
    handlers: Arc<HashMap<String, Arc<dyn Handler>>>,
    concurrency: usize,
    poll_wait: Duration,
    shutdown_grace: Duration,
    stop_timeout: Duration,
    stop_now: CancellationToken,
}

/// Configures a [`Worker`]; every setting has a default, only handlers need
/// registering.
pub struct Builder {
    observer: Option<Arc<dyn WorkerObserver>>,
    client: Client,
    worker_id: Option<String>,
    queues: Vec<String>,
    handlers: HashMap<String, Arc<dyn Handler>>,
    concurrency: usize,
    poll_wait: Duration,
    shutdown_grace: Duration,
    stop_timeout: Duration,
    stop_now: CancellationToken,
}

impl Worker {
    /// A builder for a worker that talks to the server through `client`,
    /// with the defaults: a generated id ([`default_worker_id`]), queue
    /// `default`, concurrency 8, polls held up to 20 s, a 30 s shutdown grace
    /// ([`DEFAULT_SHUTDOWN_GRACE`]) and a 5 s stop timeout
    /// ([`DEFAULT_STOP_TIMEOUT`]).
    pub fn builder(client: Client) -> Builder {
        Builder {
            observer: None,
            client,
            worker_id: None,
            queues: Vec::new(),
            handlers: HashMap::new(),
            concurrency: 8,
            poll_wait: Duration::from_secs(20),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            stop_now: CancellationToken::new(),
        }
    }

    /// The id this worker polls with, shown in attempts and logs.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Polls and runs tasks until `shutdown` is cancelled, then shuts down
    /// gracefully: polling stops, running handlers get the shutdown grace
    /// (see [`Builder::shutdown_grace`]) to finish and their results are
    /// delivered; the handlers still running after it are cancelled (exec
    /// handlers: SIGTERM to the process group, SIGKILL after
    /// [`Builder::stop_timeout`]) and their leases released, so the steps are
    /// ready again at once without spending an attempt.
    pub async fn run(self, shutdown: CancellationToken) {
        let handlers: Vec<String> = {
            let mut names: Vec<String> = self.handlers.keys().cloned().collect();
            names.sort();
            names
        };
        tracing::info!(
            component = "worker", worker_id = %self.worker_id, queues = ?self.queues, handlers = ?handlers,
            concurrency = self.concurrency, "worker started"
        );
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let reporter = report::Reporter::spawn(self.client.clone(), self.worker_id.clone());
        // Cancelled when the shutdown grace is over: handlers still running stop.
        let stop = CancellationToken::new();
        let mut backoff = POLL_RETRY_FIRST;
        // Failed polls in a row: the outage is logged when it starts and ends.
        let mut failed_polls = 0u32;
        while !shutdown.is_cancelled() {
            // Wait for at least one free slot, then ask for as many as are free.
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => permit.expect("semaphore open"),
            };
            let mut permits = vec![first];
            // The server hands out at most MAX_TASKS_PER_POLL tasks a poll.
            while permits.len() < MAX_TASKS_PER_POLL {
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            let request = PollRequest {
                worker_id: self.worker_id.clone(),
                queues: self.queues.clone(),
                handlers: handlers.clone(),
                max_tasks: permits.len() as u32,
                wait_ms: self.poll_wait.as_millis() as u64,
                host: Some(host_name()),
                pid: Some(std::process::id()),
                version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                concurrency: u32::try_from(self.concurrency).ok(),
            };
            let poll_started = std::time::Instant::now();
            let polled = tokio::select! {
                _ = shutdown.cancelled() => break,
                polled = self.client.poll(&request) => polled,
            };
            let poll_outcome = match &polled {
                Ok(response) if response.tasks.is_empty() => "empty",
                Ok(_) => "tasks",
                Err(_) => "error",
            };
            self.observer
                .polled(poll_outcome, poll_started.elapsed().as_secs_f64());
            match polled {
                Ok(response) => {
                    if failed_polls > 0 {
                        tracing::info!(component = "worker", worker_id = %self.worker_id, failed_polls, "reconnected to the server");
                    }
                    failed_polls = 0;
                    backoff = POLL_RETRY_FIRST;
                    for task in response.tasks {
                        let permit = permits.pop().expect("no more tasks than permits");
                        let worker = self.clone();
                        let stop = stop.clone();
                        let reporter = reporter.clone();
                        tokio::spawn(async move {
                            worker.execute(task, stop, &reporter).await;
                            drop(permit);
                        });
                    }
                }
                Err(err) => {
                    // A 429 (over the token's rate or long-poll cap) says
                    // how long to wait: never sooner than that.
                    let pause = report::pause_after(&err, backoff);
                    if failed_polls == 0 && err.is_untrusted_certificate() {
                        tracing::warn!(component = "worker", worker_id = %self.worker_id, error = %err,
                            "the server's TLS certificate is not trusted: give the worker the CA that signed it \
                             (weft worker --ca-cert, or Client::with_ca_cert); retrying with backoff");
                    } else if failed_polls == 0 {
                        tracing::warn!(component = "worker", worker_id = %self.worker_id, error = %err, "poll failed; reconnecting with backoff");
                    } else {
                        tracing::debug!(component = "worker", worker_id = %self.worker_id, error = %err, retry_in_ms = pause.as_millis() as u64, "poll failed again");
                    }
                    failed_polls += 1;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    backoff = (backoff * 2).min(POLL_RETRY_MAX);
                }
            }
        }
        let running = self.concurrency - slots.available_permits();
        tracing::info!(
            component = "worker", worker_id = %self.worker_id, running,
            grace_ms = self.shutdown_grace.as_millis() as u64,
            "shutting down: polling stopped; waiting for running handlers to finish"
        );
        let all = self.concurrency as u32;
        let finished = tokio::select! {
            finished = tokio::time::timeout(self.shutdown_grace, slots.acquire_many(all)) => finished.is_ok(),
            _ = self.stop_now.cancelled() => {
                tracing::info!(component = "worker", worker_id = %self.worker_id, "asked again to stop: ending the shutdown grace now");
                false
            }
        };
        if !finished {
            let running = self.concurrency - slots.available_permits();
            tracing::info!(
                component = "worker", worker_id = %self.worker_id, running,
                stop_timeout_ms = self.stop_timeout.as_millis() as u64,
                "shutdown grace over; stopping the remaining handlers and releasing their leases"
            );
            stop.cancel();
            let _ = slots.acquire_many(all).await;
        }
        reporter.flush().await;
        tracing::info!(component = "worker", worker_id = %self.worker_id, "worker stopped");
    }

    /// Runs one task's handler and hands its result to the reporter,
    /// returning once it is delivered (the lease is heartbeated until then);
    /// or, when `stop` ends the handler, releases the lease.
    async fn execute(&self, task: Task, stop: CancellationToken, reporter: &report::Reporter) {
        let claimed = tokio::time::Instant::now();
        let task = Arc::new(task);
        let lease = Arc::new(report::Lease::new(
            claimed + Duration::from_millis(task.lease_ms.max(0) as u64),
        ));
        let cancel = CancellationToken::new();
        let heartbeat_stop = CancellationToken::new();
        // Stops the heartbeats however this function ends.
        let _heartbeat_guard = heartbeat_stop.clone().drop_guard();
        let heartbeats = tokio::spawn(heartbeat_loop(
            self.client.clone(),
            task.clone(),
            cancel.clone(),
            heartbeat_stop.clone(),
            lease.clone(),
        ));
        let outcome = self.run_handler(&task, claimed, cancel, stop).await;
        match outcome {
            Some(_) if lease.given_up() => {
                // Stopped because the lease may have lapsed: the step is the
                // server's to hand out again, as `lease_expired`.
                tracing::warn!(
                    component = "worker", run_id = %task.run_id, trace_id = %task.trace_id,
                    step = %task.step, attempt = task.attempt,
                    "handler stopped before its lease could lapse; no result is sent"
                );
            }
            Some((result, handler_ms)) => {
                reporter
                    .send(report::Report {
                        task: task.clone(),
                        result,
                        handler_ms,
                        lease,
                        shrunk: false,
                        delivered: None,
                    })
                    .await;
            }
            None => release(&self.client, &self.worker_id, &task).await,
        }
        heartbeat_stop.cancel();
        let _ = heartbeats.await;
    }

    /// The handler's result as the server takes it, with the handler's time;
    /// `None` when the worker's shutdown stopped it (the lease is to be
    /// released, not failed).
    async fn run_handler(
        &self,
        task: &Arc<Task>,
        claimed: tokio::time::Instant,
        cancel: CancellationToken,
        stop: CancellationToken,
    ) -> Option<(TaskResult, i64)> {
        let Some(handler) = self.handlers.get(&task.handler).cloned() else {
            let error = TaskError {
                message: format!("no handler `{}` on this worker", task.handler),
                kind: Some("no_handler".into()),
                retryable: Some(false),
            };
            let result = TaskResult {
                lease_id: task.lease_id.clone(),
                output: Value::Null,
                error: Some(error),
                timing: None,
            };
            return Some((result, 0));
        };
        tracing::debug!(
            component = "worker", worker_id = %self.worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
            workflow = %task.workflow, step = %task.step, attempt = task.attempt, "attempt started"
        );
        let span = execute_span(task, &self.worker_id);
        let traceparent = exported_traceparent(&span).unwrap_or_else(|| task.traceparent.clone());
        let ctx = TaskContext {
            task: task.clone(),
            cancel: cancel.clone(),
            client: self.client.clone(),
            traceparent,
        };
        let started = tokio::time::Instant::now();
        self.observer.task_started(&task.handler);
        let dispatch_ms = (started - claimed).as_millis() as i64;
        let timeout = task
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.max(0) as u64));
        // In its own task, so a panic becomes a failure of this attempt
        // rather than a task that dies while its lease is renewed for ever;
        // aborted when dropped, so a timeout or cancellation still drops
        // the handler (an exec handler's process group dies with it).
        let call = HandlerTask(tokio::spawn(handler.call(ctx).instrument(span.clone())));
        tokio::pin!(call);
        let result = tokio::select! {
            result = &mut call => Some(result),
            _ = cancel.cancelled() => Some(Err(HandlerError::retryable("attempt cancelled").with_kind("cancelled"))),
            _ = sleep_or_forever(timeout) => Some(Err(HandlerError::retryable(format!(
                "handler exceeded the step timeout of {} ms", task.timeout_ms.unwrap_or(0)
            )).with_kind("timeout"))),
            _ = stop.cancelled() => {
                tracing::info!(
                    component = "worker", worker_id = %self.worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
                    step = %task.step, attempt = task.attempt, "stopping the handler: the worker is shutting down"
                );
                cancel.cancel();
                match tokio::time::timeout(self.stop_timeout, &mut call).await {
                    // It finished after all: its output is as good as any.
                    Ok(Ok(output)) => Some(Ok(output)),
                    _ => None,
                }
            }
        };
        let handler_ms = started.elapsed().as_millis() as i64;
        let Some(result) = result else {
            self.observer.task_finished(
                &task.handler,
                "cancelled",
                started.elapsed().as_secs_f64(),
            );
            return None;
        };
        let result = result.and_then(|output| check_output_size(task, output));
        let task_outcome = match &result {
            Ok(_) => "completed",
            Err(err) => match err.kind.as_deref() {
                Some("timeout") => "timeout",
                Some("cancelled") => "cancelled",
                _ => "failed",
            },
        };
        self.observer
            .task_finished(&task.handler, task_outcome, started.elapsed().as_secs_f64());
        if let Err(err) = &result {
            span.record("otel.status_code", "error");
            // The kind, not the message: a handler's message may quote its
            // input's secrets, and this process does not know the server's
            // redaction rule. The server's `step.<name>` span carries the
            // message, masked.
            span.record(
                "otel.status_description",
                err.kind.as_deref().unwrap_or("handler_error"),
            );
        }
        drop(span);
        cancel.cancel();
        let timing = Some(WorkerTiming {
            dispatch_ms: Some(dispatch_ms),
            handler_ms: Some(handler_ms),
        });
        let lease_id = task.lease_id.clone();
        let result = match result {
            Ok(output) => TaskResult {
                lease_id,
                output,
                error: None,
                timing,
            },
            Err(err) => TaskResult {
                lease_id,
                output: Value::Null,
                error: Some(reportable_error(err)),
                timing,
            },
        };
        Some((result, handler_ms))
    }
}

/// A handler running in its own task: aborted when dropped; awaiting it
/// yields the handler's result, or a retryable failure if it panicked.
struct HandlerTask(tokio::task::JoinHandle<Result<Value, HandlerError>>);

impl Drop for HandlerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for HandlerTask {
    type Output = Result<Value, HandlerError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| match joined {
            Ok(result) => result,
            Err(err) if err.is_panic() => {
                let panic = err.into_panic();
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                Err(HandlerError::retryable(format!(
                    "handler panicked: {message}"
                )))
            }
            Err(err) => Err(HandlerError::retryable(format!(
                "handler task ended: {err}"
            ))),
        })
    }
}

/// Fails an output larger than the task's `max_output_bytes` (when known):
/// permanently, kind `invalid_output`, naming the size and the limit.
fn check_output_size(task: &Task, output: Value) -> Result<Value, HandlerError> {
    if task.max_output_bytes == 0 {
        return Ok(output);
    }
    let size = serde_json::to_vec(&output).map_or(0, |v| v.len()) as u64;
    if size > task.max_output_bytes {
        return Err(HandlerError::permanent(report::too_large_message(
            "output",
            size,
            task.max_output_bytes,
        ))
        .with_kind("invalid_output"));
    }
    Ok(output)
}

/// Gives an unfinished attempt back at shutdown: the step is ready again at
/// once and no attempt is spent. A server without the endpoint (404) lets
/// the lease lapse instead; nothing is ever reported as a failure.
async fn release(client: &Client, worker_id: &str, task: &Task) {
    let request = ReleaseRequest {
        message: Some("the worker shut down before the handler finished".to_owned()),
    };
    let mut backoff = Duration::from_millis(100);
    for _ in 0..5 {
        let Some(released) = report::bounded(client.release(&task.lease_id, &request)).await else {
            tracing::debug!(
                component = "worker",
                worker_id,
                "release unanswered; retrying"
            );
            continue;
        };
        match released {
            Ok(_) => {
                tracing::info!(
                    component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
                    step = %task.step, attempt = task.attempt, "lease released"
                );
                return;
            }
            Err(err) if err.status() == Some(404) || err.status() == Some(405) => {
                tracing::info!(
                    component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
                    step = %task.step, attempt = task.attempt, error = %err,
                    "the server cannot release this lease; it will lapse and the step retry"
                );
                return;
            }
            Err(err) if err.is_transient() || matches!(err.status(), Some(408 | 429)) => {
                tracing::debug!(component = "worker", worker_id, error = %err, "release failed; retrying");
                tokio::time::sleep(report::pause_after(&err, backoff)).await;
                backoff *= 2;
            }
            Err(err) => {
                tracing::info!(
                    component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
                    step = %task.step, attempt = task.attempt, error = %err, "lease not released"
                );
                return;
            }
        }
    }
    tracing::warn!(
        component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
        step = %task.step, attempt = task.attempt,
        "could not reach the server to release the lease; it will lapse and the step retry"
    );
}

/// The span a handler runs in, parented on the attempt's span.
fn execute_span(task: &Task, worker_id: &str) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!(
        "execute",
        otel.name = %format!("execute {}", task.handler),
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        weft.run_id = %task.run_id,
        weft.workflow = %task.workflow,
        weft.step = %task.step,
        weft.attempt = task.attempt,
        weft.worker_id = %worker_id,
    );
    if let Some(parent) = remote_parent(&task.traceparent) {
        // Fails only when spans are not exported here: nothing to parent.
        let _ = span.set_parent(parent);
    }
    span
}

/// The OpenTelemetry context of a `traceparent` header (W3C Trace Context,
/// read by OpenTelemetry's own propagator).
fn remote_parent(traceparent: &str) -> Option<opentelemetry::Context> {
    use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.trim().to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// The span's `traceparent` when it will be exported (sampled), else `None`
/// (written by OpenTelemetry's W3C propagator).
fn exported_traceparent(span: &tracing::Span) -> Option<String> {
    use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    if !context.span().span_context().is_sampled() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

async fn sleep_or_forever(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Renews the lease every third of its length (sooner after a failed
/// renewal) until `stop`, recording each acknowledged renewal in `lease`:
/// it keeps running after the handler ends, until its result is delivered.
/// Cancels the handler when the server asks (`cancel_requested`), when the
/// lease is gone (409), and when no renewal was acknowledged for so long that
/// the lease may lapse (the server or its database unreachable for about a
/// lease's length): past that point the step may be claimed elsewhere, so
/// the handler must already be stopped for no two executions to overlap.
async fn heartbeat_loop(
    client: Client,
    task: Arc<Task>,
    cancel: CancellationToken,
    stop: CancellationToken,
    lease: Arc<report::Lease>,
) {
    let lease_len = Duration::from_millis(task.lease_ms.max(0) as u64);
    let every = Duration::from_millis((task.lease_ms.max(300) / 3) as u64);
    let margin = lapse_margin(lease_len);
    let mut next = every;
    loop {
        // The moment the lease may lapse unrenewed, less a margin for the
        // handler's kill to land before another worker can claim the step.
        let lapsing = lease
            .deadline()
            .checked_sub(margin)
            .unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
            _ = tokio::time::sleep_until(lapsing), if !cancel.is_cancelled() => {
                stop_lapsing(&task, &cancel, &lease);
                continue;
            }
        }
        let sent = tokio::time::Instant::now();
        let renewed = tokio::select! {
            _ = stop.cancelled() => return,
            renewed = report::bounded(client.heartbeat(&task.lease_id)) => renewed,
            _ = tokio::time::sleep_until(lapsing), if !cancel.is_cancelled() => {
                stop_lapsing(&task, &cancel, &lease);
                continue;
            }
        };
        next = every;
        let Some(renewed) = renewed else {
            tracing::debug!(component = "worker", run_id = %task.run_id, step = %task.step, "heartbeat unanswered; will retry");
            next = every.min(Duration::from_millis(500));
            continue;
        };
        match renewed {
            Ok(response) => {
                lease.renewed(sent + lease_len);
                if response.cancel_requested && !cancel.is_cancelled() {
                    tracing::info!(component = "worker", run_id = %task.run_id, trace_id = %task.trace_id, step = %task.step, attempt = task.attempt, "cancel requested by the server");
                    cancel.cancel();
                }
            }
            Err(err) if err.status() == Some(409) || err.status() == Some(404) => {
                if !cancel.is_cancelled() {
                    tracing::info!(component = "worker", run_id = %task.run_id, trace_id = %task.trace_id, step = %task.step, attempt = task.attempt, "lease lost; stopping the handler");
                    cancel.cancel();
                }
                return;
            }
            Err(err) => {
                tracing::debug!(component = "worker", run_id = %task.run_id, step = %task.step, error = %err, "heartbeat failed; will retry");
                // Sooner than usual, but not before the server's
                // `Retry-After`; a lapsing lease still stops the handler.
                next = every
                    .min(Duration::from_millis(500))
                    .max(report::server_wait(&err))
                    .min(every);
            }
        }
    }
}

/// A handler's error as the server takes it: a kind the server does not know
/// is reported as a `handler_error` whose message names it (an unknown kind
/// would be refused, and the failure lost until the lease lapsed); the
/// message is cut to [`MAX_ERROR_MESSAGE_BYTES`].
fn reportable_error(err: HandlerError) -> TaskError {
    let (kind, message) = match err.kind {
        Some(kind) if !weft_api::WORKER_FAILURE_KINDS.contains(&kind.as_str()) => {
            (None, format!("[{kind}] {}", err.message))
        }
        kind => (kind, err.message),
    };
    TaskError {
        message: cut_text(message, MAX_ERROR_MESSAGE_BYTES),
        kind,
        retryable: Some(err.retryable),
    }
}

/// Longest failure message sent, in bytes: well under what the server
/// takes, so a long message is cut (marked `…`) rather than refused.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 64 * 1024;

/// `text` cut to at most `max` bytes on a character boundary, ending in `…`
/// when it was cut.
pub(crate) fn cut_text(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// How long before an unrenewed lease's end the handler is stopped: a tenth
/// of the lease, between 100 ms and 1 s.
fn lapse_margin(lease_len: Duration) -> Duration {
    (lease_len / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

fn stop_lapsing(task: &Task, cancel: &CancellationToken, lease: &report::Lease) {
    lease.give_up();
    tracing::warn!(
        component = "worker", run_id = %task.run_id, trace_id = %task.trace_id, step = %task.step,
        attempt = task.attempt, lease_ms = task.lease_ms,
        "no lease renewal acknowledged for about the lease's length; stopping the handler before the lease lapses"
    );
    cancel.cancel();
}

impl Builder {
    /// Reports task and poll outcomes, e.g. to handler-side metrics.
    pub fn observer(mut self, observer: Arc<dyn WorkerObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The worker's id, 1 to 256 characters (the server refuses others with
    /// 400 `invalid_worker_id`, and the worker keeps retrying its poll);
    /// default [`default_worker_id`].
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Adds a queue to poll; with none added, the worker polls `default`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queues.push(queue.into());
        self
    }

    /// Registers `handler` for the steps whose `handler` is `name` (a second
    /// registration of a name replaces the first). The worker claims only
    /// steps of registered handlers; with none the server refuses its polls
    /// (400 `no_handlers`).
    pub fn handler(mut self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(name.into(), Arc::new(handler));
        self
    }

    /// [`Builder::handler`] for a handler already shared, e.g. from
    /// [`exec::handlers`].
    pub fn handler_arc(mut self, name: impl Into<String>, handler: Arc<dyn Handler>) -> Self {
        self.handlers.insert(name.into(), handler);
        self
    }

    /// How many tasks run at once (at least 1; default 8). A poll asks for as
    /// many tasks as there are free slots, at most [`MAX_TASKS_PER_POLL`].
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long the server may hold a poll while no task is ready (default
    /// 20 s; sent in whole milliseconds; the server holds a poll no longer
    /// than its `--max-poll-wait`, 30 s by default, and refuses a wait over
    /// 60 s with 400 `invalid_wait`, which the worker keeps retrying).
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait;
        self
    }

    /// How long running handlers may finish once shutdown begins (default
    /// 30 s); their results are delivered. Zero stops them at once.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// How long a handler stopped at shutdown may take to end before it is
    /// given up on (exec handlers: SIGTERM, then SIGKILL after this; default 5 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Once cancelled (e.g. on a second SIGTERM), a shutdown in progress
    /// ends its grace at once: remaining handlers are stopped and released.
    pub fn stop_now(mut self, token: CancellationToken) -> Self {
        self.stop_now = token;
        self
    }

    /// The worker, ready to [`Worker::run`].
    pub fn build(self) -> Worker {
        let worker_id = self.worker_id.unwrap_or_else(default_worker_id);
        let queues = if self.queues.is_empty() {
            vec!["default".to_owned()]
        } else {
            self.queues
        };
        Worker {
            observer: self.observer.unwrap_or_else(|| Arc::new(NoObserver)),
            client: self.client,
            worker_id,
            queues,
            handlers: Arc::new(self.handlers),
            concurrency: self.concurrency,
            poll_wait: self.poll_wait,
            shutdown_grace: self.shutdown_grace,
            stop_timeout: self.stop_timeout,
            stop_now: self.stop_now,
        }
    }
}

/// This machine's host name (`/etc/hostname`), or `worker`.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into())
}

/// `host-pid-random`: unique per process, readable in tables.
pub fn default_worker_id() -> String {
    let host = host_name();
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unknown_failure_kind_is_reported_as_a_handler_error_naming_it() {
        let err = super::HandlerError::permanent("card declined").with_kind("payment_declined");
        let reported = super::reportable_error(err);
        assert_eq!(reported.kind, None);
        assert_eq!(reported.message, "[payment_declined] card declined");
        assert_eq!(reported.retryable, Some(false));
        let err = super::HandlerError::retryable("slow").with_kind("timeout");
        assert_eq!(
            super::reportable_error(err).kind.as_deref(),
            Some("timeout")
        );
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let text = "é".repeat(100);
        let cut = super::cut_text(text.clone(), 51);
        assert!(cut.len() <= 51, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(super::cut_text("short".into(), 51), "short");
        assert_eq!(super::cut_text(text.clone(), 200), text);
    }

    use super::*;

    fn task(max_output_bytes: u64) -> Task {
        serde_json::from_value(serde_json::json!({
            "lease_id": "l", "run_id": "r", "trace_id": "t", "traceparent": "",
            "workflow": "w", "step": "s", "handler": "h", "attempt": 1,
            "input": {}, "lease_ms": 1000, "max_output_bytes": max_output_bytes
        }))
        .expect("a task")
    }

    #[test]
    fn output_over_the_limit_fails_for_good_naming_size_and_limit() {
        let output = serde_json::json!({"blob": "x".repeat(100)});
        let size = serde_json::to_vec(&output).unwrap().len();
        let err = check_output_size(&task(50), output.clone()).unwrap_err();
        assert!(!err.retryable);
        assert_eq!(err.kind.as_deref(), Some("invalid_output"));
        assert_eq!(
            err.message,
            format!("output of {size} bytes exceeds the limit of 50 bytes")
        );
        assert!(check_output_size(&task(size as u64), output.clone()).is_ok());
        // 0: the server did not say; nothing to check here.
        assert!(check_output_size(&task(0), output).is_ok());
    }
}
