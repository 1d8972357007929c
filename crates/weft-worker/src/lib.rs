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

pub mod exec;
mod report;

pub use report::MAX_RESULTS_PER_REQUEST;

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use weft_api::{FailRequest, PollRequest, Task, TaskError, TaskResult, WorkerTiming};
use weft_client::Client;

/// Why a handler failed.
#[derive(Debug, Clone)]
pub struct HandlerError {
    pub message: String,
    /// `handler_error` unless said otherwise: `timeout`, `invalid_output`, `cancelled`.
    pub kind: Option<String>,
    /// False: do not retry, fail the step now.
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
    pub task: Arc<Task>,
    cancel: CancellationToken,
    client: Client,
    /// The `execute` span's traceparent when it is exported, else the attempt's.
    traceparent: String,
}

impl TaskContext {
    /// `{"input": <run input>, "steps": {<dependency>: <output>}}`.
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

    /// The W3C `baggage` the run was started with, if any.
    pub fn baggage(&self) -> Option<&str> {
        self.task.baggage.as_deref()
    }

    /// Cancelled when the run is cancelled, the attempt timed out, the lease
    /// was lost, or the worker shuts down.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Sends log lines to the server, kept with this attempt.
    pub async fn log(&self, lines: Vec<String>) {
        if let Err(err) = self.client.append_logs(&self.task.lease_id, lines).await {
            tracing::debug!(component = "worker", error = %err, "could not send step logs");
        }
    }
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>;

/// A step handler. Closures `Fn(TaskContext) -> impl Future<Output = Result<Value, HandlerError>>` are handlers.
pub trait Handler: Send + Sync + 'static {
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

/// The most tasks one poll may ask for (the server's limit).
pub const MAX_TASKS_PER_POLL: usize = 100;

/// Receives what a worker does, for handler-side metrics. Implemented by the
/// binary over weft-telemetry; the SDK itself knows no exporter.
pub trait WorkerObserver: Send + Sync + 'static {
    fn task_started(&self, handler: &str);
    /// `outcome`: completed, failed, timeout or cancelled.
    fn task_finished(&self, handler: &str, outcome: &str, seconds: f64);
    /// `outcome`: tasks, empty or error.
    fn polled(&self, outcome: &str, seconds: f64);
}

struct NoObserver;

impl WorkerObserver for NoObserver {
    fn task_started(&self, _: &str) {}
    fn task_finished(&self, _: &str, _: &str, _: f64) {}
    fn polled(&self, _: &str, _: f64) {}
}

#[derive(Clone)]
pub struct Worker {
    observer: Arc<dyn WorkerObserver>,
    client: Client,
    worker_id: String,
    queues: Vec<String>,
    handlers: Arc<HashMap<String, Arc<dyn Handler>>>,
    concurrency: usize,
    poll_wait: Duration,
}

pub struct Builder {
    observer: Option<Arc<dyn WorkerObserver>>,
    client: Client,
    worker_id: Option<String>,
    queues: Vec<String>,
    handlers: HashMap<String, Arc<dyn Handler>>,
    concurrency: usize,
    poll_wait: Duration,
}

