//! The messaging hub of one shard: rooms, channels, users, and delivery
//! across shards through the inboxes.
//!
//! Order: every room and channel has one owner shard (a hash of its name).
//! Messages are published by the owner: a member's shard forwards them there;
//! the owner assigns the channel offset, keeps history, delivers to its own
//! members and sends the same encoded frame to every other shard. Each shard
//! receives a channel's frames from one sender, the owner, through a FIFO
//! inbox, so every subscriber on every shard sees one order. Subscribing also
//! goes through the owner, and the owner's answer travels the same FIFO as its
//! publications, so a subscriber misses nothing and gets nothing twice.
//!
//! Fan-out: a frame is encoded once (`Bytes`), pushed by reference onto each
//! member's queue, and every connection touched in a loop turn is flushed
//! once at the end of the turn. A full inbox counts a drop rather than
//! blocking the publishing shard. See `docs/PROTOCOL.md`.

pub mod config;
pub(crate) mod groups;
pub mod log;
pub mod owner;
pub mod protocol;
pub mod session;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use slab::Slab;

use crate::auth::pattern;
use crate::auth::Claims;
use crate::buf::{MemoryBudget, Meter};
use crate::bus::cluster::{ClusterCmd, ClusterLink, RedisCall};
use crate::bus::history::Recovery;
use crate::bus::msg::{Confirmation, HubMsg, Origin, Query, ReplyTo};
use crate::bus::peers::Peers;
use crate::conn::{Conn, Ctx, Disconnect, Outgoing};
use crate::route::{Endpoint, Route};
use crate::tick::TICKS_PER_SEC;
use crate::ws::codec::{self, Kind, MAX_SERVER_HEADER};
use config::HubConfig;
use groups::Groups;
use owner::Owned;
use protocol::{code, Call, Command};
use session::{Session, Subscription, ERRORS_FORGIVEN_PER_SEC};

/// One shard's share of the hub.
pub(crate) struct Hub {
    shard: usize,
    peers: Peers,
    config: Arc<HubConfig>,
    rooms: Groups,
    /// The room of each room connection (kept here so `Conn` stays small).
    room_of: HashMap<usize, u32>,
    /// Local subscribers of each channel.
    channels: Groups,
    /// Local subscribers that asked for join/leave events.
    watchers: Groups,
    /// Per-connection state of `/ws` and authenticated connections.
    sessions: HashMap<usize, Session>,
    /// Local connections of each user.
    users: HashMap<Arc<str>, Vec<usize>>,
    /// What this shard owns: channel logs and per-user connection lists.
    owned: Owned,
    /// Cluster mode: the Redis bridge (`None`: this node runs alone).
    cluster: Option<ClusterLink>,
    /// Connections with queued bytes, flushed at the end of the turn.
    pub dirty: Vec<usize>,
    /// (shard, channel or room) whose deliveries were dropped and reported
    /// as a gap, until a delivery of it gets through again: one gap message
    /// per run of drops, so the control lane stays bounded.
    gaps: HashSet<(usize, Arc<str>)>,
}

impl Hub {
    pub fn new(shard: usize, peers: Peers, config: Arc<HubConfig>, cluster: Option<ClusterLink>, meter: Meter) -> Hub {
        Hub {
            cluster,
            owned: Owned::new(shard, Arc::clone(&config), meter),
            shard,
            peers,
            config,
            rooms: Groups::default(),
            room_of: HashMap::new(),
            channels: Groups::default(),
            watchers: Groups::default(),
            sessions: HashMap::new(),
            users: HashMap::new(),
            dirty: Vec::new(),
            gaps: HashSet::new(),
        }
    }

    /// The shard that orders a room's or channel's messages (or tracks a user).
    pub fn owner_of(&self, name: &str) -> usize {
        self.peers.owner_of(name)
    }

