//! The overview of the last while per workflow: runs started (throughput),
//! failure rate and p95 duration, each per time bucket too, for the
//! dashboard's `/overview`. One bounded statement: the runs created in the
//! window are a run-id key range (run ids are UUIDv7), read newest first up
//! to a cap, and summarized here ([`summarize`], a pure function). Cached
//! for [`OVERVIEW_TTL`].

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use weft_core::{RunId, RunStatus};

use crate::{Result, Store, args};

/// How long an overview is reused before it is read again.
pub const OVERVIEW_TTL: Duration = Duration::from_secs(5);

/// Most runs an overview reads: past it the window is cut short at the
/// oldest run read (the newest are kept) and [`Overview::truncated`] says so.
pub const OVERVIEW_MAX_RUNS: u32 = 50_000;

/// One run as the overview sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverviewRun {
    pub workflow: String,
    pub status: RunStatus,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms; `None` while unfinished.
    pub finished_at: Option<i64>,
}

/// The overview of one time window.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    /// The window: runs created at or after `since_ms` and before
    /// `until_ms` (epoch ms).
    pub since_ms: i64,
    pub until_ms: i64,
    /// The width of one bucket (ms); `buckets` of them cover the window,
    /// the first starting at `since_ms`.
    pub bucket_ms: i64,
    pub buckets: usize,
    /// More runs than [`OVERVIEW_MAX_RUNS`] were created in the window:
    /// only the newest were read, from `covered_since_ms` on.
    pub truncated: bool,
    pub covered_since_ms: i64,
    /// One entry per workflow with a run in the window, by name.
    pub workflows: Vec<WorkflowOverview>,
}

/// One workflow's runs created in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowOverview {
    pub workflow: String,
    /// Runs created in the window (throughput).
    pub started: i64,
    pub completed: i64,
    /// Ended `failed` (sagas' `compensated` counts as failed too).
    pub failed: i64,
    pub cancelled: i64,
    /// Failed ÷ (completed + failed), `None` before any has ended so.
    pub failure_rate: Option<f64>,
    /// The 95th percentile of created → finished of the ended runs (ms,
    /// nearest rank); `None` when none has ended.
    pub p95_ms: Option<i64>,
    /// Runs created per bucket, oldest bucket first.
    pub started_per_bucket: Vec<i64>,
    /// Runs that ended failed, per bucket of their creation.
    pub failed_per_bucket: Vec<i64>,
    /// The p95 duration (ms) of the runs created in each bucket that ended;
    /// 0 where none did.
    pub p95_per_bucket: Vec<i64>,
}

