//! The gauge reading (run when `/metrics` is scraped): counts read from the database (never kept in memory, so
//! they cannot drift) and handed to the observer.

use std::collections::BTreeMap;

use weft_core::{
    RunStatus, StepStatus,
    diagnosis::{self, Thresholds},
    observe::GaugeSnapshot,
};

use crate::{Result, Store, sql::quoted};

impl Store {
    /// The snapshot under the default diagnosis thresholds.
    pub async fn gauge_snapshot(&self) -> Result<GaugeSnapshot> {
        self.gauge_snapshot_with(&Thresholds::default()).await
    }

    /// Reads the gauges; `weft_runs_stalled` is counted by the diagnosis rules
    /// under `thresholds`, each run once under its worst step's cause.
    pub async fn gauge_snapshot_with(&self, thresholds: &Thresholds) -> Result<GaugeSnapshot> {
        let started = std::time::Instant::now();
        let now = self.now_ms();
        let pool = self.pool();
        let runs_active = pool
            .fetch_all(
                &format!(
                    "SELECT workflow, status, COUNT(*) AS n FROM weft_runs WHERE status IN ({}) GROUP BY workflow, status",
                    quoted(&[
                        RunStatus::Pending.as_str(),
                        RunStatus::Running.as_str(),
                        RunStatus::Compensating.as_str()
                    ])
                ),
                Vec::new(),
            )
            .await?
            .iter()
            .map(|r| Ok((r.text("workflow")?, r.text("status")?, r.int("n")?)))
            .filter_map(|row| self.or_skip("gauges", row))
            .collect();
        let ready_rows = pool
            .fetch_all(
                &format!(
                    "SELECT queue, COUNT(*) AS n, MIN(ready_at) AS oldest, COUNT(DISTINCT run_id) AS runs \
                     FROM (SELECT queue, ready_at, run_id FROM weft_steps WHERE status = '{ready}' \
                     UNION ALL SELECT queue, ready_at, run_id FROM weft_children \
                     WHERE status = '{ready}' AND ready_at <= $1) ready GROUP BY queue",
                    ready = StepStatus::Ready.as_str()
                ),
                crate::args![now],
            )
            .await?;
        let steps_running = pool
            .fetch_all(
                &format!(
                    // A `for_each` step counts as its running children.
                    "SELECT queue, COUNT(*) AS n FROM (SELECT queue FROM weft_steps \
                     WHERE status = '{running}' AND children_total IS NULL \
                     UNION ALL SELECT queue FROM weft_children WHERE status = '{running}') running \
                     GROUP BY queue",
                    running = StepStatus::Running.as_str()
                ),
                Vec::new(),
            )
            .await?
            .iter()
            .map(|r| Ok((r.text("queue")?, r.int("n")?)))
            .filter_map(|row| self.or_skip("gauges", row))
            .collect();
        let mut workers_active: BTreeMap<String, i64> = BTreeMap::new();
        let workers = self.list_workers(now - thresholds.worker_live_ms).await?;
        for worker in &workers {
            for queue in &worker.queues {
                *workers_active.entry(queue.clone()).or_insert(0) += 1;
            }
        }
        // The same rules as `weft doctor`, in their aggregate SQL form: each
        // run counted once, under its worst step's cause, when that cause is
        // a stalled one (or an approval past its threshold).
        let views: Vec<_> = workers.iter().map(|w| w.view()).collect();
        let mut stalled: BTreeMap<&'static str, i64> = diagnosis::stalled_labels()
            .map(|c| (c.as_str(), 0))
            .collect();
        let summary = self.diagnosis_counts(&views, thresholds).await?;
        for group in summary.groups.iter().filter(|g| g.stalled) {
            *stalled.entry(group.cause.as_str()).or_insert(0) +=
                i64::try_from(group.count).unwrap_or(i64::MAX);
        }
        let (pool_open, pool_idle) = self.pool_connections();
        let snapshot = GaugeSnapshot {
            runs_active,
            steps_ready: ready_rows
                .iter()
                .map(|r| Ok((r.text("queue")?, r.int("n")?)))
                .filter_map(|row| self.or_skip("gauges", row))
                .collect(),
            steps_running,
            oldest_ready_age_seconds: ready_rows
                .iter()
                .map(|r| {
                    Ok((
                        r.text("queue")?,
                        ((now - r.opt_int("oldest")?.unwrap_or(now)).max(0)) as f64 / 1000.0,
                    ))
                })
                .filter_map(|row| self.or_skip("gauges", row))
                .collect(),
            workers_active: workers_active.into_iter().collect(),
            runs_stalled: stalled
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            pool_open: i64::from(pool_open),
            pool_idle: i64::from(pool_idle),
        };
        self.observe_operation("gauges", started);
        Ok(snapshot)
    }

    /// Reads a snapshot and hands it to the observer.
    pub async fn refresh_gauges(&self) -> Result<()> {
        self.refresh_gauges_with(&Thresholds::default()).await
    }

    /// Reads a snapshot under `thresholds` and hands it to the observer.
    pub async fn refresh_gauges_with(&self, thresholds: &Thresholds) -> Result<()> {
        let snapshot = self.gauge_snapshot_with(thresholds).await?;
        self.observer().gauges(&snapshot);
        Ok(())
    }
}

impl Store {
    /// The value of a decoded row, or `None` (logged once) if it is corrupt:
    /// a bad row leaves a gauge short instead of failing the whole sweep.
    pub(crate) fn or_skip<T>(&self, during: &str, row: Result<T>) -> Option<T> {
        match row {
            Ok(value) => Some(value),
            Err(err) => {
                self.skip_corrupt(during, &err);
                None
            }
        }
    }
}
