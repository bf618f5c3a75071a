//! A graceful drain's schedule: Close 1001 frames spread evenly over the
//! drain window, in random order, each with a jittered reconnect hint, so
//! the clients of a restarting server do not all come back in one storm.
//!
//! The spread ends `CLOSE_MARGIN` before the window does, leaving the last
//! clients time for the close handshake; a window no longer than the margin
//! closes everything at once.

use std::time::{Duration, Instant};

use crate::tick::CLOSE_TIMEOUT;

/// Kept free at the end of the window for the last close handshakes.
pub(crate) const CLOSE_MARGIN: Duration = Duration::from_secs(CLOSE_TIMEOUT.as_secs() + 2);
/// The reconnect hint is 1 to this many seconds.
const MAX_HINT_SECS: u64 = 5;

/// One shard's drain in progress.
#[derive(Debug)]
pub struct Drain {
    /// When the last Close frame should be out.
    spread_end: Instant,
    /// When the shard stops waiting and exits.
    pub deadline: Instant,
    /// When the previous batch was sent.
    last: Instant,
    rng: u64,
}

impl Drain {
    pub fn new(now: Instant, window: Duration, seed: u64) -> Drain {
        Drain {
            spread_end: now + window.saturating_sub(CLOSE_MARGIN),
            deadline: now + window,
            last: now,
            // xorshift must not start at 0.
            rng: seed | 1,
        }
    }

    /// How many of `open` connections to close now: the share of the time
    /// left in the spread that passed since the last batch, so batches stay
    /// even however many connections arrive or leave meanwhile.
    pub(crate) fn quota(&mut self, open: usize, now: Instant) -> usize {
        let left = self.spread_end.saturating_duration_since(now);
        let step = now.saturating_duration_since(self.last);
        self.last = now;
        if left.is_zero() {
            return open;
        }
        let share = step.as_secs_f64() / (left + step).as_secs_f64();
        ((open as f64 * share).ceil() as usize).min(open)
    }

    /// True once every connection should have had its Close.
    pub(crate) fn spread_over(&self, now: Instant) -> bool {
        now >= self.spread_end
    }

    /// Shuffles `keys` (Fisher-Yates) so each batch is a random sample.
    pub(crate) fn shuffle(&mut self, keys: &mut [usize]) {
        for i in (1..keys.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            keys.swap(i, j);
        }
    }

    /// The Close reason for one connection, with its reconnect hint.
    pub fn reason(&mut self, out: &mut String) {
        use std::fmt::Write;
        let secs = 1 + self.next() % MAX_HINT_SECS;
        out.clear();
        let _ = write!(out, "server restarting; reconnect in {secs} s");
    }

    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_spreads_closes_evenly() {
        let start = Instant::now();
        let mut drain = Drain::new(start, Duration::from_secs(15), 7); // spread 10 s
        let mut open = 1000;
        let mut t = start;
        let mut batches = Vec::new();
        for _ in 0..10 {
            t += Duration::from_secs(1);
            let n = drain.quota(open, t);
            open -= n;
            batches.push(n);
        }
        assert_eq!(open, 0);
        assert!(batches.iter().all(|&n| (99..=101).contains(&n)), "{batches:?}");
    }

    #[test]
    fn short_windows_close_at_once() {
        let start = Instant::now();
        let mut drain = Drain::new(start, Duration::from_secs(5), 7);
        assert_eq!(drain.quota(500, start), 500);
        assert!(drain.spread_over(start));
    }

    #[test]
    fn reasons_carry_a_hint_and_fit_a_close_frame() {
        let mut drain = Drain::new(Instant::now(), Duration::from_secs(30), 3);
        let mut reason = String::new();
        for _ in 0..20 {
            drain.reason(&mut reason);
            let secs: u64 = reason.rsplit(' ').nth(1).unwrap().parse().unwrap();
            assert!((1..=MAX_HINT_SECS).contains(&secs) && reason.len() <= 123);
        }
    }

    #[test]
    fn shuffle_keeps_every_key() {
        let mut drain = Drain::new(Instant::now(), Duration::from_secs(30), 11);
        let mut keys: Vec<usize> = (0..100).collect();
        drain.shuffle(&mut keys);
        assert_ne!(keys, (0..100).collect::<Vec<_>>());
        keys.sort_unstable();
        assert_eq!(keys, (0..100).collect::<Vec<_>>());
    }
}
