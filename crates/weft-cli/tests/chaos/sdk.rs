//! The SDK worker process of the chaos scenarios: this test binary, started
//! again with the variables in `world`, runs a Rust SDK worker whose handlers do what the exec handlers
//! do (start line, sleep, end line in the side-effect log), so it can be
//! killed with SIGKILL mid-step like any other worker.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use weft_api::Task;
use weft_client::Client;
use weft_worker::{HandlerError, TaskContext, Worker};

use crate::world::{HANDLERS, TICK};

/// The longest an SDK child lives, in case its parent vanished without
/// killing it and the parent check below missed it.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Runs the SDK worker until this process is killed or its parent goes.
pub async fn run(url: String, worker_id: String, log: PathBuf) {
    let log = Arc::new(log);
    let mut builder = Worker::builder(Client::new(&url))
        .worker_id(worker_id.clone())
        .concurrency(8)
        .poll_wait(Duration::from_secs(5));
    for (name, ticks) in HANDLERS {
        let log = log.clone();
        let worker_id = worker_id.clone();
        let ticks = *ticks;
        builder = builder.handler(*name, move |ctx: TaskContext| {
            let log = log.clone();
            let worker_id = worker_id.clone();
            async move { step(ctx, &log, &worker_id, ticks).await }
        });
    }
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(builder.build().run(shutdown.clone()));
    let parent = std::os::unix::process::parent_id();
    let started = std::time::Instant::now();
    // Reparented means the test process is gone: stop with it.
    while std::os::unix::process::parent_id() == parent && started.elapsed() < MAX_LIFETIME {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
}

async fn step(
    ctx: TaskContext,
    log: &Path,
    worker_id: &str,
    ticks: u32,
) -> Result<Value, HandlerError> {
    let task = ctx.task.clone();
    append(log, "start", &task, worker_id);
    for n in 1..=ticks {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            // The lease was lost or the run cancelled: stop, as a handler should.
            _ = ctx.cancellation().cancelled() => return Err(HandlerError::retryable("cancelled")),
        }
        if n < ticks {
            append(log, "tick", &task, worker_id);
        }
    }
    append(log, "end", &task, worker_id);
    Ok(json!({"step": task.step, "attempt": task.attempt, "worker": worker_id}))
}

/// One line, in the exec handler's format, written with a single `write` to
/// the `O_APPEND` log.
fn append(log: &Path, kind: &str, task: &Task, worker_id: &str) {
    let epoch_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    let line = format!(
        "{kind} run={} step={} attempt={} worker={worker_id} pid={} uptime={uptime} epoch_ns={epoch_ns}\n",
        task.run_id,
        task.step,
        task.attempt,
        std::process::id()
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .expect("open the side-effect log");
    file.write_all(line.as_bytes())
        .expect("append to the side-effect log");
}