/// The nearest-rank `q` quantile (0..=1) of `values`, sorted in place.
pub fn quantile(values: &mut [i64], q: f64) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (q * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// The overview of `runs` over `[since_ms, until_ms)` in `buckets` buckets.
/// Runs outside the window are ignored.
pub fn summarize(
    runs: &[OverviewRun],
    since_ms: i64,
    until_ms: i64,
    buckets: usize,
) -> Vec<WorkflowOverview> {
    let buckets = buckets.max(1);
    let span = (until_ms - since_ms).max(1);
    let bucket_of = |at: i64| (((at - since_ms) as i128 * buckets as i128) / span as i128) as usize;
    struct Acc {
        o: WorkflowOverview,
        durations: Vec<i64>,
        per_bucket: Vec<Vec<i64>>,
    }
    let mut by_workflow: BTreeMap<&str, Acc> = BTreeMap::new();
    for run in runs {
        if run.created_at < since_ms || run.created_at >= until_ms {
            continue;
        }
        let acc = by_workflow.entry(&run.workflow).or_insert_with(|| Acc {
            o: WorkflowOverview {
                workflow: run.workflow.clone(),
                started: 0,
                completed: 0,
                failed: 0,
                cancelled: 0,
                failure_rate: None,
                p95_ms: None,
                started_per_bucket: vec![0; buckets],
                failed_per_bucket: vec![0; buckets],
                p95_per_bucket: vec![0; buckets],
            },
            durations: Vec::new(),
            per_bucket: vec![Vec::new(); buckets],
        });
        let b = bucket_of(run.created_at).min(buckets - 1);
        acc.o.started += 1;
        acc.o.started_per_bucket[b] += 1;
        match run.status {
            RunStatus::Completed => acc.o.completed += 1,
            RunStatus::Failed | RunStatus::Compensated => {
                acc.o.failed += 1;
                acc.o.failed_per_bucket[b] += 1;
            }
            RunStatus::Cancelled => acc.o.cancelled += 1,
            _ => {}
        }
        if let Some(finished) = run.finished_at {
            let took = (finished - run.created_at).max(0);
            acc.durations.push(took);
            acc.per_bucket[b].push(took);
        }
    }
    by_workflow
        .into_values()
        .map(|mut acc| {
            let ended = acc.o.completed + acc.o.failed;
            acc.o.failure_rate = (ended > 0).then(|| acc.o.failed as f64 / ended as f64);
            acc.o.p95_ms = quantile(&mut acc.durations, 0.95);
            for (b, durations) in acc.per_bucket.iter_mut().enumerate() {
                acc.o.p95_per_bucket[b] = quantile(durations, 0.95).unwrap_or(0);
            }
            acc.o
        })
        .collect()
}

/// An overview read at `.0` for the window (ms) and buckets of `.1`.
type CachedOverview = (Instant, (i64, usize), Overview);

/// The last overview read.
#[derive(Default)]
pub(crate) struct OverviewCache {
    last: Mutex<Option<CachedOverview>>,
}

impl Store {
    /// The overview of the runs created in the last `window` (at most
    /// [`OVERVIEW_MAX_RUNS`] of them, the newest), in `buckets` buckets;
    /// reused for [`OVERVIEW_TTL`] for the same window and buckets.
    pub async fn overview(&self, window: Duration, buckets: usize) -> Result<Overview> {
        let window_ms = window.as_millis() as i64;
        let key = (window_ms, buckets);
        if let Some((at, k, overview)) = &*self.inner.overview.last.lock().expect("overview cache")
            && *k == key
            && at.elapsed() < OVERVIEW_TTL
        {
            return Ok(overview.clone());
        }
        let until_ms = self.now_ms();
        let overview = self
            .overview_between(until_ms - window_ms, until_ms, buckets)
            .await?;
        *self.inner.overview.last.lock().expect("overview cache") =
            Some((Instant::now(), key, overview.clone()));
        Ok(overview)
    }

    /// The overview of `[since_ms, until_ms)`, read now (not cached).
    pub async fn overview_between(
        &self,
        since_ms: i64,
        until_ms: i64,
        buckets: usize,
    ) -> Result<Overview> {
        let buckets = buckets.clamp(1, 1000);
        let rows = self
            .pool()
            .fetch_all_planned(
                &format!(
                    "SELECT workflow, status, created_at, finished_at FROM weft_runs \
                     WHERE run_id >= $1 AND run_id < $2 ORDER BY run_id DESC LIMIT {}",
                    i64::from(OVERVIEW_MAX_RUNS) + 1
                ),
                // The key range has a minute's slack at the top: run ids
                // written by older servers carry that server's clock,
                // `created_at` the store's (the database's on PostgreSQL);
                // `summarize` keeps the window exactly by `created_at`.
                args![RunId::floor(since_ms), RunId::floor(until_ms + 60_000)],
            )
            .await?;
        let truncated = rows.len() > OVERVIEW_MAX_RUNS as usize;
        let mut runs = Vec::with_capacity(rows.len().min(OVERVIEW_MAX_RUNS as usize));
        for row in rows.iter().take(OVERVIEW_MAX_RUNS as usize) {
            runs.push(OverviewRun {
                workflow: row.text("workflow")?,
                status: row.status("status", RunStatus::parse)?,
                created_at: row.int("created_at")?,
                finished_at: row.opt_int("finished_at")?,
            });
        }
        let covered_since_ms = if truncated {
            runs.iter().map(|r| r.created_at).min().unwrap_or(since_ms)
        } else {
            since_ms
        };
        let span = (until_ms - since_ms).max(1);
        Ok(Overview {
            since_ms,
            until_ms,
            bucket_ms: span / buckets as i64,
            buckets,
            truncated,
            covered_since_ms,
            workflows: summarize(&runs, since_ms, until_ms, buckets),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(workflow: &str, status: RunStatus, created: i64, took: Option<i64>) -> OverviewRun {
        OverviewRun {
            workflow: workflow.into(),
            status,
            created_at: created,
            finished_at: took.map(|t| created + t),
        }
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut values: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(quantile(&mut values, 0.95), Some(95));
        assert_eq!(quantile(&mut [7], 0.95), Some(7));
        assert_eq!(quantile(&mut [], 0.95), None);
        assert_eq!(quantile(&mut [1, 2], 0.95), Some(2));
    }

    #[test]
    fn runs_are_summed_per_workflow_and_bucket() {
        let runs = vec![
            run("a", RunStatus::Completed, 0, Some(100)),
            run("a", RunStatus::Completed, 10, Some(300)),
            run("a", RunStatus::Failed, 55, Some(50)),
            run("a", RunStatus::Running, 99, None),
            run("b", RunStatus::Cancelled, 60, Some(5)),
            run("b", RunStatus::Completed, 100, Some(5)), // outside: until is exclusive
            run("b", RunStatus::Completed, -1, Some(5)),  // outside: before since
        ];
        let out = summarize(&runs, 0, 100, 2);
        assert_eq!(out.len(), 2);
        let a = &out[0];
        assert_eq!(a.workflow, "a");
        assert_eq!(
            (a.started, a.completed, a.failed, a.cancelled),
            (4, 2, 1, 0)
        );
        assert_eq!(a.failure_rate, Some(1.0 / 3.0));
        assert_eq!(a.p95_ms, Some(300));
        assert_eq!(a.started_per_bucket, vec![2, 2]);
        assert_eq!(a.failed_per_bucket, vec![0, 1]);
        assert_eq!(a.p95_per_bucket, vec![300, 50]);
        let b = &out[1];
        assert_eq!((b.started, b.cancelled), (1, 1));
        assert_eq!(b.failure_rate, None, "nothing completed or failed");
        assert_eq!(b.p95_ms, Some(5));
    }
}
