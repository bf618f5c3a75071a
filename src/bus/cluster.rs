//! The shards' side of cluster mode: what they ask of the Redis bridge
//! (`ClusterCmd`), the link they ask through (a bounded channel that counts
//! what it cannot take), and the link's shared state. The bridge itself
//! (`crate::cluster`) sits above the hub and speaks this vocabulary.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::buf::budget::{MemKind, MemoryBudget};

use super::history::HistoryRule;
use super::msg::{Origin, PendingSubscribe, Query, ReplyTo};
use crate::metrics::names;

/// Why a channel's position is asked of Redis (`RedisCall::Sync`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncFor {
    /// Subscribes here wait for it: the owner's log is new or unsynced.
    Subscribe,
    /// The bridge reconnected: for a channel with a log here, an epoch
    /// Redis lost or publications missed meanwhile. It may be overtaken by
    /// publications after it: an offset behind the log's is no proof.
    Resync,
    /// The owner saw Redis's offset behind its own (`seen`) under `epoch`
    /// in a `Resync` answer. The script compares with Redis's offset now
    /// and gives the channel a new epoch if Redis really went back (an
    /// older snapshot restored; unless another node did already), so the
    /// answer is final.
    Check { epoch: Arc<str>, seen: u64 },
}

/// Cluster settings (part of `HubConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://[USER:PASSWORD@]HOST:PORT[/DB]` or `rediss://...` (with
    /// Sentinel: the scheme, credentials and database for the master).
    pub redis: String,
    /// The second and later `--redis`: channels are spread over all of them
    /// (`server_of`); the first also holds the nodes' entries.
    pub more_redis: Vec<String>,
    /// `--redis-sentinel HOST:PORT`, in the order they are asked.
    pub sentinels: Vec<String>,
    /// `--redis-master-name`: set exactly when `sentinels` is not empty.
    pub master_name: Option<String>,
    /// `--redis-ca-file`: PEM roots for `rediss://` instead of the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// This node's name in Redis (unique per process).
    pub node: Arc<str>,
    /// A node that has not heartbeated for this long is no longer counted.
    pub node_ttl: Duration,
}

#[cfg(test)]
impl ClusterConfig {
    /// One Redis at `redis` (not dialed by a unit test), node "me".
    pub fn for_tests(redis: &str) -> ClusterConfig {
        ClusterConfig {
            redis: redis.into(),
            more_redis: Vec::new(),
            sentinels: Vec::new(),
            master_name: None,
            ca_file: None,
            node: "me".into(),
            node_ttl: std::time::Duration::from_secs(10),
        }
    }
}

impl ClusterConfig {
    /// How many Redis servers the channels are spread over.
    pub fn servers(&self) -> usize {
        1 + self.more_redis.len()
    }

    /// The settings for one connection to server `index` (0: the first).
    pub fn for_server(&self, index: usize) -> ClusterConfig {
        let mut one = self.clone();
        if let Some(url) = index.checked_sub(1).and_then(|i| self.more_redis.get(i)) {
            one.redis = url.clone();
        }
        one.more_redis.clear();
        if !one.redis.starts_with("rediss://") {
            one.ca_file = None; // `--redis-ca-file` is for the TLS ones
        }
        one
    }
}

/// The server (of `servers`) that holds channel or room `name`: FNV-1a of
/// the name's bytes, modulo the count. Stable across processes, versions
/// and platforms (it decides where a channel's offsets live): never change
/// it without a resharding note (docs/CLUSTER.md).
pub fn server_of(name: &str, servers: usize) -> usize {
    if servers <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % servers as u64) as usize
}

