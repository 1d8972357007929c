//! The steady load: starts spread evenly over a period, each with its own
//! idempotency key and retried (same key, next server) while servers are
//! down, so a start whose answer was lost is neither lost nor doubled.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::{Mutex, Semaphore};
use weft_api::StartRunRequest;
use weft_client::Client;

/// How long one start keeps retrying before it is given up.
const START_PATIENCE: Duration = Duration::from_secs(90);
/// Starts in flight at once (retrying ones included).
const IN_FLIGHT: usize = 16;

/// A start the server accepted (2xx with a run id).
#[derive(Clone, Debug)]
pub struct Accepted {
    pub key: String,
    pub run_id: String,
}

/// What the load did.
#[derive(Default, Debug)]
pub struct Outcome {
    pub accepted: Vec<Accepted>,
    /// Starts answered with a 4xx: a valid start must never get one.
    pub refused: Vec<String>,
    /// Starts never accepted within [`START_PATIENCE`].
    pub gave_up: Vec<String>,
    /// Requests that failed and were sent again.
    pub retries: usize,
}

/// Sends `workflows.len()` starts (start `i` of workflow `workflows[i]`)
/// evenly over `period`, round-robin over `urls`. Keys are `{prefix}-{i}`.
pub async fn run(
    urls: Vec<String>,
    workflows: Vec<String>,
    period: Duration,
    prefix: &str,
) -> Outcome {
    let clients: Arc<Vec<Client>> = Arc::new(urls.iter().map(|url| Client::new(url)).collect());
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let every = period / workflows.len().max(1) as u32;
    let began = Instant::now();
    let mut tasks = Vec::new();
    for (i, workflow) in workflows.into_iter().enumerate() {
        // Keep the cadence: the i-th start goes out at i * every.
        let at = began + every * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let permit = slots.clone().acquire_owned().await.expect("semaphore open");
        let clients = clients.clone();
        let outcome = outcome.clone();
        let key = format!("{prefix}-{i}");
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            start_one(&clients, i, &workflow, &key, &outcome).await;
        }));
    }
    for task in tasks {
        task.await.expect("a start task does not panic");
    }
    Arc::try_unwrap(outcome)
        .expect("every start task ended")
        .into_inner()
}

async fn start_one(
    clients: &[Client],
    i: usize,
    workflow: &str,
    key: &str,
    outcome: &Mutex<Outcome>,
) {
    let request = StartRunRequest {
        input: json!({"i": i}),
        idempotency_key: Some(key.to_owned()),
        ..Default::default()
    };
    let began = Instant::now();
    let mut backoff = Duration::from_millis(100);
    for try_number in 0.. {
        let client = &clients[(i + try_number) % clients.len()];
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            client.start_run(workflow, &request),
        )
        .await;
        match answer {
            Ok(Ok(started)) => {
                outcome.lock().await.accepted.push(Accepted {
                    key: key.to_owned(),
                    run_id: started.run_id,
                });
                return;
            }
            Ok(Err(err)) if err.status().is_some_and(|s| (400..500).contains(&s)) => {
                outcome.lock().await.refused.push(format!("{key}: {err}"));
                return;
            }
            // Transport errors, 5xx (503 while the database is down) and
            // timeouts: the server is down or restarting. Send it again.
            Ok(Err(_)) | Err(_) => {}
        }
        if began.elapsed() >= START_PATIENCE {
            outcome.lock().await.gave_up.push(key.to_owned());
            return;
        }
        outcome.lock().await.retries += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
