//! What a connection needs from its shard while it is driven: the shared
//! scratch buffers, the buffer pool, limits, the clock tick and counters.
//! One `Ctx` per shard, lent to one connection at a time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::admission::Admission;
use super::tls::TlsScratch;
use crate::auth::Claims;
use crate::buf::{BufPool, Meter, BUF_SIZE};
use crate::metrics::stats::ShardStats;
use crate::net::tls::TlsAcceptor;
use crate::route::Endpoint;
use crate::ws::handshake::OriginPattern;

/// Per-connection limits and timeouts, in bytes and timer ticks.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_backlog_bytes: usize,
    pub handshake_ticks: u32,
    /// A partial message (or frame) must be complete this long after its
    /// first byte arrived (`--message-timeout-secs`).
    pub message_ticks: u32,
    pub ping_ticks: u32,
    pub idle_ticks: u32,
    /// How long a closing connection may take to finish (close handshake,
    /// final flush, the client's FIN).
    pub close_ticks: u32,
    /// Upgraded connections the process may hold (the slab is sized for it;
    /// `Admission` counts them for all shards).
    pub max_open: usize,
    pub origins: Vec<OriginPattern>,
    pub subprotocols: Vec<String>,
    /// HS256 secret for client tokens; `None`: everyone is anonymous.
    pub jwt_secret: Option<Vec<u8>>,
    /// Tokens without `exp` are refused (`--jwt-require-exp`).
    pub jwt_require_exp: bool,
    pub allow_anonymous: bool,
    /// `--proxy-connect-url` is set: a `/ws` client without a token is let
    /// in and the application's connect hook decides who it is.
    pub connect_proxy: bool,
    /// `--proxy-http-headers`, lower case: the upgrade request's headers
    /// the connect hook gets.
    pub proxy_headers: Vec<String>,
}

/// Work a connection hands to its shard's hub; the shard acts on it right
/// after driving that connection (before any slab slot can be reused).
#[derive(Debug)]
pub enum Outgoing {
    /// The connection at `key` upgraded on a hub endpoint (or with a token).
    Upgraded {
        key: usize,
        endpoint: Endpoint,
        claims: Option<Box<Claims>>,
    },
    /// The `/ws` connection at `key` (just `Upgraded`, without a token)
    /// waits for the application's connect hook; `headers` are its upgrade
    /// request's `--proxy-http-headers`, kept for that one call only.
    Connecting {
        key: usize,
        headers: Vec<(Box<str>, Box<str>)>,
    },
    /// A `/ws` command from the connection at `key`.
    Command { key: usize, text: Vec<u8> },
    /// The connection at `key` sent a message to its room: `frame` is the
    /// server frame, encoded once for every receiver.
    RoomMessage { key: usize, frame: Bytes },
}

/// The shard's shared state lent to connection code.
pub struct Ctx {
    pub pool: BufPool,
    /// This shard's view of the memory budget.
    pub meter: Meter,
    /// The process-wide connection cap and per-address limits.
    pub admission: Arc<Admission>,
    /// Client address of each upgraded connection, kept only while the
    /// per-address limits are on (to give the place back at close).
    pub ips: HashMap<usize, IpAddr>,
    /// Peer address of each socket still in its handshake, kept only while
    /// the per-address limits are on.
    pub pending_ips: HashMap<usize, IpAddr>,
    /// Where reads land when the connection holds no buffer: one per shard.
    pub scratch: Vec<u8>,
    /// Frames to send to the connection being driven, written with one call
    /// at the end of its read batch.
    pub reply: Vec<u8>,
    pub limits: Limits,
    pub stats: ShardStats,
    /// Current timer tick (see shard/timer.rs).
    pub tick: u32,
    /// Upgraded connections currently open on this shard.
    pub open: usize,
    /// The shard stops reading new input and closes everything.
    pub draining: bool,
    /// Wall-clock seconds, for token expiry; set by the shard each turn.
    pub now_unix: u64,
    /// Slab key of the connection being driven (for its own bookkeeping
    /// here, and to tag what it puts in `outbox`; the hub never reads it).
    pub current: usize,
    /// What the connection being driven asks of the hub: the shard hands
    /// each item to the hub, with its key, right after the drive.
    pub outbox: Vec<Outgoing>,
    /// Set while decoding when a message (or a control frame outside one)
    /// completed: partial input after it starts a new message deadline.
    pub boundary: bool,
    /// `wss://`: the shared certificate, key and ticket key new sockets
    /// handshake with (`None`: plain `ws://`).
    pub tls_acceptor: Option<Arc<TlsAcceptor>>,
    /// The shard's TLS buffers (made on first use).
    pub tls: TlsScratch,
}

impl Ctx {
    pub fn new(pool: BufPool, limits: Limits, meter: Meter, admission: Arc<Admission>) -> Ctx {
        Ctx {
            pool,
            meter,
            admission,
            ips: HashMap::new(),
            pending_ips: HashMap::new(),
            scratch: vec![0u8; BUF_SIZE],
            reply: Vec::with_capacity(BUF_SIZE),
            limits,
            stats: ShardStats::default(),
            tick: 0,
            open: 0,
            draining: false,
            now_unix: 0,
            current: 0,
            outbox: Vec::new(),
            boundary: false,
            tls_acceptor: None,
            tls: TlsScratch::default(),
        }
    }
}
