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
    pub rate: Rate,
    pub errors: TokenBucket,
    /// How long the connection has been sending over its rate.
    pub overrun: Overrun,
    /// Channels this connection made in the current minute.
    pub creations: Creations,
    /// The mailbox offsets this connection was given (`mailbox.rs`);
    /// `None` until the first one (always, without `--mailbox-size`).
    pub mail: Option<Box<super::mailbox::MailMark>>,
    /// While the application's connect hook has not answered: the commands
    /// that arrived meanwhile, run when it allows the connection.
    pub connecting: Option<Box<super::proxy::Held>>,
    /// Hook calls of this connection in flight (at most
    /// `proxy::CALLS_PER_CONNECTION`).
    pub proxy_calls: u8,
    /// The application was told this connection connected (`events.rs`):
    /// only then is it told that it disconnected.
    pub announced: bool,
    /// The protocol its replies and pushes are encoded in.
    pub proto: Proto,
}

/// The protocol of a session (one byte: `centrifuge/` keeps no other
/// per-connection state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    /// `/ws` (and authenticated `/room`, `/echo`): docs/PROTOCOL.md.
    Ws,
    /// `/connection/websocket` before its `connect` succeeded.
    CentrifugeConnecting,
    /// `/connection/websocket`, connected.
    Centrifuge,
}

impl Proto {
    pub fn is_centrifuge(self) -> bool {
        self != Proto::Ws
    }
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
    /// Made by the connect hook's `channels`, not by a command: confirmed
    /// with a `subscribed` push instead of a reply.
    pub server_side: bool,
}

impl Session {
    pub fn new(generation: u32, user: Option<Arc<str>>, allowed: Option<Vec<ChannelPattern>>, rate: Rate) -> Self {
        Session {
            generation,
            user,
            allowed,
            subs: Vec::new(),
            rate,
            errors: TokenBucket::full(ERROR_BURST),
            overrun: Overrun::default(),
            creations: Creations::default(),
            mail: None,
            connecting: None,
            proxy_calls: 0,
            announced: false,
            proto: Proto::Ws,
        }
    }

    /// Whether the token allows `channel`: its `channels` claim, and
    /// always the user's own mailbox (`mailbox.rs`), so a refreshed claim
    /// never ends that subscription.
    pub(crate) fn may_access(&self, channel: &str) -> bool {
        if super::mailbox::user_of(channel).is_some_and(|owner| self.user.as_deref() == Some(owner)) {
            return true;
        }
        self.allowed
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| p.matches(channel)))
    }

    pub(crate) fn subscription(&self, channel: &str) -> Option<usize> {
        self.subs.iter().position(|s| &*s.channel == channel)
    }
}

/// A token bucket in timer ticks: `take` refills by elapsed time first.
#[derive(Clone, Copy)]
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
        self.take_n(tick, per_tick, 1.0)
    }

    /// Takes `n` tokens if there are as many (after the refill).
    pub fn take_n(&mut self, tick: u32, per_tick: f32, n: f32) -> bool {
        let elapsed = tick.saturating_sub(self.last_tick) as f32;
        self.tokens = (self.tokens + elapsed * per_tick).min(self.capacity);
        self.last_tick = tick;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// A connection's sending rate: messages and bytes per second, each with a
/// burst of one second's worth (`--max-messages-per-sec`,
/// `--max-bytes-per-sec`). `/ws` commands and `/room` messages spend it.
pub(crate) struct Rate {
    messages: TokenBucket,
    bytes: TokenBucket,
}

impl Rate {
    pub fn new(messages_per_sec: u32, bytes_per_sec: usize) -> Rate {
        Rate {
            messages: TokenBucket::full(messages_per_sec as f32),
            bytes: TokenBucket::full(bytes_per_sec as f32),
        }
    }

    /// Spends one message of `len` bytes at `tick`; false when over either
    /// rate (nothing is spent then).
    pub fn spend(&mut self, tick: u32, len: usize, messages_per_sec: u32, bytes_per_sec: usize) -> bool {
        let per_sec = crate::tick::TICKS_PER_SEC as f32;
        let mut bytes = TokenBucket { ..self.bytes };
        if !bytes.take_n(tick, bytes_per_sec as f32 / per_sec, len as f32) {
            self.bytes = bytes;
            return false;
        }
        if !self.messages.take(tick, messages_per_sec as f32 / per_sec) {
            return false;
        }
        self.bytes = bytes;
        true
    }
}

/// Channels a connection made, counted in fixed one-minute windows
/// (`--max-new-channels-per-minute`). The owner reports each creation after
/// the fact, so commands in flight together may overshoot by as many as
/// were in flight (bounded by the message rate).
#[derive(Debug, Default)]
pub(crate) struct Creations {
    /// Tick the current window began.
    since: u32,
    count: u32,
}

impl Creations {
    const WINDOW_TICKS: u32 = 60 * crate::tick::TICKS_PER_SEC;

    /// True while fewer than `limit` channels were made in this window.
    pub fn left(&self, tick: u32, limit: u32) -> bool {
        tick.saturating_sub(self.since) >= Self::WINDOW_TICKS || self.count < limit
    }

    pub fn note(&mut self, tick: u32) {
        if tick.saturating_sub(self.since) >= Self::WINDOW_TICKS {
            self.since = tick;
            self.count = 0;
        }
        self.count += 1;
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
        let rate = || Rate::new(10, 1 << 20);
        let session = Session::new(1, None, Some(vec![ChannelPattern::parse("chat:*").unwrap()]), rate());
        assert!(session.may_access("chat:1"));
        assert!(!session.may_access("admin"));
        assert!(Session::new(1, None, None, rate()).may_access("anything"));
    }

    #[test]
    fn a_rate_counts_messages_and_bytes_and_spends_nothing_when_refused() {
        let mut rate = Rate::new(10, 1000);
        assert!(rate.spend(0, 600, 10, 1000));
        assert!(!rate.spend(0, 600, 10, 1000), "over the bytes");
        assert!(rate.spend(0, 400, 10, 1000), "the refusal spent nothing");
        // A quarter second later: 250 bytes and 2.5 messages came back.
        assert!(rate.spend(1, 250, 10, 1000));
        assert!(!rate.spend(1, 1, 10, 1000));
        let mut many = Rate::new(3, 1 << 20);
        assert!((0..3).all(|_| many.spend(0, 1, 3, 1 << 20)));
        assert!(!many.spend(0, 1, 3, 1 << 20), "over the messages");
    }
}
