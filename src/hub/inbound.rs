//! Hub messages from the inbox (other shards, the admin API, the cluster
//! bridge), and what this shard does as the owner of a channel or user:
//! `owner.rs` decides, this file routes what it decided.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::frame::text_frame;
use super::protocol::{self, code};
use super::{owner, Conns, Hub, Target};
use crate::bus::cluster::{listener_shard, ClusterCmd, RedisCall, ShardRedis, SyncFor};
use crate::bus::msg::{HubMsg, Origin, ReplyTo};
use crate::route::Route;
use crate::tick::TICKS_PER_SEC;

impl Hub {
    /// Handles a hub message from another shard (or the admin thread, or
    /// this shard's own owner role).
    pub(crate) fn on_message(&mut self, msg: HubMsg, conns: &mut dyn Conns) {
        match msg {
            HubMsg::RoomPublish { room, frame, at } => self.publish_room(room, frame, at, conns),
            HubMsg::RoomDeliver {
                room,
                frame,
                at,
                from,
                seq,
            } => self.in_order(from as usize, seq, conns, |hub, conns| {
                hub.deliver_room(&room, &frame, at, conns)
            }),
            HubMsg::ClusterRoomMessage {
                room,
                frame,
                server,
                seq,
            } => {
                let from = self.sender(server);
                self.in_order(from, seq, conns, |hub, conns| {
                    hub.publish_room(room, frame, Instant::now(), conns)
                })
            }
            HubMsg::Deliver {
                channel,
                frame,
                from,
                seq,
                ..
            } => self.channel_delivery(&channel, &frame, from as usize, seq, conns),
            HubMsg::ChannelGap {
                channel,
                epoch,
                offset,
                after,
            } => {
                self.arrivals += 1;
                let gap = EarlyGap {
                    from: self.owner_of(&channel),
                    after,
                    missed: Missed::Channel {
                        channel,
                        epoch,
                        offset,
                        arrived: self.arrivals,
                    },
                };
                self.gap_in_order(gap, conns);
            }
            HubMsg::RoomGap { room, after } => {
                let from = self.owner_of(&room);
                let missed = Missed::Room(room);
                self.gap_in_order(EarlyGap { from, after, missed }, conns);
            }
            HubMsg::ClusterRoomGap { room, server, after } => {
                let from = self.sender(server);
                let missed = Missed::ClusterRoom(room);
                self.gap_in_order(EarlyGap { from, after, missed }, conns);
            }
            HubMsg::ClusterRoomsLost { server, after } => {
                let from = self.sender(server);
                let missed = Missed::ClusterRooms(server);
                self.gap_in_order(EarlyGap { from, after, missed }, conns);
            }
            HubMsg::RoomsLost { owner, server, after } => {
                let (from, missed) = (owner as usize, Missed::RoomsOf(owner as usize, server));
                self.gap_in_order(EarlyGap { from, after, missed }, conns);
            }
            HubMsg::PresenceEvents { channel, frame } => self.deliver(Target::Watchers, &channel, &frame, conns),
            HubMsg::Subscribed(confirmation) => self.subscribed(confirmation, conns),
            HubMsg::RedisLink(link) => {
                let mut answers = Vec::new();
                if let Some(direct) = &mut self.direct {
                    direct.linked(link, &mut answers);
                }
                self.route_all(answers, conns);
            }
            HubMsg::ClusterListen { channel, owner } => {
                let Some(direct) = &mut self.direct else {
                    // Not to be (no connections of this shard's own). The
                    // channel would get no publication: its subscribes fail
                    // (108) instead of waiting forever.
                    tracing::error!(shard = self.shard, channel = %channel, "a channel to listen to was sent to a shard without Redis connections of its own");
                    let unsynced = HubMsg::unsynced(channel, SyncFor::Subscribe);
                    return self.route_to(owner as usize, unsynced, conns);
                };
                let mut answers = Vec::new();
                direct.listen(channel, owner as usize, &mut answers);
                self.route_all(answers, conns);
            }
            HubMsg::ClusterUnlisten { channel } => {
                let mut answers = Vec::new();
                if let Some(direct) = &mut self.direct {
                    direct.unlisten(&channel, &mut answers);
                }
                self.route_all(answers, conns);
            }
            HubMsg::Answer { to, body, created } => {
                if created {
                    self.note_created(to, conns);
                }
                self.answer(to, &body, conns)
            }
            HubMsg::UserMessage { user, frame, mail } => match mail {
                Some(pos) => self.deliver_mail(&user, &frame, &pos, conns),
                None => self.deliver_user(&user, &frame, conns),
            },
            HubMsg::SendUser { user, data, reply } => {
                self.send_private(user, None, &data, ReplyTo::Admin(reply), true, conns)
            }
            HubMsg::SubscribeFailed {
                channel,
                to,
                code,
                message,
            } => self.subscribe_failed(&channel, to, code, message, conns),
            HubMsg::Kick { conn, code, reason } => {
                if conns.generation(conn.key as usize) == Some(conn.generation) {
                    self.close(conn.key as usize, code, &reason, conns);
                }
            }
            HubMsg::DisconnectUser {
                user,
                code,
                reason,
                reply,
            } => {
                let mut closed = 0u64;
                for &key in self.users.get(&user).into_iter().flat_map(|keys| keys.iter()) {
                    // Connections already closing are not counted twice.
                    if conns.is_open(key) {
                        closed += 1;
                    }
                    self.close(key, code, &reason, conns);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(closed.to_string());
                }
            }
            HubMsg::DisconnectToken {
                token_id,
                code,
                reason,
                reply,
            } => {
                let closed = self.disconnect_token(&token_id, code, &reason, conns);
                if let Some(reply) = reply {
                    let _ = reply.send(closed.to_string());
                }
            }
            HubMsg::ListChannels { reply } => {
                let _ = reply.send(self.owned.list());
            }
            HubMsg::ListConnections { user, reply } => {
                let _ = reply.send(self.describe_connections(&user, conns));
            }
            HubMsg::ProxyAnswered(answered) => self.proxy_answered(*answered, conns),
            owned => self.owner_message(owned, conns),
        }
    }

