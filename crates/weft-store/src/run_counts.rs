//! Runs counted per status for a list's filters, each count bounded: it
//! walks at most `cap + 1` entries of the `(status, run_id)` or
//! `(workflow, status, run_id)` index, so it stays fast at a million runs.
//! Run ids are UUIDv7, so a creation-time range is a run-id key range.

use weft_core::RunStatus;

use crate::{Result, Store, db::Arg};

/// The smallest UUIDv7 minted at `ms` (epoch milliseconds): every run
/// created at or after `ms` has a run id at or above it.
pub fn run_id_floor(ms: i64) -> String {
    let ms = ms.clamp(0, (1_i64 << 48) - 1) as u64;
    let hex = format!("{ms:012x}");
    format!("{}-{}-7000-8000-000000000000", &hex[..8], &hex[8..])
}

/// Which runs to count.
#[derive(Debug, Clone, Default)]
pub struct CountFilter {
    pub workflow: Option<String>,
    pub trace_id: Option<String>,
    /// Created at or after (epoch ms).
    pub since_ms: Option<i64>,
    /// Created before (epoch ms).
    pub until_ms: Option<i64>,
}

/// One status's count; `capped` when there are more than the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCount {
    pub status: RunStatus,
    pub count: i64,
    pub capped: bool,
}

impl Store {
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
            let mut sql = String::from("SELECT 1 FROM weft_runs WHERE status = $1");
            let mut push = |sql: &mut String, clause: &str, value: Arg| {
                values.push(value);
                sql.push_str(&clause.replace('?', &format!("${}", values.len())));
            };
            if let Some(workflow) = &filter.workflow {
                push(&mut sql, " AND workflow = ?", workflow.into());
            }
            if let Some(trace_id) = &filter.trace_id {
                push(&mut sql, " AND trace_id = ?", trace_id.into());
            }
            if let Some(since) = filter.since_ms {
                push(&mut sql, " AND run_id >= ?", run_id_floor(since).into());
            }
            if let Some(until) = filter.until_ms {
                push(&mut sql, " AND run_id < ?", run_id_floor(until).into());
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_floor_sorts_below_every_id_of_that_millisecond_and_above_earlier_ones() {
        let ms = 1_764_400_000_123;
        let floor = super::run_id_floor(ms);
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            (ms / 1000) as u64,
            ((ms % 1000) * 1_000_000) as u32,
        );
        let same = uuid::Uuid::new_v7(ts).to_string();
        let earlier =
            super::run_id_floor(ms - 1).replace("7000-8000-000000000000", "7fff-bfff-ffffffffffff");
        assert!(uuid::Uuid::parse_str(&floor).is_ok(), "{floor}");
        assert!(floor <= same, "{floor} > {same}");
        assert!(earlier < floor, "{earlier} >= {floor}");
    }
}