    /// Acts on what the connection just driven asked for.
    pub(crate) fn handle_outbox(&mut self, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let mut outbox = std::mem::take(&mut ctx.outbox);
        for item in outbox.drain(..) {
            match item {
                Outgoing::Upgraded { key, endpoint, claims } => self.upgraded(key, endpoint, claims, conns, ctx),
                Outgoing::RoomMessage { key, frame } => self.room_message(key, frame, conns, ctx),
                Outgoing::Command { key, text } => self.command(key, &text, conns, ctx),
            }
        }
        ctx.outbox = outbox;
    }

    fn upgraded(
        &mut self,
        key: usize,
        endpoint: Endpoint,
        claims: Option<Box<Claims>>,
        conns: &mut Slab<Conn>,
        ctx: &mut Ctx,
    ) {
        let Some(conn) = conns.get_mut(key) else { return };
        conn.route = Some(match endpoint {
            Endpoint::Echo => Route::Echo,
            Endpoint::Room(name) => {
                self.room_of.insert(key, self.rooms.join(&name, key));
                Route::Room
            }
            Endpoint::Ws => Route::Ws,
        });
        let (route, generation) = (conn.route, conn.generation);
        if route != Some(Route::Ws) && claims.is_none() {
            return; // anonymous echo and room connections need no session
        }
        let (user, allowed) = match claims {
            Some(claims) => (Some(Arc::<str>::from(claims.sub.as_str())), claims.channels.clone()),
            None => (None, None),
        };
        let burst = self.config.max_messages_per_sec as f32;
        self.sessions
            .insert(key, Session::new(generation, user.clone(), allowed, burst));
        if let Some(user) = user {
            self.users.entry(Arc::clone(&user)).or_default().push(key);
            let conn = Origin {
                shard: self.shard as u16,
                key: key as u32,
                generation,
                id: 0,
            };
            self.route_to_owner(
                &user,
                HubMsg::UserOnline {
                    user: Arc::clone(&user),
                    conn,
                },
                conns,
                ctx,
            );
        }
    }

    fn room_message(&mut self, key: usize, frame: Bytes, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let Some(&index) = self.room_of.get(&key) else { return };
        let Some(name) = self.rooms.name(index) else { return };
        ctx.stats.messages_in_rooms += 1;
        let owner = self.owner_of(&name);
        let at = Instant::now();
        if owner == self.shard {
            self.publish_room(name, frame, at, conns, ctx);
        } else if !self.send(owner, HubMsg::RoomPublish { room: name, frame, at }) {
            // The owner's inbox is full: the sender learns its message was
            // lost rather than believe it was delivered.
            let code = crate::ws::close::TRY_AGAIN_LATER;
            self.close_as(key, code, ROOM_OVERLOADED, Disconnect::MissedMessages, conns, ctx);
        }
    }

    /// At the owner: deliver here, then to every other shard. Unlike a
    /// channel's, a room's members join on their own shard without a round
    /// trip to the owner, so the owner cannot know of a member before its
    /// 101 went out; sending to every shard is what keeps "every message
    /// sent after a member's 101 reaches it" (a shard without members drops
    /// the delivery at once).
    fn publish_room(&mut self, name: Arc<str>, frame: Bytes, at: Instant, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        self.deliver_room(&name, &frame, at, conns, ctx);
        self.send_to_others(|| HubMsg::RoomDeliver {
            room: Arc::clone(&name),
            frame: frame.clone(),
            at,
        });
    }

    /// A room message to this shard's members, timed from when it was read
    /// (the publish-to-deliver histogram: read on the sender's shard, queued
    /// for every member here).
    fn deliver_room(&mut self, name: &str, frame: &Bytes, at: Instant, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        self.deliver(Target::Room, name, frame, conns, ctx);
        ctx.stats.delivery_latency.record(at.elapsed());
    }

    /// Queues `frame` for every local member of `name` in the chosen groups.
    fn deliver(&mut self, target: Target, name: &str, frame: &Bytes, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let groups = match target {
            Target::Room => &self.rooms,
            Target::Channel => &self.channels,
            Target::Watchers => &self.watchers,
        };
        let Some(members) = groups.members(name) else { return };
        for &key in members {
            if let Some(conn) = conns.get_mut(key as usize) {
                if conn.queue_shared(frame.clone(), ctx) {
                    self.dirty.push(key as usize);
                }
            }
        }
    }

