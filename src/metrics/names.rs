//! Every metric name, once, with its kind, unit and meaning (`ALL`), which
//! is what `describe` announces at start and what README.md lists.
//!
//! Labels: `shard` on per-shard series, `reason` on failure and disconnect
//! counters, `version` on build info. Names carry their unit (`_bytes`,
//! `_seconds`, `_total`), so the exporter adds no suffix.

use metrics::Unit;

pub(crate) const CONNECTIONS_OPEN: &str = "hubbub_connections_open";
pub(crate) const CONNECTIONS_ACCEPTED: &str = "hubbub_connections_accepted_total";
pub(crate) const CONNECTIONS_UPGRADED: &str = "hubbub_connections_upgraded_total";
pub(crate) const HANDSHAKE_FAILURES: &str = "hubbub_handshake_failures_total";
pub(crate) const DISCONNECTS: &str = "hubbub_disconnects_total";
pub(crate) const MESSAGES_IN: &str = "hubbub_messages_in_total";
pub(crate) const MESSAGES_OUT: &str = "hubbub_messages_out_total";
pub(crate) const BYTES_IN: &str = "hubbub_bytes_in_total";
pub(crate) const BYTES_OUT: &str = "hubbub_bytes_out_total";
pub(crate) const QUEUED_BYTES: &str = "hubbub_queued_bytes";
pub(crate) const SLOW_CONSUMERS: &str = "hubbub_slow_consumers_total";
pub(crate) const PROTOCOL_ERRORS: &str = "hubbub_protocol_errors_total";
pub(crate) const BUFFER_POOL_LEASED: &str = "hubbub_buffer_pool_leased";
pub(crate) const BUFFER_POOL_CAPACITY: &str = "hubbub_buffer_pool_capacity";
pub(crate) const BUFFER_POOL_REFUSED: &str = "hubbub_buffer_pool_refused_total";
pub(crate) const READ_BUDGET_HITS: &str = "hubbub_read_budget_exhausted_total";
pub(crate) const ACCEPT_BUDGET_HITS: &str = "hubbub_accept_budget_exhausted_total";
pub(crate) const ACCEPT_OVERFLOW: &str = "hubbub_accept_overflow_total";
pub(crate) const MEMORY_BYTES: &str = "hubbub_memory_bytes";
pub(crate) const MEMORY_LIMIT_BYTES: &str = "hubbub_memory_limit_bytes";
pub(crate) const MEMORY_SHED: &str = "hubbub_memory_shed_total";
pub const LOOP_TURN_SECONDS: &str = "hubbub_loop_turn_seconds";
pub(crate) const INBOX_DEPTH: &str = "hubbub_inbox_depth";
pub(crate) const INBOX_DROPS: &str = "hubbub_inbox_drops_total";
pub(crate) const INBOX_MESSAGES: &str = "hubbub_inbox_messages_total";
pub(crate) const CHANNELS: &str = "hubbub_channels";
pub(crate) const SUBSCRIPTIONS: &str = "hubbub_subscriptions";
pub(crate) const USERS: &str = "hubbub_users";
pub const DELIVERY_LATENCY_SECONDS: &str = "hubbub_publish_to_deliver_seconds";
pub(crate) const DRAINING: &str = "hubbub_draining";
pub(crate) const PROCESS_RESIDENT_MEMORY: &str = "hubbub_process_resident_memory_bytes";
pub(crate) const PROCESS_OPEN_FDS: &str = "hubbub_process_open_fds";
pub(crate) const PROCESS_MAX_FDS: &str = "hubbub_process_max_fds";
pub(crate) const BUILD_INFO: &str = "hubbub_build_info";
pub(crate) const CLUSTER_LINK_UP: &str = "hubbub_cluster_link_up";
pub(crate) const CLUSTER_DROPS: &str = "hubbub_cluster_dropped_total";
pub(crate) const CLUSTER_PUBLISHED: &str = "hubbub_cluster_published_total";
pub(crate) const CLUSTER_RECONNECTS: &str = "hubbub_cluster_reconnects_total";
pub const ADMIN_REFUSED: &str = "hubbub_admin_refused_total";
pub const TLS_HANDSHAKES: &str = "hubbub_tls_handshakes_total";
pub(crate) const CLUSTER_EPOCH_CHANGES: &str = "hubbub_cluster_epoch_changes_total";
pub(crate) const CLUSTER_SKIPPED: &str = "hubbub_cluster_publications_skipped_total";
pub(crate) const PROXY_CALLS: &str = "hubbub_proxy_calls_total";
pub(crate) const PROXY_LATENCY_SECONDS: &str = "hubbub_proxy_latency_seconds";
pub(crate) const PROXY_IN_FLIGHT: &str = "hubbub_proxy_in_flight";
pub(crate) const EVENTS_PRODUCED: &str = "hubbub_events_produced_total";
pub(crate) const EVENTS_SENT: &str = "hubbub_events_sent_total";
pub(crate) const EVENTS_DROPPED: &str = "hubbub_events_dropped_total";
pub(crate) const EVENTS_WEBHOOK_RETRIES: &str = "hubbub_events_webhook_retries_total";
pub(crate) const EVENTS_QUEUE_BYTES: &str = "hubbub_events_queue_bytes";
pub(crate) const MAILBOX_REFUSED: &str = "hubbub_mailbox_refused_total";