    /// The owner's delivery number `seq` of a publication of `channel`:
    /// gap pushes that belong before it go first, subscribers waiting for a
    /// delivery past their position are admitted, and those that belong
    /// right after it follow.
    fn channel_delivery(&mut self, channel: &Arc<str>, frame: &Bytes, from: usize, seq: u64, conns: &mut dyn Conns) {
        self.in_order(from, seq, conns, |hub, conns| {
            hub.channels.admit(channel, |w| w.after < seq);
            hub.deliver(Target::Channel, channel, frame, conns);
        });
    }

    /// Handles the delivery number `seq` from `from` (a channel's or room's
    /// owner shard, or a Redis subscriber): the gaps reported after an
    /// earlier one take effect first, then `handle`, then those reported
    /// right after this one.
    fn in_order(
        &mut self,
        from: usize,
        seq: u64,
        conns: &mut dyn Conns,
        handle: impl FnOnce(&mut Hub, &mut dyn Conns),
    ) {
        if !self.early_gaps.is_empty() {
            self.due_gaps(from, seq.saturating_sub(1), conns);
        }
        handle(self, conns);
        self.delivered_from[from] = seq;
        if !self.early_gaps.is_empty() {
            self.due_gaps(from, seq, conns);
        }
    }

    /// The index in `delivered_from` of Redis server `server`'s subscriber
    /// (after the shards').
    fn sender(&mut self, server: u16) -> usize {
        let from = self.peers.len() + server as usize;
        if self.delivered_from.len() <= from {
            self.delivered_from.resize(from + 1, 0);
        }
        from
    }

    /// A gap report (control lane) takes effect once the deliveries its
    /// sender got through before the drop (data lane) are handled here.
    fn gap_in_order(&mut self, gap: EarlyGap, conns: &mut dyn Conns) {
        if self.delivered_from[gap.from] >= gap.after {
            self.gap_push(gap, conns);
        } else {
            self.early_gaps.push(gap);
        }
    }

