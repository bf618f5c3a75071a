//! Shard-local counters: plain integers bumped on the hot path, read by the
//! shard once per tick (and by tests through `ServerHandle::stats`).

use super::disconnect::Disconnect;
use super::histogram::LocalHistogram;

/// Handshake failure reasons, in the order of `ShardStats::handshake_failures`.
pub(crate) const HANDSHAKE_FAILURE_LABELS: [&str; 18] = [
    "bad_request",
    "origin_forbidden",
    "not_found",
    "method_not_allowed",
    "timeout",
    "unsupported_version",
    "headers_too_large",
    "over_capacity",
    "abandoned",
    "unauthorized",
    "memory",
    "per_ip_connections",
    "per_ip_rate",
    "evicted",
    "room_forbidden",
    "tls_error",
    "tls_timeout",
    "other",
];

/// What the memory budget shed, in the order of `ShardStats::memory_shed`
/// (the `reason` label of `hubbub_memory_shed_total`).
pub(crate) const MEMORY_SHED_LABELS: [&str; 4] = ["upgrade_refused", "outgoing", "partial_input", "history"];

/// Index into `MEMORY_SHED_LABELS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Shed {
    /// An upgrade refused with 503 near the limit.
    UpgradeRefused = 0,
    /// A connection closed for the size of its outgoing backlog.
    Outgoing,
    /// A connection closed for the size of its partial input, or refused a
    /// buffer for it.
    PartialInput,
    /// Publications dropped from history, oldest first.
    History,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub accepted: u64,
    /// Accepted then closed at once: the shard was full even for refusals.
    pub accept_overflow: u64,
    pub upgraded: u64,
    pub handshake_failures: [u64; HANDSHAKE_FAILURE_LABELS.len()],
    pub disconnects: [u64; Disconnect::ALL.len()],
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub slow_consumers: u64,
    pub protocol_errors: u64,
    pub read_budget_hits: u64,
    pub accept_budget_hits: u64,
    /// Shed by the memory budget, by `Shed` reason.
    pub memory_shed: [u64; MEMORY_SHED_LABELS.len()],
    /// Messages members sent to their rooms.
    pub messages_in_rooms: u64,
    /// Messages for another shard dropped because its inbox was full.
    pub inbox_drops: u64,
    /// Inbox messages handled, by lane: control, data.
    pub inbox_control: u64,
    pub inbox_data: u64,
    /// `/ws` commands refused by the per-connection rate limit.
    pub rate_limited: u64,
    /// `/ws` commands answered with an error.
    pub command_errors: u64,
    /// Subscribes refused by `--max-subscriptions`.
    pub subscription_limit_hits: u64,
    /// Gauges of the hub: local subscriptions, channels owned, local users.
    pub subscriptions: u64,
    pub channels: u64,
    pub users: u64,
    /// Gauges, set by the shard each tick.
    pub open: u64,
    pub buffers_leased: u64,
    pub buffers_capacity: u64,
    pub buffers_refused: u64,
    /// Bytes queued on this shard's connections (refreshed once a second).
    pub queued_bytes: u64,
    /// TLS handshakes completed (`wss://`): full, and resumed from a ticket.
    pub tls_full: u64,
    pub tls_resumed: u64,
    /// Loop turns that handled events, since the last flush to `metrics`.
    pub loop_turns: LocalHistogram,
    /// Publish-to-deliver latency of messages delivered here (the hub records).
    pub delivery_latency: LocalHistogram,
}

impl ShardStats {
    pub(crate) fn handshake_failed(&mut self, label: &str) {
        let index = HANDSHAKE_FAILURE_LABELS
            .iter()
            .position(|&l| l == label)
            .unwrap_or(HANDSHAKE_FAILURE_LABELS.len() - 1);
        self.handshake_failures[index] += 1;
    }

    /// A TLS handshake completed; `resumed` when it used a session ticket.
    pub fn tls_handshake(&mut self, resumed: bool) {
        if resumed {
            self.tls_resumed += 1;
        } else {
            self.tls_full += 1;
        }
    }

    pub(crate) fn disconnected(&mut self, why: Disconnect) {
        self.disconnects[why as usize] += 1;
    }

    /// Sum of several shards' counters.
    pub fn add(&mut self, other: &ShardStats) {
        macro_rules! sum {
            ($($field:ident),*) => { $( self.$field += other.$field; )* };
        }
        sum!(
            accepted,
            accept_overflow,
            upgraded,
            messages_in,
            messages_out,
            bytes_in,
            bytes_out,
            slow_consumers,
            protocol_errors,
            read_budget_hits,
            accept_budget_hits,
            messages_in_rooms,
            inbox_drops,
            inbox_control,
            inbox_data,
            rate_limited,
            command_errors,
            subscription_limit_hits,
            subscriptions,
            channels,
            users,
            open,
            buffers_leased,
            buffers_capacity,
            buffers_refused,
            queued_bytes,
            tls_full,
            tls_resumed
        );
        for (a, b) in self.handshake_failures.iter_mut().zip(other.handshake_failures) {
            *a += b;
        }
        for (a, b) in self.disconnects.iter_mut().zip(other.disconnects) {
            *a += b;
        }
        for (a, b) in self.memory_shed.iter_mut().zip(other.memory_shed) {
            *a += b;
        }
    }

    pub fn shed(&mut self, why: Shed) {
        self.memory_shed[why as usize] += 1;
    }

    pub(crate) fn shed_for(&self, why: Shed) -> u64 {
        self.memory_shed[why as usize]
    }

    pub fn handshake_failures_for(&self, label: &str) -> u64 {
        HANDSHAKE_FAILURE_LABELS
            .iter()
            .position(|&l| l == label)
            .map_or(0, |i| self.handshake_failures[i])
    }

    pub fn disconnects_for(&self, why: Disconnect) -> u64 {
        self.disconnects[why as usize]
    }
}