    /// Queues a reply or push for one connection.
    fn send_to(&mut self, key: usize, json: &[u8], conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let Some(conn) = conns.get_mut(key) else { return };
        if conn.queue_shared(text_frame(json, ctx.meter.budget()), ctx) {
            self.dirty.push(key);
        }
    }

    // ---- /ws commands -------------------------------------------------

    fn command(&mut self, key: usize, text: &[u8], conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let per_tick = self.config.max_messages_per_sec as f32 / TICKS_PER_SEC as f32;
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if !session.rate.take(ctx.tick, per_tick) {
            // Over the rate is not a bad command: it answers 105 without
            // spending the error budget, until the client keeps it up.
            ctx.stats.rate_limited += 1;
            ctx.stats.command_errors += 1;
            let persistent = session.overrun.refused(ctx.tick, TICKS_PER_SEC);
            let id = protocol::parse_command(text).ok().map(|c| c.id);
            let reply = protocol::reply_error(id, code::RATE_LIMITED, "over the message rate limit");
            self.send_to(key, &reply, conns, ctx);
            if persistent {
                let code = crate::ws::close::POLICY_VIOLATION;
                self.close_as(key, code, "rate limit exceeded", Disconnect::RateLimited, conns, ctx);
            }
            return;
        }
        match protocol::parse_command(text) {
            Ok(command) => self.dispatch(key, command, conns, ctx),
            Err(bad) => self.fail(key, bad.id, bad.code, &bad.message, conns, ctx),
        }
    }

    /// Replies with an error; a connection that keeps erring is closed (1008).
    fn fail(&mut self, key: usize, id: Option<u64>, code: u16, message: &str, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        ctx.stats.command_errors += 1;
        self.send_to(key, &protocol::reply_error(id, code, message), conns, ctx);
        let per_tick = ERRORS_FORGIVEN_PER_SEC / TICKS_PER_SEC as f32;
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if !session.errors.take(ctx.tick, per_tick) {
            self.close(
                key,
                crate::ws::close::POLICY_VIOLATION,
                "too many bad commands",
                conns,
                ctx,
            );
        }
    }

    fn dispatch(&mut self, key: usize, command: Command, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let Command { id, call } = command;
        let Some(session) = self.sessions.get(&key) else { return };
        let origin = Origin {
            shard: self.shard as u16,
            key: key as u32,
            generation: session.generation,
            id,
        };
        let channel_check = |channel: &str| -> Result<Arc<str>, (u16, &'static str)> {
            pattern::valid_channel_name(channel).map_err(|why| (code::BAD_PARAMS, why))?;
            if !session.may_access(channel) {
                return Err((code::PERMISSION_DENIED, "the token does not allow this channel"));
            }
            Ok(channel.into())
        };
        let checked = match &call {
            Call::Subscribe { channel, .. }
            | Call::Unsubscribe { channel }
            | Call::Publish { channel, .. }
            | Call::Presence { channel }
            | Call::History { channel, .. } => Some(channel_check(channel)),
            Call::Send { .. } | Call::Ping => None,
        };
        let channel = match checked {
            Some(Err((code, why))) => return self.fail(key, Some(id), code, why, conns, ctx),
            Some(Ok(channel)) => channel,
            None => Arc::from(""),
        };
        match call {
            Call::Ping => self.send_to(key, &protocol::reply_ok(id, "{}"), conns, ctx),
            Call::Subscribe {
                recover, join_leave, ..
            } => self.subscribe(origin, channel, recover, join_leave, conns, ctx),
            Call::Unsubscribe { .. } => self.unsubscribe(origin, channel, conns, ctx),
            Call::Publish { data, .. } => {
                let msg = HubMsg::Publish {
                    channel: Arc::clone(&channel),
                    data: data.get().into(),
                    reply: Some(ReplyTo::Client(origin)),
                    idem: None,
                };
                self.route_to_owner(&channel, msg, conns, ctx);
            }
            Call::Presence { .. } => {
                let msg = HubMsg::Query {
                    channel: Arc::clone(&channel),
                    query: Query::Presence,
                    reply: ReplyTo::Client(origin),
                };
                self.route_to_owner(&channel, msg, conns, ctx);
            }
            Call::History { limit, .. } => {
                let limit = limit.unwrap_or(usize::MAX);
                let msg = HubMsg::Query {
                    channel: Arc::clone(&channel),
                    query: Query::History { limit },
                    reply: ReplyTo::Client(origin),
                };
                self.route_to_owner(&channel, msg, conns, ctx);
            }
            Call::Send { user, data } => self.send_user(origin, &user, data.get(), conns, ctx),
        }
    }