    /// Pushes the early gaps from `from` that follow its delivery `upto`
    /// or an earlier one, in arrival order.
    fn due_gaps(&mut self, from: usize, upto: u64, conns: &mut dyn Conns) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early_gaps)
            .into_iter()
            .partition(|gap| gap.from == from && gap.after <= upto);
        self.early_gaps = later;
        for gap in due {
            self.gap_push(gap, conns);
        }
    }

    /// Tells the subscribers of the gap's channel. Those still waiting to
    /// be admitted whose answer arrived before the gap report subscribed
    /// before the drop (the owner sent both on the control lane, in order):
    /// they missed publications past their position too, so they are
    /// admitted and told. Those whose answer came later are not: their
    /// position already covers what was dropped.
    fn gap_push(&mut self, gap: EarlyGap, conns: &mut dyn Conns) {
        let (channel, epoch, offset, arrived) = match gap.missed {
            Missed::Channel {
                channel,
                epoch,
                offset,
                arrived,
            } => (channel, epoch, offset, arrived),
            Missed::Room(room) => return self.room_gap(&room, conns),
            Missed::ClusterRoom(room) => return self.cluster_room_gap(room, conns),
            Missed::ClusterRooms(server) => return self.cluster_rooms_lost(server, conns),
            Missed::RoomsOf(owner, server) => return self.rooms_lost(owner, server, conns),
        };
        self.channels.admit(&channel, |w| w.arrived < arrived);
        let push = text_frame(&protocol::push_gap(&channel, &epoch, offset), &self.budget);
        self.deliver(Target::Channel, &channel, &push, conns);
    }

    /// `user`'s connections on this shard, for operators: where, how old,
    /// when last heard from and written to, how much is queued.
    fn describe_connections(&self, user: &str, conns: &dyn Conns) -> String {
        let now = conns.tick();
        let secs = |ticks: u32| now.saturating_sub(ticks) as f64 / TICKS_PER_SEC as f64;
        let items: Vec<serde_json::Value> = self
            .users
            .get(user)
            .into_iter()
            .flat_map(|keys| keys.iter())
            .filter_map(|&key| conns.facts(key).map(|facts| (key, facts)))
            .map(|(key, conn)| {
                let subs: Vec<&str> = self
                    .sessions
                    .get(&key)
                    .map(|s| s.subs.iter().map(|s| &*s.channel).collect())
                    .unwrap_or_default();
                let endpoint = match conn.route {
                    Some(Route::Ws) => "ws",
                    Some(Route::Centrifuge) => "centrifuge",
                    Some(Route::Room) => "room",
                    _ => "echo",
                };
                serde_json::json!({
                    "shard": self.shard,
                    "id": key,
                    "endpoint": endpoint,
                    // Time in the current phase: since the upgrade while open.
                    "age_secs": secs(conn.phase_since),
                    "last_read_secs_ago": secs(conn.last_read),
                    "last_write_secs_ago": secs(conn.last_write),
                    "queued_bytes": conn.queued_bytes,
                    "subscriptions": subs,
                })
            })
            .collect();
        serde_json::Value::Array(items).to_string()
    }

    /// Messages for this shard as the owner of a channel or user.
    fn owner_message(&mut self, msg: HubMsg, conns: &mut dyn Conns) {
        let out = self.owned.handle(msg, conns.tick());
        for (shard, msg) in out.sends {
            self.route_to(shard, msg, conns);
        }
        for publication in out.deliver {
            let owner::Publication {
                channel,
                frame,
                offset,
                epoch,
            } = publication;
            self.deliver(Target::Channel, &channel, &frame, conns);
            // Only shards with subscribers (the owner counts them per shard).
            for shard in self.owned.subscriber_shards(&channel) {
                if shard != self.shard {
                    let msg = HubMsg::Deliver {
                        channel: Arc::clone(&channel),
                        frame: frame.clone(),
                        offset,
                        epoch: Arc::clone(&epoch),
                        from: self.shard as u16,
                        seq: 0, // numbered as sent
                    };
                    self.send(shard, msg);
                }
            }
        }
        for mail in out.mail {
            self.spread_mail(mail, conns);
        }
        for cmd in out.cluster {
            self.cluster_send(cmd, conns);
        }
    }

    /// Hands a command to the Redis bridge; when its queue is full, the
    /// asker is answered at once (108, or a failed subscribe/recovery).
    pub(super) fn cluster_send(&mut self, cmd: ClusterCmd, conns: &mut dyn Conns) {
        let Some(link) = &self.cluster else { return };
        let server = cmd.server(link.servers());
        if let ClusterCmd::Call(RedisCall::Sync {
            channel,
            shard,
            why: SyncFor::Subscribe,
        }) = &cmd
        {
            if self.listened_by_name(channel, server) {
                // Subscribed to first: the position is read after that.
                let listen = HubMsg::ClusterListen {
                    channel: Arc::clone(channel),
                    owner: *shard as u16,
                };
                return self.route_to(listener_shard(server, self.peers.len()), listen, conns);
            }
        }
        let sent = match (cmd, &mut self.direct) {
            (ClusterCmd::Call(call @ RedisCall::Publish { .. }), Some(direct)) if direct.serves(server) => {
                direct.publish(server, call).map_err(ClusterCmd::Call)
            }
            (cmd, _) => link.send(cmd),
        };
        let Err(cmd) = sent else { return };
        match cmd {
            ClusterCmd::Call(RedisCall::Publish { reply: Some(reply), .. })
            | ClusterCmd::Call(RedisCall::Query { reply, .. }) => {
                let ReplyTo::Client(to) = reply else { return }; // the API sees its sender dropped: 503
                let body = protocol::reply_error(Some(to.id), code::UNAVAILABLE, "the cluster link is busy; retry");
                self.route_answer(to, body, conns);
            }
            ClusterCmd::Call(RedisCall::Sync { channel, why, .. }) => {
                self.owner_message(HubMsg::unsynced(channel, why), conns);
            }
            ClusterCmd::Call(RedisCall::Recover { channel, sub, .. }) => {
                let msg = HubMsg::ClusterRecovered {
                    channel,
                    epoch: None,
                    entries: None,
                    sub: Box::new(sub),
                };
                self.owner_message(msg, conns);
            }
            _ => {}
        }
    }

    pub(crate) fn set_direct(&mut self, direct: Option<Box<dyn ShardRedis>>) {
        self.direct = direct;
    }

    /// Whether this shard's own Redis connections have more to read now
    /// (the loop must not sleep).
    pub(crate) fn redis_busy(&self) -> bool {
        self.direct.as_ref().is_some_and(|direct| direct.busy())
    }

    /// One of this shard's publishing connections to Redis is ready:
    /// what it answered goes to the publishers.
    pub(crate) fn redis_ready(&mut self, token: mio::Token, conns: &mut dyn Conns) {
        let Some(direct) = &mut self.direct else { return };
        let mut answers = Vec::new();
        direct.ready(token, &mut answers);
        self.route_all(answers, conns);
    }

    /// Sends each message to its shard (handled here if that is us).
    pub(super) fn route_all(&mut self, messages: Vec<(usize, HubMsg)>, conns: &mut dyn Conns) {
        for (shard, msg) in messages {
            self.route_to(shard, msg, conns);
        }
    }

    fn route_answer(&mut self, to: Origin, body: Vec<u8>, conns: &mut dyn Conns) {
        let answer = HubMsg::Answer {
            to,
            body,
            created: false,
        };
        self.route_to(to.shard as usize, answer, conns);
    }
}

/// A gap report (`ChannelGap`, `RoomGap`, `ClusterRoomGap`) that arrived
/// before its sender's delivery number `after` (the last one sent before
/// the drop) was handled here.
#[derive(Debug)]
pub(super) struct EarlyGap {
    /// The sender's index in `Hub::delivered_from`.
    from: usize,
    after: u64,
    missed: Missed,
}

/// What the receivers of a gap missed.
#[derive(Debug)]
enum Missed {
    /// Publications of a channel after `offset` of `epoch`: its
    /// subscribers here get a gap push.
    Channel {
        channel: Arc<str>,
        epoch: Arc<str>,
        offset: u64,
        /// See `groups::Waiting::arrived`.
        arrived: u64,
    },
    /// Messages of a room: its members here are closed (1013).
    Room(Arc<str>),
    /// Messages of a room this shard owns, from Redis: its members
    /// everywhere on this node are closed.
    ClusterRoom(Arc<str>),
    /// Messages of every room this shard owns that Redis server `.0` holds
    /// (its subscriber connection failed): their members everywhere on
    /// this node are closed.
    ClusterRooms(u16),
    /// Messages of every room shard `.0` owns that Redis server `.1`
    /// holds: their members here are closed.
    RoomsOf(usize, u16),
}
