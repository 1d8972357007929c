//! Following a run's history as it is written (the SSE stream): each
//! transaction that writes history events tells, once committed, whoever
//! follows those runs in this process (no database round trip, no
//! `pg_notify` per event). Events written by other servers are caught by
//! the follower's periodic re-check ([`Settings::follow_recheck`]), the way
//! `waiters.rs` catches runs ended elsewhere.
//!
//! [`Settings::follow_recheck`]: crate::Settings::follow_recheck

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use weft_core::RunId;

use tokio::sync::watch;

use crate::{Result, Store, db};

/// One change counter per followed run, shared by its followers.
#[derive(Default)]
pub(crate) struct RunFollowers {
    runs: Mutex<HashMap<RunId, (watch::Sender<u64>, usize)>>,
}

impl RunFollowers {
    fn subscribe(&self, run_id: RunId) -> watch::Receiver<u64> {
        let mut runs = self.runs.lock().expect("followers lock");
        let entry = runs
            .entry(run_id)
            .or_insert_with(|| (watch::Sender::new(0), 0));
        entry.1 += 1;
        entry.0.subscribe()
    }

    fn unsubscribe(&self, run_id: RunId) {
        let mut runs = self.runs.lock().expect("followers lock");
        if let Some(entry) = runs.get_mut(&run_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                runs.remove(&run_id);
            }
        }
    }

    /// A transaction that wrote these runs' history committed.
    pub(crate) fn committed(&self, run_ids: &[RunId]) {
        let runs = self.runs.lock().expect("followers lock");
        for run_id in run_ids {
            if let Some((changes, _)) = runs.get(run_id) {
                changes.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// The hook every store transaction is begun with.
    pub(crate) fn hook(self: &Arc<Self>) -> db::CommitHook {
        let followers = Arc::clone(self);
        Arc::new(move |run_ids: &[RunId]| followers.committed(run_ids))
    }
}

/// A follower of one run's history in this process: woken when a commit of
/// this process wrote the run's events. Dropping it stops following.
pub struct RunFollow {
    store: Store,
    run_id: RunId,
    changes: watch::Receiver<u64>,
}

impl RunFollow {
    /// The followed run's id.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// Marks every commit so far as seen. Call it before reading the
    /// history, so that a commit between the read and [`RunFollow::wait`]
    /// still ends the wait at once.
    pub fn mark_seen(&mut self) {
        self.changes.borrow_and_update();
    }

    /// Waits until this process commits new history of the run since the
    /// last [`RunFollow::mark_seen`] (returns `true`), or `recheck` passes
    /// (`false`: look anyway, another server may have written some).
    pub async fn wait(&mut self, recheck: Duration) -> bool {
        tokio::select! {
            changed = self.changes.changed() => changed.is_ok(),
            _ = tokio::time::sleep(recheck) => false,
        }
    }
}

impl Drop for RunFollow {
    fn drop(&mut self) {
        self.store.inner.run_followers.unsubscribe(self.run_id);
    }
}

impl Store {
    /// Starts following the history of `run_id` (a run id, not a trace id).
    pub fn follow_run(&self, run_id: RunId) -> RunFollow {
        RunFollow {
            store: self.clone(),
            run_id,
            changes: self.inner.run_followers.subscribe(run_id),
        }
    }

    /// Begins a write transaction whose history writes, once committed,
    /// wake the runs' followers.
    pub(crate) async fn begin(&self) -> Result<db::Tx> {
        Ok(self
            .pool()
            .begin()
            .await?
            .with_hook(self.inner.run_followers.hook()))
    }
}