    fn subscribe(
        &mut self,
        origin: Origin,
        channel: Arc<str>,
        recover: Option<crate::bus::history::Recover>,
        join_leave: bool,
        conns: &mut Slab<Conn>,
        ctx: &mut Ctx,
    ) {
        let key = origin.key as usize;
        let max = self.config.max_subscriptions;
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if session.subscription(&channel).is_some() {
            return self.fail(
                key,
                Some(origin.id),
                code::ALREADY_SUBSCRIBED,
                "already subscribed",
                conns,
                ctx,
            );
        }
        if session.subs.len() >= max {
            ctx.stats.subscription_limit_hits += 1;
            return self.fail(
                key,
                Some(origin.id),
                code::LIMIT_EXCEEDED,
                "too many subscriptions",
                conns,
                ctx,
            );
        }
        session.subs.push(Subscription {
            channel: Arc::clone(&channel),
            joined: false,
            command: origin.id,
            join_leave,
        });
        let user = session.user.clone();
        let msg = HubMsg::Subscribe {
            channel: Arc::clone(&channel),
            from: origin,
            user,
            recover,
        };
        self.route_to_owner(&channel, msg, conns, ctx);
    }

    /// The owner confirmed a subscription: join locally, answer the client.
    fn subscribed(&mut self, confirmation: Confirmation, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let Confirmation {
            channel,
            to,
            epoch,
            offset,
            recovery,
            user,
        } = confirmation;
        let key = to.key as usize;
        let session = self.sessions.get_mut(&key).filter(|s| s.generation == to.generation);
        let pending = |s: &session::Session| {
            s.subscription(&channel)
                .filter(|&i| !s.subs[i].joined && s.subs[i].command == to.id)
        };
        let Some((session, index)) = session.and_then(|s| pending(s).map(|i| (s, i))) else {
            // Gone, unsubscribed, or answered for an older subscribe of the
            // same channel: undo the owner's count.
            return self.route_to_owner(
                &Arc::clone(&channel),
                HubMsg::Unsubscribe {
                    channel,
                    user,
                    shard: self.shard as u16,
                },
                conns,
                ctx,
            );
        };
        let sub = &mut session.subs[index];
        sub.joined = true;
        let join_leave = sub.join_leave;
        self.channels.join(&channel, key);
        if join_leave {
            self.watchers.join(&channel, key);
        }
        ctx.stats.subscriptions += 1;
        let result = subscribe_result(&channel, &epoch, offset, &recovery);
        self.send_to(key, &protocol::reply_ok(to.id, &result), conns, ctx);
    }

    fn unsubscribe(&mut self, origin: Origin, channel: Arc<str>, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let key = origin.key as usize;
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(index) = session.subscription(&channel) else {
            return self.fail(key, Some(origin.id), code::NOT_SUBSCRIBED, "not subscribed", conns, ctx);
        };
        let sub = session.subs.swap_remove(index);
        let user = session.user.clone();
        if sub.joined {
            self.leave_channel(key, &sub, user, conns, ctx);
        }
        // A pending one is undone when the owner's answer finds it gone.
        self.send_to(key, &protocol::reply_ok(origin.id, "{}"), conns, ctx);
    }

