//! What a shard owns as the owner of channels and users: channel logs
//! (offsets, history, presence) and each user's open connections. Pure
//! bookkeeping: it answers with messages to send, the hub routes them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::config::{HubConfig, CLOSE_REPLACED};
use super::log::{ChannelLog, Entry, Recovery};
use super::msg::{Confirmation, HubMsg, Origin, Query, ReplyTo};
use super::protocol::{self, json_string};
use super::text_frame;

/// What handling one message produced.
#[derive(Default)]
pub struct Out {
    /// Messages for shards (possibly this one).
    pub sends: Vec<(usize, HubMsg)>,
    /// A publication frame for every subscriber of the channel.
    pub deliver: Option<(Arc<str>, Bytes)>,
}

pub struct Owned {
    shard: usize,
    config: Arc<HubConfig>,
    logs: HashMap<Arc<str>, ChannelLog>,
    /// Channels with joins or leaves not yet pushed.
    presence_dirty: Vec<Arc<str>>,
    /// Open connections of each user this shard owns, oldest first.
    users: HashMap<Arc<str>, VecDeque<Origin>>,
    epochs: u64,
}

impl Owned {
    pub fn new(shard: usize, config: Arc<HubConfig>) -> Owned {
        Owned {
            shard,
            config,
            logs: HashMap::new(),
            presence_dirty: Vec::new(),
            users: HashMap::new(),
            epochs: 0,
        }
    }

    /// Channels with a live log here.
    pub fn channels(&self) -> usize {
        self.logs.len()
    }

    pub fn handle(&mut self, msg: HubMsg, tick: u32) -> Out {
        let mut out = Out::default();
        match msg {
            HubMsg::Subscribe {
                channel,
                from,
                user,
                recover,
            } => {
                let log = self.log(&channel, tick);
                let recovery = recover.map_or(Recovery::NotAsked, |r| log.recover(&r));
                log.add_subscriber(user.as_ref());
                let (epoch, offset) = (Arc::clone(&log.epoch), log.last);
                self.note_presence(&channel);
                let reply = HubMsg::Subscribed(Confirmation {
                    channel,
                    to: from,
                    epoch,
                    offset,
                    recovery,
                    user,
                });
                out.sends.push((from.shard as usize, reply));
            }
            HubMsg::Unsubscribe { channel, user } => {
                if let Some(log) = self.logs.get_mut(&channel) {
                    log.remove_subscriber(user.as_ref());
                    self.note_presence(&channel);
                }
            }
            HubMsg::Publish { channel, data, reply } => {
                let log = self.log(&channel, tick);
                let offset = log.append(Arc::clone(&data), tick);
                let result = format!("{{\"offset\":{offset},\"epoch\":{}}}", json_string(&log.epoch));
                out.deliver = Some((
                    Arc::clone(&channel),
                    text_frame(&protocol::push_publication(&channel, offset, &data)),
                ));
                if let Some(reply) = reply {
                    answer(reply, &result, &mut out);
                }
            }
            HubMsg::Query { channel, query, reply } => {
                let result = self.query(&channel, query, tick);
                answer(reply, &result, &mut out);
            }
            HubMsg::UserOnline { user, conn } => self.user_online(user, conn, &mut out),
            HubMsg::UserOffline { user, conn } => {
                if let Some(conns) = self.users.get_mut(&user) {
                    conns.retain(|c| (c.shard, c.key, c.generation) != (conn.shard, conn.key, conn.generation));
                    if conns.is_empty() {
                        self.users.remove(&user);
                    }
                }
            }
            other => tracing::warn!(shard = self.shard, ?other, "not an owner message"),
        }
        out
    }

    fn log(&mut self, channel: &Arc<str>, tick: u32) -> &mut ChannelLog {
        if !self.logs.contains_key(channel) {
            let epoch = self.new_epoch();
            let rule = self.config.history_for(channel);
            self.logs.insert(Arc::clone(channel), ChannelLog::new(epoch, rule));
        }
        // Inserted just above when missing.
        let log = self.logs.get_mut(channel).expect("log exists");
        log.expire(tick);
        log
    }