/// The shards' commands that wait for an answer from Redis; the bridge
/// pipelines them as they are.
#[derive(Debug)]
pub enum RedisCall {
    /// Sequence through Redis; the answer goes to `reply`, the publication
    /// to every node's owner shard.
    Publish {
        channel: Arc<str>,
        data: Arc<str>,
        reply: Option<ReplyTo>,
        rule: HistoryRule,
        /// The caller's idempotency key, if it gave one.
        idem: Option<Arc<str>>,
        /// Whether it may make the channel (the caller has creations left
        /// in `--max-new-channels-per-minute`, or the owner has a log of
        /// it): Redis refuses to make one otherwise, and a publish that made
        /// one counts against the caller's window.
        may_create: bool,
    },
    /// The channel's epoch and last offset, for the owner shard `shard`,
    /// asked `why` (told back with the answer, `HubMsg::ClusterSynced`).
    Sync {
        channel: Arc<str>,
        shard: usize,
        why: SyncFor,
    },
    /// Publications after `after` from Redis's history, for a subscriber
    /// the owner's local log cannot serve.
    Recover {
        channel: Arc<str>,
        shard: usize,
        rule: HistoryRule,
        sub: PendingSubscribe,
    },
    /// Presence or history across the cluster.
    Query {
        channel: Arc<str>,
        query: Query,
        reply: ReplyTo,
        rule: HistoryRule,
        /// `--max-reply-bytes`: a history page is cut there.
        max_reply_bytes: usize,
    },
    /// What the other live nodes hold (for `/api/channels` and
    /// `/api/connections`): a JSON array for the admin thread.
    Nodes { query: NodesQuery, reply: Sender<String> },
}

/// A question about the other live nodes' entries in Redis.
#[derive(Debug, Clone)]
pub enum NodesQuery {
    /// Their channels: `[{channel, node, subscribers}...]`.
    Channels,
    /// The user's connections there: `[{node, shard, id, connected_ms}...]`.
    User(Arc<str>),
}

/// What shards ask of the bridge.
#[derive(Debug)]
pub enum ClusterCmd {
    /// Work that needs an answer from Redis.
    Call(RedisCall),
    /// This node's subscriptions of `channel` by `user` changed by `delta`.
    Presence {
        channel: Arc<str>,
        user: Option<Arc<str>>,
        delta: i32,
    },
    UserOnline {
        user: Arc<str>,
        conn: Origin,
    },
    UserOffline {
        user: Arc<str>,
        conn: Origin,
    },
    /// A `send` to `user`'s connections on the other nodes.
    UserMessage {
        user: Arc<str>,
        json: Vec<u8>,
    },
    /// A `/room/{name}` message (the server frame, as every member gets
    /// it), published to every node's owner shard of the room, this one's
    /// included: fire and forget, no history.
    RoomMessage {
        room: Arc<str>,
        frame: bytes::Bytes,
    },
    /// A channel's joins and leaves on this node (the `presence` push's
    /// JSON), for the other nodes' `join_leave` watchers: fire and forget,
    /// on the channel's Pub/Sub, no history.
    ChannelPresence {
        channel: Arc<str>,
        json: Vec<u8>,
    },
    /// `/api/disconnect` on the other nodes.
    DisconnectUser {
        user: Arc<str>,
        code: u16,
        reason: Arc<str>,
    },
    /// `/api/disconnect {"token_id"}` on the other nodes.
    DisconnectToken {
        token_id: Arc<str>,
        code: u16,
        reason: Arc<str>,
    },
    /// Shard `shard` needs a connection of its own to this server, for
    /// `kind` (it has none yet, or its last one failed): answered with a
    /// `HubMsg::RedisLink` once Redis takes one. At most one asked per
    /// shard, server and kind at a time (`ShardRedis`), so the lane stays
    /// bounded.
    Dial {
        shard: usize,
        kind: LinkKind,
    },
    /// The node's subscriber connection to this server is new and
    /// subscribed to every channel held here: their positions are read
    /// again (`SyncFor::Resync`), as after the bridge's own reconnect, so
    /// owners learn of publications missed while it was down (and of an
    /// epoch Redis lost) without waiting for the next publication. One per
    /// subscriber connection opened, so the lane stays bounded.
    Resync,
}

/// What a shard's own connection to Redis is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkKind {
    /// The publishes the shard orders (script calls, pipelined).
    Publish,
    /// Pub/Sub: every publication, room message and control message of the
    /// server, for the whole node (one shard per server holds it).
    Subscribe,
}