    fn leave_channel(
        &mut self,
        key: usize,
        sub: &Subscription,
        user: Option<Arc<str>>,
        conns: &mut Slab<Conn>,
        ctx: &mut Ctx,
    ) {
        self.channels.leave_name(&sub.channel, key);
        if sub.join_leave {
            self.watchers.leave_name(&sub.channel, key);
        }
        ctx.stats.subscriptions = ctx.stats.subscriptions.saturating_sub(1);
        let msg = HubMsg::Unsubscribe {
            channel: Arc::clone(&sub.channel),
            user,
            shard: self.shard as u16,
        };
        self.route_to_owner(&Arc::clone(&sub.channel), msg, conns, ctx);
    }

    fn send_user(&mut self, origin: Origin, user: &str, data: &str, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let key = origin.key as usize;
        let from = self.sessions.get(&key).and_then(|s| s.user.clone());
        if from.is_none() {
            return self.fail(
                key,
                Some(origin.id),
                code::UNAUTHENTICATED,
                "anonymous connections cannot send to users",
                conns,
                ctx,
            );
        }
        if user.is_empty() {
            return self.fail(key, Some(origin.id), code::BAD_PARAMS, "empty user", conns, ctx);
        }
        let json = protocol::push_message(from.as_deref(), data);
        let frame = text_frame(&json, ctx.meter.budget());
        let user: Arc<str> = user.into();
        if self.cluster.is_some() {
            let user = Arc::clone(&user);
            self.cluster_send(ClusterCmd::UserMessage { user, json }, conns, ctx);
        }
        self.deliver_user(&user, &frame, conns, ctx);
        self.send_to_others(|| HubMsg::UserMessage {
            user: Arc::clone(&user),
            frame: frame.clone(),
        });
        self.send_to(key, &protocol::reply_ok(origin.id, "{}"), conns, ctx);
    }

    fn deliver_user(&mut self, user: &str, frame: &Bytes, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let Some(keys) = self.users.get(user) else { return };
        for &key in keys {
            if let Some(conn) = conns.get_mut(key) {
                if conn.queue_shared(frame.clone(), ctx) {
                    self.dirty.push(key);
                }
            }
        }
    }

    /// Closes a connection from the hub: a `/ws` client first gets a
    /// disconnect push with the reason (and whether to reconnect).
    fn close(&mut self, key: usize, code: u16, reason: &str, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let why = match code {
            config::CLOSE_REPLACED => Disconnect::Replaced,
            crate::ws::close::POLICY_VIOLATION => Disconnect::ProtocolError,
            _ => Disconnect::Kicked,
        };
        self.close_as(key, code, reason, why, conns, ctx);
    }

    /// `close`, counted under `why`.
    fn close_as(
        &mut self,
        key: usize,
        code: u16,
        reason: &str,
        why: Disconnect,
        conns: &mut Slab<Conn>,
        ctx: &mut Ctx,
    ) {
        let Some(conn) = conns.get_mut(key) else { return };
        // A `/ws` client gets its disconnect push from start_close.
        conn.start_close(code, reason, why, ctx);
        if conn.mark_dirty() {
            self.dirty.push(key);
        }
    }

    // ---- inbox ----------------------------------------------------------

