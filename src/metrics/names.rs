//! Every metric name, once. Labels: `shard` on per-shard series, `reason` on
//! failure and disconnect counters.

pub const CONNECTIONS_OPEN: &str = "hubbub_connections_open";
pub const CONNECTIONS_ACCEPTED: &str = "hubbub_connections_accepted_total";
pub const CONNECTIONS_UPGRADED: &str = "hubbub_connections_upgraded_total";
pub const HANDSHAKE_FAILURES: &str = "hubbub_handshake_failures_total";
pub const DISCONNECTS: &str = "hubbub_disconnects_total";
pub const MESSAGES_IN: &str = "hubbub_messages_in_total";
pub const MESSAGES_OUT: &str = "hubbub_messages_out_total";
pub const BYTES_IN: &str = "hubbub_bytes_in_total";
pub const BYTES_OUT: &str = "hubbub_bytes_out_total";
pub const SLOW_CONSUMERS: &str = "hubbub_slow_consumers_total";
pub const PROTOCOL_ERRORS: &str = "hubbub_protocol_errors_total";
pub const BUFFER_POOL_LEASED: &str = "hubbub_buffer_pool_leased";
pub const BUFFER_POOL_CAPACITY: &str = "hubbub_buffer_pool_capacity";
pub const BUFFER_POOL_REFUSED: &str = "hubbub_buffer_pool_refused_total";
pub const READ_BUDGET_HITS: &str = "hubbub_read_budget_exhausted_total";
pub const ACCEPT_BUDGET_HITS: &str = "hubbub_accept_budget_exhausted_total";
pub const ACCEPT_OVERFLOW: &str = "hubbub_accept_overflow_total";
pub const STARVED_READS: &str = "hubbub_starved_reads_total";
