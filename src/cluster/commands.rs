//! The command thread: one Redis connection, pipelined. Each pass takes a
//! batch of commands from the shards, writes this node's changed presence
//! and user entries, runs the batch's scripts, reads every reply, and sends
//! the answers to the shards' inboxes (or the admin thread). It heartbeats
//! the node and refreshes the list of live nodes. It also opens the shards'
//! own connections (`ClusterCmd::Dial`, while its own link is up), whose
//! publishes then never pass through here (`direct`); it publishes only
//! for a `rediss://` server.
//!
//! While Redis is unreachable it keeps taking commands: presence and user
//! changes go into this node's `Mirror` (written whole after every
//! reconnect and periodically, so Redis heals); publishes and queries wait
//! in a buffer bounded in count and bytes, each at most `DEADLINE`, then are
//! answered with an error. Commands in flight when the link fails wait
//! again and are retried on the next connection; a publish keeps its
//! sequence number, and the script recognises one that already ran, so
//! none is delivered twice.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::backoff::Backoff;
use super::keys::{self, CHANNEL_KEYS_TTL_SECS};
use super::link::{self, Target};
use super::mirror::{self, Mirror, HEAL_EVERY_HEARTBEATS};
use super::publish::{self, Failure, Writer, BUSY_WHY, UNREACHABLE_WHY};
use super::reply::{encode, epoch_offset, read_reply, strings, unix_ms, Value};
use super::REDIS_TIMEOUT;
use crate::bus::cluster::{
    server_of, ClusterCmd, ClusterConfig, ClusterState, LinkKind, NodeInfo, NodesQuery, RedisCall, SyncFor,
};
use crate::bus::msg::{HubMsg, Origin, Query, ReplyTo};
use crate::bus::peers::Peers;
use crate::hub::config::CLOSE_REPLACED;
use crate::hub::log::page_of;
use crate::hub::owner::history_json as page_json;
use crate::metrics::names;
use crate::metrics::stats::ShardStats;

/// Publishes and queries waiting while Redis is slow or away (they are
/// bounded in bytes too, by `ClusterState::max_bytes`).
pub(crate) const PENDING_CAPACITY: usize = 10_000;
/// Commands taken from the queue per pass (one pipeline).
const BATCH: usize = 512;
/// Bytes of commands per pipeline (one more command past it at most).
const BATCH_BYTES: u64 = 4 << 20;
/// A command not done this long after the bridge took it is answered with
/// an error (`108`; an ambiguous publish: "not known whether it happened").
/// One already sent gets `REDIS_TIMEOUT` more for its reply.
pub(crate) const DEADLINE: Duration = Duration::from_secs(2);
pub(crate) struct Setup {
    pub config: ClusterConfig,
    pub shards: Peers,
    pub stats: Vec<Arc<Mutex<ShardStats>>>,
    pub max_connections_per_user: usize,
    /// Which Redis server (`--redis` order) this thread runs commands on.
    /// The first (0) also holds the nodes' entries: heartbeats, presence
    /// and user hashes, control messages.
    pub server: usize,
}

/// A command waiting for (or in) a pipeline: the shards' own commands that
/// need an answer from Redis (publish, sync, recover, query) as they came,
/// and the bridge's own work.
enum Op {
    /// A shard's call, as it came.
    Cmd(RedisCall),
    /// Check the user's connection count across the cluster.
    UserOnline { user: Arc<str> },
    /// Fire and forget (`PUBLISH` control messages, cleanup).
    Raw(Vec<String>),
    /// A room message: `PUBLISH hubbub:room:NAME FRAME`, the frame's bytes
    /// as they are (a binary message stays binary). At most once: not
    /// retried after a failed pipeline (counted as a drop).
    Room { room: Arc<str>, frame: bytes::Bytes },
}

#[derive(Default)]
struct Shas {
    publish: String,
    sync: String,
    read: String,
    user_online: String,
    read_field: String,
    replace_hash: String,
    read_nodes: String,
}

/// A command waiting for Redis: what it holds, since when, and whether it
/// was written to Redis at least once (then its outcome may be unknown).
struct Waiting {
    op: Op,
    since: Instant,
    bytes: u64,
    seq: u64,
    sent: bool,
    /// Written to Redis before this pipeline (a publish then looks up its
    /// sequence first: it may have run).
    retry: bool,
    /// A publish's share of trimming the idempotency window: the sequences
    /// (`first..=last`, one record hash) it drops, kept for its retries.
    trim: Option<(u64, u64)>,
}