/// A connection to one Redis server for one shard, opened by the bridge
/// (connected, authenticated, its database selected; for `Publish` the
/// script loaded as `sha`, for `Subscribe` subscribed, with the bytes read
/// past the confirmations in `leftover`) and handed over, non-blocking, in
/// `HubMsg::RedisLink`.
#[derive(Debug)]
pub struct RedisLink {
    pub server: usize,
    pub kind: LinkKind,
    pub stream: std::net::TcpStream,
    pub sha: String,
    pub leftover: Vec<u8>,
}

/// A shard's own connections to Redis (`crate::cluster::direct`), written
/// and read in the shard's event loop: its publishes go out in the turn
/// they were made and their answers come back without waking another
/// thread; and the node's subscriber connection to a server, held by one
/// shard, hands what it receives on without a thread of its own. The
/// bridge only opens them. A `rediss://` server is served by the bridge's
/// threads instead.
pub trait ShardRedis: Send {
    /// Whether the publishes of `server` go through here.
    fn serves(&self, server: usize) -> bool;
    /// Takes a publish for `server`, holding its bytes in `ClusterState`;
    /// gives it back, counted as a drop, when its queue or the bytes are
    /// full.
    // The call comes back only on that rare path (see `ClusterLink::send`).
    #[allow(clippy::result_large_err)]
    fn publish(&mut self, server: usize, call: RedisCall) -> Result<(), RedisCall>;
    /// A connection the bridge opened; owners whose position could not be
    /// asked for meanwhile are told in `answers`.
    fn linked(&mut self, link: RedisLink, answers: &mut Vec<(usize, super::msg::HubMsg)>);
    /// From `channel`'s owner shard `owner`, on the shard holding the
    /// subscriber connection of `channel`'s server (`listener_shard`): the
    /// node now keeps a log of it. It is subscribed by name, and its
    /// position is asked of Redis for the owner once Redis confirmed that.
    fn listen(&mut self, channel: Arc<str>, owner: usize, answers: &mut Vec<(usize, super::msg::HubMsg)>);
    /// From `channel`'s owner shard: its log here was dropped.
    fn unlisten(&mut self, channel: &str, answers: &mut Vec<(usize, super::msg::HubMsg)>);
    /// One of this shard's Redis tokens (`redis_token`) is ready; the
    /// answers to publishers go to `answers` (shard, message).
    fn ready(&mut self, token: mio::Token, answers: &mut Vec<(usize, super::msg::HubMsg)>);
    /// Whether a connection has more to read now than a turn takes: the
    /// shard's loop must come back at once, not wait for an event (none
    /// comes for bytes already in a socket).
    fn busy(&self) -> bool;
    /// End of the shard's loop turn: writes what was taken this turn, reads
    /// on what a turn's budget left; with `ticked`, fails what waited past
    /// its deadline and pings.
    fn end_turn(&mut self, ticked: bool, answers: &mut Vec<(usize, super::msg::HubMsg)>);
}

/// The shard that holds the node's subscriber connection to `server`
/// when that server is reached over plain TCP (`ShardRedis::listen`).
pub fn listener_shard(server: usize, shards: usize) -> usize {
    server % shards
}

/// The shard's mio token for its own connection to `server` for `kind`:
/// below the shard's own reserved tokens (`shard::token`), above every
/// connection's.
pub fn redis_token(server: usize, kind: LinkKind) -> mio::Token {
    let below = match kind {
        LinkKind::Publish => 0,
        LinkKind::Subscribe => MAX_SERVERS,
    };
    mio::Token(usize::MAX - 2 - below - server)
}

/// The server and kind a `redis_token` names, `None` for any other token.
pub fn redis_link_of(token: mio::Token) -> Option<(usize, LinkKind)> {
    let n = (usize::MAX - 2).checked_sub(token.0)?;
    match n {
        _ if n < MAX_SERVERS => Some((n, LinkKind::Publish)),
        _ if n < 2 * MAX_SERVERS => Some((n - MAX_SERVERS, LinkKind::Subscribe)),
        _ => None,
    }
}

