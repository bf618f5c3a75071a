//! What a shard owns as the owner of channels and users: channel logs
//! (offsets, history, presence) and each user's open connections. Pure
//! bookkeeping: it answers with messages to send, the hub routes them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::config::{HubConfig, CLOSE_REPLACED};
use super::log::ChannelLog;
use super::protocol::{self, json_string};
use super::text_frame;
use crate::buf::Meter;
use crate::bus::cluster::{ClusterCmd, RedisCall};
use crate::bus::history::{Entry, Recovery};
use crate::bus::msg::{Confirmation, HubMsg, Origin, PendingSubscribe, Query, ReplyTo};
use crate::metrics::names;

/// What handling one message produced.
#[derive(Default)]
pub(crate) struct Out {
    /// Messages for shards (possibly this one).
    pub sends: Vec<(usize, HubMsg)>,
    /// Publications (and epoch notices) for every subscriber of the
    /// channel, in this order.
    pub deliver: Vec<Publication>,
    /// Cluster mode: what to ask of the Redis bridge.
    pub cluster: Vec<ClusterCmd>,
}

/// A publication the owner ordered, framed once for every subscriber.
#[derive(Debug)]
pub(crate) struct Publication {
    pub channel: Arc<str>,
    pub frame: Bytes,
    pub offset: u64,
    pub epoch: Arc<str>,
}

pub(crate) struct Owned {
    shard: usize,
    config: Arc<HubConfig>,
    logs: HashMap<Arc<str>, ChannelLog>,
    /// Channels with joins or leaves not yet pushed.
    presence_dirty: Vec<Arc<str>>,
    /// Open connections of each user this shard owns, oldest first.
    users: HashMap<Arc<str>, VecDeque<Origin>>,
    epochs: u64,
    /// Cluster mode: Redis sequences publications and holds the epochs.
    cluster: bool,
    /// Cluster mode: subscribes waiting for the channel's position.
    pending: HashMap<Arc<str>, Vec<PendingSubscribe>>,
    /// Charged for retained history.
    meter: Meter,
}

