//! The gauge sweep: counts read from the database (never kept in memory, so
//! they cannot drift) and handed to the observer.

use std::collections::BTreeMap;

use weft_core::observe::GaugeSnapshot;

use crate::{Result, Store};

/// A worker that polled within this window counts as active.
pub const WORKER_ACTIVE_MS: i64 = 30_000;

impl Store {
    pub async fn gauge_snapshot(&self) -> Result<GaugeSnapshot> {
        let started = std::time::Instant::now();
        let now = self.now_ms();
        let pool = self.pool();
        let runs_active = pool
            .fetch_all(
                "SELECT workflow, status, COUNT(*) AS n FROM weft_runs WHERE status IN ('pending', 'running') GROUP BY workflow, status",
                Vec::new(),
            )
            .await?
            .iter()
            .map(|r| (r.text("workflow"), r.text("status"), r.int("n")))
            .collect();
        let ready_rows = pool
            .fetch_all(
                "SELECT queue, COUNT(*) AS n, MIN(ready_at) AS oldest, COUNT(DISTINCT run_id) AS runs \
                 FROM weft_steps WHERE status = 'ready' GROUP BY queue",
                Vec::new(),
            )
            .await?;
        let steps_running = pool
            .fetch_all("SELECT queue, COUNT(*) AS n FROM weft_steps WHERE status = 'running' GROUP BY queue", Vec::new())
            .await?
            .iter()
            .map(|r| (r.text("queue"), r.int("n")))
            .collect();
        let mut workers_active: BTreeMap<String, i64> = BTreeMap::new();
        for worker in self.workers_seen(now - WORKER_ACTIVE_MS).await? {
            for queue in worker.queues {
                *workers_active.entry(queue).or_insert(0) += 1;
            }
        }
        // A run is stalled for want of a worker when a ready step of it sits
        // on a queue that no worker has polled lately.
        let no_worker: i64 = ready_rows
            .iter()
            .filter(|r| !workers_active.contains_key(&r.text("queue")))
            .map(|r| r.int("runs"))
            .sum();
        let (pool_open, pool_idle) = self.pool_connections();
        let snapshot = GaugeSnapshot {
            runs_active,
            steps_ready: ready_rows
                .iter()
                .map(|r| (r.text("queue"), r.int("n")))
                .collect(),
            steps_running,
            oldest_ready_age_seconds: ready_rows
                .iter()
                .map(|r| {
                    (
                        r.text("queue"),
                        ((now - r.opt_int("oldest").unwrap_or(now)).max(0)) as f64 / 1000.0,
                    )
                })
                .collect(),
            workers_active: workers_active.into_iter().collect(),
            runs_stalled: vec![("no_worker".to_owned(), no_worker)],
            pool_open: i64::from(pool_open),
            pool_idle: i64::from(pool_idle),
        };
        self.observe_operation("gauges", started);
        Ok(snapshot)
    }

    /// Reads a snapshot and hands it to the observer.
    pub async fn refresh_gauges(&self) -> Result<()> {
        let snapshot = self.gauge_snapshot().await?;
        self.observer().gauges(&snapshot);
        Ok(())
    }
}