impl Worker {
    pub fn builder(client: Client) -> Builder {
        Builder {
            observer: None,
            client,
            worker_id: None,
            queues: Vec::new(),
            handlers: HashMap::new(),
            concurrency: 8,
            poll_wait: Duration::from_secs(20),
        }
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Polls and runs tasks until `shutdown` is cancelled, then waits for the
    /// tasks in hand to finish (their handlers see the cancellation).
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
        let mut backoff = Duration::from_millis(200);
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
                    backoff = Duration::from_millis(200);
                    for task in response.tasks {
                        let permit = permits.pop().expect("no more tasks than permits");
                        let worker = self.clone();
                        let shutdown = shutdown.clone();
                        let reporter = reporter.clone();
                        tokio::spawn(async move {
                            worker.execute(task, shutdown, &reporter).await;
                            drop(permit);
                        });
                    }
                }
                Err(err) => {
                    tracing::warn!(component = "worker", worker_id = %self.worker_id, error = %err, retry_in_ms = backoff.as_millis() as u64, "poll failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Let running tasks finish and report.
        let _ = slots.acquire_many(self.concurrency as u32).await;
        reporter.flush().await;
        tracing::info!(component = "worker", worker_id = %self.worker_id, "worker stopped");
    }

    /// Runs one task's handler and hands its result to the reporter,
    /// returning once it is delivered.
    async fn execute(&self, task: Task, shutdown: CancellationToken, reporter: &report::Reporter) {
        let claimed = std::time::Instant::now();
        let task = Arc::new(task);
        let cancel = shutdown.child_token();
        let Some(handler) = self.handlers.get(&task.handler).cloned() else {
            let error = TaskError {
                message: format!("no handler `{}` on this worker", task.handler),
                kind: Some("no_handler".into()),
                retryable: Some(false),
            };
            let _ = self
                .client
                .fail(
                    &task.lease_id,
                    &FailRequest {
                        error,
                        timing: None,
                    },
                )
                .await;
            return;
        };
        tracing::debug!(
            component = "worker", worker_id = %self.worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
            workflow = %task.workflow, step = %task.step, attempt = task.attempt, "attempt started"
        );
        let heartbeats = tokio::spawn(heartbeat_loop(
            self.client.clone(),
            task.clone(),
            cancel.clone(),
        ));
        let span = execute_span(&task, &self.worker_id);
        let traceparent = exported_traceparent(&span).unwrap_or_else(|| task.traceparent.clone());
        let ctx = TaskContext {
            task: task.clone(),
            cancel: cancel.clone(),
            client: self.client.clone(),
            traceparent,
        };
        let started = std::time::Instant::now();
        self.observer.task_started(&task.handler);
        let dispatch_ms = (started - claimed).as_millis() as i64;
        let timeout = task
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.max(0) as u64));
        let result = tokio::select! {
            result = handler.call(ctx).instrument(span.clone()) => result,
            _ = cancel.cancelled() => Err(HandlerError::retryable("attempt cancelled").with_kind("cancelled")),
            _ = sleep_or_forever(timeout) => Err(HandlerError::retryable(format!(
                "handler exceeded the step timeout of {} ms", task.timeout_ms.unwrap_or(0)
            )).with_kind("timeout")),
        };
        let handler_ms = started.elapsed().as_millis() as i64;
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
            span.record("otel.status_description", err.message.as_str());
        }
        drop(span);
        cancel.cancel();
        heartbeats.abort();
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
                error: Some(TaskError {
                    message: err.message,
                    kind: err.kind,
                    retryable: Some(err.retryable),
                }),
                timing,
            },
        };
        reporter
            .send(report::Report {
                task,
                result,
                handler_ms,
                delivered: None,
            })
            .await;
    }
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

/// The OpenTelemetry context of a `traceparent` header.
fn remote_parent(traceparent: &str) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    let mut parts = traceparent.trim().split('-');
    let (_version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?);
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    context
        .is_valid()
        .then(|| opentelemetry::Context::new().with_remote_span_context(context))
}

/// The span's `traceparent` when it will be exported (sampled), else `None`.
fn exported_traceparent(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let otel = context.span();
    let sc = otel.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| format!("00-{}-{}-01", sc.trace_id(), sc.span_id()))
}

async fn sleep_or_forever(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Renews the lease every third of its length; cancels the handler when the
/// server asks (`cancel_requested`) or the lease is gone (409).
async fn heartbeat_loop(client: Client, task: Arc<Task>, cancel: CancellationToken) {
    let every = Duration::from_millis((task.lease_ms.max(300) / 3) as u64);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match client.heartbeat(&task.lease_id).await {
            Ok(response) if response.cancel_requested => {
                tracing::info!(component = "worker", run_id = %task.run_id, trace_id = %task.trace_id, step = %task.step, attempt = task.attempt, "cancel requested by the server");
                cancel.cancel();
                return;
            }
            Ok(_) => {}
            Err(err) if err.status() == Some(409) => {
                tracing::info!(component = "worker", run_id = %task.run_id, trace_id = %task.trace_id, step = %task.step, attempt = task.attempt, "lease lost; stopping the handler");
                cancel.cancel();
                return;
            }
            Err(err) => {
                tracing::warn!(component = "worker", run_id = %task.run_id, step = %task.step, error = %err, "heartbeat failed; will retry");
            }
        }
    }
}

impl Builder {
    /// Reports task and poll outcomes, e.g. to handler-side metrics.
    pub fn observer(mut self, observer: Arc<dyn WorkerObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queues.push(queue.into());
        self
    }

    pub fn handler(mut self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(name.into(), Arc::new(handler));
        self
    }

    pub fn handler_arc(mut self, name: impl Into<String>, handler: Arc<dyn Handler>) -> Self {
        self.handlers.insert(name.into(), handler);
        self
    }

    /// How many tasks run at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long the server may hold an empty poll.
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait;
        self
    }

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