/// `--redis` given more often than this is refused (a token each).
pub const MAX_SERVERS: usize = 64;

/// One node as last seen in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: String,
    pub connections: u64,
    pub heartbeat_ms_ago: u64,
}

/// Shared between the bridge threads, the shards' links and the admin API.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// Per Redis server (in `--redis` order): its command connection is up.
    pub commands_up: Vec<AtomicBool>,
    /// Per Redis server: its subscriber connection is up.
    pub subscriber_up: Vec<AtomicBool>,
    /// Commands dropped: the queue or the pending buffer was full, or the
    /// link failed with them in flight.
    pub drops: AtomicU64,
    pub published: AtomicU64,
    pub reconnects: AtomicU64,
    /// Live nodes at the last heartbeat.
    pub nodes: Mutex<Vec<NodeInfo>>,
    pub stop: AtomicBool,
    /// Bytes of the commands the bridge holds (queue and waiting buffer),
    /// bounded by `max_bytes` and charged to `budget`.
    pub held_bytes: AtomicU64,
    pub max_bytes: u64,
    pub budget: Option<Arc<MemoryBudget>>,
    /// Epoch changes seen under live subscribers (on this node).
    pub epoch_changes: AtomicU64,
    /// The current outage was logged: one warning per outage, however many
    /// connections notice it.
    down_logged: AtomicBool,
    /// Channels with a log on this node: the publications worth passing on.
    pub wanted: Arc<super::wanted::Wanted>,
}

impl ClusterState {
    /// A fresh state: nothing held yet, at most `max_bytes`, charged to
    /// `budget`.
    pub fn new(servers: usize, max_bytes: u64, budget: Arc<MemoryBudget>) -> ClusterState {
        let flags = || (0..servers).map(|_| AtomicBool::new(false)).collect();
        ClusterState {
            commands_up: flags(),
            subscriber_up: flags(),
            max_bytes,
            budget: Some(budget),
            ..ClusterState::default()
        }
    }

    /// Both connections to every Redis server are up.
    pub fn link_up(&self) -> bool {
        let up = |flags: &[AtomicBool]| flags.iter().all(|f| f.load(Ordering::Relaxed));
        up(&self.commands_up) && up(&self.subscriber_up)
    }

    /// Takes `bytes` for a command the bridge will hold; `false` (nothing
    /// taken) past `max_bytes`.
    pub(crate) fn hold(&self, bytes: u64) -> bool {
        let before = self.held_bytes.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.max_bytes {
            self.held_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        if let Some(budget) = &self.budget {
            budget.add(MemKind::Cluster, bytes as i64);
        }
        true
    }

    /// Gives back what `hold` took, once the command is done.
    pub(crate) fn release(&self, bytes: u64) {
        self.held_bytes.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(budget) = &self.budget {
            budget.add(MemKind::Cluster, -(bytes as i64));
        }
    }

    pub(crate) fn drop_one(&self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::CLUSTER_DROPS).increment(1);
    }

    /// Records a change of one connection's state, with the metric and a
    /// log line when the link as a whole changes: one warning per outage
    /// (both connections notice it), none when the server is stopping.
    pub fn set(&self, flag: &AtomicBool, up: bool, what: &str, error: Option<&std::io::Error>) {
        let before = self.link_up();
        flag.store(up, Ordering::Relaxed);
        let after = self.link_up();
        metrics::gauge!(names::CLUSTER_LINK_UP).set(if after { 1.0 } else { 0.0 });
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        match (up, error) {
            (false, Some(e)) if !self.down_logged.swap(true, Ordering::Relaxed) => {
                tracing::warn!(connection = what, error = %e, "cluster link down: Redis unreachable; local delivery goes on")
            }
            (true, _) if !before && after => {
                self.down_logged.store(false, Ordering::Relaxed);
                tracing::info!("cluster link up")
            }
            _ => {}
        }
    }
}