    /// Handles a hub message from another shard (or the admin thread).
    pub fn on_message(&mut self, msg: HubMsg, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        match msg {
            HubMsg::RoomPublish { room, frame, at } => self.publish_room(room, frame, at, conns, ctx),
            HubMsg::RoomDeliver { room, frame, at } => self.deliver_room(&room, &frame, at, conns, ctx),
            HubMsg::Deliver { channel, frame, .. } => self.deliver(Target::Channel, &channel, &frame, conns, ctx),
            HubMsg::ChannelGap { channel, epoch, offset } => {
                let push = text_frame(&protocol::push_gap(&channel, &epoch, offset), ctx.meter.budget());
                self.deliver(Target::Channel, &channel, &push, conns, ctx);
            }
            HubMsg::RoomGap { room } => {
                let members: Vec<u32> = self
                    .rooms
                    .members(&room)
                    .map(|m| m.iter().copied().collect())
                    .unwrap_or_default();
                for key in members {
                    let code = crate::ws::close::TRY_AGAIN_LATER;
                    self.close_as(key as usize, code, ROOM_GAP, Disconnect::MissedMessages, conns, ctx);
                }
            }
            HubMsg::PresenceEvents { channel, frame } => self.deliver(Target::Watchers, &channel, &frame, conns, ctx),
            HubMsg::Subscribed(confirmation) => self.subscribed(confirmation, conns, ctx),
            HubMsg::Answer { to, body } => {
                let live = self
                    .sessions
                    .get(&(to.key as usize))
                    .is_some_and(|s| s.generation == to.generation);
                if live {
                    self.send_to(to.key as usize, &body, conns, ctx);
                }
            }
            HubMsg::UserMessage { user, frame } => self.deliver_user(&user, &frame, conns, ctx),
            HubMsg::SubscribeFailed { channel, to } => self.subscribe_failed(&channel, to, conns, ctx),
            HubMsg::Kick { conn, code, reason } => {
                let live = conns
                    .get(conn.key as usize)
                    .is_some_and(|c| c.generation == conn.generation);
                if live {
                    self.close(conn.key as usize, code, &reason, conns, ctx);
                }
            }
            HubMsg::DisconnectUser {
                user,
                code,
                reason,
                reply,
            } => {
                let mut closed = 0u64;
                for key in self.users.get(&user).cloned().unwrap_or_default() {
                    // Connections already closing are not counted twice.
                    if conns.get(key).is_some_and(|c| c.phase == crate::conn::Phase::Open) {
                        closed += 1;
                    }
                    self.close(key, code, &reason, conns, ctx);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(closed.to_string());
                }
            }
            HubMsg::ListChannels { reply } => {
                let _ = reply.send(self.owned.list());
            }
            HubMsg::ListConnections { user, reply } => {
                let _ = reply.send(self.describe_connections(&user, conns, ctx));
            }
            owned => self.owner_message(owned, conns, ctx),
        }
    }

