//! The command thread: one Redis connection, pipelined. Each pass takes a
//! batch of commands from the shards, writes this node's changed presence
//! and user entries, runs the batch's scripts, reads every reply, and sends
//! the answers to the shards' inboxes (or the admin thread). It heartbeats
//! the node and refreshes the list of live nodes.
//!
//! While Redis is unreachable it keeps taking commands: presence and user
//! changes go into this node's mirror (written in full on reconnect, so a
//! restarted, empty Redis learns them again); publishes and queries wait in
//! a bounded buffer, and past its bound are dropped, counted, and answered
//! with an error. Commands in flight when the link fails are answered with
//! an error, never run twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::backoff::{random_u64, Backoff};
use super::keys::{self, CHANNEL_KEYS_TTL_SECS};
use super::resp::{Conn, Value};
use super::REDIS_TIMEOUT;
use crate::bus::cluster::{ClusterCmd, ClusterConfig, ClusterState, NodeInfo, RedisCall};
use crate::bus::history::Entry;
use crate::bus::history::HistoryRule;
use crate::bus::msg::{HubMsg, Origin, Query, ReplyTo};
use crate::bus::peers::Peers;
use crate::hub::config::CLOSE_REPLACED;
use crate::hub::owner::publications_json;
use crate::hub::protocol::{self, code, json_string};
use crate::metrics::names;
use crate::metrics::stats::ShardStats;
use crate::tick::TICKS_PER_SEC;

/// Publishes and queries waiting while Redis is slow or away.
pub(crate) const PENDING_CAPACITY: usize = 10_000;
/// Commands taken from the queue per pass (one pipeline).
const BATCH: usize = 512;
/// Departed connections remembered for removal from Redis after an outage.
const GONE_CAPACITY: usize = 100_000;

pub(crate) struct Setup {
    pub config: ClusterConfig,
    pub shards: Peers,
    pub stats: Vec<Arc<Mutex<ShardStats>>>,
    pub max_connections_per_user: usize,
}

/// Dead node ids kept for cleaning their presence entries.
const MAX_DEAD_NODES_REMEMBERED: usize = 4096;

/// A command waiting for (or in) a pipeline: the shards' own commands that
/// need an answer from Redis (publish, sync, recover, query) as they came,
/// and the bridge's own work.
enum Op {
    /// A shard's call, as it came.
    Cmd(RedisCall),
    /// Check the user's connection count across the cluster.
    UserOnline { user: Arc<str>, member: String, score: u64 },
    /// Fire and forget (`PUBLISH` control messages, cleanup).
    Raw(Vec<String>),
}

#[derive(Default)]
struct Shas {
    publish: String,
    sync: String,
    read: String,
    user_online: String,
}

pub(crate) struct Commander {
    setup: Setup,
    rx: Receiver<ClusterCmd>,
    state: Arc<ClusterState>,
    conn: Option<Conn>,
    shas: Shas,
    backoff: Backoff,
    next_attempt: Instant,
    next_heartbeat: Instant,
    logged_down: bool,
    pending: VecDeque<Op>,
    /// This node's subscriptions per (channel, user or "").
    presence: HashMap<(Arc<str>, Arc<str>), i64>,
    presence_dirty: HashSet<(Arc<str>, Arc<str>)>,
    /// This node's connections per user: (member, connect time ms).
    users: HashMap<Arc<str>, Vec<(String, u64)>>,
    users_dirty: HashSet<Arc<str>>,
    gone: VecDeque<(Arc<str>, String)>,
    /// Nodes heartbeating within the TTL.
    live: HashSet<String>,
    /// Nodes seen silent for ten TTLs: their leftover presence entries may
    /// be deleted. (A node merely missing from our last view may be one that
    /// started since; its entries are skipped, never deleted.)
    dead: HashSet<String>,
}