pub(crate) struct Commander {
    setup: Setup,
    rx: Receiver<ClusterCmd>,
    /// This node's state changes (never dropped; see `ClusterLink`).
    state_rx: Receiver<ClusterCmd>,
    /// Numbers every command; publishes use it for their idempotency.
    writer: Writer,
    state: Arc<ClusterState>,
    target: Target,
    conn: Option<redis::Connection>,
    shas: Shas,
    backoff: Backoff,
    next_attempt: Instant,
    next_heartbeat: Instant,
    logged_down: bool,
    pending: VecDeque<Waiting>,
    /// Shards waiting for a connection of their own (`ClusterCmd::Dial`),
    /// opened while this thread's link is up.
    dials: BTreeSet<(usize, LinkKind)>,
    /// Dialing failed with the link up (Redis at `maxclients`, say): not
    /// again before this.
    next_dial: Instant,
    dial_backoff: Backoff,
    dial_logged: bool,
    /// This node's presence and connections, as Redis should hold them.
    mirror: Mirror,
    /// Channels whose position is still to be read again (`resync_channels`),
    /// fed into `pending` as it has room.
    resyncs: Vec<Arc<str>>,
    /// The next pipeline replaces this node's entries whole (after a
    /// reconnect, and every `HEAL_EVERY_HEARTBEATS`).
    heal_due: bool,
    heartbeats: u32,
    /// Nodes heartbeating within the TTL (this one always).
    live: HashSet<String>,
}

impl Commander {
    pub fn new(
        setup: Setup,
        target: Target,
        (rx, state_rx): (Receiver<ClusterCmd>, Receiver<ClusterCmd>),
        state: Arc<ClusterState>,
    ) -> Commander {
        let mut live = HashSet::new();
        live.insert(setup.config.node.to_string());
        Commander {
            setup,
            rx,
            state_rx,
            writer: Writer::new(),
            state,
            target,
            conn: None,
            shas: Shas::default(),
            backoff: Backoff::default(),
            next_attempt: Instant::now(),
            next_heartbeat: Instant::now(),
            logged_down: false,
            pending: VecDeque::new(),
            dials: BTreeSet::new(),
            next_dial: Instant::now(),
            dial_backoff: Backoff::default(),
            dial_logged: false,
            mirror: Mirror::default(),
            resyncs: Vec::new(),
            heal_due: true,
            heartbeats: 0,
            live,
        }
    }

    fn heartbeat_every(&self) -> Duration {
        (self.setup.config.node_ttl / 3).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Runs until the server stops (every wait is bounded by 200 ms).
    pub fn run(mut self) {
        while !self.state.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if self.conn.is_none() && now >= self.next_attempt {
                self.connect();
            }
            // Only the first server's thread heartbeats: another's
            // `next_heartbeat` is never moved on, and waiting for it would
            // spin this thread (it did, at 100% of a core, with two --redis).
            let slice = Duration::from_millis(200);
            let wait = match self.primary() {
                true => slice.min(self.next_heartbeat.saturating_duration_since(now)),
                false => slice,
            };
            // More than one pipeline's worth waits: the next goes out now,
            // not after a quiet slice (a pipeline takes at most `BATCH`).
            let more = !self.pending.is_empty() || !self.resyncs.is_empty();
            let wait = if self.conn.is_some() && more {
                Duration::ZERO
            } else {
                wait
            };
            crossbeam_channel::select! {
                recv(self.state_rx) -> cmd => match cmd {
                    Ok(cmd) => self.take(cmd, false),
                    Err(_) => return,
                },
                recv(self.rx) -> cmd => match cmd {
                    Ok(cmd) => self.take(cmd, true),
                    Err(_) => return,
                },
                default(wait) => {}
            }
            // State changes all (bounded by construction), work in batches.
            while let Ok(cmd) = self.state_rx.try_recv() {
                self.take(cmd, false);
            }
            for _ in 0..BATCH {
                match self.rx.try_recv() {
                    Ok(cmd) => self.take(cmd, true),
                    Err(_) => break,
                }
            }
            self.expire();
            if self.conn.is_some() {
                self.feed_resyncs();
                if let Err(e) = self.flush() {
                    self.lost(e);
                }
            }
            if self.conn.is_some() && !self.dials.is_empty() && Instant::now() >= self.next_dial {
                self.dial();
            }
            if self.primary() && self.conn.is_some() && Instant::now() >= self.next_heartbeat {
                self.next_heartbeat = Instant::now() + self.heartbeat_every();
                if let Err(e) = self.heartbeat() {
                    self.lost(e);
                }
            }
        }
    }

