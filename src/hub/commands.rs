//! `/ws` commands (docs/PROTOCOL.md): the rate limit, the token's
//! channels, then each method. Every command gets exactly one reply: here at
//! once, or from the channel's owner (`Subscribed`, `Answer`,
//! `SubscribeFailed`), which `inbound.rs` hands back to the finishing
//! functions at the end of this file. With the application's hooks on,
//! `subscribe`, `publish` and `rpc` ask it first and carry on when it
//! answers (`proxy.rs`).

use std::sync::Arc;

use bytes::Bytes;

use super::config::DEFAULT_HISTORY_LIMIT;
use super::groups::Waiting;
use super::protocol::{self, code, Call, Command};
use super::session::{Session, Subscription, ERRORS_FORGIVEN_PER_SEC};
use super::{mailbox, owner, Conns, Hub};
use crate::auth::pattern;
use crate::bus::history::{Recover, Recovery};
use crate::bus::msg::{Confirmation, HubMsg, Origin, Query, ReplyTo};
use crate::bus::proxy::{Hook, Pending};
use crate::events::Kind;
use crate::metrics::disconnect::Disconnect;
use crate::tick::TICKS_PER_SEC;
use crate::ws::close::POLICY_VIOLATION;

impl Hub {
    /// The `/ws` connection at `key` sent the command `text`.
    pub(crate) fn command(&mut self, key: usize, text: &[u8], conns: &mut dyn Conns) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        if session.proto.is_centrifuge() {
            return self.centrifuge_frame(key, text, conns);
        }
        if self.over_rate(
            key,
            text.len(),
            || protocol::parse_command(text).ok().map(|c| c.id),
            conns,
        ) {
            return;
        }
        if self.hold_while_connecting(key, text, conns) {
            return;
        }
        self.run_command(key, text, conns);
    }

    /// Parses and carries out one command (its rate already spent).
    pub(super) fn run_command(&mut self, key: usize, text: &[u8], conns: &mut dyn Conns) {
        match protocol::parse_command(text) {
            Ok(command) => self.dispatch(key, command, conns),
            Err(bad) => self.fail(key, bad.id, bad.code, &bad.message, conns),
        }
    }

    /// Spends one command of `len` bytes from the connection's rate; when
    /// over it, answers 105 (to the command `id` names) and returns true.
    pub(super) fn over_rate(
        &mut self,
        key: usize,
        len: usize,
        id: impl FnOnce() -> Option<u64>,
        conns: &mut dyn Conns,
    ) -> bool {
        let tick = conns.tick();
        let (messages, bytes) = (self.config.max_messages_per_sec, self.config.max_bytes_per_sec);
        let Some(session) = self.sessions.get_mut(&key) else {
            return true;
        };
        if session.rate.spend(tick, len, messages, bytes) {
            return false;
        }
        // Over the rate is not a bad command: it answers 105 without
        // spending the error budget, until the client keeps it up.
        let stats = conns.stats();
        stats.rate_limited += 1;
        stats.command_errors += 1;
        let persistent = session.overrun.refused(tick, TICKS_PER_SEC);
        let reply = protocol::reply_error(id(), code::RATE_LIMITED, "over the message rate limit");
        self.send_to(key, &reply, conns);
        if persistent {
            conns.close(key, POLICY_VIOLATION, "rate limit exceeded", Disconnect::RateLimited);
        }
        true
    }

    /// Replies with an error; a connection that keeps erring is closed (1008).
    pub(super) fn fail(&mut self, key: usize, id: Option<u64>, code: u16, message: &str, conns: &mut dyn Conns) {
        conns.stats().command_errors += 1;
        self.send_to(key, &protocol::reply_error(id, code, message), conns);
        let per_tick = ERRORS_FORGIVEN_PER_SEC / TICKS_PER_SEC as f32;
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if !session.errors.take(conns.tick(), per_tick) {
            self.close(key, POLICY_VIOLATION, "too many bad commands", conns);
        }
    }

    pub(super) fn dispatch(&mut self, key: usize, command: Command<'_>, conns: &mut dyn Conns) {
        let Command { id, call } = command;
        let Some(session) = self.sessions.get(&key) else { return };
        let origin = self.origin(key, session.generation, id);
        let reads = matches!(
            call,
            Call::Subscribe { .. } | Call::Unsubscribe { .. } | Call::History { .. }
        );
        let mailbox = self.config.mailbox.is_some();
        let checked = match &call {
            Call::Subscribe { channel, .. }
            | Call::Unsubscribe { channel }
            | Call::Publish { channel, .. }
            | Call::Presence { channel }
            | Call::History { channel, .. } => Some(channel_check(session, channel, mailbox, reads)),
            Call::Send { .. } | Call::Ping | Call::Refresh { .. } | Call::Rpc { .. } => None,
        };
        let channel = match checked {
            Some(Err((code, why))) => return self.fail(key, Some(id), code, why, conns),
            Some(Ok(channel)) => channel,
            None => Arc::from(""),
        };
        let query = |query| HubMsg::Query {
            channel: Arc::clone(&channel),
            query,
            reply: ReplyTo::Client(origin),
        };
        match call {
            Call::Ping => self.send_to(key, &protocol::reply_ok(id, "{}"), conns),
            Call::Subscribe {
                recover, join_leave, ..
            } => self.subscribe(origin, channel, recover, join_leave, conns),
            Call::Unsubscribe { .. } => self.unsubscribe(origin, channel, conns),
            Call::Publish { data, .. } if self.proxy_has(Hook::Publish) => {
                let user = session.user.clone();
                let pending = Pending::Publish {
                    channel,
                    data: data.get().into(),
                };
                self.proxy_call(origin, user, pending, conns);
            }
            Call::Publish { data, .. } => {
                self.event(key, Kind::Publish, Some(&channel), Some(data.get()), None);
                let may_create = self.may_create(key, conns.tick());
                let msg = HubMsg::Publish {
                    channel: Arc::clone(&channel),
                    data: data.get().into(),
                    reply: Some(ReplyTo::Client(origin)),
                    may_create,
                    idem: None,
                };
                self.route_to_owner(&channel, msg, conns);
            }
            Call::Presence { .. } => {
                let msg = query(Query::Presence);
                self.route_to_owner(&channel, msg, conns);
            }
            Call::History { limit, since, .. } => {
                let msg = query(Query::History {
                    limit: limit.unwrap_or(DEFAULT_HISTORY_LIMIT),
                    since,
                });
                self.route_to_owner(&channel, msg, conns);
            }
            Call::Send { user, data } => self.send_user(origin, &user, data.get(), conns),
            Call::Refresh { token } => self.refresh(origin, &token, conns),
            Call::Rpc { .. } if !self.proxy_has(Hook::Rpc) => {
                let why = "rpc needs the server's --proxy-rpc-url";
                self.fail(key, Some(id), code::UNKNOWN_METHOD, why, conns)
            }
            Call::Rpc { method, data } => {
                let user = session.user.clone();
                let data = data.map_or("null", |d| d.get()).into();
                let pending = Pending::Rpc {
                    method: method.into(),
                    data,
                };
                self.proxy_call(origin, user, pending, conns);
            }
        }
    }

    fn subscribe(
        &mut self,
        origin: Origin,
        channel: Arc<str>,
        recover: Option<Recover>,
        join_leave: bool,
        conns: &mut dyn Conns,
    ) {
        let key = origin.key as usize;
        let max = self.config.max_subscriptions;
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if session.subscription(&channel).is_some() {
            let why = "already subscribed";
            return self.fail(key, Some(origin.id), code::ALREADY_SUBSCRIBED, why, conns);
        }
        if session.subs.len() >= max {
            conns.stats().subscription_limit_hits += 1;
            let why = "too many subscriptions";
            return self.fail(key, Some(origin.id), code::LIMIT_EXCEEDED, why, conns);
        }
        session.subs.push(Subscription {
            channel: Arc::clone(&channel),
            joined: false,
            command: origin.id,
            join_leave,
            server_side: false,
        });
        let user = session.user.clone();
        if self.proxy_has(Hook::Subscribe) {
            return self.proxy_call(origin, user, Pending::Subscribe { channel, recover }, conns);
        }
        self.ask_owner(origin, channel, recover, conns);
    }

    /// Sends a subscribe (already in the session, not joined) to the
    /// channel's owner.
    pub(super) fn ask_owner(
        &mut self,
        origin: Origin,
        channel: Arc<str>,
        recover: Option<Recover>,
        conns: &mut dyn Conns,
    ) {
        let Some(session) = self.sessions.get(&(origin.key as usize)) else {
            return;
        };
        // The connection's own mailbox (the only one it may subscribe to)
        // is not one of the channels it makes: only --max-channels holds.
        let may_create = mailbox::user_of(&channel).is_some()
            || session
                .creations
                .left(conns.tick(), self.config.max_new_channels_per_minute);
        let msg = HubMsg::Subscribe {
            channel: Arc::clone(&channel),
            from: origin,
            user: session.user.clone(),
            recover,
            may_create,
        };
        self.route_to_owner(&channel, msg, conns);
    }

    fn unsubscribe(&mut self, origin: Origin, channel: Arc<str>, conns: &mut dyn Conns) {
        let key = origin.key as usize;
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(index) = session.subscription(&channel) else {
            return self.fail(key, Some(origin.id), code::NOT_SUBSCRIBED, "not subscribed", conns);
        };
        let sub = session.subs.swap_remove(index);
        let user = session.user.clone();
        let member = super::centrifuge::member(session, key);
        if sub.joined {
            self.event(key, Kind::Unsubscribe, Some(&sub.channel), None, Some("client"));
            self.leave_channel(member, &sub, user, conns);
        } else {
            // Every command gets its one reply: the subscribe this cancels
            // is answered now (the owner's late answer is undone when it
            // finds the subscription gone).
            // A server-side subscription had no command of the client's:
            // its cancellation is a push about the channel, as its refusal
            // would have been.
            let why = "cancelled: unsubscribed before the subscription took effect";
            let frame = match sub.server_side {
                true => protocol::push_subscribe_error(&sub.channel, code::CANCELLED, why),
                false => protocol::reply_error(Some(sub.command), code::CANCELLED, why),
            };
            self.send_to(key, &frame, conns);
        }
        self.send_to(key, &protocol::reply_ok(origin.id, "{}"), conns);
    }

    fn send_user(&mut self, origin: Origin, user: &str, data: &str, conns: &mut dyn Conns) {
        let key = origin.key as usize;
        let from = self.sessions.get(&key).and_then(|s| s.user.clone());
        if from.is_none() {
            let why = "anonymous connections cannot send to users";
            return self.fail(key, Some(origin.id), code::UNAUTHENTICATED, why, conns);
        }
        if user.is_empty() {
            return self.fail(key, Some(origin.id), code::BAD_PARAMS, "empty user", conns);
        }
        let may_create = self.may_create(key, conns.tick());
        self.send_private(user.into(), from, data, ReplyTo::Client(origin), may_create, conns);
    }

    /// A private message to this shard's connections of `user`.
    pub(super) fn deliver_user(&self, user: &str, frame: &Bytes, conns: &mut dyn Conns) {
        let Some(keys) = self.users.get(user) else { return };
        let mut centrifuge = None;
        for &key in keys.iter() {
            let member = self
                .sessions
                .get(&key)
                .map_or(key, |s| super::centrifuge::member(s, key));
            self.queue_member(member, frame, &mut centrifuge, conns);
        }
    }

    /// The owner confirmed a subscription: join locally, answer the client.
    pub(super) fn subscribed(&mut self, confirmation: Confirmation, conns: &mut dyn Conns) {
        let Confirmation {
            channel,
            to,
            epoch,
            offset,
            recovery,
            user,
            created,
            after,
        } = confirmation;
        // A connection's own mailbox is not one of the channels it makes.
        if created && mailbox::user_of(&channel).is_none() {
            self.note_created(to, conns);
        }
        let key = to.key as usize;
        let session = self.sessions.get_mut(&key).filter(|s| s.generation == to.generation);
        let pending = |s: &Session| {
            s.subscription(&channel)
                .filter(|&i| !s.subs[i].joined && s.subs[i].command == to.id)
        };
        let Some((session, index)) = session.and_then(|s| pending(s).map(|i| (s, i))) else {
            // Gone, unsubscribed, or answered for an older subscribe of the
            // same channel: undo the owner's count, exactly (same user).
            let shard = self.shard as u16;
            let undo = HubMsg::Unsubscribe {
                channel: Arc::clone(&channel),
                user,
                shard,
            };
            return self.route_to_owner(&channel, undo, conns);
        };
        let member = super::centrifuge::member(session, key);
        let sub = &mut session.subs[index];
        sub.joined = true;
        let join_leave = sub.join_leave;
        let server_side = sub.server_side;
        let recovery = match mailbox::user_of(&channel) {
            Some(_) => mailbox::joined(session, &epoch, offset, recovery),
            None => recovery,
        };
        // Publications up to the position may still be on their way from
        // the owner (data lane, behind this answer's control lane): the
        // subscriber takes deliveries after the owner's number `after` only.
        let owner = self.owner_of(&channel);
        if owner != self.shard && self.delivered_from[owner] < after {
            self.arrivals += 1;
            let waiting = Waiting {
                key: member as u32,
                after,
                arrived: self.arrivals,
            };
            self.channels.join_after(&channel, waiting);
        } else {
            self.channels.join(&channel, member);
        }
        if join_leave {
            self.watchers.join(&channel, member);
        }
        conns.stats().subscriptions += 1;
        self.event(key, Kind::Subscribe, Some(&channel), None, None);
        if server_side {
            return self.send_to(key, &protocol::push_subscribed(&channel, &epoch, offset), conns);
        }
        let result = subscribe_result(&channel, &epoch, offset, &recovery);
        self.send_to(key, &protocol::reply_ok(to.id, &result), conns);
    }

    /// Cluster mode: the owner could not place the subscription (Redis
    /// unreachable); forget it and tell the client to retry.
    pub(super) fn subscribe_failed(
        &mut self,
        channel: &str,
        to: Origin,
        code: u16,
        message: &str,
        conns: &mut dyn Conns,
    ) {
        let key = to.key as usize;
        let Some(session) = self.sessions.get_mut(&key).filter(|s| s.generation == to.generation) else {
            return;
        };
        // Only the very subscribe `to` (as `subscribed` checks): one
        // cancelled by an unsubscribe was answered then, and a newer
        // subscribe of the channel waits for its own answer.
        let pending = session
            .subscription(channel)
            .filter(|&i| !session.subs[i].joined && session.subs[i].command == to.id);
        let Some(index) = pending else {
            return;
        };
        let server_side = session.subs.swap_remove(index).server_side;
        let body = if server_side {
            protocol::push_subscribe_error(channel, code, message)
        } else {
            protocol::reply_error(Some(to.id), code, message)
        };
        self.send_to(key, &body, conns);
    }

    /// Whether the connection at `key` may still make channels this minute.
    fn may_create(&self, key: usize, tick: u32) -> bool {
        let limit = self.config.max_new_channels_per_minute;
        self.sessions.get(&key).is_some_and(|s| s.creations.left(tick, limit))
    }

    /// The owner made a new channel for the command `to`: it counts against
    /// the connection's `--max-new-channels-per-minute`.
    pub(super) fn note_created(&mut self, to: Origin, conns: &mut dyn Conns) {
        let tick = conns.tick();
        if let Some(session) = self.sessions.get_mut(&(to.key as usize)) {
            if session.generation == to.generation {
                session.creations.note(tick);
            }
        }
    }

    /// An owner's answer to the command `to`, if its connection is still
    /// the one that asked.
    pub(super) fn answer(&self, to: Origin, body: &[u8], conns: &mut dyn Conns) {
        let live = self
            .sessions
            .get(&(to.key as usize))
            .is_some_and(|s| s.generation == to.generation);
        if live {
            self.send_to(to.key as usize, body, conns);
        }
    }
}

/// A channel name the session may use, or the error to answer. With
/// `mailbox` (`--mailbox-size`) the session's own mailbox is one, for the
/// commands that `reads`.
fn channel_check(
    session: &Session,
    channel: &str,
    mailbox: bool,
    reads: bool,
) -> Result<Arc<str>, (u16, &'static str)> {
    if let Some(owner) = mailbox::user_of(channel).filter(|_| mailbox) {
        return mailbox::access(session, owner, reads).map(|()| channel.into());
    }
    pattern::valid_channel_name(channel).map_err(|why| (code::BAD_PARAMS, why))?;
    if !session.may_access(channel) {
        return Err((code::PERMISSION_DENIED, "the token does not allow this channel"));
    }
    Ok(channel.into())
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
