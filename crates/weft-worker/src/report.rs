//! The worker's result sender: handlers' results go to the server in
//! batches (`POST /v1/worker/results`, one transaction there). Nothing waits
//! to fill a batch: a result is sent at once when no request is in flight,
//! and the results that finish meanwhile go together in the next request.
//! A server without the batch endpoint gets one `complete`/`fail` call each.
//!
//! Delivery is retried, with jittered exponential backoff, until the server
//! gives a definitive answer (200; 409, the lease is no longer ours; a 4xx
//! other than 408, 413 and 429) or the attempt's lease deadline passes. The
//! attempt's lease is heartbeated meanwhile (see `heartbeat_loop`), so a
//! server restart shorter than the lease loses no result and runs no step
//! twice. A batch answered 413 is split in halves and resent, never dropped;
//! a single result answered 413 becomes a permanent `invalid_output` failure
//! naming its size and the limit. A task keeps its slot until its result is
//! delivered or given up on.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use weft_api::{CompleteRequest, FailRequest, ResultsRequest, Task, TaskError, TaskResult};
use weft_client::Client;

/// Most results in one request.
pub const MAX_RESULTS_PER_REQUEST: usize = 100;

/// First pause between delivery tries; doubles per failed round.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between delivery tries.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long one request of the worker protocol (result, heartbeat, log,
/// release) may go unanswered before it counts as failed and is retried: a
/// server that accepts connections but never answers must not hold a
/// result (and its slot) for ever.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `call`'s outcome, or `None` when it takes longer than [`REQUEST_TIMEOUT`].
pub(crate) async fn bounded<T>(call: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, call).await.ok()
}

/// What the worker knows of one attempt's lease: until when the server keeps
/// it (from the last renewal the server acknowledged).
#[derive(Debug)]
pub(crate) struct Lease {
    deadline: Mutex<Instant>,
    /// Set when the worker stopped the handler because no renewal was
    /// acknowledged for about the lease's length: its result is not sent,
    /// and the server records the attempt as `lease_expired` once it lapses.
    given_up: std::sync::atomic::AtomicBool,
}

