//! The application's event stream: what happened to connections
//! (connect, disconnect with its reason, subscribe, unsubscribe, a client's
//! publish), told to the application through a Redis Stream
//! (`--events-stream`) and/or signed webhook batches (`--webhook-url`).
//! The format is docs/EVENTS.md.
//!
//! The hub makes an [`Event`] where the fact is true and hands it to the
//! [`Emitter`]; with no sink configured the hub holds no emitter, so an
//! event costs one `None` check. Each sink has its own thread and its own
//! queue, bounded in bytes (`--events-max-bytes`): a shard never waits on
//! a sink. An event that does not fit is dropped and counted
//! (`hubbub_events_dropped_total{sink,reason}`); a batch the sink could
//! not deliver stays queued (counted in those bytes) and is retried with
//! backoff, so nothing is lost while the application is back within the
//! bound. Delivery is at least once: a batch whose answer was lost is
//! sent again.
//!
//! This module sits beside `bus`, below `hub` (which holds the emitter),
//! and uses only `metrics`; its sink threads are started by `server`.

mod emitter;
mod held;
mod json;
mod queue;
mod stream;
mod webhook;

use crate::buf::budget::MemoryBudget;
use std::sync::Arc;
use std::time::Duration;

pub use emitter::{Emitter, Sinks};
pub use json::encode;
pub use webhook::{shown_url, sign, DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Entries a Redis Stream keeps at least (`XADD ... MAXLEN ~ N`) by default.
pub const DEFAULT_STREAM_MAXLEN: u64 = 100_000;
/// Bytes each sink may hold by default: queued events and the batch in flight.
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;
/// Events in one webhook POST at most, by default.
pub const DEFAULT_WEBHOOK_BATCH: usize = 100;
/// Milliseconds a webhook batch waits for more events after its first.
pub const DEFAULT_WEBHOOK_BATCH_MS: u64 = 100;
/// Seconds one webhook POST may take before it is retried.
pub const DEFAULT_WEBHOOK_TIMEOUT_SECS: u64 = 5;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A `/ws` or authenticated connection upgraded.
    Connect = 0,
    /// It ended; `reason` is the disconnect reason of the metrics.
    Disconnect,
    /// The channel's owner confirmed a subscription.
    Subscribe,
    /// A subscription ended while the connection stayed (`reason`: `client`
    /// or `token`).
    Unsubscribe,
    /// A client's `publish` passed its shard's checks (data as sent).
    Publish,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Connect,
        Kind::Disconnect,
        Kind::Subscribe,
        Kind::Unsubscribe,
        Kind::Publish,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Disconnect => "disconnect",
            Kind::Subscribe => "subscribe",
            Kind::Unsubscribe => "unsubscribe",
            Kind::Publish => "publish",
        }
    }
}

/// A connection, as events name it: unique on its node while the node runs
/// (`"SHARD.SLOT.GENERATION"` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId {
    pub shard: u16,
    pub key: u32,
    pub generation: u32,
}

/// One event; the node's name is added by the sink. Strings are shared with
/// the hub (no copy of a channel name or user id).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    pub client: ClientId,
    pub user: Option<Arc<str>>,
    pub channel: Option<Arc<str>>,
    /// A publication's data: raw JSON, as the client sent it.
    pub data: Option<Arc<str>>,
    pub reason: Option<&'static str>,
    /// Unix time in milliseconds.
    pub time_ms: u64,
}

impl Event {
    /// What the event holds in memory while queued (its strings counted in
    /// full even when shared): the unit of `--events-max-bytes`.
    pub fn weight(&self) -> usize {
        let len = |s: &Option<Arc<str>>| s.as_ref().map_or(0, |s| s.len());
        std::mem::size_of::<Event>() + len(&self.user) + len(&self.channel) + len(&self.data)
    }
}

/// Where a sink sends, and its bounds (flags in `config/events.rs`).
#[derive(Debug, Clone, Default)]
pub struct EventsConfig {
    /// This node's name in every event.
    pub node: Arc<str>,
    pub stream: Option<StreamConfig>,
    pub webhook: Option<WebhookConfig>,
    /// Bytes each sink may hold (queued and in flight).
    pub max_bytes: usize,
}

impl EventsConfig {
    pub fn enabled(&self) -> bool {
        self.stream.is_some() || self.webhook.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// `redis://` or `rediss://`.
    pub redis: String,
    pub key: String,
    /// `MAXLEN ~` of every `XADD`.
    pub maxlen: u64,
}

#[derive(Clone)]
pub struct WebhookConfig {
    /// Parsed and checked at start: `http://` or `https://`.
    pub url: String,
    /// HMAC-SHA256 key of the signature header (required).
    pub secret: Vec<u8>,
    pub batch: usize,
    pub linger: Duration,
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"<hidden>")
            .field("batch", &self.batch)
            .field("linger", &self.linger)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Starts one thread per configured sink; `None` when none is.
/// Events waiting for a sink are charged to `budget` (`kind="events"`).
pub fn start(config: &EventsConfig, budget: Arc<MemoryBudget>) -> std::io::Result<Option<(Emitter, Sinks)>> {
    if !config.enabled() {
        return Ok(None);
    }
    emitter::start(config, budget).map(Some)
}
