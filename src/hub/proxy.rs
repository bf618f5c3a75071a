//! The application's hooks, hub side (docs/PROXY.md): a connect, subscribe,
//! publish or rpc is handed to the proxy workers through the bounded
//! `ProxyLink` and carried on when the answer arrives in the inbox. The hub
//! never waits: until the answer, a subscribe stays pending in the session
//! (as it does while its owner shard answers), a publish or rpc is simply in
//! flight, and a connecting connection's commands are held, a few and
//! bounded. Every answer is checked against the connection's generation
//! (and a subscribe against the very command), so an answer for a
//! connection that has gone, or a subscribe since cancelled, is dropped.

use std::sync::Arc;

use super::protocol::{self, code};
use super::session::{Proto, Subscription};
use super::{Conns, Hub};
use crate::auth::pattern;
use crate::auth::Claims;
use crate::bus::msg::{HubMsg, Origin};
use crate::bus::proxy::{client_id, Allowed, Failure, Hook, Pending, ProxyAnswered, ProxyCall, ProxyLink, Verdict};
use crate::metrics::disconnect::Disconnect;
use crate::ws::close::TRY_AGAIN_LATER;

/// Commands a connection may send before the connect hook answers; more
/// are refused (108).
pub(crate) const HELD_COMMANDS: usize = 16;
/// Bytes of such commands held at most.
pub(crate) const HELD_BYTES: usize = 64 << 10;
/// Hook calls one connection may have in flight; more are refused at once
/// (114), so one client cannot take the whole `--proxy-max-in-flight`.
pub(crate) const CALLS_PER_CONNECTION: u8 = 8;
/// Close code when the connect hook refuses a connection with an `error`.
pub(crate) const CLOSE_CONNECT_REFUSED: u16 = 4403;

/// Commands of a connecting connection, run once the connect hook allows it.
#[derive(Default)]
pub(crate) struct Held {
    commands: Vec<Vec<u8>>,
    bytes: usize,
}

impl Hub {
    pub(crate) fn set_proxy(&mut self, link: Option<ProxyLink>) {
        self.proxy = link;
    }

    pub(super) fn proxy_has(&self, hook: Hook) -> bool {
        self.proxy.as_ref().is_some_and(|link| link.has(hook))
    }

    /// A `/ws` connection without a token upgraded (`upgraded` made its
    /// session): ask the connect hook who it is, holding its commands.
    /// A `/connection/websocket` connection is asked at its `connect`
    /// command instead (which may carry a token): its headers wait for it.
    pub(crate) fn connecting(&mut self, key: usize, headers: Vec<(Box<str>, Box<str>)>, conns: &mut dyn Conns) {
        if !self.proxy_has(Hook::Connect) {
            return;
        }
        let Some(session) = self.sessions.get_mut(&key).filter(|s| s.user.is_none()) else {
            return;
        };
        let generation = session.generation;
        if session.proto == Proto::CentrifugeConnecting {
            return self.keep_connect_headers(key, generation, headers);
        }
        session.connecting = Some(Box::default());
        let origin = self.origin(key, generation, 0);
        self.proxy_call(origin, None, Pending::Connect { headers, data: None }, conns);
    }

    /// True when the command was held (or refused) because the connection
    /// still waits for the connect hook.
    pub(super) fn hold_while_connecting(&mut self, key: usize, text: &[u8], conns: &mut dyn Conns) -> bool {
        let Some(held) = self.sessions.get_mut(&key).and_then(|s| s.connecting.as_mut()) else {
            return false;
        };
        if held.commands.len() < HELD_COMMANDS && held.bytes + text.len() <= HELD_BYTES {
            held.bytes += text.len();
            held.commands.push(text.to_vec());
            return true;
        }
        // Not a bad command (the client could not know): answered without
        // spending its error budget, as a rate refusal is.
        let id = protocol::parse_command(text).ok().map(|c| c.id);
        let why = "too many commands before the application's connect hook answered";
        conns.stats().command_errors += 1;
        self.send_to(key, &protocol::reply_error(id, code::UNAVAILABLE, why), conns);
        true
    }