/// What the bridge (or a shard's publisher) holds for any command beyond
/// its variable parts.
const HELD_FIXED: usize = 128;

impl RedisCall {
    /// What is held for this call, for `ClusterState::hold`.
    pub fn bytes(&self) -> u64 {
        let variable = match self {
            RedisCall::Publish {
                channel, data, idem, ..
            } => channel.len() + data.len() + idem.as_ref().map_or(0, |k| k.len()),
            RedisCall::Sync { channel, .. } | RedisCall::Query { channel, .. } => channel.len(),
            RedisCall::Recover { channel, .. } => channel.len(),
            RedisCall::Nodes { query, .. } => match query {
                NodesQuery::Channels => 0,
                NodesQuery::User(user) => user.len(),
            },
        };
        (HELD_FIXED + variable) as u64
    }
}

impl ClusterCmd {
    /// What the bridge holds for this command, for `ClusterState::hold`.
    pub fn bytes(&self) -> u64 {
        let variable = match self {
            ClusterCmd::Call(call) => return call.bytes(),
            ClusterCmd::UserMessage { user, json } => user.len() + json.len(),
            ClusterCmd::RoomMessage { room, frame } => room.len() + frame.len(),
            ClusterCmd::ChannelPresence { channel, json } => channel.len() + json.len(),
            ClusterCmd::DisconnectUser { user, reason, .. } => user.len() + reason.len(),
            ClusterCmd::DisconnectToken { token_id, reason, .. } => token_id.len() + reason.len(),
            ClusterCmd::Presence { channel, .. } => channel.len(),
            ClusterCmd::UserOnline { user, .. } | ClusterCmd::UserOffline { user, .. } => user.len(),
            ClusterCmd::Dial { .. } | ClusterCmd::Resync => 0,
        };
        (HELD_FIXED + variable) as u64
    }

    /// The server (of `servers`) that runs this command: a channel's or a
    /// room's own; the first for what concerns the nodes (their entries,
    /// control messages between them).
    pub fn server(&self, servers: usize) -> usize {
        match self {
            ClusterCmd::Call(
                RedisCall::Publish { channel, .. }
                | RedisCall::Sync { channel, .. }
                | RedisCall::Recover { channel, .. }
                | RedisCall::Query {
                    channel,
                    query: Query::History { .. },
                    ..
                },
            )
            | ClusterCmd::Presence { channel, .. }
            | ClusterCmd::ChannelPresence { channel, .. } => server_of(channel, servers),
            ClusterCmd::RoomMessage { room, .. } => server_of(room, servers),
            _ => 0,
        }
    }

    /// This node's own state (presence, users): never refused, merged into
    /// the bridge's mirror whether Redis is up or not.
    fn is_state(&self) -> bool {
        matches!(
            self,
            ClusterCmd::Presence { .. } | ClusterCmd::UserOnline { .. } | ClusterCmd::UserOffline { .. }
        )
    }
}

/// A shard's (or the API's) handle on the bridge: two lanes.
#[derive(Clone)]
pub struct ClusterLink {
    /// Work for Redis, one queue per server (`--redis` order), each bounded
    /// in count (`QUEUE_CAPACITY`), all together in bytes
    /// (`ClusterState::max_bytes`): a full queue is a counted drop.
    tx: Vec<Sender<ClusterCmd>>,
    /// This node's state changes, per server. Unbounded in type, bounded by
    /// construction: each is caused by a connection event or a rate-limited
    /// subscribe, and the bridge drains the lane every pass (at most 200 ms)
    /// into its mirror, Redis up or not. Never dropped. All go to the first
    /// server (which holds the nodes' entries); a channel's presence also
    /// to its own server, which re-syncs the channel after a reconnect.
    state_tx: Vec<Sender<ClusterCmd>>,
    pub node: Arc<str>,
    pub state: Arc<ClusterState>,
}

impl ClusterLink {
    /// `tx` and `state_tx`: one sender per server, in `--redis` order.
    pub fn new(
        tx: Vec<Sender<ClusterCmd>>,
        state_tx: Vec<Sender<ClusterCmd>>,
        node: Arc<str>,
        state: Arc<ClusterState>,
    ) -> ClusterLink {
        ClusterLink {
            tx,
            state_tx,
            node,
            state,
        }
    }

