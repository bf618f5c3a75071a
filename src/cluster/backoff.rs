//! Reconnect delays: exponential from 50 ms to 5 s, with full jitter so
//! many nodes that lost Redis together do not return in one storm.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(50);
const MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait before the next attempt: uniform in [ceiling/2, ceiling].
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = FIRST.saturating_mul(1 << self.failures.min(10)).min(MAX);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling.as_millis() as u64 / 2;
        Duration::from_millis(half + random_u64() % (half + 1))
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A cheap random number (not for secrets): the std hasher's random keys.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter_and_reset() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay();
        assert!(first <= FIRST && first >= FIRST / 2, "{first:?}");
        let late: Vec<Duration> = (0..20).map(|_| backoff.next_delay()).skip(10).collect();
        assert!(late.iter().all(|d| *d <= MAX && *d >= MAX / 2));
        backoff.reset();
        assert!(backoff.next_delay() <= FIRST);
    }
}
