//! The recent latency of claims and commits, kept in memory per server: a
//! bounded window of the durations the store already measures around each
//! claim and each result or start it writes, read by `database_slow`. Nothing
//! is written to the database for it.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, Instant},
};

use weft_core::diagnosis::{LatencyView, percentile};

/// How far back the window reaches.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The most samples kept per class of operation (the newest win).
pub const CAPACITY: usize = 1_000;

/// Claim and commit durations of the last [`WINDOW`].
#[derive(Default)]
pub(crate) struct Latencies {
    claim: Mutex<VecDeque<(Instant, Duration)>>,
    commit: Mutex<VecDeque<(Instant, Duration)>>,
}

impl Latencies {
    /// Records one operation (`op` as the store names it to its observer);
    /// operations that are neither a claim nor a commit are ignored.
    pub(crate) fn record(&self, op: &str, elapsed: Duration) {
        let window = match op {
            "claim" => &self.claim,
            "complete" | "fail" | "release" | "start_run" => &self.commit,
            _ => return,
        };
        let mut samples = window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() == CAPACITY {
            samples.pop_front();
        }
        samples.push_back((Instant::now(), elapsed));
    }

    /// The p99 and maximum of each class over the window.
    pub(crate) fn views(&self) -> Vec<LatencyView> {
        [("claim", &self.claim), ("commit", &self.commit)]
            .into_iter()
            .map(|(operation, window)| {
                let mut micros: Vec<u64> = window
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .filter(|(at, _)| at.elapsed() <= WINDOW)
                    .map(|(_, d)| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
                    .collect();
                micros.sort_unstable();
                LatencyView {
                    operation,
                    samples: micros.len(),
                    p99_us: percentile(&micros, 99),
                    max_us: micros.last().copied().unwrap_or(0),
                    window_ms: WINDOW.as_millis() as i64,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_and_commits_are_kept_apart_and_bounded() {
        let l = Latencies::default();
        l.record("claim", Duration::from_millis(3));
        l.record("gauges", Duration::from_secs(9));
        for _ in 0..CAPACITY + 5 {
            l.record("complete", Duration::from_micros(10));
        }
        let views = l.views();
        assert_eq!(
            (views[0].operation, views[0].samples, views[0].p99_us),
            ("claim", 1, 3_000)
        );
        assert_eq!(
            (views[1].operation, views[1].samples, views[1].max_us),
            ("commit", CAPACITY, 10)
        );
    }
}
