//! What a shard owns as the owner of channels and users: channel logs
//! (offsets, history, presence) and each user's open connections. Pure
//! bookkeeping: it answers with messages to send, the hub routes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::config::{HubConfig, CLOSE_REPLACED};
use super::frame::{publication, text_frame};
use super::log::{cap_recovery, ChannelLog, Page};
use super::mailbox::{self, Mail};
use super::protocol::{self, code, json_string};
use super::users::Users;
use crate::buf::Meter;
use crate::bus::cluster::{ClusterCmd, RedisCall, SyncFor};
use crate::bus::history::{Entry, Recovery};
use crate::bus::msg::{Confirmation, HubMsg, Origin, PendingSubscribe, Query, ReplyTo};
use crate::bus::wanted::Wanted;
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
    /// Messages kept in a user's mailbox, for the user's connections
    /// (instead of `deliver`: see `mailbox.rs`).
    pub mail: Vec<Mail>,
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
    /// Open connections of each user this shard owns, oldest first (keyed
    /// with `id` 0: a connection is its shard, key and generation).
    users: Users<Origin>,
    epochs: u64,
    /// Cluster mode: Redis sequences publications and holds the epochs.
    cluster: bool,
    /// Cluster mode: subscribes waiting for the channel's position.
    pending: HashMap<Arc<str>, Vec<PendingSubscribe>>,
    /// Cluster mode: the subscribe whose command made the channel's log
    /// here, until it is confirmed (it counts against the connection's
    /// `--max-new-channels-per-minute` then, as on one node).
    made_by: HashMap<Arc<str>, Origin>,
    /// Charged for retained history.
    meter: Meter,
    /// Cluster mode: the node's set of channels with a log, kept as `logs`
    /// changes (the subscriber connection passes on only their publications).
    wanted: Option<Arc<Wanted>>,
    /// Cluster mode: channels whose log was dropped since the hub last
    /// asked (`take_dropped`): no longer subscribed to here.
    dropped: Vec<Arc<str>>,
    /// `send`s refused over the sender's share of a mailbox.
    refused_share: metrics::Counter,
}

impl Owned {
    pub fn new(shard: usize, config: Arc<HubConfig>, meter: Meter) -> Owned {
        Owned {
            meter,
            refused_share: metrics::counter!(names::MAILBOX_REFUSED, "reason" => "sender_share"),
            shard,
            cluster: config.cluster.is_some(),
            pending: HashMap::new(),
            made_by: HashMap::new(),
            config,
            logs: HashMap::new(),
            presence_dirty: Vec::new(),
            users: Users::default(),
            epochs: 0,
            wanted: None,
            dropped: Vec::new(),
        }
    }

    /// Cluster mode: keep `wanted` to the channels with a log here.
    pub fn wanting(mut self, wanted: Option<Arc<Wanted>>) -> Owned {
        self.wanted = wanted;
        self
    }

    /// Drops `channel`'s log (and the node's wish for its publications).
    fn drop_log(&mut self, channel: &str) {
        if let Some((channel, _)) = self.logs.remove_entry(channel) {
            self.meter.budget().count_channels(-1);
            if let Some(wanted) = &self.wanted {
                wanted.remove(&channel);
                self.dropped.push(channel);
            }
        }
    }