    fn connect(&mut self) {
        let attempt = self
            .target
            .connect(REDIS_TIMEOUT)
            .map_err(io::Error::from)
            .and_then(|mut conn| {
                // An ACL may refuse `INFO` (`@dangerous`): then unchecked.
                if let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut conn) {
                    link::check_version(&info).map_err(io::Error::other)?;
                }
                let mut load = |script: &str| -> io::Result<String> {
                    redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(script)
                        .query::<String>(&mut conn)
                        .map_err(|e| io::Error::other(format!("SCRIPT LOAD: {e}")))
                };
                let shas = Shas {
                    publish: load(keys::PUBLISH)?,
                    sync: load(keys::SYNC)?,
                    read: load(keys::READ)?,
                    user_online: load(keys::USER_ONLINE)?,
                    read_field: load(keys::READ_FIELD)?,
                    replace_hash: load(keys::REPLACE_HASH)?,
                    read_nodes: load(keys::READ_NODES)?,
                };
                Ok((conn, shas))
            });
        match attempt {
            Ok((conn, shas)) => {
                self.conn = Some(conn);
                self.shas = shas;
                self.backoff.reset();
                self.logged_down = false;
                // Redis may have lost (or never had) this node's entries, or
                // hold a predecessor's with the same id: replace them whole.
                self.heal_due = true;
                self.resync_channels();
                self.next_heartbeat = Instant::now();
                self.state
                    .set(&self.state.commands_up[self.setup.server], true, "commands", None);
            }
            Err(e) => self.lost(e),
        }
    }

    /// Opens the connections shards asked for (publishing, subscribing), in turn, and
    /// hands each to its shard. One that cannot be opened is tried again
    /// after a backoff (the others wait with it). The master's address is
    /// asked once for all of them: behind sentinels that do not answer,
    /// once per shard kept this thread from its own work for seconds.
    fn dial(&mut self) {
        let mut master = None;
        while let Some(&(shard, kind)) = self.dials.first() {
            let found = match master.take() {
                Some(at) => Ok(at),
                None => self.target.master_at(REDIS_TIMEOUT),
            };
            let dialed = found.and_then(|at| {
                let link = self.target.dial(&at, REDIS_TIMEOUT, self.setup.server, kind);
                master = Some(at);
                link
            });
            match dialed {
                Ok(link) => {
                    self.dials.remove(&(shard, kind));
                    self.dial_backoff.reset();
                    self.dial_logged = false;
                    self.to_shard(shard, HubMsg::RedisLink(link));
                }
                Err(e) => {
                    if !std::mem::replace(&mut self.dial_logged, true) {
                        tracing::warn!(error = %e, "a shard's connection to Redis could not be opened; retrying");
                    }
                    self.next_dial = Instant::now() + self.dial_backoff.next_delay();
                    return;
                }
            }
        }
    }

    /// After a reconnect (this thread's, or the node's subscriber
    /// connection's: `ClusterCmd::Resync`): the position of every channel
    /// with subscribers here is read again, so that owners learn at once of
    /// an epoch Redis lost meanwhile (and tell their subscribers) and of
    /// publications this node missed. Asked again before the last round
    /// is done, it starts over (one round at a time, however often a
    /// connection flaps), the last round's unfinished channels first, so
    /// that a connection flapping faster than a round starves none.
    fn resync_channels(&mut self) {
        let (server, servers) = (self.setup.server, self.setup.config.servers());
        let ours = |channel: &&Arc<str>| server_of(channel, servers) == server;
        let unfinished: HashSet<Arc<str>> = std::mem::take(&mut self.resyncs).into_iter().collect();
        let (first, then): (Vec<Arc<str>>, Vec<Arc<str>>) = self
            .mirror
            .channels()
            .filter(ours)
            .cloned()
            .partition(|channel| unfinished.contains(channel));
        // Taken from the end.
        self.resyncs = then;
        self.resyncs.extend(first);
    }

    /// Queues the next re-syncs behind the shards' work, a pipeline's worth
    /// at a time: all at once, a node with more channels than
    /// `PENDING_CAPACITY` refused every subscribe as busy until they were
    /// through, and what the shards asked meanwhile waited behind them all.
    fn feed_resyncs(&mut self) {
        while self.pending.len() < BATCH {
            let Some(channel) = self.resyncs.pop() else { return };
            let shard = self.setup.shards.owner_of(&channel);
            let call = RedisCall::Sync {
                channel,
                shard,
                why: SyncFor::Resync,
            };
            let waiting = self.wrap(Op::Cmd(call), 0);
            self.pending.push_back(waiting);
        }
    }

    fn lost(&mut self, error: io::Error) {
        let was_up = self.conn.take().is_some();
        self.next_attempt = Instant::now() + self.backoff.next_delay();
        if was_up {
            self.state.reconnects.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(names::CLUSTER_RECONNECTS).increment(1);
        }
        let error = (!self.logged_down).then_some(&error);
        self.logged_down = true;
        self.state
            .set(&self.state.commands_up[self.setup.server], false, "commands", error);
    }

    /// Files a command from a shard: state goes into the mirror, the rest
    /// into the bounded buffer. `held`: it came through the work lane and
    /// holds its bytes until done.
    fn take(&mut self, cmd: ClusterCmd, held: bool) {
        let bytes = if held { cmd.bytes() } else { 0 };
        let op = match cmd {
            ClusterCmd::Presence { channel, user, delta } => {
                let user = user.unwrap_or_else(|| Arc::from(""));
                return self.mirror.presence(channel, user, delta);
            }
            ClusterCmd::UserOnline { user, conn } => {
                let member = self.member(conn);
                self.mirror.user_online(Arc::clone(&user), member, unix_ms());
                Op::UserOnline { user }
            }
            ClusterCmd::UserOffline { user, conn } => {
                let member = self.member(conn);
                return self.mirror.user_offline(user, &member);
            }
            ClusterCmd::Call(call) => Op::Cmd(call),
            ClusterCmd::Dial { shard, kind } => {
                self.dials.insert((shard, kind));
                return;
            }
            ClusterCmd::Resync => return self.resync_channels(),
            ClusterCmd::RoomMessage { room, frame } => Op::Room { room, frame },
            ClusterCmd::ChannelPresence { channel, json } => {
                let message = keys::presence_message(&self.setup.config.node, &json);
                Op::Raw(vec!["PUBLISH".into(), keys::publications(&channel), message])
            }
            ClusterCmd::UserMessage { user, json } => {
                let json = String::from_utf8_lossy(&json);
                self.control(serde_json::json!({"k": "m", "from": &*self.setup.config.node, "user": &*user, "json": json}))
            }
            ClusterCmd::DisconnectUser { user, code, reason } => self.control(
                serde_json::json!({"k": "d", "from": &*self.setup.config.node, "user": &*user, "code": code, "reason": &*reason}),
            ),
            ClusterCmd::DisconnectToken { token_id, code, reason } => self.control(
                serde_json::json!({"k": "t", "from": &*self.setup.config.node, "token_id": &*token_id, "code": code, "reason": &*reason}),
            ),
        };
        self.enqueue_held(op, bytes);
    }

    /// Files the bridge's own work (it holds no bytes of a shard's).
    fn enqueue(&mut self, op: Op) {
        self.enqueue_held(op, 0);
    }

    fn wrap(&mut self, op: Op, bytes: u64) -> Waiting {
        Waiting {
            op,
            since: Instant::now(),
            bytes,
            seq: self.writer.next(),
            sent: false,
            retry: false,
            trim: None,
        }
    }

    fn enqueue_held(&mut self, op: Op, bytes: u64) {
        let waiting = self.wrap(op, bytes);
        if self.pending.len() >= PENDING_CAPACITY {
            return self.fail(waiting, Failure::NotDone(BUSY_WHY));
        }
        self.pending.push_back(waiting);
    }

    /// Answers what waited past `DEADLINE` (the oldest are in front; all
    /// are looked at, which costs nothing when none is late).
    fn expire(&mut self) {
        if !self.pending.iter().any(|w| w.since.elapsed() >= DEADLINE) {
            return;
        }
        let (expired, kept): (VecDeque<Waiting>, VecDeque<Waiting>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|w| w.since.elapsed() >= DEADLINE);
        self.pending = kept;
        for waiting in expired {
            let failure = match (&waiting.op, waiting.sent) {
                (Op::Cmd(RedisCall::Publish { .. }), true) => Failure::Unknown,
                _ => Failure::NotDone(UNREACHABLE_WHY),
            };
            self.fail(waiting, failure);
        }
    }

    fn control(&self, message: serde_json::Value) -> Op {
        Op::Raw(vec!["PUBLISH".into(), keys::CONTROL.into(), message.to_string()])
    }

    fn member(&self, conn: Origin) -> String {
        format!(
            "{}|{}|{}|{}",
            self.setup.config.node, conn.shard, conn.key, conn.generation
        )
    }

    /// One pipeline: changed state, then a batch of operations.
    fn flush(&mut self) -> io::Result<()> {
        let mut state: Vec<Vec<String>> = Vec::new();
        self.state_commands(&mut state);
        let mut ops: Vec<Waiting> = Vec::new();
        let mut bytes = 0;
        let floor = self.trim_floor();
        while ops.len() < BATCH && bytes < BATCH_BYTES {
            let Some(mut waiting) = self.pending.pop_front() else {
                break;
            };
            bytes += waiting.bytes;
            waiting.retry = waiting.sent;
            waiting.sent = true;
            if waiting.trim.is_none() && matches!(waiting.op, Op::Cmd(RedisCall::Publish { idem: None, .. })) {
                waiting.trim = self.writer.trim.share(waiting.seq, floor);
            }
            ops.push(waiting);
        }
        if state.is_empty() && ops.is_empty() {
            return Ok(());
        }
        let args: Vec<Vec<Vec<u8>>> = ops.iter().map(|w| self.command(w)).collect();
        let replies = match self.exchange(&state, &args) {
            Ok(replies) => replies,
            Err(e) => {
                self.requeue(ops);
                return Err(e);
            }
        };
        for (waiting, reply) in ops.into_iter().zip(replies) {
            self.complete(waiting, reply);
        }
        Ok(())
    }

    /// The oldest sequence of a publish still waiting here (sent and to be
    /// retried, or not yet written): its record must outlive the window,
    /// however fast the sequence moved meanwhile (every command takes one,
    /// refused ones too). `u64::MAX` when none waits; looked for only when
    /// a trim may be due.
    fn trim_floor(&self) -> u64 {
        if !self.writer.trim.due(self.writer.seq()) {
            return u64::MAX;
        }
        self.pending
            .iter()
            .filter(|w| matches!(w.op, Op::Cmd(RedisCall::Publish { idem: None, .. })))
            .map(|w| w.seq)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// After a failed pipeline: its commands wait again, in order, for the
    /// next connection (publishes keep their sequence, so a retry of one
    /// that ran is recognised by the script). Fire-and-forget messages are
    /// not retried: at most once.
    fn requeue(&mut self, ops: Vec<Waiting>) {
        for waiting in ops.into_iter().rev() {
            match waiting.op {
                Op::Raw(_) => self.state.release(waiting.bytes),
                Op::Room { .. } => {
                    // Perhaps published, perhaps not: never twice.
                    self.state.release(waiting.bytes);
                    self.state.drop_one();
                }
                _ => self.pending.push_front(waiting),
            }
        }
    }

    /// Writes `state` and `ops` in one go, reads every reply; returns the
    /// replies of `ops`.
    fn exchange<A: AsRef<[u8]>>(&mut self, state: &[Vec<String>], ops: &[Vec<A>]) -> io::Result<Vec<Value>> {
        let conn = self.conn.as_mut().ok_or_else(|| io::Error::other("not connected"))?;
        let mut out = Vec::new();
        for command in state {
            encode(&mut out, command);
        }
        for command in ops {
            encode(&mut out, command);
        }
        conn.send_packed_command(&out).map_err(io::Error::other)?;
        let mut read = || conn.recv_response().map(Value::from).map_err(io::Error::other);
        for _ in state {
            if let Value::Error(e) = read()? {
                tracing::warn!(error = %e, "cluster state write refused");
            }
        }
        ops.iter().map(|_| read()).collect()
    }

    /// This node's changed entries, or all of them when a heal is due.
    fn state_commands(&mut self, out: &mut Vec<Vec<String>>) {
        let node = &self.setup.config.node;
        if !self.primary() {
            // Only the first server holds the nodes' entries; this mirror
            // only says which channels to re-sync.
            return self.mirror.changes(node, &mut Vec::new());
        }
        if self.heal_due {
            self.heal_due = false;
            return self
                .mirror
                .snapshot(node, &self.shas.replace_hash, self.node_keys_ttl_secs(), out);
        }
        self.mirror.changes(node, out);
    }

    /// Whether this thread's server holds the nodes' entries (the first).
    fn primary(&self) -> bool {
        self.setup.server == 0
    }

    /// This node's entries outlive its last heartbeat by ten TTLs.
    fn node_keys_ttl_secs(&self) -> u64 {
        self.setup.config.node_ttl.as_secs().max(1) * 10
    }

    /// Every live node's key, this node's first.
    fn live_keys(&self, key: impl Fn(&str) -> String) -> Vec<String> {
        let me = &*self.setup.config.node;
        std::iter::once(key(me))
            .chain(self.live.iter().filter(|n| n.as_str() != me).map(|n| key(n)))
            .collect()
    }

    /// The command's arguments as bytes (a room message's frame is not
    /// text).
    fn command(&mut self, waiting: &Waiting) -> Vec<Vec<u8>> {
        match &waiting.op {
            Op::Room { room, frame } => vec![b"PUBLISH".to_vec(), keys::room(room).into_bytes(), frame.to_vec()],
            _ => self.args(waiting).into_iter().map(String::into_bytes).collect(),
        }
    }

    fn args(&mut self, waiting: &Waiting) -> Vec<String> {
        let op = &waiting.op;
        let evalsha = |sha: &str, channel: &str| {
            vec![
                "EVALSHA".to_string(),
                sha.to_string(),
                "3".into(),
                keys::epoch(channel),
                keys::offset(channel),
                keys::stream(channel),
            ]
        };
        match op {
            Op::Cmd(call @ RedisCall::Publish { .. }) => {
                let node = &self.setup.config.node;
                self.writer
                    .args(&self.shas.publish, node, call, waiting.seq, waiting.retry, waiting.trim)
            }
            Op::Cmd(RedisCall::Sync { channel, why, .. }) => {
                let mut args = evalsha(&self.shas.sync, channel);
                args.extend([publish::new_epoch(), CHANNEL_KEYS_TTL_SECS.to_string()]);
                if let SyncFor::Check { epoch, seen } = why {
                    args.extend([epoch.to_string(), seen.to_string()]);
                }
                args
            }
            Op::Cmd(RedisCall::Recover { channel, sub, .. }) => {
                let after = sub.recover.as_ref().map_or(0, |r| r.offset);
                let mut args = evalsha(&self.shas.read, channel);
                args.extend([format!("{}-0", after + 1), "0".into()]);
                args
            }
            Op::Cmd(RedisCall::Query {
                channel,
                query: Query::History { .. },
                rule,
                ..
            }) => {
                // The whole retained history: the page (since, limit, bytes)
                // is cut here, as the owner cuts its local log.
                let count = rule.size;
                let mut args = evalsha(&self.shas.read, channel);
                args.extend(["-".into(), count.to_string()]);
                args
            }
            Op::Cmd(RedisCall::Query { channel, .. }) => {
                let keys = self.live_keys(keys::node_presence);
                let mut args = vec!["EVALSHA".into(), self.shas.read_field.clone(), keys.len().to_string()];
                args.extend(keys);
                args.push(channel.to_string());
                args
            }
            Op::Cmd(RedisCall::Nodes { query, .. }) => {
                let me = &*self.setup.config.node;
                let others = self.live.iter().filter(|n| n.as_str() != me);
                let (keys, field): (Vec<String>, String) = match query {
                    NodesQuery::Channels => (others.map(|n| keys::node_presence(n)).collect(), String::new()),
                    NodesQuery::User(user) => (others.map(|n| keys::node_users(n)).collect(), user.to_string()),
                };
                let mut args = vec!["EVALSHA".into(), self.shas.read_nodes.clone(), keys.len().to_string()];
                args.extend(keys);
                args.push(field);
                args
            }
            Op::UserOnline { user } => {
                let keys = self.live_keys(keys::node_users);
                let mut args = vec!["EVALSHA".into(), self.shas.user_online.clone(), keys.len().to_string()];
                args.extend(keys);
                args.extend([
                    user.to_string(),
                    self.mirror.user_value(user),
                    self.node_keys_ttl_secs().to_string(),
                ]);
                args
            }
            Op::Raw(args) => args.clone(),
            // Built as bytes by `command`.
            Op::Room { .. } => Vec::new(),
        }
    }

    /// Acts on one operation's reply.
    fn complete(&mut self, waiting: Waiting, reply: Value) {
        if let Value::Error(e) = &reply {
            tracing::warn!(error = %e, "cluster command refused by Redis");
            // This copy did not run, but an earlier one of a publish may have.
            let failure = match (&waiting.op, waiting.retry) {
                (Op::Cmd(RedisCall::Publish { .. }), true) => Failure::Unknown,
                _ => Failure::NotDone("the cluster refused the command"),
            };
            return self.fail(waiting, failure);
        }
        self.state.release(waiting.bytes);
        match waiting.op {
            Op::Cmd(RedisCall::Publish { reply: to, .. }) => {
                if let Some((shard, msg)) = publish::completed(&self.state, to, &reply) {
                    self.to_shard(shard, msg);
                }
            }
            Op::Cmd(RedisCall::Sync { channel, shard, why }) => {
                let (epoch, offset) = epoch_offset(&reply);
                let msg = HubMsg::ClusterSynced {
                    channel,
                    epoch: Some((epoch.into(), offset)),
                    why,
                };
                self.to_shard(shard, msg);
            }
            Op::Cmd(RedisCall::Recover {
                channel,
                shard,
                rule,
                sub,
            }) => {
                let (epoch, _, entries) = read_reply(reply, &rule);
                let msg = HubMsg::ClusterRecovered {
                    channel,
                    epoch: epoch.map(Arc::from),
                    entries: Some(entries),
                    sub: Box::new(sub),
                };
                self.to_shard(shard, msg);
            }
            Op::Cmd(RedisCall::Query {
                query,
                reply: to,
                rule,
                max_reply_bytes,
                ..
            }) => {
                let result = match query {
                    Query::Presence => mirror::presence_json(strings(reply)),
                    Query::History { limit, since } => {
                        // The page (since, limit, bytes) is cut here, as the
                        // owner cuts its local log.
                        let (epoch, offset, entries) = read_reply(reply, &rule);
                        let page = page_of(&entries, since, limit, max_reply_bytes);
                        match epoch {
                            Some(epoch) => page_json(&epoch, offset, &page),
                            None => r#"{"epoch":null,"offset":0,"publications":[],"more":false}"#.into(),
                        }
                    }
                };
                self.answer(to, Ok(&result));
            }
            Op::Cmd(RedisCall::Nodes { query, reply: to }) => {
                let _ = to.send(mirror::nodes_json(&query, reply).to_string());
            }
            Op::UserOnline { .. } => self.enforce_max(reply),
            Op::Raw(_) | Op::Room { .. } => {}
        }
    }

    /// Answers a command that could not run, and counts it.
    fn fail(&mut self, waiting: Waiting, failure: Failure) {
        self.state.drop_one();
        self.state.release(waiting.bytes);
        // Its share of the trim may not have run: another publish takes it.
        self.writer.trim.untrimmed.extend(waiting.trim);
        match waiting.op {
            Op::Cmd(RedisCall::Publish { reply: Some(to), .. }) | Op::Cmd(RedisCall::Query { reply: to, .. }) => {
                self.answer(to, Err(failure))
            }
            Op::Cmd(RedisCall::Sync { channel, shard, why }) => self.to_shard(shard, HubMsg::unsynced(channel, why)),
            Op::Cmd(RedisCall::Recover {
                channel, shard, sub, ..
            }) => {
                let msg = HubMsg::ClusterRecovered {
                    channel,
                    epoch: None,
                    entries: None,
                    sub: Box::new(sub),
                };
                self.to_shard(shard, msg);
            }
            _ => {}
        }
    }

    fn answer(&self, to: ReplyTo, result: Result<&str, Failure>) {
        if let Some((shard, msg)) = publish::answer(to, result, false) {
            self.to_shard(shard, msg);
        }
    }

    fn to_shard(&self, shard: usize, msg: HubMsg) {
        if self.setup.shards.to(shard, msg).is_err() {
            self.state.drop_one();
        }
    }

    /// `--max-connections-per-user` across nodes: the oldest connections
    /// over the limit are kicked wherever they are.
    fn enforce_max(&mut self, reply: Value) {
        let max = self.setup.max_connections_per_user;
        let live = mirror::user_members(strings(reply));
        if max == 0 || live.len() <= max {
            return;
        }
        // Each kicked connection's node removes it from its own entry.
        for member in &live[..live.len() - max] {
            self.kick(member);
        }
    }

    fn kick(&mut self, member: &str) {
        let parts: Vec<&str> = member.split('|').collect();
        let [node, shard, key, generation] = parts[..] else {
            return;
        };
        let (Ok(shard), Ok(key), Ok(generation)) = (shard.parse::<u16>(), key.parse(), generation.parse()) else {
            return;
        };
        if node == &*self.setup.config.node {
            // The owner shard on this node already kicked it if it was the
            // local oldest; kicking again finds it gone.
            let conn = Origin {
                shard,
                key,
                generation,
                id: 0,
            };
            if (shard as usize) < self.setup.shards.len() {
                let msg = HubMsg::Kick {
                    conn,
                    code: CLOSE_REPLACED,
                    reason: "replaced".into(),
                };
                self.to_shard(shard as usize, msg);
            }
            return;
        }
        let message = serde_json::json!({"k": "x", "node": node, "shard": shard, "key": key, "generation": generation});
        let op = self.control(message);
        self.enqueue(op);
    }

    /// Refreshes this node's entry and the list of live nodes.
    fn heartbeat(&mut self) -> io::Result<()> {
        let now = unix_ms();
        let connections: u64 = self
            .setup
            .stats
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| s.open))
            .sum();
        let node = self.setup.config.node.to_string();
        let ttl = self.node_keys_ttl_secs().to_string();
        let state = vec![
            vec![
                "HSET".to_string(),
                keys::NODES.into(),
                node.clone(),
                format!("{connections}|{now}"),
            ],
            vec!["EXPIRE".to_string(), keys::node_presence(&node), ttl.clone()],
            vec!["EXPIRE".to_string(), keys::node_users(&node), ttl],
        ];
        self.heartbeats = self.heartbeats.wrapping_add(1);
        if self.heartbeats.is_multiple_of(HEAL_EVERY_HEARTBEATS) {
            self.heal_due = true;
        }
        let read = vec![vec!["HGETALL".to_string(), keys::NODES.into()]];
        let reply = self.exchange(&state, &read)?.pop().unwrap_or(Value::Nil);
        let ttl_ms = self.setup.config.node_ttl.as_millis() as u64;
        // Nodes silent for ten TTLs leave the list (their own entries
        // expire by then).
        let (mut live, mut view, mut dead) = (HashSet::new(), Vec::new(), Vec::new());
        for pair in reply.into_array().chunks(2) {
            let (Some(node), Some(value)) = (pair[0].as_str(), pair.get(1).and_then(Value::as_str)) else {
                continue;
            };
            let (connections, at) = value.split_once('|').unwrap_or(("0", "0"));
            let ago = now.saturating_sub(at.parse().unwrap_or(0));
            if ago > ttl_ms * 10 {
                dead.push(node.to_string());
                continue;
            }
            if ago <= ttl_ms {
                live.insert(node.to_string());
                view.push(NodeInfo {
                    node: node.to_string(),
                    connections: connections.parse().unwrap_or(0),
                    heartbeat_ms_ago: ago,
                });
            }
        }
        view.sort_by(|a, b| a.node.cmp(&b.node));
        live.insert(self.setup.config.node.to_string());
        self.live = live;
        if let Ok(mut nodes) = self.state.nodes.lock() {
            *nodes = view;
        }
        if !dead.is_empty() {
            let mut args = vec!["HDEL".to_string(), keys::NODES.into()];
            args.extend(dead);
            self.enqueue(Op::Raw(args));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::budget::MemoryBudget;
    use crate::bus::cluster::ClusterConfig;
    use crate::bus::inbox::{channel, Inbox};

    /// A command thread that never connected (no Redis needed), for one
    /// shard whose inbox is returned.
    fn commander() -> (Commander, Inbox) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (handle, inbox) = channel(waker);
        let config = ClusterConfig::for_tests("redis://127.0.0.1:1");
        let state = Arc::new(ClusterState::new(1, 1 << 30, MemoryBudget::new(1 << 30)));
        let setup = Setup {
            config: config.clone(),
            shards: Peers::new(vec![handle].into()),
            stats: Vec::new(),
            max_connections_per_user: 0,
            server: 0,
        };
        let (_tx, rx) = crossbeam_channel::bounded(1);
        let (_state_tx, state_rx) = crossbeam_channel::unbounded();
        let target = Target::new(&config).unwrap();
        (Commander::new(setup, target, (rx, state_rx), state), inbox)
    }

    fn resyncs_fed(commander: &Commander) -> HashSet<Arc<str>> {
        let channel = |w: &Waiting| match &w.op {
            Op::Cmd(RedisCall::Sync {
                channel,
                why: SyncFor::Resync,
                ..
            }) => Some(Arc::clone(channel)),
            _ => None,
        };
        commander.pending.iter().filter_map(channel).collect()
    }

    #[test]
    fn a_resync_of_more_channels_than_the_queue_holds_leaves_room_for_the_shards() {
        let (mut commander, _inbox) = commander();
        let held = PENDING_CAPACITY * 3 / 2;
        for i in 0..held {
            commander.mirror.presence(format!("c{i}").into(), "".into(), 1);
        }
        commander.take(ClusterCmd::Resync, false);
        commander.feed_resyncs();
        let first = resyncs_fed(&commander);
        assert_eq!(first.len(), BATCH, "a pipeline's worth at a time");
        // A subscribe's position read is taken, behind one pipeline of them.
        let call = RedisCall::Sync {
            channel: "new".into(),
            shard: 0,
            why: SyncFor::Subscribe,
        };
        commander.take(ClusterCmd::Call(call), true);
        let last = commander.pending.back().map(|w| &w.op);
        assert!(
            matches!(
                last,
                Some(Op::Cmd(RedisCall::Sync {
                    why: SyncFor::Subscribe,
                    ..
                }))
            ),
            "refused as busy"
        );
        assert_eq!(commander.pending.len(), BATCH + 1);
        // Asked again before it is through (a flapping connection): one
        // round, started over, with the channels not fed yet first.
        commander.take(ClusterCmd::Resync, false);
        assert_eq!(commander.resyncs.len(), held);
        commander.pending.clear();
        commander.feed_resyncs();
        assert!(resyncs_fed(&commander).is_disjoint(&first), "the unfinished go first");
        // As the pipelines drain the queue, the rest follows, each once.
        let mut fed = resyncs_fed(&commander).len();
        while !commander.resyncs.is_empty() {
            commander.pending.clear();
            commander.feed_resyncs();
            fed += resyncs_fed(&commander).len();
        }
        assert_eq!(fed, held);
    }
}