    /// `user`'s connections on this shard, for operators: where, how old,
    /// when last heard from and written to, how much is queued.
    fn describe_connections(&self, user: &str, conns: &Slab<Conn>, ctx: &Ctx) -> String {
        let secs = |ticks: u32| ctx.tick.saturating_sub(ticks) as f64 / TICKS_PER_SEC as f64;
        let items: Vec<serde_json::Value> = self
            .users
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|&key| conns.get(key).map(|conn| (key, conn)))
            .map(|(key, conn)| {
                let subs: Vec<&str> = self
                    .sessions
                    .get(&key)
                    .map(|s| s.subs.iter().map(|s| &*s.channel).collect())
                    .unwrap_or_default();
                let endpoint = match conn.route() {
                    Some(Route::Ws) => "ws",
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
                    "queued_bytes": conn.queued_bytes(),
                    "subscriptions": subs,
                })
            })
            .collect();
        serde_json::Value::Array(items).to_string()
    }

    /// Messages for this shard as the owner of a channel or user.
    fn owner_message(&mut self, msg: HubMsg, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let out = self.owned.handle(msg, ctx.tick);
        for (shard, msg) in out.sends {
            if shard == self.shard {
                self.on_message(msg, conns, ctx);
            } else {
                self.send(shard, msg);
            }
        }
        for publication in out.deliver {
            let owner::Publication {
                channel,
                frame,
                offset,
                epoch,
            } = publication;
            self.deliver(Target::Channel, &channel, &frame, conns, ctx);
            // Only shards with subscribers (the owner counts them per shard).
            for shard in self.owned.subscriber_shards(&channel) {
                if shard != self.shard {
                    let msg = HubMsg::Deliver {
                        channel: Arc::clone(&channel),
                        frame: frame.clone(),
                        offset,
                        epoch: Arc::clone(&epoch),
                    };
                    self.send(shard, msg);
                }
            }
        }
        for cmd in out.cluster {
            self.cluster_send(cmd, conns, ctx);
        }
    }

    /// Hands a command to the Redis bridge; when its queue is full, the
    /// asker is answered at once (108, or a failed subscribe/recovery).
    fn cluster_send(&mut self, cmd: ClusterCmd, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let Some(link) = &self.cluster else { return };
        let Err(cmd) = link.send(cmd) else { return };
        match cmd {
            ClusterCmd::Call(RedisCall::Publish { reply: Some(reply), .. })
            | ClusterCmd::Call(RedisCall::Query { reply, .. }) => {
                let ReplyTo::Client(to) = reply else { return }; // the API sees its sender dropped: 503
                let body = protocol::reply_error(Some(to.id), code::UNAVAILABLE, "the cluster link is busy; retry");
                self.route_answer(to, body, conns, ctx);
            }
            ClusterCmd::Call(RedisCall::Sync { channel, .. }) => {
                self.owner_message(HubMsg::ClusterSynced { channel, epoch: None }, conns, ctx);
            }
            ClusterCmd::Call(RedisCall::Recover { channel, sub, .. }) => {
                let msg = HubMsg::ClusterRecovered {
                    channel,
                    epoch: None,
                    entries: None,
                    sub: Box::new(sub),
                };
                self.owner_message(msg, conns, ctx);
            }
            _ => {}
        }
    }

    fn route_answer(&mut self, to: Origin, body: Vec<u8>, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let msg = HubMsg::Answer { to, body };
        if to.shard as usize == self.shard {
            self.on_message(msg, conns, ctx);
        } else {
            self.send(to.shard as usize, msg);
        }
    }

    /// Cluster mode: the owner could not place the subscription (Redis
    /// unreachable); forget it and tell the client to retry.
    fn subscribe_failed(&mut self, channel: &str, to: Origin, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let key = to.key as usize;
        let Some(session) = self.sessions.get_mut(&key).filter(|s| s.generation == to.generation) else {
            return;
        };
        if let Some(index) = session.subscription(channel).filter(|&i| !session.subs[i].joined) {
            session.subs.swap_remove(index);
        }
        let body = protocol::reply_error(Some(to.id), code::UNAVAILABLE, "the cluster link is down; retry");
        self.send_to(key, &body, conns, ctx);
    }

    /// End of a loop turn: push batched presence events; expire history.
    pub(crate) fn end_turn(&mut self, ticked: bool, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        for (channel, frame, shards) in self.owned.presence_events() {
            self.deliver(Target::Watchers, &channel, &frame, conns, ctx);
            let here = self.shard;
            for shard in shards.into_iter().filter(|&s| s != here) {
                let msg = HubMsg::PresenceEvents {
                    channel: Arc::clone(&channel),
                    frame: frame.clone(),
                };
                self.send(shard, msg);
            }
        }
        if ticked && ctx.tick.is_multiple_of(TICKS_PER_SEC) {
            self.owned.expire(ctx.tick);
        }
        ctx.stats.channels = self.owned.channels() as u64;
        ctx.stats.users = self.users.len() as u64;
        ctx.stats.inbox_drops = self.peers.dropped();
    }

    /// Memory pressure: trims the history this shard owns, oldest first,
    /// by about `bytes`; returns how many publications were dropped.
    pub(crate) fn trim_history(&mut self, bytes: u64) -> usize {
        self.owned.trim_history(bytes)
    }

    /// A connection is going away: leave its room, channels and user.
    pub fn leave(&mut self, key: usize, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        if let Some(index) = self.room_of.remove(&key) {
            self.rooms.leave(index, key);
        }
        let Some(session) = self.sessions.remove(&key) else {
            return;
        };
        for sub in session.subs.iter().filter(|s| s.joined) {
            self.leave_channel(key, sub, session.user.clone(), conns, ctx);
        }
        if let Some(user) = session.user {
            if let Some(keys) = self.users.get_mut(&user) {
                keys.retain(|&k| k != key);
                if keys.is_empty() {
                    self.users.remove(&user);
                }
            }
            let conn = Origin {
                shard: self.shard as u16,
                key: key as u32,
                generation: session.generation,
                id: 0,
            };
            self.route_to_owner(&Arc::clone(&user), HubMsg::UserOffline { user, conn }, conns, ctx);
        }
    }

    /// Sends to the owner of `name`, or handles it here if that is us.
    fn route_to_owner(&mut self, name: &Arc<str>, msg: HubMsg, conns: &mut Slab<Conn>, ctx: &mut Ctx) {
        let owner = self.owner_of(name);
        if owner == self.shard {
            self.on_message(msg, conns, ctx);
        } else {
            self.send(owner, msg);
        }
    }

    fn send_to_others(&mut self, mut make: impl FnMut() -> HubMsg) {
        for shard in 0..self.peers.len() {
            if shard != self.shard {
                self.send(shard, make());
            }
        }
    }

    /// Sends `msg` to `shard` in its lane; false when the data lane was full
    /// and the message dropped (counted). A dropped delivery is reported to
    /// the receiver as a gap on the control lane, once per run of drops.
    fn send(&mut self, shard: usize, msg: HubMsg) -> bool {
        let reported = match &msg {
            HubMsg::Deliver { channel: name, .. } | HubMsg::RoomDeliver { room: name, .. } if !self.gaps.is_empty() => {
                Some(Arc::clone(name))
            }
            _ => None,
        };
        let Err(msg) = self.peers.to(shard, msg) else {
            if let Some(name) = reported {
                // A delivery got through again: the next drop is a new gap.
                self.gaps.remove(&(shard, name));
            }
            return true;
        };
        let gap = match msg {
            HubMsg::Deliver {
                channel, epoch, offset, ..
            } => Some((
                Arc::clone(&channel),
                HubMsg::ChannelGap {
                    channel,
                    epoch,
                    offset: offset.saturating_sub(1),
                },
            )),
            HubMsg::RoomDeliver { room, .. } => Some((Arc::clone(&room), HubMsg::RoomGap { room })),
            _ => None,
        };
        if let Some((name, gap)) = gap {
            if self.gaps.insert((shard, name)) {
                // Control lane: fails only if the shard is gone.
                let _ = self.peers.to(shard, gap);
            }
        }
        false
    }
}