    /// Cluster mode: the channels whose log was dropped since the last call.
    pub(crate) fn take_dropped(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.dropped)
    }

    /// Channels with a live log here.
    pub fn channels(&self) -> usize {
        self.logs.len()
    }

    /// Entries the per-user bookkeeping touched so far (see `users.rs`).
    #[cfg(test)]
    pub fn user_work(&self) -> u64 {
        self.users.work()
    }

    pub fn handle(&mut self, msg: HubMsg, tick: u32) -> Out {
        let mut out = Out::default();
        match msg {
            HubMsg::Subscribe {
                channel,
                from,
                user,
                recover,
                may_create,
            } => {
                let sub = PendingSubscribe {
                    from,
                    user,
                    recover,
                    may_create,
                };
                self.subscribe(channel, sub, tick, &mut out)
            }
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
                may_create,
            } if self.cluster => {
                // Whether it makes the channel is Redis's to say (the
                // script refuses a new one without `may_create`, and the
                // answer counts one it made); a channel with a log here is
                // not new.
                let may_create = may_create || self.logs.contains_key(&channel);
                let rule = self.config.history_for(&channel);
                out.cluster.push(ClusterCmd::Call(RedisCall::Publish {
                    channel,
                    data,
                    reply,
                    rule,
                    idem,
                    may_create,
                }));
            }
            HubMsg::Query { channel, query, reply } if self.cluster => {
                let rule = self.config.history_for(&channel);
                out.cluster.push(ClusterCmd::Call(RedisCall::Query {
                    channel,
                    query,
                    reply,
                    rule,
                    max_reply_bytes: self.config.max_reply_bytes,
                }));
            }
            HubMsg::Publish {
                channel,
                data,
                reply,
                may_create,
                ..
            } => {
                let budget = Arc::clone(self.meter.budget());
                let (log, created) = match self.log_for_client(&channel, tick, may_create) {
                    Ok(made) => made,
                    Err(why) => {
                        if let Some(reply) = reply {
                            refuse(reply, code::CHANNEL_LIMIT, why, &mut out);
                        }
                        return out;
                    }
                };
                if let Err(why) = log.admits(&data) {
                    // Refused before an offset is taken: the mailbox's
                    // offsets stay contiguous (see `mailbox::Shares`).
                    self.refused_share.increment(1);
                    if let Some(reply) = reply {
                        refuse(reply, code::MAILBOX_SHARE, why, &mut out);
                    }
                    return out;
                }
                let offset = log.append(Arc::clone(&data), tick);
                let result = format!("{{\"offset\":{offset},\"epoch\":{}}}", json_string(&log.epoch));
                if mailbox::user_of(&channel).is_some() {
                    out.mail
                        .extend(mailbox::mail(&channel, &data, offset, &log.epoch, &budget));
                } else {
                    out.deliver.push(Publication {
                        frame: publication(&channel, offset, &data, &budget),
                        channel: Arc::clone(&channel),
                        offset,
                        epoch: Arc::clone(&log.epoch),
                    });
                }
                if let Some(reply) = reply {
                    answer_created(reply, &result, created, &mut out);
                }
            }
            HubMsg::Query { channel, query, reply } => {
                let result = self.query(&channel, query, tick);
                answer(reply, &result, &mut out);
            }
            HubMsg::UserOnline { user, conn, since } => self.user_online(user, conn, since, &mut out),
            HubMsg::UserOffline { user, conn } => {
                if self.cluster {
                    let user = Arc::clone(&user);
                    out.cluster.push(ClusterCmd::UserOffline { user, conn });
                }
                self.users.remove(&user, &Origin { id: 0, ..conn });
            }
            HubMsg::ClusterPublication {
                channel,
                epoch,
                offset,
                data,
            } => self.cluster_publication(channel, epoch, offset, data, tick, &mut out),
            HubMsg::ClusterSynced { channel, epoch, why } => self.synced(channel, epoch, why, tick, &mut out),
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
                if !self.logs.contains_key(&channel) {
                    if let Err(why) = self.may_make(sub.may_create) {
                        return fail_subscribe(channel, sub.from, code::CHANNEL_LIMIT, why, out);
                    }
                    // This subscribe makes the channel: counted when confirmed.
                    self.made_by.insert(Arc::clone(&channel), sub.from);
                }
                let waiting = self.pending.entry(Arc::clone(&channel)).or_default();
                waiting.push(sub);
                if waiting.len() == 1 {
                    // Unsynced (no epoch): it keeps publications arriving meanwhile.
                    self.log(&channel, tick);
                    out.cluster.push(ClusterCmd::Call(RedisCall::Sync {
                        channel,
                        shard: self.shard,
                        why: SyncFor::Subscribe,
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
        let (log, created) = match self.log_for_client(&channel, tick, sub.may_create) {
            Ok(made) => made,
            Err(why) => return fail_subscribe(channel, sub.from, code::CHANNEL_LIMIT, why, out),
        };
        let recovery = sub.recover.as_ref().map_or(Recovery::NotAsked, |r| log.recover(r));
        let created = created || self.made_for(&channel, sub.from);
        self.confirm(channel, sub, recovery, created, out);
    }

    /// Cluster mode: whether the subscribe from `from` made the channel
    /// (asked once, when it is answered).
    fn made_for(&mut self, channel: &Arc<str>, from: Origin) -> bool {
        let made = self.made_by.get(channel) == Some(&from);
        if made {
            self.made_by.remove(channel);
        }
        made
    }

    /// Whether a client's command may make a new channel: the connection
    /// has creations left this minute and the node is under `--max-channels`.
    fn may_make(&self, may_create: bool) -> Result<(), &'static str> {
        if !may_create {
            return Err("too many new channels from this connection this minute (--max-new-channels-per-minute)");
        }
        if self.meter.budget().channels() >= self.config.max_channels as u64 {
            return Err("the server holds its maximum number of channels (--max-channels)");
        }
        Ok(())
    }

    /// The channel's log for a client's command, made if allowed; with
    /// whether it was made.
    fn log_for_client(
        &mut self,
        channel: &Arc<str>,
        tick: u32,
        may_create: bool,
    ) -> Result<(&mut ChannelLog, bool), &'static str> {
        let created = !self.logs.contains_key(channel);
        if created {
            self.may_make(may_create)?;
        }
        Ok((self.log(channel, tick), created))
    }

    fn confirm(&mut self, channel: Arc<str>, sub: PendingSubscribe, recovery: Recovery, created: bool, out: &mut Out) {
        let Some(log) = self.logs.get_mut(&channel) else { return };
        // A reply is bounded like every other: too much to recover in one
        // says to page through history instead.
        let recovery = cap_recovery(recovery, self.config.max_reply_bytes);
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
            created,
            after: 0, // the count of deliveries to that shard: set as sent
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
        let Some(log) = self.logs.get_mut(&channel) else {
            // A mailbox's messages go to its user's connections here even
            // when nobody here subscribed to it (no log).
            out.mail
                .extend(mailbox::mail(&channel, &data, offset, &epoch, self.meter.budget()));
            return;
        };
        log.expire(tick);
        let previous = changed_epoch(log, &epoch);
        if log.append_at(&epoch, offset, Arc::clone(&data), tick) {
            if let Some(previous) = previous {
                let notice = self.epoch_notice(&channel, &epoch, &previous, offset.saturating_sub(1), "lost");
                out.deliver.push(notice);
            }
            if mailbox::user_of(&channel).is_some() {
                let budget = self.meter.budget();
                out.mail.extend(mailbox::mail(&channel, &data, offset, &epoch, budget));
                return;
            }
            let frame = publication(&channel, offset, &data, self.meter.budget());
            out.deliver.push(Publication {
                channel,
                frame,
                offset,
                epoch,
            });
        }
    }

    /// Cluster mode: Redis's position arrived; answer the waiting subscribes.
    fn synced(&mut self, channel: Arc<str>, position: Option<(Arc<str>, u64)>, why: SyncFor, tick: u32, out: &mut Out) {
        if why == SyncFor::Resync && self.pending.contains_key(&channel) {
            // Subscribes wait for an answer of their own, asked after this
            // one (the log was dropped and made again meanwhile, or a check
            // is under way): this one may be older than publications the
            // node skipped while it had no log.
            return;
        }
        let waiting = self.pending.remove(&channel).unwrap_or_default();
        let Some((epoch, offset)) = position else {
            self.made_by.remove(&channel); // nothing was made
            for sub in waiting {
                let why = "the cluster link is down; retry";
                fail_subscribe(Arc::clone(&channel), sub.from, code::UNAVAILABLE, why, out);
            }
            return;
        };
        if waiting.is_empty() && !self.logs.contains_key(&channel) {
            return; // a re-sync after a reconnect, for a channel gone meanwhile
        }
        let log = self.log(&channel, tick);
        if why == SyncFor::Resync && !log.epoch.is_empty() && log.epoch == epoch && offset < log.last {
            // Redis may have gone back to an older snapshot (its offsets
            // would name other publications than those delivered), or
            // publications after the answer came first. Redis compares now
            // and makes a new epoch if it went back (once, whichever node
            // asks first); the subscribes wait. A check's answer is final:
            // an offset behind then is only stale.
            tracing::debug!(channel = %channel, epoch = %epoch, offset, seen = log.last, "cluster: Redis's offset is behind this node's; asking Redis to check");
            let check = SyncFor::Check { epoch, seen: log.last };
            self.pending.entry(Arc::clone(&channel)).or_default().extend(waiting);
            out.cluster.push(ClusterCmd::Call(RedisCall::Sync {
                channel,
                shard: self.shard,
                why: check,
            }));
            return;
        }
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
        let created = self.made_for(&channel, sub.from);
        self.confirm(channel, sub, recovery, created, out);
    }

    fn log(&mut self, channel: &Arc<str>, tick: u32) -> &mut ChannelLog {
        if !self.logs.contains_key(channel) {
            // Cluster mode: the epoch is Redis's, set when it is known.
            let epoch = if self.cluster { Arc::from("") } else { self.new_epoch() };
            let rule = self.config.history_for(channel);
            let mut log = ChannelLog::new(epoch, rule, self.meter.clone());
            if mailbox::user_of(channel).is_some() {
                log = log.with_shares();
            }
            self.logs.insert(Arc::clone(channel), log);
            self.meter.budget().count_channels(1);
            // Before the subscribe that made it asks Redis for a position.
            if let Some(wanted) = &self.wanted {
                wanted.add(channel);
            }
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
                Query::History { .. } => r#"{"epoch":null,"offset":0,"publications":[],"more":false}"#.into(),
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
            Query::History { limit, since } => {
                let page = log.page(since, limit, self.config.max_reply_bytes);
                history_json(&log.epoch, log.last, &page)
            }
        }
    }

    /// `--max-connections-per-user`: the newest connection stays, the
    /// oldest is closed with 4001 "replaced".
    fn user_online(&mut self, user: Arc<str>, conn: Origin, since: std::time::Instant, out: &mut Out) {
        if self.cluster {
            let user = Arc::clone(&user);
            out.cluster.push(ClusterCmd::UserOnline { user, conn });
        }
        let max = self.config.max_connections_per_user;
        let mut count = self.users.add_at(&user, Origin { id: 0, ..conn }, since);
        while max > 0 && count > max {
            let Some(oldest) = self.users.pop_oldest(&user) else {
                break;
            };
            count -= 1;
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
    /// the shards that have subscribers (watchers are among them). Cluster
    /// mode: each push also goes to `cluster`, for the other nodes' watchers.
    pub(crate) fn presence_events(&mut self, cluster: &mut Vec<ClusterCmd>) -> Vec<(Arc<str>, Bytes, Vec<usize>)> {
        let mut events = Vec::new();
        for channel in std::mem::take(&mut self.presence_dirty) {
            let Some(log) = self.logs.get_mut(&channel) else {
                continue;
            };
            let joined: Vec<&str> = log.joined.iter().map(|u| &**u).collect();
            let left: Vec<&str> = log.left.iter().map(|u| &**u).collect();
            let json = protocol::push_presence(&channel, &joined, &left);
            let frame = text_frame(&json, self.meter.budget());
            if self.cluster {
                let channel = Arc::clone(&channel);
                cluster.push(ClusterCmd::ChannelPresence { channel, json });
            }
            log.joined.clear();
            log.left.clear();
            let shards = log.shards().collect();
            if log.is_idle() && !self.pending.contains_key(&channel) {
                self.drop_log(&channel);
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
        let idle: Vec<Arc<str>> = self
            .logs
            .iter_mut()
            .filter_map(|(channel, log)| {
                log.expire(tick);
                (log.is_idle() && !pending.contains_key(channel)).then(|| Arc::clone(channel))
            })
            .collect();
        for channel in idle {
            self.drop_log(&channel);
        }
    }
}

/// Cluster mode: the epoch `log` had before `epoch`, when it had one and
/// subscribers to tell.
fn changed_epoch(log: &ChannelLog, epoch: &Arc<str>) -> Option<Arc<str>> {
    let changed = !log.epoch.is_empty() && *log.epoch != **epoch;
    (changed && log.shards().next().is_some()).then(|| Arc::clone(&log.epoch))
}

fn answer(reply: ReplyTo, result: &str, out: &mut Out) {
    answer_created(reply, result, false, out)
}

/// The answer to a command that may have made a new channel.
fn answer_created(reply: ReplyTo, result: &str, created: bool, out: &mut Out) {
    match reply {
        ReplyTo::Client(to) => {
            let body = protocol::reply_ok(to.id, result);
            out.sends
                .push((to.shard as usize, HubMsg::Answer { to, body, created }));
        }
        ReplyTo::Admin(tx) => {
            let _ = tx.send(result.to_string());
        }
    }
}

/// `[{"offset":N,"data":...},...]`
/// A refused command: an error reply to a client; the admin API's waiting
/// call sees its answer channel dropped (503 "not done").
fn refuse(reply: ReplyTo, code: u16, why: &str, out: &mut Out) {
    if let ReplyTo::Client(to) = reply {
        let body = protocol::reply_error(Some(to.id), code, why);
        out.sends.push((
            to.shard as usize,
            HubMsg::Answer {
                to,
                body,
                created: false,
            },
        ));
    }
}

/// A subscribe the owner will not carry out: the asker undoes its pending
/// subscription and answers `code`.
fn fail_subscribe(channel: Arc<str>, to: Origin, code: u16, message: &'static str, out: &mut Out) {
    let failed = HubMsg::SubscribeFailed {
        channel,
        to,
        code,
        message,
    };
    out.sends.push((to.shard as usize, failed));
}

/// A `history` result: the channel's position and one page.
pub(crate) fn history_json(epoch: &str, offset: u64, page: &Page) -> String {
    format!(
        "{{\"epoch\":{},\"offset\":{offset},\"publications\":{},\"more\":{}}}",
        json_string(epoch),
        publications_json(&page.entries),
        page.more
    )
}

pub(crate) fn publications_json(entries: &[Entry]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|e| format!("{{\"offset\":{},\"data\":{}}}", e.offset, e.data))
        .collect();
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::cluster::ClusterConfig;
    use crate::bus::history::{HistoryRule, Recover};
    use std::time::Duration;

    fn owned(config: HubConfig) -> Owned {
        Owned::new(0, Arc::new(config), Meter::unlimited())
    }

    fn cluster_config() -> HubConfig {
        HubConfig {
            cluster: Some(ClusterConfig {
                sentinels: Vec::new(),
                master_name: None,
                ca_file: None,
                redis: "redis://127.0.0.1:1".into(),
                more_redis: Vec::new(),
                node: "n1".into(),
                node_ttl: Duration::from_secs(5),
            }),
            ..HubConfig::default()
        }
    }

    fn origin(shard: u16, key: u32, id: u64) -> Origin {
        Origin {
            shard,
            key,
            generation: 1,
            id,
        }
    }

    fn subscribe(from: Origin, user: Option<&str>, recover: Option<Recover>) -> HubMsg {
        HubMsg::Subscribe {
            channel: "c".into(),
            from,
            user: user.map(Arc::from),
            recover,
            may_create: true,
        }
    }

    fn unsubscribe(user: Option<&str>, shard: u16) -> HubMsg {
        HubMsg::Unsubscribe {
            channel: "c".into(),
            user: user.map(Arc::from),
            shard,
        }
    }

    fn publish(data: &str) -> HubMsg {
        HubMsg::Publish {
            channel: "c".into(),
            data: data.into(),
            reply: None,
            may_create: true,
            idem: None,
        }
    }

    /// The confirmations in `out`, as (shard sent to, confirmation).
    fn confirmations(out: Out) -> Vec<(usize, Confirmation)> {
        out.sends
            .into_iter()
            .filter_map(|(shard, msg)| match msg {
                HubMsg::Subscribed(c) => Some((shard, c)),
                _ => None,
            })
            .collect()
    }

    fn presence(owned: &mut Owned) -> serde_json::Value {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let query = HubMsg::Query {
            channel: "c".into(),
            query: Query::Presence,
            reply: ReplyTo::Admin(tx),
        };
        owned.handle(query, 1);
        serde_json::from_str(&rx.try_recv().unwrap()).unwrap()
    }

    /// Subscribers of "c" as `/api/channels` shows them (0: no log).
    fn subscribers(owned: &Owned) -> u64 {
        let list: serde_json::Value = serde_json::from_str(&owned.list()).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| c["subscribers"].as_u64().unwrap())
            .sum()
    }

    #[test]
    fn offsets_count_up_in_one_epoch_and_each_publication_is_framed_once() {
        let mut owned = owned(HubConfig::default());
        let first = owned.handle(publish("1"), 1).deliver.pop().unwrap();
        let second = owned.handle(publish("{\"a\":2}"), 1).deliver.pop().unwrap();
        assert_eq!((first.offset, second.offset), (1, 2));
        assert_eq!(first.epoch, second.epoch);
        let push: serde_json::Value = serde_json::from_slice(&second.frame[2..]).unwrap();
        assert_eq!(
            (push["offset"].clone(), push["data"]["a"].clone()),
            (2.into(), 2.into())
        );
        // A subscriber learns the position it starts after.
        let confirmed = confirmations(owned.handle(subscribe(origin(1, 4, 9), None, None), 1));
        assert_eq!(confirmed.len(), 1);
        let (shard, c) = &confirmed[0];
        assert_eq!((*shard, c.offset, c.to.id), (1, 2, 9));
        assert_eq!(c.epoch, first.epoch);
    }

    #[test]
    fn recovery_gives_exactly_what_was_missed_in_the_same_epoch_only() {
        let mut owned = owned(HubConfig::default());
        let epoch = owned.handle(publish("1"), 1).deliver.pop().unwrap().epoch;
        owned.handle(publish("2"), 1);
        owned.handle(publish("3"), 1);
        let from = |offset, epoch: &str| {
            Some(Recover {
                offset,
                epoch: epoch.into(),
            })
        };
        let c = confirmations(owned.handle(subscribe(origin(0, 1, 1), None, from(1, &epoch)), 1)).remove(0);
        let Recovery::Recovered(entries) = c.1.recovery else {
            panic!("{:?}", c.1.recovery)
        };
        assert_eq!(entries.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![2, 3]);
        let c = confirmations(owned.handle(subscribe(origin(0, 2, 1), None, from(1, "old")), 1)).remove(0);
        assert!(matches!(c.1.recovery, Recovery::Impossible(why) if why.starts_with("epoch changed")));
    }

    #[test]
    fn a_log_made_again_gets_a_new_epoch() {
        let config = HubConfig {
            history: HistoryRule {
                size: 0,
                ttl_ticks: 1,
                max_bytes: usize::MAX,
            },
            ..HubConfig::default()
        };
        let mut owned = owned(config);
        let c = confirmations(owned.handle(subscribe(origin(0, 1, 1), None, None), 1))
            .remove(0)
            .1;
        owned.handle(unsubscribe(None, 0), 1);
        owned.presence_events(&mut Vec::new());
        owned.expire(2);
        assert_eq!(owned.channels(), 0, "an idle log is dropped");
        let again = confirmations(owned.handle(subscribe(origin(0, 1, 2), None, None), 3))
            .remove(0)
            .1;
        assert_ne!(again.epoch, c.epoch, "a lost log is a new epoch");
    }

    #[test]
    fn unsubscribes_bring_presence_and_subscriber_shards_back_to_the_truth() {
        let mut owned = owned(HubConfig::default());
        owned.handle(subscribe(origin(0, 1, 1), Some("alice"), None), 1);
        owned.handle(subscribe(origin(1, 1, 1), Some("alice"), None), 1);
        owned.handle(subscribe(origin(1, 2, 1), None, None), 1);
        let p = presence(&mut owned);
        assert_eq!((p["total"].clone(), p["users"]["alice"].clone()), (3.into(), 2.into()));
        assert_eq!(owned.subscriber_shards("c"), vec![0, 1]);
        owned.handle(unsubscribe(Some("alice"), 1), 1);
        owned.handle(unsubscribe(None, 1), 1);
        let p = presence(&mut owned);
        assert_eq!((p["total"].clone(), p["anonymous"].clone()), (1.into(), 0.into()));
        assert_eq!(
            owned.subscriber_shards("c"),
            vec![0],
            "no delivery goes to shard 1 any more"
        );
        owned.handle(unsubscribe(Some("alice"), 0), 1);
        assert_eq!(presence(&mut owned)["total"], 0);
        // The joins and leaves reach the watchers once, then the log goes.
        let events = owned.presence_events(&mut Vec::new());
        assert_eq!(events.len(), 1);
        let push: serde_json::Value = serde_json::from_slice(&events[0].1[2..]).unwrap();
        assert_eq!(
            (push["joined"][0].clone(), push["left"][0].clone()),
            ("alice".into(), "alice".into())
        );
        assert_eq!(owned.list(), "[]");
    }

    #[test]
    fn an_undo_for_a_channel_the_owner_forgot_is_harmless() {
        let mut owned = owned(HubConfig::default());
        let out = owned.handle(unsubscribe(Some("ghost"), 1), 1);
        assert!(out.sends.is_empty() && out.cluster.is_empty());
        assert_eq!(owned.channels(), 0, "no log made for a ghost");
    }

    #[test]
    fn a_user_gone_offline_is_forgotten_and_never_kicked() {
        let config = HubConfig {
            max_connections_per_user: 1,
            ..HubConfig::default()
        };
        let mut owned = owned(config);
        let online = |conn| HubMsg::UserOnline {
            user: "bob".into(),
            conn,
            since: std::time::Instant::now(),
        };
        let (a, b, c) = (origin(0, 1, 0), origin(1, 2, 0), origin(1, 3, 0));
        assert!(owned.handle(online(a), 1).sends.is_empty());
        owned.handle(
            HubMsg::UserOffline {
                user: "bob".into(),
                conn: a,
            },
            1,
        );
        assert!(
            owned.handle(online(b), 1).sends.is_empty(),
            "a is gone: nothing to replace"
        );
        let kicks = owned.handle(online(c), 1).sends;
        assert_eq!(kicks.len(), 1);
        assert!(matches!(&kicks[0], (1, HubMsg::Kick { conn, code: CLOSE_REPLACED, .. }) if *conn == b));
        // An offline for a connection of another generation forgets nothing.
        let stale = Origin { generation: 7, ..c };
        owned.handle(
            HubMsg::UserOffline {
                user: "bob".into(),
                conn: stale,
            },
            1,
        );
        let kicks = owned.handle(online(a), 1).sends;
        assert!(matches!(&kicks[0], (1, HubMsg::Kick { conn, .. }) if *conn == c));
    }

    #[test]
    fn cluster_subscribes_wait_for_the_channel_position_and_then_all_get_it() {
        let mut owned = owned(cluster_config());
        let first = owned.handle(subscribe(origin(0, 1, 1), Some("u"), None), 1);
        assert!(first.sends.is_empty(), "no answer before Redis's position");
        assert!(matches!(&first.cluster[..], [ClusterCmd::Call(RedisCall::Sync { .. })]));
        let second = owned.handle(subscribe(origin(1, 2, 5), None, None), 1);
        assert!(
            second.sends.is_empty() && second.cluster.is_empty(),
            "one sync per channel"
        );
        owned.expire(1_000_000);
        assert_eq!(owned.channels(), 1, "a log with waiting subscribes is kept");
        // A publication sequenced meanwhile is not lost to them.
        let synced = HubMsg::ClusterSynced {
            channel: "c".into(),
            epoch: Some(("e7".into(), 41)),
            why: SyncFor::Subscribe,
        };
        let out = owned.handle(synced, 2);
        let presence_deltas = out.cluster.len();
        let confirmed = confirmations(out);
        assert_eq!(confirmed.len(), 2);
        for (_, c) in &confirmed {
            assert_eq!((&*c.epoch, c.offset), ("e7", 41));
        }
        assert_eq!(presence_deltas, 2, "each subscriber counted in Redis's presence");
        assert_eq!(
            subscribers(&owned),
            2,
            "in cluster mode presence is Redis's: the log's count"
        );
    }

    #[test]
    fn cluster_subscribes_fail_when_redis_cannot_say() {
        let mut owned = owned(cluster_config());
        owned.handle(subscribe(origin(0, 1, 1), None, None), 1);
        owned.handle(subscribe(origin(1, 2, 2), None, None), 1);
        let synced = HubMsg::ClusterSynced {
            channel: "c".into(),
            epoch: None,
            why: SyncFor::Subscribe,
        };
        let failed: Vec<(usize, u64)> = owned
            .handle(synced, 2)
            .sends
            .into_iter()
            .map(|(shard, msg)| match msg {
                HubMsg::SubscribeFailed { to, .. } => (shard, to.id),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(failed, vec![(0, 1), (1, 2)]);
        assert_eq!(subscribers(&owned), 0, "nobody was counted");
        owned.presence_events(&mut Vec::new());
        owned.expire(1_000_000);
        assert_eq!(owned.channels(), 0, "nothing waits any more");
    }

    /// What `out` tells the client `to`: (error code or 0, created).
    fn told(out: &Out) -> Vec<(u64, bool)> {
        out.sends
            .iter()
            .filter_map(|(_, msg)| match msg {
                HubMsg::Answer { body, created, .. } => {
                    let reply: serde_json::Value = serde_json::from_slice(body).unwrap();
                    Some((reply["error"]["code"].as_u64().unwrap_or(0), *created))
                }
                HubMsg::Subscribed(c) => Some((0, c.created)),
                HubMsg::SubscribeFailed { code, .. } => Some((*code as u64, false)),
                _ => None,
            })
            .collect()
    }

    fn publish_to(channel: &str, may_create: bool) -> HubMsg {
        HubMsg::Publish {
            channel: channel.into(),
            data: "1".into(),
            reply: Some(ReplyTo::Client(origin(0, 1, 7))),
            may_create,
            idem: None,
        }
    }

    #[test]
    fn channel_creation_stops_at_the_node_limit_and_at_the_connection_window() {
        let budget = crate::buf::MemoryBudget::new(1 << 30);
        let config = HubConfig {
            max_channels: 2,
            ..HubConfig::default()
        };
        let mut owned = Owned::new(0, Arc::new(config), Meter::new(Arc::clone(&budget)));
        assert_eq!(told(&owned.handle(publish_to("a", true), 0)), [(0, true)]);
        assert_eq!(
            told(&owned.handle(publish_to("a", true), 0)),
            [(0, false)],
            "no creation"
        );
        assert_eq!(
            told(&owned.handle(publish_to("b", false), 0)),
            [(110, false)],
            "window spent"
        );
        assert_eq!(
            told(&owned.handle(publish_to("a", false), 0)),
            [(0, false)],
            "existing is served"
        );
        assert_eq!(told(&owned.handle(publish_to("b", true), 0)), [(0, true)]);
        assert_eq!(budget.channels(), 2);
        assert_eq!(
            told(&owned.handle(publish_to("c", true), 0)),
            [(110, false)],
            "node full"
        );
        let mut sub = subscribe(origin(0, 2, 8), None, None);
        if let HubMsg::Subscribe { channel, .. } = &mut sub {
            *channel = "d".into();
        }
        assert_eq!(told(&owned.handle(sub, 0)), [(110, false)], "subscribes too");
        // History expires, the logs go, and the count follows.
        owned.expire(u32::MAX);
        assert_eq!(budget.channels(), 0);
        assert_eq!(told(&owned.handle(publish_to("c", true), 0)), [(0, true)]);
    }
    #[test]
    fn cluster_creations_count_against_the_connection_window_as_on_one_node() {
        let mut owned = owned(cluster_config());
        // A publish may make a channel only within the window (Redis says
        // whether it did); one to a channel with a log here makes none.
        let out = owned.handle(publish_to("p", false), 0);
        assert!(matches!(
            &out.cluster[..],
            [ClusterCmd::Call(RedisCall::Publish { may_create: false, .. })]
        ));
        // The subscribe that makes a channel is counted when confirmed, once.
        let mut refused = subscribe(origin(0, 3, 9), None, None);
        if let HubMsg::Subscribe { may_create, .. } = &mut refused {
            *may_create = false;
        }
        assert_eq!(told(&owned.handle(refused, 0)), [(110, false)]);
        owned.handle(subscribe(origin(0, 1, 1), None, None), 0);
        owned.handle(subscribe(origin(0, 2, 2), None, None), 0);
        let synced = HubMsg::ClusterSynced {
            channel: "c".into(),
            epoch: Some(("e1".into(), 0)),
            why: SyncFor::Subscribe,
        };
        assert_eq!(told(&owned.handle(synced, 0)), [(0, true), (0, false)]);
        let out = owned.handle(publish_to("c", false), 0);
        assert!(matches!(
            &out.cluster[..],
            [ClusterCmd::Call(RedisCall::Publish { may_create: true, .. })]
        ));
    }
    #[test]
    fn offsets_gone_back_under_one_epoch_ask_redis_for_a_new_epoch() {
        let mut owned = owned(cluster_config());
        owned.handle(subscribe(origin(0, 1, 1), None, None), 0);
        let synced = |epoch: &str, offset, why: SyncFor| HubMsg::ClusterSynced {
            channel: "c".into(),
            epoch: Some((epoch.into(), offset)),
            why,
        };
        assert_eq!(
            confirmations(owned.handle(synced("e1", 10, SyncFor::Subscribe), 0)).len(),
            1
        );
        // After a reconnect Redis says offset 3 under the same epoch.
        let out = owned.handle(synced("e1", 3, SyncFor::Resync), 0);
        assert!(out.deliver.is_empty(), "nothing delivered under a rewound epoch");
        let check = match &out.cluster[..] {
            [ClusterCmd::Call(RedisCall::Sync { why, .. })] => why.clone(),
            other => panic!("expected a sync that names what was seen: {other:?}"),
        };
        assert_eq!(
            check,
            SyncFor::Check {
                epoch: "e1".into(),
                seen: 10
            }
        );
        // A second reconnect's answer while the check is under way waits for it.
        let out = owned.handle(synced("e1", 2, SyncFor::Resync), 0);
        assert!(out.cluster.is_empty() && out.deliver.is_empty());
        // Redis's new epoch: the subscriber is told.
        let out = owned.handle(synced("e2", 0, check), 0);
        assert_eq!(out.deliver.len(), 1, "the epoch push");
        assert_eq!(&*out.deliver[0].epoch, "e2");
    }

    #[test]
    fn a_checked_offset_behind_is_stale_not_lost() {
        let mut owned = owned(cluster_config());
        owned.handle(subscribe(origin(0, 1, 1), None, None), 0);
        let synced = |offset, why: SyncFor| HubMsg::ClusterSynced {
            channel: "c".into(),
            epoch: Some(("e1".into(), offset)),
            why,
        };
        owned.handle(synced(10, SyncFor::Subscribe), 0);
        // Publications 11 and 12 came before the reconnect's answer (10).
        for offset in 11..=12 {
            let publication = HubMsg::ClusterPublication {
                channel: "c".into(),
                epoch: "e1".into(),
                offset,
                data: "{}".into(),
            };
            assert_eq!(owned.handle(publication, 0).deliver.len(), 1);
        }
        let out = owned.handle(synced(10, SyncFor::Resync), 0);
        let check = SyncFor::Check {
            epoch: "e1".into(),
            seen: 12,
        };
        assert!(matches!(&out.cluster[..], [ClusterCmd::Call(RedisCall::Sync { why, .. })] if *why == check));
        // Redis had not gone back, and 13 came before the check's answer
        // (12): the answer is final, no new check, no epoch change.
        let publication = HubMsg::ClusterPublication {
            channel: "c".into(),
            epoch: "e1".into(),
            offset: 13,
            data: "{}".into(),
        };
        assert_eq!(owned.handle(publication, 0).deliver.len(), 1);
        let out = owned.handle(synced(12, check), 0);
        assert!(out.cluster.is_empty(), "{:?}", out.cluster);
        assert!(out.deliver.is_empty(), "no epoch push");
        let confirmed = confirmations(owned.handle(subscribe(origin(0, 2, 2), None, None), 0));
        assert_eq!(confirmed[0].1.offset, 13);
    }

    #[test]
    fn a_reconnect_answer_does_not_answer_a_subscribe_that_asked_after_it() {
        let mut owned = owned(cluster_config());
        owned.handle(subscribe(origin(0, 1, 1), None, None), 0);
        let out = owned.handle(subscribe(origin(0, 2, 2), None, None), 0);
        assert!(out.cluster.is_empty(), "one sync in flight");
        // A reconnect's answer (asked before the subscribe's own) is older.
        let synced = |offset, why: SyncFor| HubMsg::ClusterSynced {
            channel: "c".into(),
            epoch: Some(("e1".into(), offset)),
            why,
        };
        assert!(confirmations(owned.handle(synced(4, SyncFor::Resync), 0)).is_empty());
        let confirmed = confirmations(owned.handle(synced(5, SyncFor::Subscribe), 0));
        assert_eq!(confirmed.len(), 2);
        assert!(confirmed.iter().all(|(_, c)| c.offset == 5));
    }
}