impl Lease {
    pub fn new(deadline: Instant) -> Lease {
        Lease {
            deadline: Mutex::new(deadline),
            given_up: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn give_up(&self) {
        self.given_up
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn given_up(&self) -> bool {
        self.given_up.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The lease is known to last until at least `deadline`.
    pub fn renewed(&self, deadline: Instant) {
        let mut current = self.deadline.lock().expect("lease lock");
        if deadline > *current {
            *current = deadline;
        }
    }

    pub fn deadline(&self) -> Instant {
        *self.deadline.lock().expect("lease lock")
    }
}

/// A pause of `base` scaled by a random factor in [0.5, 1]: workers that
/// lost the same server do not come back in step.
pub(crate) fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::random_range(0.5..=1.0))
}

/// Longest `Retry-After` honoured: a server asking for more is asked again
/// after this.
const MAX_SERVER_WAIT: Duration = Duration::from_secs(60);

/// How long the server asked to wait before the next try (`Retry-After` of
/// a 429 `rate_limited` or a 503, at most [`MAX_SERVER_WAIT`]); zero when it
/// did not say.
pub(crate) fn server_wait(err: &weft_client::Error) -> Duration {
    err.retry_after().unwrap_or_default().min(MAX_SERVER_WAIT)
}

/// The pause before trying again after `err`: the jittered backoff, or the
/// server's `Retry-After` when that is longer.
pub(crate) fn pause_after(err: &weft_client::Error, backoff: Duration) -> Duration {
    jittered(backoff).max(server_wait(err))
}

/// One handler's result, with what its log line needs.
pub(crate) struct Report {
    pub task: Arc<Task>,
    pub result: TaskResult,
    pub handler_ms: i64,
    pub lease: Arc<Lease>,
    /// True once a 413 turned the result into an `invalid_output` failure.
    pub shrunk: bool,
    /// Told once the result is delivered or given up on.
    pub delivered: Option<oneshot::Sender<()>>,
}

impl Report {
    fn finish(mut self) {
        if let Some(delivered) = self.delivered.take() {
            let _ = delivered.send(());
        }
    }
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
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut pending: Vec<Report> = Vec::new();
    let mut backoff = RETRY_FIRST;
    // Failed rounds in the current outage: logged once when it starts and
    // once when it ends, not per try.
    let mut failed_rounds = 0u32;
    loop {
        if pending.is_empty() {
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            match receiver.recv().await {
                Some(Message::Report(report)) => pending.push(report),
                Some(Message::Flush(done)) => {
                    flushes.push(done);
                    continue;
                }
                None => return,
            }
        }
        while let Ok(message) = receiver.try_recv() {
            match message {
                Message::Report(report) => pending.push(report),
                Message::Flush(done) => flushes.push(done),
            }
        }
        // Results whose lease has run out cannot be accepted any more.
        let now = Instant::now();
        let (expired, live): (Vec<Report>, Vec<Report>) = std::mem::take(&mut pending)
            .into_iter()
            .partition(|r| r.lease.deadline() <= now);
        for report in expired {
            let task = &report.task;
            tracing::warn!(
                component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
                workflow = %task.workflow, step = %task.step, attempt = task.attempt,
                "result not delivered before the lease ran out; the step will be retried"
            );
            report.finish();
        }
        let mut chunks: VecDeque<Vec<Report>> = VecDeque::new();
        let mut live = live.into_iter().peekable();
        while live.peek().is_some() {
            chunks.push_back(live.by_ref().take(MAX_RESULTS_PER_REQUEST).collect());
        }
        let mut first_error = None;
        // The longest wait the server asked for this round (`Retry-After`).
        let mut asked_wait = Duration::ZERO;
        while let Some(chunk) = chunks.pop_front() {
            let retry = deliver(
                &client,
                &worker_id,
                &batches,
                chunk,
                &mut chunks,
                &mut asked_wait,
            )
            .await;
            if let Some((reports, error)) = retry {
                pending.extend(reports);
                first_error.get_or_insert(error);
            }
        }
        if pending.is_empty() {
            if failed_rounds > 0 {
                tracing::info!(
                    component = "worker",
                    worker_id,
                    failed_rounds,
                    "results delivered again after an outage"
                );
            }
            failed_rounds = 0;
            backoff = RETRY_FIRST;
            continue;
        }
        if failed_rounds == 0 {
            tracing::warn!(
                component = "worker", worker_id, results = pending.len(),
                error = %first_error.unwrap_or_default(),
                "cannot deliver results; retrying with backoff until their leases run out"
            );
        }
        failed_rounds += 1;
        let earliest = pending
            .iter()
            .map(|r| r.lease.deadline())
            .min()
            .expect("pending is not empty");
        let pause = jittered(backoff)
            .max(asked_wait)
            .min(earliest.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

fn no_answer() -> String {
    format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
}

/// How the server answered one result.
enum Answer {
    /// Accepted, or refused for good: nothing more to do.
    Done(Result<bool, weft_client::Error>),
    /// Worth trying again (no answer, 5xx, 408, 429).
    Retry(String),
    /// Too large for the server (413).
    TooLarge,
}

fn classify(outcome: Result<bool, weft_client::Error>) -> Answer {
    match outcome {
        Ok(already) => Answer::Done(Ok(already)),
        Err(err) => match err.status() {
            Some(413) => Answer::TooLarge,
            Some(408 | 429) => Answer::Retry(err.to_string()),
            _ if err.is_transient() => Answer::Retry(err.to_string()),
            _ => Answer::Done(Err(err)),
        },
    }
}

/// Sends one chunk of results. Returns the ones to try again later, with
/// the first error seen; pushes the halves of a chunk answered 413, and
/// results shrunk to a failure report, onto `chunks`.
async fn deliver(
    client: &Client,
    worker_id: &str,
    batches: &AtomicBool,
    reports: Vec<Report>,
    chunks: &mut VecDeque<Vec<Report>>,
    asked_wait: &mut Duration,
) -> Option<(Vec<Report>, String)> {
    if batches.load(Ordering::Relaxed) {
        let request = ResultsRequest {
            results: reports.iter().map(|r| r.result.clone()).collect(),
        };
        let Some(answer) = bounded(client.results(&request)).await else {
            return Some((reports, no_answer()));
        };
        match answer {
            Ok(response) if response.results.len() == reports.len() => {
                let mut retry = Vec::new();
                let mut first_error = None;
                for (report, answer) in reports.into_iter().zip(response.results) {
                    let outcome = match answer.error {
                        None => Ok(answer.already_applied),
                        Some(error) => Err(weft_client::Error::Api {
                            status: answer.status,
                            code: error.code,
                            message: error.message,
                            retry_after: None,
                        }),
                    };
                    match classify(outcome) {
                        Answer::Done(outcome) => {
                            log_outcome(worker_id, &report, outcome);
                            report.finish();
                        }
                        Answer::Retry(error) => {
                            first_error.get_or_insert(error);
                            retry.push(report);
                        }
                        Answer::TooLarge => shrink(worker_id, report, chunks),
                    }
                }
                return (!retry.is_empty()).then(|| (retry, first_error.unwrap_or_default()));
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
            Err(err) if err.status() == Some(413) => {
                if reports.len() > 1 {
                    let mut first = reports;
                    let second = first.split_off(first.len() / 2);
                    tracing::info!(
                        component = "worker",
                        worker_id,
                        sizes = ?(first.len(), second.len()),
                        "batch of results too large for the server; sending it in halves"
                    );
                    chunks.push_front(second);
                    chunks.push_front(first);
                } else {
                    for report in reports {
                        shrink(worker_id, report, chunks);
                    }
                }
                return None;
            }
            Err(err) if err.status() == Some(408) || err.status() == Some(429) => {
                *asked_wait = (*asked_wait).max(server_wait(&err));
                return Some((reports, err.to_string()));
            }
            Err(err) if err.is_transient() => return Some((reports, err.to_string())),
            // A bad entry: one by one, each gets its own answer.
            Err(err) => {
                tracing::debug!(component = "worker", worker_id, error = %err, "batch of results refused; sending them one by one")
            }
        }
    }
    let mut retry = Vec::new();
    let mut first_error = None;
    for report in reports {
        let outcome = bounded(async {
            match &report.result.error {
                None => client
                    .complete(
                        &report.result.lease_id,
                        &CompleteRequest {
                            output: report.result.output.clone(),
                            timing: report.result.timing.clone(),
                        },
                    )
                    .await
                    .map(|ack| ack.already_applied),
                Some(error) => client
                    .fail(
                        &report.result.lease_id,
                        &FailRequest {
                            error: error.clone(),
                            timing: report.result.timing.clone(),
                        },
                    )
                    .await
                    .map(|ack| ack.already_applied),
            }
        })
        .await;
        if let Some(Err(err)) = &outcome {
            *asked_wait = (*asked_wait).max(server_wait(err));
        }
        let answer = match outcome {
            Some(outcome) => classify(outcome),
            None => Answer::Retry(no_answer()),
        };
        match answer {
            Answer::Done(outcome) => {
                log_outcome(worker_id, &report, outcome);
                report.finish();
            }
            Answer::Retry(error) => {
                first_error.get_or_insert(error);
                retry.push(report);
            }
            Answer::TooLarge => shrink(worker_id, report, chunks),
        }
    }
    (!retry.is_empty()).then(|| (retry, first_error.unwrap_or_default()))
}

/// Turns a result the server refused as too large (413) into a permanent
/// `invalid_output` failure naming the size and the limit, and queues it.
/// A failure report that is itself too large is given up on.
fn shrink(worker_id: &str, mut report: Report, chunks: &mut VecDeque<Vec<Report>>) {
    let task = report.task.clone();
    if report.shrunk {
        tracing::warn!(
            component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
            workflow = %task.workflow, step = %task.step, attempt = task.attempt,
            "the server refused even the short failure report as too large; the lease will expire"
        );
        report.finish();
        return;
    }
    let size = match &report.result.error {
        None => serde_json::to_vec(&report.result.output).map_or(0, |v| v.len()),
        Some(error) => error.message.len(),
    };
    let what = if report.result.error.is_none() {
        "output"
    } else {
        "failure report"
    };
    let message = too_large_message(what, size as u64, task.max_output_bytes);
    tracing::warn!(
        component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
        workflow = %task.workflow, step = %task.step, attempt = task.attempt, size,
        "result too large for the server; reporting the attempt as failed (invalid_output)"
    );
    report.result.output = serde_json::Value::Null;
    report.result.error = Some(TaskError {
        message,
        kind: Some("invalid_output".to_owned()),
        retryable: Some(false),
    });
    report.shrunk = true;
    chunks.push_front(vec![report]);
}

/// "output of 5242880 bytes exceeds the limit of 4194304 bytes", or with an
/// unknown limit (0) says so.
pub(crate) fn too_large_message(what: &str, size: u64, limit: u64) -> String {
    if limit > 0 {
        format!("{what} of {size} bytes exceeds the limit of {limit} bytes")
    } else {
        format!(
            "{what} of {size} bytes is larger than the server accepts (HTTP 413; the limit is unknown, see the server's --max-body-bytes)"
        )
    }
}

fn log_outcome(worker_id: &str, report: &Report, outcome: Result<bool, weft_client::Error>) {
    let task = &report.task;
    let result = if report.result.error.is_none() {
        "completed"
    } else {
        "failed"
    };
    match outcome {
        Ok(already_applied) => tracing::debug!(
            component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
            workflow = %task.workflow, step = %task.step, attempt = task.attempt, outcome = result,
            handler_ms = report.handler_ms, already_applied, "attempt reported"
        ),
        Err(err) if err.status() == Some(409) => tracing::info!(
            component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
            workflow = %task.workflow, step = %task.step, attempt = task.attempt, error = %err,
            "result dropped: the lease is no longer ours"
        ),
        Err(err) => tracing::warn!(
            component = "worker", worker_id, run_id = %task.run_id, trace_id = %task.trace_id,
            workflow = %task.workflow, step = %task.step, attempt = task.attempt, error = %err,
            "the server refused the result; the step will be retried once its lease expires"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(retry_after: Option<Duration>) -> weft_client::Error {
        weft_client::Error::Api {
            status: 429,
            code: "rate_limited".to_owned(),
            message: "over the rate".to_owned(),
            retry_after,
        }
    }

    #[test]
    fn a_retry_waits_at_least_the_servers_retry_after() {
        let backoff = Duration::from_millis(200);
        for _ in 0..20 {
            let pause = pause_after(&limited(Some(Duration::from_secs(3))), backoff);
            assert_eq!(pause, Duration::from_secs(3));
            let pause = pause_after(&limited(None), backoff);
            assert!(pause <= backoff, "{pause:?}");
        }
        // A longer backoff wins over a shorter Retry-After.
        let pause = pause_after(
            &limited(Some(Duration::from_secs(1))),
            Duration::from_secs(4),
        );
        assert!(pause >= Duration::from_secs(2), "{pause:?}");
        // An absurd Retry-After is capped.
        assert_eq!(
            server_wait(&limited(Some(Duration::from_secs(86_400)))),
            MAX_SERVER_WAIT
        );
    }

    #[test]
    fn too_large_names_size_and_limit() {
        assert_eq!(
            too_large_message("output", 10, 5),
            "output of 10 bytes exceeds the limit of 5 bytes"
        );
        assert!(too_large_message("output", 10, 0).contains("limit is unknown"));
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000));
        }
    }
}
