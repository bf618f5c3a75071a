//! What the hub knows about one upgraded connection beyond its socket: who
//! it is, what it subscribed to, and how fast it may send. Kept in a side
//! table of the shard's hub (only `/ws` and authenticated connections have
//! one), so a plain `Conn` stays small.

use std::sync::Arc;

use crate::auth::pattern::ChannelPattern;

/// Errors a connection may make in a burst before it is closed with 1008.
pub(crate) const ERROR_BURST: f32 = 20.0;
/// Errors forgiven per second.
pub(crate) const ERRORS_FORGIVEN_PER_SEC: f32 = 1.0;
/// Seconds a connection may go on sending over its rate (refused with 105,
/// with no pause of a second or more between refusals) before it is closed
/// with 1008 "rate limit exceeded". A burst over the rate followed by a
/// pause never gets there.
pub const RATE_LIMIT_GRACE_SECS: u32 = 5;

pub(crate) struct Session {
    /// The connection's generation when the session began (a slab slot may
    /// be reused; replies for an older generation are dropped).
    pub generation: u32,
    /// `sub` of the connection's token; `None` when anonymous.
    pub user: Option<Arc<str>>,
    /// The token's `channels` claim; `None` allows every channel.
    pub allowed: Option<Vec<ChannelPattern>>,
    /// Subscriptions, with whether the owner confirmed them yet.
    pub subs: Vec<Subscription>,
    pub rate: TokenBucket,
    pub errors: TokenBucket,
    /// How long the connection has been sending over its rate.
    pub overrun: Overrun,
}

pub(crate) struct Subscription {
    pub channel: Arc<str>,
    /// False while the owner shard has not answered the subscribe.
    pub joined: bool,
    /// The subscribe command's id: only the owner's answer to this very
    /// command confirms it (an answer to an earlier, since-unsubscribed
    /// subscribe must be undone, not counted twice).
    pub command: u64,
    pub join_leave: bool,
}

impl Session {
    pub fn new(generation: u32, user: Option<Arc<str>>, allowed: Option<Vec<ChannelPattern>>, burst: f32) -> Self {
        Session {
            generation,
            user,
            allowed,
            subs: Vec::new(),
            rate: TokenBucket::full(burst),
            errors: TokenBucket::full(ERROR_BURST),
            overrun: Overrun::default(),
        }
    }

    pub(crate) fn may_access(&self, channel: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| p.matches(channel)))
    }

    pub(crate) fn subscription(&self, channel: &str) -> Option<usize> {
        self.subs.iter().position(|s| &*s.channel == channel)
    }
}

/// A token bucket in timer ticks: `take` refills by elapsed time first.
pub(crate) struct TokenBucket {
    tokens: f32,
    capacity: f32,
    last_tick: u32,
}

impl TokenBucket {
    pub fn full(capacity: f32) -> Self {
        TokenBucket {
            tokens: capacity,
            capacity,
            last_tick: 0,
        }
    }

    /// Takes one token if there is one, after refilling `per_tick` tokens for
    /// every tick since the last call.
    pub fn take(&mut self, tick: u32, per_tick: f32) -> bool {
        let elapsed = tick.saturating_sub(self.last_tick) as f32;
        self.tokens = (self.tokens + elapsed * per_tick).min(self.capacity);
        self.last_tick = tick;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A run of refused (over-rate) commands: rate-limited commands are not
/// bad commands and do not spend the error budget, but a client that never
/// slows down is closed after [`RATE_LIMIT_GRACE_SECS`].
#[derive(Debug, Default)]
pub(crate) struct Overrun {
    /// Tick of the first refusal of the current run.
    since: u32,
    /// Tick of the latest refusal; `None` before the first.
    last: Option<u32>,
}

impl Overrun {
    /// Notes a refused command at `tick`; true when the run of refusals,
    /// each less than a second after the one before, has lasted the grace.
    pub fn refused(&mut self, tick: u32, ticks_per_sec: u32) -> bool {
        let continues = self.last.is_some_and(|last| tick.saturating_sub(last) < ticks_per_sec);
        if !continues {
            self.since = tick;
        }
        self.last = Some(tick);
        tick.saturating_sub(self.since) >= RATE_LIMIT_GRACE_SECS * ticks_per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let mut bucket = TokenBucket::full(3.0);
        assert!((0..3).all(|_| bucket.take(0, 1.0)));
        assert!(!bucket.take(0, 1.0), "burst spent");
        assert!(bucket.take(1, 1.0), "one tick refilled one token");
        assert!(!bucket.take(1, 1.0));
        assert!((0..3).all(|_| bucket.take(100, 1.0)), "refill is capped at the burst");
        assert!(!bucket.take(100, 1.0));
    }

    #[test]
    fn only_an_unbroken_run_of_refusals_ends_in_a_close() {
        let per_sec = 4;
        let mut run = Overrun::default();
        // Refused every tick for just under the grace: still open.
        let grace = RATE_LIMIT_GRACE_SECS * per_sec;
        assert!((0..grace).all(|t| !run.refused(t, per_sec)));
        assert!(run.refused(grace, per_sec), "the grace is over");
        // Bursts with a pause of a second between them start over each time.
        let mut bursts = Overrun::default();
        let mut tick = 0;
        for _ in 0..20 {
            assert!(!bursts.refused(tick, per_sec));
            assert!(!bursts.refused(tick + 1, per_sec));
            tick += 1 + per_sec;
        }
    }

    #[test]
    fn channel_claims_limit_access() {
        let session = Session::new(1, None, Some(vec![ChannelPattern::parse("chat:*").unwrap()]), 10.0);
        assert!(session.may_access("chat:1"));
        assert!(!session.may_access("admin"));
        assert!(Session::new(1, None, None, 10.0).may_access("anything"));
    }
}
