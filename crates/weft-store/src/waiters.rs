//! Callers waiting for a run to end (`GET /v1/runs/{id}?wait_ms=`): one
//! `Notify` per awaited run, woken by this process's commit of the run's
//! end. Runs ended by another server are caught by the waiter's periodic
//! re-check of the run's status.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use weft_core::{RunId, RunRef};

use crate::{Result, RunView, Store};
use tokio::sync::Notify;

/// How often a waiter re-reads the run's status without a wake-up.
const RECHECK: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(crate) struct RunWaiters {
    runs: Mutex<HashMap<RunId, (Arc<Notify>, usize)>>,
}

impl RunWaiters {
    fn register(&self, run_id: RunId) -> Arc<Notify> {
        let mut runs = self.runs.lock().expect("waiters lock");
        let entry = runs
            .entry(run_id)
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        entry.0.clone()
    }

    fn unregister(&self, run_id: RunId) {
        let mut runs = self.runs.lock().expect("waiters lock");
        if let Some(entry) = runs.get_mut(&run_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                runs.remove(&run_id);
            }
        }
    }

    /// Wakes whoever waits for this run.
    pub(crate) fn finished(&self, run_id: RunId) {
        let runs = self.runs.lock().expect("waiters lock");
        if let Some((notify, _)) = runs.get(&run_id) {
            notify.notify_waiters();
        }
    }
}

/// Unregisters a waiter however its wait ends (also when the request is dropped).
struct Registered<'a> {
    waiters: &'a RunWaiters,
    run_id: RunId,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.waiters.unregister(self.run_id);
    }
}

impl Store {
    /// The run's detail once it has ended, or when `wait` has passed,
    /// whichever comes first. `id` is a run id or a trace id.
    pub async fn wait_run(&self, id: impl Into<RunRef>, wait: Duration) -> Result<RunView> {
        let id = &id.into();
        // The status read below (or `get_run`) answers 404 for a run that
        // does not exist.
        let run_id = self.run_id_for_read(id).await?;
        if wait.is_zero() {
            return self.get_run(&RunRef::Run(run_id)).await;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let waiters = &self.inner.run_waiters;
        let notify = waiters.register(run_id);
        let _registered = Registered { waiters, run_id };
        let mut woken = false;
        loop {
            // Interest first, then the look: an end committed in between still wakes us.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = tokio::time::Instant::now();
            if woken || now >= deadline {
                let run = self.get_run(&RunRef::Run(run_id)).await?;
                if now >= deadline || run.status.is_terminal() {
                    return Ok(run);
                }
            } else {
                let statuses = self.run_statuses(std::slice::from_ref(&run_id)).await?;
                if statuses.get(&run_id).is_none_or(|s| run_ended(s)) {
                    return self.get_run(&RunRef::Run(run_id)).await;
                }
            }
            let nap = (deadline - now).min(RECHECK);
            woken = tokio::select! {
                _ = &mut notified => true,
                _ = tokio::time::sleep(nap) => false,
            };
        }
    }
}

fn run_ended(status: &str) -> bool {
    weft_core::RunStatus::parse(status).is_none_or(|s| s.is_terminal())
}
