//! Runs counted per status for a list's filters, each count bounded: it
//! walks at most `cap + 1` entries of the `(status, run_id)` or
//! `(workflow, status, run_id)` index, so it stays fast at a million runs.
//! Run ids are UUIDv7, so a creation-time range is a run-id key range.
//! With metadata filters the walk is over the matching entries of the first
//! pair's `(key, value, run_id)` index instead. [`Store::cached_run_counts`]
//! reuses a count for [`COUNTS_TTL`], so a list refreshed by many open pages
//! counts once per filter every few seconds.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use weft_core::{RunId, RunStatus, TraceId};

use crate::{Result, Store, db::Arg};

/// How long a count is reused: also the granularity its time window is
/// rounded down to, so `since=1h` asked twice a second apart is one entry.
pub const COUNTS_TTL: Duration = Duration::from_secs(5);

/// Most filters whose counts are kept at once; the oldest goes first.
const MAX_CACHED: usize = 256;

/// Counts read at `.0`.
type CachedCounts = (Instant, Vec<StatusCount>);

/// Counts per filter and cap, with when they were read.
#[derive(Default)]
pub(crate) struct CountCache {
    entries: Mutex<HashMap<(CountFilter, u32), CachedCounts>>,
}

/// Which runs to count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CountFilter {
    pub workflow: Option<String>,
    pub trace_id: Option<TraceId>,
    /// Created at or after (epoch ms).
    pub since_ms: Option<i64>,
    /// Created before (epoch ms).
    pub until_ms: Option<i64>,
    /// Metadata `(key, value)` pairs the run has, all of them.
    pub metadata: Vec<(String, String)>,
}

/// One status's count; `capped` when there are more than the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCount {
    pub status: RunStatus,
    pub count: i64,
    pub capped: bool,
}

impl Store {
    /// [`Store::count_runs_by_status`], read at most once per
    /// [`COUNTS_TTL`] for the same filter and cap. The window's ends are
    /// first rounded down to a multiple of the TTL, so counts of a window
    /// relative to now (`since=1h`) are shared too, and are at most that
    /// old at either end.
    pub async fn cached_run_counts(
        &self,
        filter: &CountFilter,
        cap: u32,
    ) -> Result<Vec<StatusCount>> {
        let step = COUNTS_TTL.as_millis() as i64;
        let round = |ms: i64| ms - ms.rem_euclid(step);
        let mut filter = filter.clone();
        filter.since_ms = filter.since_ms.map(round);
        filter.until_ms = filter.until_ms.map(round);
        let key = (filter, cap);
        let cache = &self.inner.run_counts;
        if let Some((at, counts)) = cache.entries.lock().expect("count cache").get(&key)
            && at.elapsed() < COUNTS_TTL
        {
            return Ok(counts.clone());
        }
        let counts = self.count_runs_by_status(&key.0, cap).await?;
        let mut entries = cache.entries.lock().expect("count cache");
        entries.retain(|_, (at, _)| at.elapsed() < COUNTS_TTL);
        if entries.len() >= MAX_CACHED
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(key, (Instant::now(), counts.clone()));
        Ok(counts)
    }

    /// Runs matching `filter` per status (every status, in `RunStatus::ALL`
    /// order), each count stopping at `cap`.
    pub async fn count_runs_by_status(
        &self,
        filter: &CountFilter,
        cap: u32,
    ) -> Result<Vec<StatusCount>> {
        let mut out = Vec::with_capacity(RunStatus::ALL.len());
        for &status in RunStatus::ALL {
            let mut values: Vec<Arg> = vec![status.as_str().into()];
            let (mut sql, id) = match filter.metadata.split_first() {
                Some(((key, value), rest)) => {
                    values.push(key.into());
                    values.push(value.into());
                    let mut sql = String::from(
                        "SELECT 1 FROM weft_run_metadata m0 CROSS JOIN weft_runs r \
                         WHERE r.run_id = m0.run_id AND r.status = $1 AND m0.key = $2 AND m0.value = $3",
                    );
                    crate::metadata::push_filters(&mut sql, &mut values, rest);
                    (sql, "m0.run_id")
                }
                None => (
                    String::from("SELECT 1 FROM weft_runs r WHERE r.status = $1"),
                    "r.run_id",
                ),
            };
            let mut push = |sql: &mut String, clause: &str, value: Arg| {
                values.push(value);
                sql.push_str(&clause.replace('?', &format!("${}", values.len())));
            };
            if let Some(workflow) = &filter.workflow {
                push(&mut sql, " AND r.workflow = ?", workflow.into());
            }
            if let Some(trace_id) = &filter.trace_id {
                push(&mut sql, " AND r.trace_id = ?", trace_id.into());
            }
            if let Some(since) = filter.since_ms {
                push(
                    &mut sql,
                    &format!(" AND {id} >= ?"),
                    RunId::floor(since).into(),
                );
            }
            if let Some(until) = filter.until_ms {
                push(
                    &mut sql,
                    &format!(" AND {id} < ?"),
                    RunId::floor(until).into(),
                );
            }
            let sql = format!(
                "SELECT COUNT(*) AS n FROM ({sql} LIMIT {}) AS bounded",
                i64::from(cap) + 1
            );
            let rows = self.pool().fetch_all_planned(&sql, values).await?;
            let n = rows.first().map(|r| r.int("n")).transpose()?.unwrap_or(0);
            out.push(StatusCount {
                status,
                count: n.min(i64::from(cap)),
                capped: n > i64::from(cap),
            });
        }
        Ok(out)
    }
}