    /// Hands a call to the workers; over `--proxy-max-in-flight` it is
    /// answered here and now (114), never queued.
    pub(super) fn proxy_call(&mut self, to: Origin, user: Option<Arc<str>>, pending: Pending, conns: &mut dyn Conns) {
        let Some(link) = &self.proxy else { return };
        let Some(session) = self.sessions.get_mut(&(to.key as usize)) else {
            return;
        };
        if session.proxy_calls >= CALLS_PER_CONNECTION {
            crate::bus::proxy::count_overloaded(pending.hook());
            let why = "too many application calls in flight on this connection; retry later";
            return self.carry_on(to, pending, overloaded(why), conns);
        }
        let call = ProxyCall {
            to,
            user,
            pending,
            queued: std::time::Instant::now(),
        };
        match link.send(call) {
            Ok(()) => session.proxy_calls += 1,
            Err(call) => {
                let why = "too many application calls in flight; retry later";
                self.carry_on(call.to, call.pending, overloaded(why), conns);
            }
        }
    }

    /// The application answered (or could not): carry the command on, if
    /// its connection is still the one that asked.
    pub(super) fn proxy_answered(&mut self, answered: ProxyAnswered, conns: &mut dyn Conns) {
        let ProxyAnswered {
            to, pending, verdict, ..
        } = answered;
        let Some(session) = self
            .sessions
            .get_mut(&(to.key as usize))
            .filter(|s| s.generation == to.generation)
        else {
            return; // closed while the call was in flight
        };
        session.proxy_calls = session.proxy_calls.saturating_sub(1);
        self.carry_on(to, pending, verdict, conns);
    }

    /// Goes on with the command the call was for, as the verdict says.
    fn carry_on(&mut self, to: Origin, pending: Pending, verdict: Verdict, conns: &mut dyn Conns) {
        let key = to.key as usize;
        if self.sessions.get(&key).is_none_or(|s| s.generation != to.generation) {
            return;
        }
        match pending {
            Pending::Connect { .. } => self.connect_answered(to, verdict, conns),
            Pending::Subscribe { channel, recover } => {
                if !self.subscribe_pending(to, &channel) {
                    return; // cancelled by an unsubscribe, already answered
                }
                match verdict {
                    Verdict::Allow(_) => self.ask_owner(to, channel, recover, conns),
                    other => {
                        self.drop_pending(key, &channel);
                        self.command_refused(to, other, conns);
                    }
                }
            }
            Pending::Publish { channel, data } => match verdict {
                Verdict::Allow(allowed) => {
                    let data = allowed.data.map_or(data, Arc::from);
                    // The application's event shows what goes out.
                    self.event(key, crate::events::Kind::Publish, Some(&channel), Some(&data), None);
                    let may_create = self
                        .sessions
                        .get(&key)
                        .is_some_and(|s| s.creations.left(conns.tick(), self.config.max_new_channels_per_minute));
                    let msg = HubMsg::Publish {
                        channel: Arc::clone(&channel),
                        data,
                        reply: Some(crate::bus::msg::ReplyTo::Client(to)),
                        may_create,
                        idem: None,
                    };
                    self.route_to_owner(&channel, msg, conns);
                }
                other => self.command_refused(to, other, conns),
            },
            Pending::Rpc { .. } => match verdict {
                Verdict::Allow(allowed) => {
                    let data = allowed.data.as_deref().unwrap_or("null");
                    let reply = protocol::reply_ok(to.id, &format!("{{\"data\":{data}}}"));
                    self.send_to(key, &reply, conns);
                }
                other => self.command_refused(to, other, conns),
            },
        }
    }

    /// A command's hook said no, or gave no verdict: the client gets the
    /// application's error as is, 113 or 114; a disconnect closes it.
    fn command_refused(&mut self, to: Origin, verdict: Verdict, conns: &mut dyn Conns) {
        let key = to.key as usize;
        let (code, message) = match verdict {
            Verdict::Allow(_) => return,
            Verdict::Disconnect { code, reason } => return conns.close(key, code, &reason, Disconnect::Kicked),
            Verdict::Refuse { code, message } => (code, message),
            Verdict::Failed { failure, why } => (failure_code(failure), why),
        };
        self.send_to(key, &protocol::reply_error(Some(to.id), code, &message), conns);
    }