impl Owned {
    pub fn new(shard: usize, config: Arc<HubConfig>, meter: Meter) -> Owned {
        Owned {
            meter,
            shard,
            cluster: config.cluster.is_some(),
            pending: HashMap::new(),
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
            } => self.subscribe(channel, PendingSubscribe { from, user, recover }, tick, &mut out),
            HubMsg::Unsubscribe { channel, user, shard } => {
                if let Some(log) = self.logs.get_mut(&channel) {
                    log.remove_subscriber(user.as_ref(), shard);
                    self.note_presence(&channel);
                    if self.cluster {
                        out.cluster.push(ClusterCmd::Presence {
                            channel,
                            user,
                            delta: -1,
                        });
                    }
                }
            }
            HubMsg::Publish {
                channel,
                data,
                reply,
                idem,
            } if self.cluster => {
                let rule = self.config.history_for(&channel);
                out.cluster.push(ClusterCmd::Call(RedisCall::Publish {
                    channel,
                    data,
                    reply,
                    rule,
                    idem,
                }));
            }
            HubMsg::Query { channel, query, reply } if self.cluster => {
                let rule = self.config.history_for(&channel);
                out.cluster.push(ClusterCmd::Call(RedisCall::Query {
                    channel,
                    query,
                    reply,
                    rule,
                }));
            }
            HubMsg::Publish {
                channel, data, reply, ..
            } => {
                let budget = Arc::clone(self.meter.budget());
                let log = self.log(&channel, tick);
                let offset = log.append(Arc::clone(&data), tick);
                let result = format!("{{\"offset\":{offset},\"epoch\":{}}}", json_string(&log.epoch));
                out.deliver.push(Publication {
                    frame: text_frame(&protocol::push_publication(&channel, offset, &data), &budget),
                    channel: Arc::clone(&channel),
                    offset,
                    epoch: Arc::clone(&log.epoch),
                });
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
                if self.cluster {
                    let user = Arc::clone(&user);
                    out.cluster.push(ClusterCmd::UserOffline { user, conn });
                }
                if let Some(conns) = self.users.get_mut(&user) {
                    conns.retain(|c| (c.shard, c.key, c.generation) != (conn.shard, conn.key, conn.generation));
                    if conns.is_empty() {
                        self.users.remove(&user);
                    }
                }
            }
            HubMsg::ClusterPublication {
                channel,
                epoch,
                offset,
                data,
            } => self.cluster_publication(channel, epoch, offset, data, tick, &mut out),
            HubMsg::ClusterSynced { channel, epoch } => self.synced(channel, epoch, tick, &mut out),
            HubMsg::ClusterRecovered {
                channel,
                epoch,
                entries,
                sub,
            } => self.recovered(channel, epoch, entries, *sub, tick, &mut out),
            other => tracing::warn!(shard = self.shard, ?other, "not an owner message"),
        }
        out
    }

    /// Counts a subscriber and answers with the channel's position. In
    /// cluster mode the position must be Redis's: a channel this node has
    /// no synced log for waits for it, and a recovery older than the local
    /// history waits for Redis's history.
    fn subscribe(&mut self, channel: Arc<str>, sub: PendingSubscribe, tick: u32, out: &mut Out) {
        if self.cluster {
            let synced = self.logs.get(&channel).is_some_and(|log| !log.epoch.is_empty());
            if !synced {
                let waiting = self.pending.entry(Arc::clone(&channel)).or_default();
                waiting.push(sub);
                if waiting.len() == 1 {
                    // Unsynced (no epoch): it keeps publications arriving meanwhile.
                    self.log(&channel, tick);
                    out.cluster.push(ClusterCmd::Call(RedisCall::Sync {
                        channel,
                        shard: self.shard,
                    }));
                }
                return;
            }
            let older = self.logs.get(&channel).zip(sub.recover.as_ref());
            if older.is_some_and(|(log, from)| log.needs_older(from)) {
                let rule = self.config.history_for(&channel);
                let shard = self.shard;
                out.cluster.push(ClusterCmd::Call(RedisCall::Recover {
                    channel,
                    shard,
                    rule,
                    sub,
                }));
                return;
            }
        }
        let log = self.log(&channel, tick);
        let recovery = sub.recover.as_ref().map_or(Recovery::NotAsked, |r| log.recover(r));
        self.confirm(channel, sub, recovery, out);
    }

    fn confirm(&mut self, channel: Arc<str>, sub: PendingSubscribe, recovery: Recovery, out: &mut Out) {
        let Some(log) = self.logs.get_mut(&channel) else { return };
        log.add_subscriber(sub.user.as_ref(), sub.from.shard);
        let (epoch, offset) = (Arc::clone(&log.epoch), log.last);
        self.note_presence(&channel);
        if self.cluster {
            let (channel, user) = (Arc::clone(&channel), sub.user.clone());
            out.cluster.push(ClusterCmd::Presence {
                channel,
                user,
                delta: 1,
            });
        }
        let reply = HubMsg::Subscribed(Confirmation {
            channel,
            to: sub.from,
            epoch,
            offset,
            recovery,
            user: sub.user,
        });
        out.sends.push((sub.from.shard as usize, reply));
    }

    /// Cluster mode: a publication in Redis's order. Channels this node has
    /// no log for (no subscriber, no history here) are skipped.
    fn cluster_publication(
        &mut self,
        channel: Arc<str>,
        epoch: Arc<str>,
        offset: u64,
        data: Arc<str>,
        tick: u32,
        out: &mut Out,
    ) {
        let Some(log) = self.logs.get_mut(&channel) else { return };
        log.expire(tick);
        let previous = changed_epoch(log, &epoch);
        if log.append_at(&epoch, offset, Arc::clone(&data), tick) {
            if let Some(previous) = previous {
                let notice = self.epoch_notice(&channel, &epoch, &previous, offset.saturating_sub(1), "lost");
                out.deliver.push(notice);
            }
            let frame = text_frame(
                &protocol::push_publication(&channel, offset, &data),
                self.meter.budget(),
            );
            out.deliver.push(Publication {
                channel,
                frame,
                offset,
                epoch,
            });
        }
    }

    /// Cluster mode: Redis's position arrived; answer the waiting subscribes.
    fn synced(&mut self, channel: Arc<str>, position: Option<(Arc<str>, u64)>, tick: u32, out: &mut Out) {
        let waiting = self.pending.remove(&channel).unwrap_or_default();
        let Some((epoch, offset)) = position else {
            for sub in waiting {
                let failed = HubMsg::SubscribeFailed {
                    channel: Arc::clone(&channel),
                    to: sub.from,
                };
                out.sends.push((sub.from.shard as usize, failed));
            }
            return;
        };
        if waiting.is_empty() && !self.logs.contains_key(&channel) {
            return; // a re-sync after a reconnect, for a channel gone meanwhile
        }
        let log = self.log(&channel, tick);
        let previous = changed_epoch(log, &epoch);
        log.sync(&epoch, offset);
        if let Some(previous) = previous {
            let notice = self.epoch_notice(&channel, &epoch, &previous, offset, "lost");
            out.deliver.push(notice);
        }
        for sub in waiting {
            self.subscribe(Arc::clone(&channel), sub, tick, out);
        }
    }

    /// Cluster mode: the push that tells every subscriber of `channel` that
    /// its epoch changed (counted and logged: Redis lost the channel).
    fn epoch_notice(
        &self,
        channel: &Arc<str>,
        epoch: &Arc<str>,
        previous: &str,
        offset: u64,
        reason: &str,
    ) -> Publication {
        metrics::counter!(names::CLUSTER_EPOCH_CHANGES).increment(1);
        tracing::warn!(channel = %channel, epoch = %epoch, previous, offset, reason, "cluster: channel epoch changed under live subscribers; each is told");
        Publication {
            channel: Arc::clone(channel),
            frame: text_frame(
                &protocol::push_epoch(channel, epoch, previous, offset, reason),
                self.meter.budget(),
            ),
            offset,
            epoch: Arc::clone(epoch),
        }
    }

    /// Cluster mode: Redis's history for one subscriber's recovery.
    fn recovered(
        &mut self,
        channel: Arc<str>,
        epoch: Option<Arc<str>>,
        entries: Option<Vec<Entry>>,
        sub: PendingSubscribe,
        tick: u32,
        out: &mut Out,
    ) {
        let Some(log) = self.logs.get(&channel).filter(|log| !log.epoch.is_empty()) else {
            return self.subscribe(channel, sub, tick, out); // the log went meanwhile: sync again
        };
        let Some(from) = sub.recover.as_ref() else { return };
        let recovery = match (epoch, entries) {
            (Some(epoch), Some(entries)) if epoch == log.epoch => log.recover_with(from, entries),
            (_, Some(_)) => Recovery::Impossible("epoch changed: the channel's history was lost"),
            (_, None) => Recovery::Impossible("history gone: the cluster's history is unreachable"),
        };
        self.confirm(channel, sub, recovery, out);
    }

    fn log(&mut self, channel: &Arc<str>, tick: u32) -> &mut ChannelLog {
        if !self.logs.contains_key(channel) {
            // Cluster mode: the epoch is Redis's, set when it is known.
            let epoch = if self.cluster { Arc::from("") } else { self.new_epoch() };
            let rule = self.config.history_for(channel);
            let log = ChannelLog::new(epoch, rule, self.meter.clone());
            self.logs.insert(Arc::clone(channel), log);
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
        if self.cluster {
            let user = Arc::clone(&user);
            out.cluster.push(ClusterCmd::UserOnline { user, conn });
        }
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

    /// Shards with subscribers of `channel` (where its deliveries go).
    pub(crate) fn subscriber_shards(&self, channel: &str) -> Vec<usize> {
        self.logs
            .get(channel)
            .map(|log| log.shards().collect())
            .unwrap_or_default()
    }

    /// Presence changes since the last call, one frame per channel, with
    /// the shards that have subscribers (watchers are among them).
    pub(crate) fn presence_events(&mut self) -> Vec<(Arc<str>, Bytes, Vec<usize>)> {
        let mut events = Vec::new();
        for channel in std::mem::take(&mut self.presence_dirty) {
            let Some(log) = self.logs.get_mut(&channel) else {
                continue;
            };
            let joined: Vec<&str> = log.joined.iter().map(|u| &**u).collect();
            let left: Vec<&str> = log.left.iter().map(|u| &**u).collect();
            let frame = text_frame(&protocol::push_presence(&channel, &joined, &left), self.meter.budget());
            log.joined.clear();
            log.left.clear();
            let shards = log.shards().collect();
            if log.is_idle() && !self.pending.contains_key(&channel) {
                self.logs.remove(&channel);
            }
            events.push((channel, frame, shards));
        }
        events
    }

    /// Drops expired history and logs with nothing left to keep.
    /// Memory pressure: drops the oldest retained publications of all
    /// channels until about `bytes` are freed; returns how many went.
    pub(crate) fn trim_history(&mut self, bytes: u64) -> usize {
        let mut ages: Vec<(u32, usize)> = self.logs.values().flat_map(|log| log.ages()).collect();
        ages.sort_unstable_by_key(|&(at, _)| at);
        let mut freed = 0u64;
        let mut cutoff = None;
        for (at, cost) in ages {
            if freed >= bytes {
                break;
            }
            freed += cost as u64;
            cutoff = Some(at);
        }
        let Some(cutoff) = cutoff else { return 0 };
        // Whole ticks go at once: entries of one tick are equally old.
        self.logs.values_mut().map(|log| log.trim_before(cutoff + 1)).sum()
    }

    pub fn expire(&mut self, tick: u32) {
        let pending = &self.pending;
        self.logs.retain(|channel, log| {
            log.expire(tick);
            !log.is_idle() || pending.contains_key(channel)
        });
    }
}

/// Cluster mode: the epoch `log` had before `epoch`, when it had one and
/// subscribers to tell.
fn changed_epoch(log: &ChannelLog, epoch: &Arc<str>) -> Option<Arc<str>> {
    let changed = !log.epoch.is_empty() && *log.epoch != **epoch;
    (changed && log.shards().next().is_some()).then(|| Arc::clone(&log.epoch))
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
pub(crate) fn publications_json(entries: &[Entry]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|e| format!("{{\"offset\":{},\"data\":{}}}", e.offset, e.data))
        .collect();
    format!("[{}]", items.join(","))
}
