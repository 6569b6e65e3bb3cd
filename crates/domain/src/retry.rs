//! How long to wait before trying again something that lost a race or was told to slow down.

use rand::Rng;
use std::time::Duration;

/// Exponential backoff with full jitter: attempt `n` waits a random time up to
/// `min(base × 2ⁿ, max)`, so callers that failed together spread out instead of retrying in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The wait before retry `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self.base.saturating_mul(1 << attempt.min(16)).min(self.max);
        Duration::from_micros(rand::rng().random_range(0..=cap.as_micros() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wait_stays_under_a_cap_that_doubles_up_to_the_maximum() {
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        for _ in 0..200 {
            assert!(backoff.delay(0) <= Duration::from_millis(10));
            assert!(backoff.delay(2) <= Duration::from_millis(40));
            assert!(backoff.delay(30) <= Duration::from_millis(100));
        }
        // Full jitter: the waits of one attempt differ.
        let waits: std::collections::HashSet<_> = (0..50).map(|_| backoff.delay(5)).collect();
        assert!(waits.len() > 1);
    }
}