    fn connect_answered(&mut self, to: Origin, verdict: Verdict, conns: &mut dyn Conns) {
        let key = to.key as usize;
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(held) = session.connecting.take() else {
            return;
        };
        match session.proto {
            Proto::CentrifugeConnecting => return self.centrifuge_connect_answered(to, verdict, conns),
            // Connected some other way meanwhile: the answer is not for it.
            Proto::Centrifuge => return,
            Proto::Ws => {}
        }
        let allowed = match verdict {
            Verdict::Allow(allowed) => allowed,
            Verdict::Disconnect { code, reason } => return conns.close(key, code, &reason, Disconnect::ConnectRefused),
            Verdict::Refuse { code, message } => {
                self.send_to(key, &protocol::push_connect_error(code, &message), conns);
                return conns.close(key, CLOSE_CONNECT_REFUSED, &message, Disconnect::ConnectRefused);
            }
            Verdict::Failed { failure, why } => {
                self.send_to(key, &protocol::push_connect_error(failure_code(failure), &why), conns);
                return conns.close(key, TRY_AGAIN_LATER, &why, Disconnect::HookUnavailable);
            }
        };
        let user = allowed.user.as_deref().filter(|u| !u.is_empty()).map(Arc::<str>::from);
        if let Some(user) = &user {
            self.become_user(to, user, allowed.expire_at, conns);
        }
        self.announce(key);
        let push = protocol::push_connect(&client_id(&to), user.as_deref(), allowed.data.as_deref());
        self.send_to(key, &push, conns);
        self.server_side_subscribe(to, &allowed, conns);
        for text in held.commands {
            self.run_command(key, &text, conns);
        }
    }

    /// The connect hook named the connection's user (and maybe its
    /// deadline): count it as `upgraded` counts a token's user.
    pub(super) fn become_user(&mut self, to: Origin, user: &Arc<str>, expire_at: Option<u64>, conns: &mut dyn Conns) {
        let key = to.key as usize;
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.user = Some(Arc::clone(user));
        if expire_at.is_some() {
            let claims = Claims {
                sub: user.to_string(),
                exp: expire_at,
                nbf: None,
                iat: None,
                channels: None,
                jti: None,
            };
            let (tick, now) = (conns.tick(), conns.now_unix());
            self.lifetimes.begin(key, to.generation, &claims, true, tick, now);
        }
        self.users.add(user, key);
        let msg = HubMsg::UserOnline {
            user: Arc::clone(user),
            conn: self.origin(key, to.generation, 0),
            since: std::time::Instant::now(),
        };
        self.route_to_owner(user, msg, conns);
    }

    /// The connect hook's `channels`: subscribed without asking the
    /// subscribe hook, each confirmed (or refused) by a push.
    fn server_side_subscribe(&mut self, to: Origin, allowed: &Allowed, conns: &mut dyn Conns) {
        let key = to.key as usize;
        let max = self.config.max_subscriptions;
        if let Some(first) = allowed.channels.get(max) {
            // Refused without looking further: a list of a million costs
            // one push, not a million.
            let over = allowed.channels.len() - max;
            let why = format!("too many subscriptions: {over} channels over --max-subscriptions left out");
            self.send_to(
                key,
                &protocol::push_subscribe_error(first, code::LIMIT_EXCEEDED, &why),
                conns,
            );
        }
        for name in allowed.channels.iter().take(max) {
            let Some(session) = self.sessions.get_mut(&key) else {
                return;
            };
            let refused = if let Err(why) = pattern::valid_channel_name(name) {
                Some((code::BAD_PARAMS, why))
            } else if session.subscription(name).is_some() {
                Some((code::ALREADY_SUBSCRIBED, "already subscribed"))
            } else if session.subs.len() >= max {
                Some((code::LIMIT_EXCEEDED, "too many subscriptions"))
            } else {
                None
            };
            if let Some((code, why)) = refused {
                self.send_to(key, &protocol::push_subscribe_error(name, code, why), conns);
                continue;
            }
            let channel: Arc<str> = name.as_str().into();
            session.subs.push(Subscription {
                channel: Arc::clone(&channel),
                joined: false,
                command: to.id,
                join_leave: false,
                server_side: true,
            });
            self.ask_owner(to, channel, None, conns);
        }
    }

    /// Whether the subscribe `to` of `channel` still waits for its answer.
    fn subscribe_pending(&self, to: Origin, channel: &str) -> bool {
        self.sessions.get(&(to.key as usize)).is_some_and(|s| {
            s.subscription(channel)
                .is_some_and(|i| !s.subs[i].joined && s.subs[i].command == to.id)
        })
    }

    fn drop_pending(&mut self, key: usize, channel: &str) {
        if let Some(session) = self.sessions.get_mut(&key) {
            if let Some(index) = session.subscription(channel) {
                session.subs.swap_remove(index);
            }
        }
    }
}

fn overloaded(why: &str) -> Verdict {
    Verdict::Failed {
        failure: Failure::Overloaded,
        why: why.into(),
    }
}

/// The error code of a call that got no verdict.
fn failure_code(failure: Failure) -> u16 {
    match failure {
        Failure::Overloaded => code::PROXY_OVERLOADED,
        Failure::Timeout | Failure::Unavailable => code::PROXY_UNAVAILABLE,
    }
}