/// What kind of series a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: name, kind, unit and what it means (the README's table).
pub struct Described {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
}

const fn m(name: &'static str, kind: Kind, unit: Unit, help: &'static str) -> Described {
    Described { name, kind, unit, help }
}

use Kind::{Counter as C, Gauge as G, Histogram as H};

/// Every metric the server exports.
pub const ALL: &[Described] = &[
    m(CONNECTIONS_OPEN, G, Unit::Count, "Upgraded WebSocket connections open, per shard."),
    m(CONNECTIONS_ACCEPTED, C, Unit::Count, "TCP connections accepted, per shard."),
    m(CONNECTIONS_UPGRADED, C, Unit::Count, "Connections that completed the WebSocket upgrade."),
    m(HANDSHAKE_FAILURES, C, Unit::Count, "Upgrade requests refused or abandoned, by reason."),
    m(DISCONNECTS, C, Unit::Count, "Upgraded connections ended, by reason (client_close, client_gone, protocol_error, idle_timeout, slow_consumer, shutdown = drain, kicked, replaced, message_timeout, memory_shed, missed_messages, rate_limited, token_expired, connect_refused, hook_unavailable)."),
    m(MESSAGES_IN, C, Unit::Count, "WebSocket messages received from clients."),
    m(MESSAGES_OUT, C, Unit::Count, "WebSocket messages sent to clients."),
    m(BYTES_IN, C, Unit::Bytes, "Bytes read from client sockets."),
    m(BYTES_OUT, C, Unit::Bytes, "Bytes written to client sockets."),
    m(QUEUED_BYTES, G, Unit::Bytes, "Outgoing bytes the sockets refused, queued on connections."),
    m(SLOW_CONSUMERS, C, Unit::Count, "Connections closed (1008) because their backlog passed --max-backlog-bytes."),
    m(PROTOCOL_ERRORS, C, Unit::Count, "Connections closed for breaking RFC 6455 (1002, 1007, 1009)."),
    m(BUFFER_POOL_LEASED, G, Unit::Count, "64 KiB pool buffers leased by connections holding more than 4 KiB of partial input."),
    m(BUFFER_POOL_CAPACITY, G, Unit::Count, "64 KiB pool buffers per shard (--buffer-pool)."),
    m(BUFFER_POOL_REFUSED, C, Unit::Count, "Leases refused because the pool was empty (the partial input went to a heap buffer instead)."),
    m(READ_BUDGET_HITS, C, Unit::Count, "Connections that used their per-turn read budget (driven again next turn)."),
    m(ACCEPT_BUDGET_HITS, C, Unit::Count, "Loop turns that accepted their budget of 256 connections."),
    m(ACCEPT_OVERFLOW, C, Unit::Count, "Sockets closed at accept because the shard was full even for 503 refusals."),
    m(
        MEMORY_BYTES,
        G,
        Unit::Bytes,
        "Bytes held for clients, charged to --memory-limit, by kind (partial_input, outgoing, history, tls, cluster, proxy, events).",
    ),
    m(MEMORY_LIMIT_BYTES, G, Unit::Bytes, "The memory budget (--memory-limit)."),
    m(
        MEMORY_SHED,
        C,
        Unit::Count,
        "Load shed to stay within --memory-limit, by reason (upgrade_refused, outgoing, partial_input, history).",
    ),
    m(LOOP_TURN_SECONDS, H, Unit::Seconds, "Duration of event-loop turns that handled events, per shard."),
    m(INBOX_DEPTH, G, Unit::Count, "Messages waiting in a shard's inbox at the last tick."),
    m(INBOX_DROPS, C, Unit::Count, "Deliveries for another shard dropped because its inbox's data lane was full (the receivers are told: a gap push, or 1013 for room members)."),
    m(INBOX_MESSAGES, C, Unit::Count, "Inbox messages a shard handled, by lane (control: never dropped; data: deliveries)."),
    m(CHANNELS, G, Unit::Count, "Channels with at least one local member, per shard."),
    m(SUBSCRIPTIONS, G, Unit::Count, "Channel memberships held by local connections, per shard."),
    m(USERS, G, Unit::Count, "Distinct authenticated users connected, per shard."),
    m(DELIVERY_LATENCY_SECONDS, H, Unit::Seconds, "Time from a publish to its delivery on a receiving shard."),
    m(DRAINING, G, Unit::Count, "1 while the server drains (SIGTERM/SIGUSR2), else 0."),
    m(PROCESS_RESIDENT_MEMORY, G, Unit::Bytes, "Resident set size of the process."),
    m(PROCESS_OPEN_FDS, G, Unit::Count, "Open file descriptors of the process."),
    m(PROCESS_MAX_FDS, G, Unit::Count, "Soft RLIMIT_NOFILE of the process."),
    m(BUILD_INFO, G, Unit::Count, "Always 1; the `version` label names the running build."),
    m(CLUSTER_LINK_UP, G, Unit::Count, "Cluster mode: 1 while both Redis connections are up, else 0."),
    m(CLUSTER_DROPS, C, Unit::Count, "Cluster mode: commands and publications dropped (queue or buffer full, link failed)."),
    m(CLUSTER_PUBLISHED, C, Unit::Count, "Cluster mode: publishes sequenced by Redis from this node."),
    m(CLUSTER_RECONNECTS, C, Unit::Count, "Cluster mode: times a connection to Redis (commands or subscriber) was lost."),
    m(ADMIN_REFUSED, C, Unit::Count, "Admin-port connections refused or cut short, by reason (request_timeout = 408, write_timeout, evicted at the connection cap, head_too_large = 431, body_too_large = 413, bad_request = 400/411)."),
    m(TLS_HANDSHAKES, C, Unit::Count, "wss:// TLS handshakes completed, by kind (full, resumed from a session ticket)."),
    m(CLUSTER_SKIPPED, C, Unit::Count, "Cluster mode: publications from Redis not passed to a shard: no log of their channel on this node (nobody here subscribes)."),
    m(CLUSTER_EPOCH_CHANGES, C, Unit::Count, "Cluster mode: channels whose epoch changed under live subscribers on this node (Redis lost them); each subscriber got an `epoch` push."),
    m(PROXY_CALLS, C, Unit::Count, "Application hook calls (--proxy-*-url), by hook (connect, subscribe, publish, rpc) and outcome (ok, refused = an error or disconnect answer, error = unreachable or a bad answer, timeout, overloaded = over --proxy-max-in-flight, not called)."),
    m(PROXY_LATENCY_SECONDS, H, Unit::Seconds, "Time from a hook call's hand-over to its answer (every outcome but overloaded), by hook."),
    m(PROXY_IN_FLIGHT, G, Unit::Count, "Hook calls handed to the proxy workers and not answered yet (at most --proxy-max-in-flight)."),
    m(EVENTS_PRODUCED, C, Unit::Count, "Events for the application (--events-stream, --webhook-url) made, by kind (connect, disconnect, subscribe, unsubscribe, publish)."),
    m(EVENTS_SENT, C, Unit::Count, "Events delivered, by sink (stream, webhook)."),
    m(EVENTS_DROPPED, C, Unit::Count, "Events dropped, by sink and reason (queue_full: --events-max-bytes held; rejected: the webhook answered 4xx; shutdown: still queued at exit)."),
    m(EVENTS_WEBHOOK_RETRIES, C, Unit::Count, "Webhook batches sent again after a failure (network error, timeout, 408, 429, 5xx)."),
    m(EVENTS_QUEUE_BYTES, G, Unit::Bytes, "Bytes of events a sink holds (queued and in flight), by sink; at most --events-max-bytes."),
    m(MAILBOX_REFUSED, C, Unit::Count, "Private messages (send) not kept in a user's mailbox and not delivered, by reason (sender_share: that mailbox is full and the sender holds its share of it, a quarter of --mailbox-size or of --mailbox-max-bytes, so it may not push out others' messages)."),
];

/// Bucket upper bounds (seconds) of both latency histograms: 5 us to 2.5 s.
pub(crate) const LATENCY_BUCKETS_SECONDS: [f64; 18] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Announces every metric with its unit and help text to the installed recorder.
pub fn describe() {
    for d in ALL {
        match d.kind {
            Kind::Counter => metrics::describe_counter!(d.name, d.unit, d.help),
            Kind::Gauge => metrics::describe_gauge!(d.name, d.unit, d.help),
            Kind::Histogram => metrics::describe_histogram!(d.name, d.unit, d.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut names: Vec<&str> = ALL.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(names.iter().all(|n| n.starts_with("hubbub_")));
    }

    #[test]
    fn counters_end_in_total() {
        for d in ALL {
            assert_eq!(d.kind == Kind::Counter, d.name.ends_with("_total"), "{}", d.name);
        }
    }

    #[test]
    fn buckets_ascend() {
        assert!(LATENCY_BUCKETS_SECONDS.windows(2).all(|w| w[0] < w[1]));
    }
}