    /// A fresh epoch: a log that was lost and made again gets a new one, so
    /// clients holding offsets of the old log are told recovery is impossible.
    fn new_epoch(&mut self) -> Arc<str> {
        self.epochs += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        format!("{:x}{:x}{:x}", nanos, self.shard, self.epochs).into()
    }

    fn note_presence(&mut self, channel: &Arc<str>) {
        let Some(log) = self.logs.get(channel) else { return };
        if (!log.joined.is_empty() || !log.left.is_empty()) && !self.presence_dirty.contains(channel) {
            self.presence_dirty.push(Arc::clone(channel));
        }
    }

    fn query(&mut self, channel: &Arc<str>, query: Query, tick: u32) -> String {
        let Some(log) = self.logs.get_mut(channel) else {
            return match query {
                Query::Presence => r#"{"users":{},"anonymous":0,"total":0}"#.into(),
                Query::History { .. } => r#"{"epoch":null,"offset":0,"publications":[]}"#.into(),
            };
        };
        log.expire(tick);
        match query {
            Query::Presence => {
                let (users, anonymous) = log.presence();
                let users: Vec<String> = users.iter().map(|(u, n)| format!("{}:{n}", json_string(u))).collect();
                let total = log.subscribers();
                format!(
                    "{{\"users\":{{{}}},\"anonymous\":{anonymous},\"total\":{total}}}",
                    users.join(",")
                )
            }
            Query::History { limit } => format!(
                "{{\"epoch\":{},\"offset\":{},\"publications\":{}}}",
                json_string(&log.epoch),
                log.last,
                publications_json(&log.recent(limit))
            ),
        }
    }

    /// `--max-connections-per-user`: the newest connection stays, the
    /// oldest is closed with 4001 "replaced".
    fn user_online(&mut self, user: Arc<str>, conn: Origin, out: &mut Out) {
        let max = self.config.max_connections_per_user;
        let conns = self.users.entry(user).or_default();
        conns.push_back(conn);
        while max > 0 && conns.len() > max {
            let Some(oldest) = conns.pop_front() else { break };
            let kick = HubMsg::Kick {
                conn: oldest,
                code: CLOSE_REPLACED,
                reason: "replaced".into(),
            };
            out.sends.push((oldest.shard as usize, kick));
        }
    }

    /// The owned channels: name, epoch, last offset, subscribers.
    pub fn list(&self) -> String {
        let items: Vec<String> = self
            .logs
            .iter()
            .map(|(name, log)| {
                format!(
                    "{{\"channel\":{},\"epoch\":{},\"offset\":{},\"subscribers\":{}}}",
                    json_string(name),
                    json_string(&log.epoch),
                    log.last,
                    log.subscribers()
                )
            })
            .collect();
        format!("[{}]", items.join(","))
    }

    /// Presence changes since the last call, one frame per channel.
    pub fn presence_events(&mut self) -> Vec<(Arc<str>, Bytes)> {
        let mut events = Vec::new();
        for channel in std::mem::take(&mut self.presence_dirty) {
            let Some(log) = self.logs.get_mut(&channel) else {
                continue;
            };
            let joined: Vec<&str> = log.joined.iter().map(|u| &**u).collect();
            let left: Vec<&str> = log.left.iter().map(|u| &**u).collect();
            let frame = text_frame(&protocol::push_presence(&channel, &joined, &left));
            log.joined.clear();
            log.left.clear();
            if log.is_idle() {
                self.logs.remove(&channel);
            }
            events.push((channel, frame));
        }
        events
    }

    /// Drops expired history and logs with nothing left to keep.
    pub fn expire(&mut self, tick: u32) {
        self.logs.retain(|_, log| {
            log.expire(tick);
            !log.is_idle()
        });
    }
}

fn answer(reply: ReplyTo, result: &str, out: &mut Out) {
    match reply {
        ReplyTo::Client(to) => {
            let body = protocol::reply_ok(to.id, result);
            out.sends.push((to.shard as usize, HubMsg::Answer { to, body }));
        }
        ReplyTo::Admin(tx) => {
            let _ = tx.send(result.to_string());
        }
    }
}

/// `[{"offset":N,"data":...},...]`
pub fn publications_json(entries: &[Entry]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|e| format!("{{\"offset\":{},\"data\":{}}}", e.offset, e.data))
        .collect();
    format!("[{}]", items.join(","))
}
