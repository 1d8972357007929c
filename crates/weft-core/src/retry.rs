//! Retry policy: how many attempts a step gets and how long to wait between
//! them (exponential or fixed backoff, capped, with optional full jitter).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    Exponential,
    Fixed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub initial_ms: u64,
    pub max_ms: u64,
    /// Doubling factor for exponential backoff.
    pub multiplier: f64,
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            initial_ms: 1_000,
            max_ms: 60_000,
            multiplier: 2.0,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The wait before the attempt that follows failed attempt number
    /// `failed_attempt` (1-based). `random` is a number in `[0, 1)` supplied by
    /// the caller; with jitter on, the wait is spread over `[delay/2, delay]`
    /// so that a burst of failures does not retry in lockstep.
    pub fn delay_ms(&self, failed_attempt: u32, random: f64) -> u64 {
        let base = match self.backoff {
            Backoff::Fixed => self.initial_ms as f64,
            Backoff::Exponential => {
                let exponent = failed_attempt.saturating_sub(1).min(63) as i32;
                self.initial_ms as f64 * self.multiplier.powi(exponent)
            }
        };
        let capped = base.min(self.max_ms as f64).max(0.0);
        let delay = if self.jitter {
            capped * (0.5 + 0.5 * random.clamp(0.0, 1.0))
        } else {
            capped
        };
        delay.round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &RetryPolicy, random: f64, expected: &[u64]) {
        let got: Vec<u64> = (1..=expected.len() as u32)
            .map(|n| policy.delay_ms(n, random))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn exponential_capped() {
        let policy = RetryPolicy {
            jitter: false,
            initial_ms: 100,
            max_ms: 1_000,
            ..Default::default()
        };
        check(&policy, 0.3, &[100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn fixed() {
        let policy = RetryPolicy {
            backoff: Backoff::Fixed,
            jitter: false,
            initial_ms: 250,
            ..Default::default()
        };
        check(&policy, 0.9, &[250, 250, 250]);
    }

    #[test]
    fn jitter_spreads_between_half_and_full() {
        let policy = RetryPolicy {
            initial_ms: 1_000,
            max_ms: 10_000,
            ..Default::default()
        };
        check(&policy, 0.0, &[500, 1_000, 2_000]);
        check(&policy, 1.0, &[1_000, 2_000, 4_000]);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = RetryPolicy {
            jitter: false,
            ..Default::default()
        };
        assert_eq!(policy.delay_ms(u32::MAX, 0.5), 60_000);
    }
}
