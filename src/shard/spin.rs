//! Busy polling that spins only while events keep coming (`--busy-poll-us`).
//!
//! A shard that keeps polling without blocking for a short window after an
//! event answers the next request without a wake-up, which is most of a round
//! trip's cost on loopback and in VMs. But a spin that ends empty is pure
//! cost: when events arrive further apart than the window, every idle period
//! burns the whole window and then pays the wake-up anyway (a connect storm
//! paced by its clients measured 17% more CPU per handshake with a 50 us
//! spin than without).
//!
//! So the spin is armed by evidence. Every idle period starts with one
//! non-blocking poll that finds nothing (so events that were already queued,
//! like the writable edge of a just-registered socket, never count as
//! "coming"). When the next event arrives, the length of that idle gap
//! decides the next idle period: a gap under half the window arms the spin,
//! a longer one disarms it and the shard blocks at once until gaps shrink.
//! The window stays the upper bound of any spin.
//!
//! No clock of its own: the loop passes `Instant`s in.

use std::time::{Duration, Instant};

/// The spin state of one shard.
#[derive(Debug)]
pub struct Spin {
    /// `--busy-poll-us`: the longest spin after an event; zero disables it.
    window: Duration,
    /// When a poll last returned events.
    last_event: Instant,
    /// When the current idle period began (its first empty poll), if one is
    /// under way.
    idle_since: Option<Instant>,
    /// Whether the current idle period may spin.
    armed: bool,
}

impl Spin {
    pub fn new(window: Duration, now: Instant) -> Spin {
        Spin {
            window,
            last_event: now,
            idle_since: None,
            armed: !window.is_zero(),
        }
    }

    /// True when the next poll must not block: the idle period has not been
    /// confirmed by an empty poll yet, or the spin is armed and within its
    /// window.
    pub(crate) fn keep_polling(&self, now: Instant) -> bool {
        if self.window.is_zero() {
            return false;
        }
        match self.idle_since {
            None => true,
            Some(_) => self.armed && now.saturating_duration_since(self.last_event) < self.window,
        }
    }

    /// Records what a poll returned at `now`.
    pub(crate) fn polled(&mut self, had_events: bool, now: Instant) {
        if self.window.is_zero() {
            return;
        }
        if !had_events {
            self.idle_since.get_or_insert(now);
            return;
        }
        if let Some(start) = self.idle_since.take() {
            self.armed = now.saturating_duration_since(start) < self.window / 2;
        }
        self.last_event = now;
    }

    /// When a poll last returned events (the loop-turn histogram's start).
    pub(crate) fn last_event(&self) -> Instant {
        self.last_event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_micros(50);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn zero_window_never_spins() {
        let t0 = Instant::now();
        let mut spin = Spin::new(Duration::ZERO, t0);
        assert!(!spin.keep_polling(t0));
        spin.polled(true, t0);
        spin.polled(false, t0);
        assert!(!spin.keep_polling(t0));
    }

    #[test]
    fn an_idle_period_starts_with_one_empty_poll() {
        let t0 = Instant::now();
        let mut spin = Spin::new(WINDOW, t0);
        spin.polled(true, t0);
        // Already-queued events (no empty poll in between) say nothing about
        // the pace, so they neither arm nor disarm.
        assert!(spin.keep_polling(t0 + us(100)));
        spin.polled(true, t0 + us(100));
        assert!(spin.keep_polling(t0 + us(500)));
    }

    #[test]
    fn close_events_keep_the_spin_armed() {
        let t0 = Instant::now();
        let mut spin = Spin::new(WINDOW, t0);
        spin.polled(true, t0);
        spin.polled(false, t0 + us(1));
        assert!(spin.keep_polling(t0 + us(10)), "spins within the window");
        spin.polled(true, t0 + us(10));
        spin.polled(false, t0 + us(11));
        assert!(spin.keep_polling(t0 + us(20)));
        assert!(!spin.keep_polling(t0 + us(61)), "never past the window");
    }

    #[test]
    fn a_long_gap_disarms_until_gaps_shrink() {
        let t0 = Instant::now();
        let mut spin = Spin::new(WINDOW, t0);
        spin.polled(true, t0);
        spin.polled(false, t0 + us(1));
        // The spin ran out and the shard blocked; the next event came late.
        spin.polled(true, t0 + us(200));
        spin.polled(false, t0 + us(201));
        assert!(!spin.keep_polling(t0 + us(202)), "blocks at once after a long gap");
        // A gap over half the window keeps it disarmed ...
        spin.polled(true, t0 + us(231));
        spin.polled(false, t0 + us(232));
        assert!(!spin.keep_polling(t0 + us(233)));
        // ... one under half the window arms it again.
        spin.polled(true, t0 + us(242));
        spin.polled(false, t0 + us(243));
        assert!(spin.keep_polling(t0 + us(244)));
    }
}
