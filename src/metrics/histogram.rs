//! A shard-local fixed-bucket histogram: `record` is a short scan and two
//! integer adds, no atomics and no metric lookup; the shard flushes it into
//! a `metrics::Histogram` handle once per tick.

use std::time::Duration;

use super::names::LATENCY_BUCKETS_SECONDS;

const BUCKETS: usize = LATENCY_BUCKETS_SECONDS.len() + 1;

/// Bucket bounds in nanoseconds, from `LATENCY_BUCKETS_SECONDS`.
const fn bounds_nanos() -> [u64; BUCKETS - 1] {
    let mut out = [0u64; BUCKETS - 1];
    let mut i = 0;
    while i < out.len() {
        out[i] = (LATENCY_BUCKETS_SECONDS[i] * 1e9) as u64;
        i += 1;
    }
    out
}
const BOUNDS_NANOS: [u64; BUCKETS - 1] = bounds_nanos();

/// Counts and sums per bucket since the last flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalHistogram {
    counts: [u64; BUCKETS],
    sums_nanos: [u64; BUCKETS],
}

impl LocalHistogram {
    pub fn record(&mut self, value: Duration) {
        let nanos = value.as_nanos().min(u64::MAX as u128) as u64;
        let i = BOUNDS_NANOS.iter().position(|&b| nanos <= b).unwrap_or(BUCKETS - 1);
        self.counts[i] += 1;
        self.sums_nanos[i] = self.sums_nanos[i].saturating_add(nanos);
    }

    /// Observations since the last flush.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Hands every observation to `histogram` (once per bucket: the bucket's
    /// mean, which falls in the same bucket, so counts and sum are exact)
    /// and starts over.
    pub fn flush(&mut self, histogram: &metrics::Histogram) {
        for i in 0..BUCKETS {
            let count = self.counts[i];
            if count > 0 {
                let mean = self.sums_nanos[i] as f64 / count as f64 / 1e9;
                histogram.record_many(mean, count as usize);
            }
        }
        *self = LocalHistogram::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_their_bucket() {
        let mut h = LocalHistogram::default();
        h.record(Duration::from_micros(3));
        h.record(Duration::from_micros(5));
        h.record(Duration::from_millis(7));
        h.record(Duration::from_secs(10));
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[10], 1); // 5 ms < 7 ms <= 10 ms
        assert_eq!(h.counts[BUCKETS - 1], 1);
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn flush_empties() {
        let mut h = LocalHistogram::default();
        h.record(Duration::from_micros(30));
        h.flush(&metrics::Histogram::noop());
        assert_eq!(h.count(), 0);
    }
}