/// Close reason for a room member whose message its room's owner could not take.
const ROOM_OVERLOADED: &str = "room overloaded: your message was dropped; reconnect";
/// Close reason for a room member that missed messages under overload.
const ROOM_GAP: &str = "room messages to you were dropped under overload; reconnect";

#[derive(Clone, Copy)]
enum Target {
    Room,
    Channel,
    Watchers,
}

/// A text frame of `json`, encoded once, charged to `budget` once if large.
fn text_frame(json: &[u8], budget: &Arc<MemoryBudget>) -> Bytes {
    let mut frame = Vec::with_capacity(json.len() + MAX_SERVER_HEADER);
    codec::encode_frame(&mut frame, Kind::Text, json);
    crate::buf::budget::frame(frame, budget)
}

fn subscribe_result(channel: &str, epoch: &str, offset: u64, recovery: &Recovery) -> String {
    let head = format!(
        "{{\"channel\":{},\"epoch\":{},\"offset\":{offset}",
        protocol::json_string(channel),
        protocol::json_string(epoch)
    );
    match recovery {
        Recovery::NotAsked => format!("{head}}}"),
        Recovery::Recovered(entries) => format!(
            "{head},\"recovered\":true,\"publications\":{}}}",
            owner::publications_json(entries)
        ),
        Recovery::Impossible(why) => format!("{head},\"recovered\":false,\"reason\":{}}}", protocol::json_string(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_result_shapes() {
        let plain: serde_json::Value =
            serde_json::from_str(&subscribe_result("c", "e", 3, &Recovery::NotAsked)).unwrap();
        assert_eq!(plain["offset"], 3);
        assert!(plain.get("recovered").is_none());
        let gone: serde_json::Value =
            serde_json::from_str(&subscribe_result("c", "e", 3, &Recovery::Impossible("history gone"))).unwrap();
        assert_eq!(gone["recovered"], false);
    }
}
