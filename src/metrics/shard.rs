//! One shard's `metrics` handles, registered once with its `shard` label,
//! and the per-tick flush of the shard's plain counters into them.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use super::disconnect::Disconnect;
use super::names::*;
use super::stats::{ShardStats, HANDSHAKE_FAILURE_LABELS, MEMORY_SHED_LABELS};
use crate::buf::{MemKind, Meter};

/// Handles for every per-shard series.
pub(crate) struct ShardMetrics {
    open: Gauge,
    accepted: Counter,
    upgraded: Counter,
    handshake_failures: Vec<Counter>,
    disconnects: Vec<Counter>,
    messages_in: Counter,
    messages_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    queued_bytes: Gauge,
    slow_consumers: Counter,
    protocol_errors: Counter,
    buffers_leased: Gauge,
    buffers_capacity: Gauge,
    buffers_refused: Counter,
    read_budget_hits: Counter,
    accept_budget_hits: Counter,
    accept_overflow: Counter,
    memory_shed: Vec<Counter>,
    /// Process-wide series (no `shard` label): every shard sets the same value.
    memory: Vec<Gauge>,
    memory_limit: Gauge,
    loop_turn: Histogram,
    inbox_depth: Gauge,
    inbox_drops: Counter,
    inbox_control: Counter,
    inbox_data: Counter,
    channels: Gauge,
    subscriptions: Gauge,
    users: Gauge,
    delivery_latency: Histogram,
    /// TLS handshakes completed, by kind: full, resumed.
    tls_full: Counter,
    tls_resumed: Counter,
}

/// Figures the hub keeps outside `ShardStats` counters; gauges except drops.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HubFigures {
    pub inbox_depth: u64,
    pub inbox_drops: u64,
    pub channels: u64,
    pub subscriptions: u64,
    pub users: u64,
}

impl ShardMetrics {
    /// Registers the shard's series with the installed recorder (no-ops if none).
    pub fn register(shard: usize) -> ShardMetrics {
        let id = shard.to_string();
        let s = || [("shard", id.clone())];
        ShardMetrics {
            open: gauge!(CONNECTIONS_OPEN, &s()),
            accepted: counter!(CONNECTIONS_ACCEPTED, &s()),
            upgraded: counter!(CONNECTIONS_UPGRADED, &s()),
            handshake_failures: HANDSHAKE_FAILURE_LABELS
                .iter()
                .map(|&r| counter!(HANDSHAKE_FAILURES, "shard" => id.clone(), "reason" => r))
                .collect(),
            disconnects: Disconnect::ALL
                .iter()
                .map(|d| counter!(DISCONNECTS, "shard" => id.clone(), "reason" => d.label()))
                .collect(),
            messages_in: counter!(MESSAGES_IN, &s()),
            messages_out: counter!(MESSAGES_OUT, &s()),
            bytes_in: counter!(BYTES_IN, &s()),
            bytes_out: counter!(BYTES_OUT, &s()),
            queued_bytes: gauge!(QUEUED_BYTES, &s()),
            slow_consumers: counter!(SLOW_CONSUMERS, &s()),
            protocol_errors: counter!(PROTOCOL_ERRORS, &s()),
            buffers_leased: gauge!(BUFFER_POOL_LEASED, &s()),
            buffers_capacity: gauge!(BUFFER_POOL_CAPACITY, &s()),
            buffers_refused: counter!(BUFFER_POOL_REFUSED, &s()),
            read_budget_hits: counter!(READ_BUDGET_HITS, &s()),
            accept_budget_hits: counter!(ACCEPT_BUDGET_HITS, &s()),
            accept_overflow: counter!(ACCEPT_OVERFLOW, &s()),
            memory_shed: MEMORY_SHED_LABELS
                .iter()
                .map(|&r| counter!(MEMORY_SHED, "shard" => id.clone(), "reason" => r))
                .collect(),
            memory: MemKind::ALL
                .iter()
                .map(|k| gauge!(MEMORY_BYTES, "kind" => k.label()))
                .collect(),
            memory_limit: gauge!(MEMORY_LIMIT_BYTES),
            loop_turn: histogram!(LOOP_TURN_SECONDS, &s()),
            inbox_depth: gauge!(INBOX_DEPTH, &s()),
            inbox_drops: counter!(INBOX_DROPS, &s()),
            inbox_control: counter!(INBOX_MESSAGES, "shard" => id.clone(), "lane" => "control"),
            inbox_data: counter!(INBOX_MESSAGES, "shard" => id.clone(), "lane" => "data"),
            channels: gauge!(CHANNELS, &s()),
            subscriptions: gauge!(SUBSCRIPTIONS, &s()),
            users: gauge!(USERS, &s()),
            delivery_latency: histogram!(DELIVERY_LATENCY_SECONDS, &s()),
            tls_full: counter!(TLS_HANDSHAKES, "shard" => id.clone(), "kind" => "full"),
            tls_resumed: counter!(TLS_HANDSHAKES, "shard" => id.clone(), "kind" => "resumed"),
        }
    }

    /// Copies the shard's counters into the handles (counters are cumulative
    /// in `ShardStats`, so `absolute`) and empties its local histograms.
    pub fn flush(&self, stats: &mut ShardStats, hub: HubFigures, meter: &Meter) {
        for (handle, &n) in self.memory_shed.iter().zip(&stats.memory_shed) {
            handle.absolute(n);
        }
        for (handle, kind) in self.memory.iter().zip(MemKind::ALL) {
            handle.set(meter.budget().bytes(kind) as f64);
        }
        self.memory_limit.set(meter.limit() as f64);
        self.open.set(stats.open as f64);
        self.accepted.absolute(stats.accepted);
        self.tls_full.absolute(stats.tls_full);
        self.tls_resumed.absolute(stats.tls_resumed);
        self.upgraded.absolute(stats.upgraded);
        for (handle, &n) in self.handshake_failures.iter().zip(&stats.handshake_failures) {
            handle.absolute(n);
        }
        for (handle, &n) in self.disconnects.iter().zip(&stats.disconnects) {
            handle.absolute(n);
        }
        self.messages_in.absolute(stats.messages_in);
        self.messages_out.absolute(stats.messages_out);
        self.bytes_in.absolute(stats.bytes_in);
        self.bytes_out.absolute(stats.bytes_out);
        self.queued_bytes.set(stats.queued_bytes as f64);
        self.slow_consumers.absolute(stats.slow_consumers);
        self.protocol_errors.absolute(stats.protocol_errors);
        self.buffers_leased.set(stats.buffers_leased as f64);
        self.buffers_capacity.set(stats.buffers_capacity as f64);
        self.buffers_refused.absolute(stats.buffers_refused);
        self.read_budget_hits.absolute(stats.read_budget_hits);
        self.accept_budget_hits.absolute(stats.accept_budget_hits);
        self.accept_overflow.absolute(stats.accept_overflow);
        stats.loop_turns.flush(&self.loop_turn);
        stats.delivery_latency.flush(&self.delivery_latency);
        self.inbox_depth.set(hub.inbox_depth as f64);
        self.inbox_drops.absolute(hub.inbox_drops);
        self.inbox_control.absolute(stats.inbox_control);
        self.inbox_data.absolute(stats.inbox_data);
        self.channels.set(hub.channels as f64);
        self.subscriptions.set(hub.subscriptions as f64);
        self.users.set(hub.users as f64);
    }
}
