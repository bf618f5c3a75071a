//! The shards' side of cluster mode: what they ask of the Redis bridge
//! (`ClusterCmd`), the link they ask through (a bounded channel that counts
//! what it cannot take), and the link's shared state. The bridge itself
//! (`crate::cluster`) sits above the hub and speaks this vocabulary.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use super::history::HistoryRule;
use super::msg::{Origin, PendingSubscribe, Query, ReplyTo};
use crate::metrics::names;

/// Cluster settings (part of `HubConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT`
    pub redis: String,
    /// This node's name in Redis (unique per process).
    pub node: Arc<str>,
    /// A node that has not heartbeated for this long is no longer counted.
    pub node_ttl: Duration,
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
    },
    /// The channel's epoch and last offset, for the owner shard `shard`.
    Sync { channel: Arc<str>, shard: usize },
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
    },
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
}

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
    pub commands_up: AtomicBool,
    pub subscriber_up: AtomicBool,
    /// Commands dropped: the queue or the pending buffer was full, or the
    /// link failed with them in flight.
    pub drops: AtomicU64,
    pub published: AtomicU64,
    pub reconnects: AtomicU64,
    /// Live nodes at the last heartbeat.
    pub nodes: Mutex<Vec<NodeInfo>>,
    pub stop: AtomicBool,
    /// The current outage was logged: one warning per outage, however many
    /// connections notice it.
    down_logged: AtomicBool,
}

impl ClusterState {
    pub fn link_up(&self) -> bool {
        self.commands_up.load(Ordering::Relaxed) && self.subscriber_up.load(Ordering::Relaxed)
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

/// A shard's (or the API's) handle on the bridge.
#[derive(Clone)]
pub struct ClusterLink {
    tx: Sender<ClusterCmd>,
    pub node: Arc<str>,
    pub state: Arc<ClusterState>,
}

impl ClusterLink {
    pub fn new(tx: Sender<ClusterCmd>, node: Arc<str>, state: Arc<ClusterState>) -> ClusterLink {
        ClusterLink { tx, node, state }
    }

    /// Hands `cmd` to the bridge without blocking; a full queue counts a
    /// drop and gives the command back (so its asker can be answered).
    pub fn send(&self, cmd: ClusterCmd) -> Result<(), ClusterCmd> {
        match self.tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(cmd) | TrySendError::Disconnected(cmd)) => {
                self.state.drop_one();
                Err(cmd)
            }
        }
    }
}