impl Commander {
    pub fn new(setup: Setup, rx: Receiver<ClusterCmd>, state: Arc<ClusterState>) -> Commander {
        let mut live = HashSet::new();
        live.insert(setup.config.node.to_string());
        Commander {
            setup,
            rx,
            state,
            conn: None,
            shas: Shas::default(),
            backoff: Backoff::default(),
            next_attempt: Instant::now(),
            next_heartbeat: Instant::now(),
            logged_down: false,
            pending: VecDeque::new(),
            presence: HashMap::new(),
            presence_dirty: HashSet::new(),
            users: HashMap::new(),
            users_dirty: HashSet::new(),
            gone: VecDeque::new(),
            dead: HashSet::new(),
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
            let wait = Duration::from_millis(200).min(self.next_heartbeat.saturating_duration_since(now));
            match self.rx.recv_timeout(wait) {
                Ok(cmd) => self.take(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            for _ in 0..BATCH {
                match self.rx.try_recv() {
                    Ok(cmd) => self.take(cmd),
                    Err(_) => break,
                }
            }
            if self.conn.is_some() {
                if let Err(e) = self.flush() {
                    self.lost(e);
                }
            }
            if self.conn.is_some() && Instant::now() >= self.next_heartbeat {
                self.next_heartbeat = Instant::now() + self.heartbeat_every();
                if let Err(e) = self.heartbeat() {
                    self.lost(e);
                }
            }
        }
    }

    fn connect(&mut self) {
        let attempt = Conn::connect(&self.setup.config.redis, REDIS_TIMEOUT).and_then(|mut conn| {
            let mut load = |script: &str| -> io::Result<String> {
                match conn.call(&["SCRIPT", "LOAD", script])? {
                    Value::Bytes(sha) => Ok(String::from_utf8_lossy(&sha).into_owned()),
                    other => Err(io::Error::other(format!("SCRIPT LOAD: {other:?}"))),
                }
            };
            let shas = Shas {
                publish: load(keys::PUBLISH)?,
                sync: load(keys::SYNC)?,
                read: load(keys::READ)?,
                user_online: load(keys::USER_ONLINE)?,
            };
            Ok((conn, shas))
        });
        match attempt {
            Ok((conn, shas)) => {
                self.conn = Some(conn);
                self.shas = shas;
                self.backoff.reset();
                self.logged_down = false;
                // A restarted Redis lost this node's entries: write them all.
                self.presence_dirty.extend(self.presence.keys().cloned());
                self.users_dirty.extend(self.users.keys().cloned());
                self.next_heartbeat = Instant::now();
                self.state.set(&self.state.commands_up, true, "commands", None);
            }
            Err(e) => self.lost(e),
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
        self.state.set(&self.state.commands_up, false, "commands", error);
    }

    /// Files a command from a shard: state goes into the mirror, the rest
    /// into the bounded buffer.
    fn take(&mut self, cmd: ClusterCmd) {
        let op = match cmd {
            ClusterCmd::Presence { channel, user, delta } => {
                let key = (channel, user.unwrap_or_else(|| Arc::from("")));
                let count = self.presence.entry(key.clone()).or_insert(0);
                *count += i64::from(delta);
                if *count <= 0 {
                    self.presence.remove(&key);
                }
                self.presence_dirty.insert(key);
                return;
            }
            ClusterCmd::UserOnline { user, conn } => {
                let member = self.member(conn);
                let score = unix_ms();
                self.users.entry(Arc::clone(&user)).or_default().push((member.clone(), score));
                Op::UserOnline { user, member, score }
            }
            ClusterCmd::UserOffline { user, conn } => {
                let member = self.member(conn);
                if let Some(list) = self.users.get_mut(&user) {
                    list.retain(|(m, _)| *m != member);
                    if list.is_empty() {
                        self.users.remove(&user);
                    }
                }
                if self.gone.len() >= GONE_CAPACITY {
                    self.gone.pop_front();
                }
                self.gone.push_back((user, member));
                return;
            }
            ClusterCmd::Call(call) => Op::Cmd(call),
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
        self.enqueue(op);
    }

    fn enqueue(&mut self, op: Op) {
        if self.pending.len() >= PENDING_CAPACITY {
            return self.fail(op, "the cluster link is busy or down");
        }
        self.pending.push_back(op);
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
        let take = self.pending.len().min(BATCH);
        let ops: Vec<Op> = self.pending.drain(..take).collect();
        if state.is_empty() && ops.is_empty() {
            return Ok(());
        }
        let args: Vec<Vec<String>> = ops.iter().map(|op| self.args(op)).collect();
        let replies = self.exchange(&state, &args);
        let replies = match replies {
            Ok(replies) => replies,
            Err(e) => {
                for op in ops {
                    self.fail(op, "the cluster link failed");
                }
                return Err(e);
            }
        };
        for (op, reply) in ops.into_iter().zip(replies) {
            self.complete(op, reply);
        }
        Ok(())
    }

    /// Writes `state` and `ops` in one go, reads every reply; returns the
    /// replies of `ops`.
    fn exchange(&mut self, state: &[Vec<String>], ops: &[Vec<String>]) -> io::Result<Vec<Value>> {
        let conn = self.conn.as_mut().ok_or_else(|| io::Error::other("not connected"))?;
        for command in state.iter().chain(ops) {
            conn.queue(command);
        }
        conn.flush()?;
        for _ in state {
            if let Value::Error(e) = conn.read()? {
                tracing::warn!(error = %e, "cluster state write refused");
            }
        }
        ops.iter().map(|_| conn.read()).collect()
    }

    /// HSET/HDEL of changed presence, ZADD/ZREM of user connections.
    fn state_commands(&mut self, out: &mut Vec<Vec<String>>) {
        let node = &self.setup.config.node;
        for (channel, user) in self.presence_dirty.drain() {
            let key = keys::presence(&channel);
            let field = format!("{node}|{user}");
            match self.presence.get(&(channel, user)) {
                Some(count) => out.push(vec!["HSET".into(), key, field, count.to_string()]),
                None => out.push(vec!["HDEL".into(), key, field]),
            }
        }
        for user in self.users_dirty.drain() {
            for (member, score) in self.users.get(&user).into_iter().flatten() {
                out.push(vec![
                    "ZADD".into(),
                    keys::user(&user),
                    score.to_string(),
                    member.clone(),
                ]);
            }
        }
        for (user, member) in self.gone.drain(..) {
            out.push(vec!["ZREM".into(), keys::user(&user), member]);
        }
    }

    fn args(&self, op: &Op) -> Vec<String> {
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
            Op::Cmd(RedisCall::Publish {
                channel, data, rule, ..
            }) => {
                let mut args = evalsha(&self.shas.publish, channel);
                args.extend([
                    new_epoch(),
                    data.to_string(),
                    rule.size.to_string(),
                    keys::publications(channel),
                    CHANNEL_KEYS_TTL_SECS.to_string(),
                    unix_ms().to_string(),
                    ttl_secs(rule).to_string(),
                ]);
                args
            }
            Op::Cmd(RedisCall::Sync { channel, .. }) => {
                let mut args = evalsha(&self.shas.sync, channel);
                args.extend([new_epoch(), CHANNEL_KEYS_TTL_SECS.to_string()]);
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
                query: Query::History { limit },
                rule,
                ..
            }) => {
                let count = (*limit).min(rule.size);
                let mut args = evalsha(&self.shas.read, channel);
                args.extend(["-".into(), count.to_string()]);
                args
            }
            Op::Cmd(RedisCall::Query { channel, .. }) => vec!["HGETALL".into(), keys::presence(channel)],
            Op::UserOnline { user, member, score } => vec![
                "EVALSHA".into(),
                self.shas.user_online.clone(),
                "1".into(),
                keys::user(user),
                score.to_string(),
                member.clone(),
            ],
            Op::Raw(args) => args.clone(),
        }
    }

    /// Acts on one operation's reply.
    fn complete(&mut self, op: Op, reply: Value) {
        if let Value::Error(e) = &reply {
            tracing::warn!(error = %e, "cluster command refused by Redis");
            return self.fail(op, "the cluster refused the command");
        }
        match op {
            Op::Cmd(RedisCall::Publish { reply: to, .. }) => {
                let (epoch, offset) = epoch_offset(&reply);
                self.state.published.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(names::CLUSTER_PUBLISHED).increment(1);
                if let Some(to) = to {
                    let result = format!("{{\"offset\":{offset},\"epoch\":{}}}", json_string(&epoch));
                    self.answer(to, Ok(&result));
                }
            }
            Op::Cmd(RedisCall::Sync { channel, shard }) => {
                let (epoch, offset) = epoch_offset(&reply);
                let msg = HubMsg::ClusterSynced {
                    channel,
                    epoch: Some((epoch.into(), offset)),
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
                channel,
                query,
                reply: to,
                rule,
            }) => {
                let result = match query {
                    Query::Presence => self.presence_json(&channel, reply),
                    Query::History { .. } => history_json(reply, &rule),
                };
                self.answer(to, Ok(&result));
            }
            Op::UserOnline { user, .. } => self.enforce_max(&user, reply),
            Op::Raw(_) => {}
        }
    }

    /// Answers a command that could not run, and counts it.
    fn fail(&mut self, op: Op, why: &str) {
        self.state.drop_one();
        match op {
            Op::Cmd(RedisCall::Publish { reply: Some(to), .. }) | Op::Cmd(RedisCall::Query { reply: to, .. }) => {
                self.answer(to, Err(why))
            }
            Op::Cmd(RedisCall::Sync { channel, shard }) => {
                self.to_shard(shard, HubMsg::ClusterSynced { channel, epoch: None })
            }
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

    fn answer(&self, to: ReplyTo, result: Result<&str, &str>) {
        match to {
            ReplyTo::Client(origin) => {
                let body = match result {
                    Ok(result) => protocol::reply_ok(origin.id, result),
                    Err(why) => protocol::reply_error(Some(origin.id), code::UNAVAILABLE, why),
                };
                self.to_shard(origin.shard as usize, HubMsg::Answer { to: origin, body });
            }
            // Dropping the sender tells the API the call failed (503).
            ReplyTo::Admin(tx) => {
                if let Ok(result) = result {
                    let _ = tx.send(result.to_string());
                }
            }
        }
    }

    fn to_shard(&self, shard: usize, msg: HubMsg) {
        if self.setup.shards.to(shard, msg).is_err() {
            self.state.drop_one();
        }
    }

    fn presence_json(&mut self, channel: &str, reply: Value) -> String {
        let mut users: std::collections::BTreeMap<String, i64> = Default::default();
        let (mut anonymous, mut total) = (0, 0);
        let items = reply.into_array();
        let mut dead = Vec::new();
        for pair in items.chunks(2) {
            let (Some(field), Some(count)) = (pair[0].as_str(), pair.get(1).and_then(Value::as_int)) else {
                continue;
            };
            let (node, user) = field.split_once('|').unwrap_or((field, ""));
            if !self.live.contains(node) {
                if self.dead.contains(node) {
                    dead.push(field.to_string());
                }
                continue;
            }
            total += count;
            match user {
                "" => anonymous += count,
                user => *users.entry(user.to_string()).or_default() += count,
            }
        }
        if !dead.is_empty() {
            let mut args = vec!["HDEL".to_string(), keys::presence(channel)];
            args.extend(dead);
            self.enqueue(Op::Raw(args));
        }
        let users: Vec<String> = users.iter().map(|(u, n)| format!("{}:{n}", json_string(u))).collect();
        format!(
            "{{\"users\":{{{}}},\"anonymous\":{anonymous},\"total\":{total}}}",
            users.join(",")
        )
    }

    /// `--max-connections-per-user` across nodes: the oldest connections
    /// over the limit are kicked wherever they are.
    fn enforce_max(&mut self, user: &Arc<str>, reply: Value) {
        let max = self.setup.max_connections_per_user;
        let items = reply.into_array();
        let live: Vec<&str> = items
            .chunks(2)
            .filter_map(|pair| pair[0].as_str())
            .filter(|member| member.split('|').next().is_some_and(|node| self.live.contains(node)))
            .collect();
        if max == 0 || live.len() <= max {
            return;
        }
        let over: Vec<String> = live[..live.len() - max].iter().map(|m| m.to_string()).collect();
        for member in over {
            self.kick(&member);
            self.enqueue(Op::Raw(vec!["ZREM".into(), keys::user(user), member]));
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
        let state = vec![vec![
            "HSET".to_string(),
            keys::NODES.into(),
            node,
            format!("{connections}|{now}"),
        ]];
        let read = vec![vec!["HGETALL".to_string(), keys::NODES.into()]];
        let reply = self.exchange(&state, &read)?.pop().unwrap_or(Value::Nil);
        let ttl_ms = self.setup.config.node_ttl.as_millis() as u64;
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
        // Remembered (bounded) so their presence entries can go when a
        // query meets them, after they left the node list.
        if self.dead.len() + dead.len() > MAX_DEAD_NODES_REMEMBERED {
            self.dead.clear();
        }
        self.dead.extend(dead.iter().cloned());
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ttl_secs(rule: &HistoryRule) -> u64 {
    (rule.ttl_ticks / TICKS_PER_SEC).max(1) as u64
}

/// A fresh epoch, used only if the channel has none in Redis yet.
fn new_epoch() -> String {
    format!("{:x}{:04x}", unix_ms(), random_u64() & 0xffff)
}

fn epoch_offset(reply: &Value) -> (String, u64) {
    match reply {
        Value::Array(items) if items.len() >= 2 => (
            items[0].as_str().unwrap_or_default().to_string(),
            items[1].as_int().unwrap_or(0) as u64,
        ),
        _ => (String::new(), 0),
    }
}

/// `{epoch, offset, entries}` of the READ script, entries oldest first,
/// without those older than the rule's TTL.
fn read_reply(reply: Value, rule: &HistoryRule) -> (Option<String>, u64, Vec<Entry>) {
    let mut items = reply.into_array().into_iter();
    let epoch = items.next().and_then(|e| e.as_str().map(str::to_string));
    let offset = items.next().and_then(|o| o.as_int()).unwrap_or(0) as u64;
    let oldest = unix_ms().saturating_sub(ttl_secs(rule) * 1000);
    let mut entries: Vec<Entry> = items
        .next()
        .map(Value::into_array)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let mut parts = entry.into_array().into_iter();
            let id = parts.next()?;
            let offset = id.as_str()?.split('-').next()?.parse().ok()?;
            let fields = parts.next()?.into_array();
            let (mut data, mut at) = (None, 0);
            for pair in fields.chunks(2) {
                match pair[0].as_bytes() {
                    Some(b"d") => data = pair.get(1).and_then(Value::as_str).map(Arc::<str>::from),
                    Some(b"t") => at = pair.get(1).and_then(Value::as_int).unwrap_or(0) as u64,
                    _ => {}
                }
            }
            (at >= oldest).then_some(Entry {
                offset,
                at: 0,
                data: data?,
            })
        })
        .collect();
    entries.sort_by_key(|e| e.offset);
    (epoch, offset, entries)
}

fn history_json(reply: Value, rule: &HistoryRule) -> String {
    let (epoch, offset, entries) = read_reply(reply, rule);
    let epoch = epoch.map_or_else(|| "null".to_string(), |e| json_string(&e));
    format!(
        "{{\"epoch\":{epoch},\"offset\":{offset},\"publications\":{}}}",
        publications_json(&entries)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn read_replies_become_entries_oldest_first_without_expired_ones() {
        let now = unix_ms().to_string();
        let entry = |id: &str, data: &str, t: &str| {
            Value::Array(vec![
                bytes(id),
                Value::Array(vec![bytes("d"), bytes(data), bytes("t"), bytes(t)]),
            ])
        };
        let reply = Value::Array(vec![
            bytes("ep"),
            bytes("7"),
            Value::Array(vec![
                entry("7-0", "\"g\"", &now),
                entry("6-0", "\"f\"", &now),
                entry("5-0", "\"old\"", "1"),
            ]),
        ]);
        let rule = HistoryRule {
            size: 10,
            ttl_ticks: 100,
            max_bytes: usize::MAX,
        };
        let (epoch, offset, entries) = read_reply(reply, &rule);
        assert_eq!((epoch.as_deref(), offset), (Some("ep"), 7));
        assert_eq!(entries.iter().map(|e| e.offset).collect::<Vec<_>>(), [6, 7]);
        let empty = history_json(
            Value::Array(vec![Value::Nil, Value::Int(0), Value::Array(vec![])]),
            &rule,
        );
        assert_eq!(empty, r#"{"epoch":null,"offset":0,"publications":[]}"#);
    }
}
