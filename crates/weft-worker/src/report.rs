//! The worker's result sender: handlers' results go to the server in
//! batches (`POST /v1/worker/results`, one transaction there). Nothing waits
//! to fill a batch: a result is sent at once when no request is in flight,
//! and the results that finish meanwhile go together in the next request.
//! A task keeps its slot until its result is delivered. A server without
//! the batch endpoint gets one `complete`/`fail` call each.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::{mpsc, oneshot};
use weft_api::{CompleteRequest, FailRequest, ResultsRequest, Task, TaskResult};
use weft_client::Client;

/// Most results in one request.
pub const MAX_RESULTS_PER_REQUEST: usize = 100;

/// One handler's result, with what its log line needs.
pub(crate) struct Report {
    pub task: Arc<Task>,
    pub result: TaskResult,
    pub handler_ms: i64,
    /// Told once the result is delivered or given up on.
    pub delivered: Option<oneshot::Sender<()>>,
}

enum Message {
    Report(Report),
    /// Answered once every report sent before it has been delivered.
    Flush(oneshot::Sender<()>),
}

/// A handle on the sender task; clones share it.
#[derive(Clone)]
pub(crate) struct Reporter {
    queue: mpsc::UnboundedSender<Message>,
}

impl Reporter {
    pub fn spawn(client: Client, worker_id: String) -> Reporter {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(send_loop(client, worker_id, receiver));
        Reporter { queue }
    }

    /// Hands a result over and waits until it is delivered (or given up
    /// on): the task keeps its slot meanwhile, so results never pile up
    /// beyond the worker's concurrency while their leases run out.
    pub async fn send(&self, mut report: Report) {
        let (delivered, wait) = oneshot::channel();
        report.delivered = Some(delivered);
        // The loop lives as long as any handle, so this cannot fail.
        if self.queue.send(Message::Report(report)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Waits until every result handed over so far has been delivered (or
    /// given up on).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn send_loop(
    client: Client,
    worker_id: String,
    mut receiver: mpsc::UnboundedReceiver<Message>,
) {
    // Whether the server has the batch endpoint; learned from the first 404.
    let batches = AtomicBool::new(true);
    let mut flushes = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut reports = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Report(report) => reports.push(report),
                Message::Flush(done) => flushes.push(done),
            }
            if reports.len() < MAX_RESULTS_PER_REQUEST {
                next = receiver.try_recv().ok();
            }
        }
        if !reports.is_empty() {
            deliver(&client, &worker_id, &batches, &reports).await;
            for report in reports {
                if let Some(delivered) = report.delivered {
                    let _ = delivered.send(());
                }
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn deliver(client: &Client, worker_id: &str, batches: &AtomicBool, reports: &[Report]) {
    if batches.load(Ordering::Relaxed) {
        let request = ResultsRequest {
            results: reports.iter().map(|r| r.result.clone()).collect(),
        };
        match client.results(&request).await {
            Ok(response) if response.results.len() == reports.len() => {
                for (report, answer) in reports.iter().zip(response.results) {
                    let outcome = match answer.error {
                        None => Ok(()),
                        Some(error) => Err(weft_client::Error::Api {
                            status: answer.status,
                            code: error.code,
                            message: error.message,
                        }),
                    };
                    log_outcome(worker_id, report, outcome);
                }
                return;
            }
            Ok(_) => tracing::warn!(
                component = "worker",
                worker_id,
                "the server answered a batch of results with the wrong count; sending them one by one"
            ),
            Err(err) if err.status() == Some(404) || err.status() == Some(405) => {
                tracing::info!(
                    component = "worker",
                    worker_id,
                    "the server has no batch results endpoint; sending results one by one"
                );
                batches.store(false, Ordering::Relaxed);
            }
            // A bad entry or a lost connection: one by one, each gets its own answer.
            Err(err) => {
                tracing::debug!(component = "worker", worker_id, error = %err, "batch of results refused; sending them one by one")
            }
        }
    }
    for report in reports {
        let outcome = match &report.result.error {
            None => client
                .complete(
                    &report.result.lease_id,
                    &CompleteRequest {
                        output: report.result.output.clone(),
                        timing: report.result.timing.clone(),
                    },
                )
                .await
                .map(|_| ()),
            Some(error) => client
                .fail(
                    &report.result.lease_id,
                    &FailRequest {
                        error: error.clone(),
                        timing: report.result.timing.clone(),
                    },
                )
                .await
                .map(|_| ()),
        };
        log_outcome(worker_id, report, outcome);
    }
}

fn log_outcome(worker_id: &str, report: &Report, outcome: Result<(), weft_client::Error>) {
    let task = &report.task;
    let result = if report.result.error.is_none() {
        "completed"
    } else {
        "failed"
    };
    match outcome {
        Ok(()) => tracing::debug!(
            component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
            workflow = %task.workflow, step = %task.step, attempt = task.attempt, outcome = result,
            handler_ms = report.handler_ms, "attempt reported"
        ),
        Err(err) if err.status() == Some(409) => tracing::info!(
            component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
            workflow = %task.workflow, step = %task.step, attempt = task.attempt, error = %err,
            "result dropped: the lease is no longer ours"
        ),
        Err(err) => tracing::warn!(
            component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
            workflow = %task.workflow, step = %task.step, attempt = task.attempt, error = %err,
            "could not report the result; the lease will expire and the step retry"
        ),
    }
}