    /// How many Redis servers (`--redis`) the channels are spread over.
    pub fn servers(&self) -> usize {
        self.tx.len()
    }

    /// Asks `server`'s bridge for a connection of `shard` for `kind`
    /// (`ClusterCmd::Dial`), on the lane that is never dropped.
    pub fn ask_link(&self, server: usize, shard: usize, kind: LinkKind) {
        let _ = self.state_tx[server].send(ClusterCmd::Dial { shard, kind });
    }

    /// Asks `server`'s command thread to read again the position of every
    /// channel held here (`ClusterCmd::Resync`).
    pub fn ask_resync(&self, server: usize) {
        let _ = self.state_tx[server].send(ClusterCmd::Resync);
    }

    /// The set of channels this node keeps a log of (see `Wanted`).
    pub fn wanted(&self) -> Arc<super::wanted::Wanted> {
        Arc::clone(&self.state.wanted)
    }

    /// Hands `cmd` to the bridge without blocking; a full queue (in count
    /// or bytes) counts a drop and gives the command back (so its asker can
    /// be answered). State changes always go through.
    // The command comes back only on the rare full-queue path; boxing every
    // command to shrink that Err would cost an allocation per publish.
    #[allow(clippy::result_large_err)]
    pub fn send(&self, cmd: ClusterCmd) -> Result<(), ClusterCmd> {
        let server = cmd.server(self.tx.len());
        if cmd.is_state() {
            if let (ClusterCmd::Presence { channel, user, delta }, 1..) = (&cmd, server) {
                let (channel, user, delta) = (Arc::clone(channel), user.clone(), *delta);
                let copy = ClusterCmd::Presence { channel, user, delta };
                let _ = self.state_tx[server].send(copy);
            }
            // Fails only when the bridge has stopped (the server is ending).
            return self.state_tx[0].send(cmd).map_err(|e| e.into_inner());
        }
        let bytes = cmd.bytes();
        if !self.state.hold(bytes) {
            self.state.drop_one();
            return Err(cmd);
        }
        match self.tx[server].try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(cmd) | TrySendError::Disconnected(cmd)) => {
                self.state.release(bytes);
                self.state.drop_one();
                Err(cmd)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_has_one_server_for_good_and_the_servers_share_the_channels() {
        // Fixed values: where a channel lives must not change between
        // releases (FNV-1a 64 of the name).
        assert_eq!(server_of("news", 1), 0);
        assert_eq!(["a", "b", "news", "chat:1"].map(|c| server_of(c, 2)), [0, 1, 0, 0]);
        assert_eq!(["a", "b", "news", "chat:1"].map(|c| server_of(c, 3)), [1, 1, 0, 2]);
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            counts[server_of(&format!("channel:{i}"), 3)] += 1;
        }
        assert!(counts.iter().all(|&n| (800..1200).contains(&n)), "{counts:?}");
    }

    #[test]
    fn held_bytes_are_bounded_and_charged_to_the_memory_budget() {
        let budget = MemoryBudget::new(1 << 30);
        let state = ClusterState::new(1, 1000, Arc::clone(&budget));
        assert!(state.hold(600));
        assert!(!state.hold(600), "over the bound: refused, nothing taken");
        assert_eq!(
            (state.held_bytes.load(Ordering::Relaxed), budget.bytes(MemKind::Cluster)),
            (600, 600)
        );
        state.release(600);
        assert_eq!(budget.bytes(MemKind::Cluster), 0);
        let publish = ClusterCmd::Call(RedisCall::Publish {
            channel: "c".into(),
            data: "x".repeat(5000).into(),
            reply: None,
            rule: HistoryRule {
                size: 0,
                ttl_ticks: 0,
                max_bytes: 0,
            },
            idem: None,
            may_create: true,
        });
        assert!(publish.bytes() > 5000);
    }
}
