//! `/connection/websocket`: the Centrifuge client protocol, JSON encoding,
//! mapped onto this hub (docs/PROTOCOL.md, "Centrifuge protocol"). There is
//! no second hub: a Centrifuge session is a hub session marked
//! `Proto::Centrifuge`, its commands become the `/ws` commands they mean
//! (`commands.rs` does the work: channels, owners, offsets, presence,
//! limits, cluster mode), and every reply and push the hub makes for it is
//! translated on its way out (`translate.rs`).
//!
//! Fan-out: a channel's frame is made once, in `/ws` JSON. A Centrifuge
//! subscriber is a group member whose key carries [`MEMBER_TAG`], so a
//! delivery tells the protocols apart without a lookup and frames the
//! Centrifuge push at most once per publication per shard, when it meets
//! the first such member.
//!
//! Until `connect` succeeds a session accepts nothing else; one that sends
//! none within [`CONNECT_TIMEOUT_SECS`] is closed (3502). The session adds
//! one byte (`Session::proto`) to what the hub keeps per connection, and a
//! connection waiting for its `connect` 16 bytes in [`Connecting`].

mod translate;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::config::DEFAULT_HISTORY_LIMIT;
use super::frame::text_frame;
use super::protocol::{Call, Command};
use super::session::{Proto, Rate, Session};
use super::{Conns, Hub};
use crate::auth::{self, AuthError};
use crate::buf::budget::MemKind;
use crate::bus::msg::Origin;
use crate::bus::proxy::{Pending, Verdict};
use crate::metrics::disconnect::Disconnect;
use crate::tick::secs_to_ticks;
use crate::ws::centrifuge as close;
use translate::{code, error_reply, Action, Context, Tag};
use wire::Method;

/// What the connect reply says the server is.
pub(crate) const VERSION: &str = concat!("hubbub ", env!("CARGO_PKG_VERSION"));
/// Seconds an upgraded connection has to send its `connect`.
pub const CONNECT_TIMEOUT_SECS: u64 = 10;
/// Marks a Centrifuge session's key in the hub's groups (slab keys stay far
/// below it: the process has at most `RLIMIT_NOFILE` connections).
pub(crate) const MEMBER_TAG: usize = 1 << 31;

/// The key the connection at `key` has in the hub's groups.
pub(crate) fn member(session: &Session, key: usize) -> usize {
    if session.proto.is_centrifuge() {
        key | MEMBER_TAG
    } else {
        key
    }
}

/// Connections waiting for `connect`: (deadline tick, key, generation),
/// oldest first. Entries of connections that connected or left stay until
/// due (16 bytes each, for at most [`CONNECT_TIMEOUT_SECS`]).
#[derive(Default)]
pub(crate) struct Connecting {
    queue: VecDeque<(u32, usize, u32)>,
    /// With a connect hook: the listed headers of each waiting connection's
    /// upgrade (by key, with its generation), for the hook call its
    /// `connect` may need. Taken by the `connect`, dropped at the deadline.
    pub(crate) headers: HashMap<usize, (u32, Headers)>,
}

/// Header names and values of an upgrade request, as the hook gets them.
pub(crate) type Headers = Vec<(Box<str>, Box<str>)>;

/// The bytes `headers` hold (charged to `--memory-limit` while kept).
pub(crate) fn weight(headers: &Headers) -> i64 {
    headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() as i64
}

impl Hub {
    /// Keeps a waiting connection's headers for its `connect`, charged to
    /// the memory budget (`kind="proxy"`) until taken or dropped.
    /// None listed (no `--proxy-http-headers`, or the client sent none):
    /// nothing kept, so no entry per waiting connection.
    pub(crate) fn keep_connect_headers(&mut self, key: usize, generation: u32, headers: Headers) {
        if headers.is_empty() {
            return;
        }
        self.budget.add(MemKind::Proxy, weight(&headers));
        if let Some((_, old)) = self.connecting.headers.insert(key, (generation, headers)) {
            self.budget.add(MemKind::Proxy, -weight(&old));
        }
    }

    /// Takes (or drops) the headers kept for `key`; those of `generation`.
    fn take_connect_headers(&mut self, key: usize, generation: Option<u32>) -> Option<Headers> {
        let (kept, headers) = self.connecting.headers.remove(&key)?;
        if generation.is_some_and(|g| g != kept) {
            // Another connection's, still within its deadline: put back.
            self.connecting.headers.insert(key, (kept, headers));
            return None;
        }
        self.budget.add(MemKind::Proxy, -weight(&headers));
        Some(headers)
    }
}

impl Connecting {
    /// Capacity kept when the queue empties.
    const KEPT: usize = 1024;
}

/// A push framed for Centrifuge sessions, made once per delivery.
pub(crate) enum Framed {
    Frame(Bytes),
    Close(u16, &'static str),
    Drop,
}

impl Hub {
    /// A connection upgraded on `/connection/websocket`: a session waiting
    /// for `connect`, with a deadline for it.
    pub(super) fn centrifuge_upgraded(&mut self, key: usize, generation: u32, conns: &mut dyn Conns) {
        let rate = Rate::new(self.config.max_messages_per_sec, self.config.max_bytes_per_sec);
        let mut session = Session::new(generation, None, None, rate);
        session.proto = Proto::CentrifugeConnecting;
        self.sessions.insert(key, session);
        let due = conns.tick().saturating_add(secs_to_ticks(CONNECT_TIMEOUT_SECS));
        self.connecting.queue.push_back((due, key, generation));
    }

    /// Once a tick: closes (3502) the connections still without `connect`
    /// at their deadline. One timeout for all, so deadlines come in order:
    /// the work is what is due, never a scan.
    pub(super) fn connect_deadlines(&mut self, conns: &mut dyn Conns) {
        let tick = conns.tick();
        while let Some(&(due, key, generation)) = self.connecting.queue.front() {
            if due > tick {
                break;
            }
            self.connecting.queue.pop_front();
            self.take_connect_headers(key, Some(generation));
            // One whose `connect` waits for the connect hook is not stale:
            // the hook's own timeout answers it.
            let waiting = self.sessions.get(&key).is_some_and(|s| {
                s.generation == generation && s.proto == Proto::CentrifugeConnecting && s.connecting.is_none()
            });
            if waiting {
                conns.close(key, close::STALE, "no connect command in time", Disconnect::Kicked);
            }
        }
        if self.connecting.queue.is_empty() && self.connecting.queue.capacity() > Connecting::KEPT {
            // A storm of connects is over: give its memory back.
            self.connecting.queue = VecDeque::new();
            if self.connecting.headers.is_empty() {
                self.connecting.headers = HashMap::new();
            }
        }
    }

    /// A frame from a Centrifuge session: its commands, in order. Each
    /// spends the connection's rate; the first one over it is answered 111
    /// and the rest of the frame is dropped unanswered, so a frame of many
    /// commands cannot make many refusals.
    pub(super) fn centrifuge_frame(&mut self, key: usize, text: &[u8], conns: &mut dyn Conns) {
        for (len, parsed) in wire::commands(text) {
            if !conns.is_open(key) || !self.sessions.contains_key(&key) {
                return;
            }
            match parsed {
                Ok(command) => {
                    // Errors need only the client's id: any tag will do.
                    let id = (command.id != 0).then_some(Tag::Publish.pack(command.id));
                    if self.over_rate(key, len, || id, conns) {
                        return;
                    }
                    self.centrifuge_command(key, command, conns)
                }
                Err(wire::Malformed(why)) => {
                    tracing::debug!(key, why, "centrifuge: malformed command");
                    conns.stats().command_errors += 1;
                    return conns.close(key, close::BAD_REQUEST, "bad request", Disconnect::ProtocolError);
                }
            }
        }
    }

    fn centrifuge_command(&mut self, key: usize, command: wire::Command<'_>, conns: &mut dyn Conns) {
        let wire::Command { id, method } = command;
        let connected = self.sessions.get(&key).is_some_and(|s| s.proto == Proto::Centrifuge);
        let call = match method {
            Method::Pong => return,
            // A second `connect` while the connect hook decides the first
            // (with a token or without) would make the session two clients.
            Method::Connect { .. } if self.sessions.get(&key).is_some_and(|s| s.connecting.is_some()) => {
                conns.stats().command_errors += 1;
                let why = "already connecting";
                return conns.close(key, close::BAD_REQUEST, why, Disconnect::ProtocolError);
            }
            Method::Connect { token, data } if !connected => {
                return self.centrifuge_connect(key, id, token, data, conns)
            }
            _ if !connected => {
                conns.stats().command_errors += 1;
                let why = "connect first";
                return conns.close(key, close::BAD_REQUEST, why, Disconnect::ProtocolError);
            }
            Method::Connect { .. } => {
                conns.stats().command_errors += 1;
                let why = "already connected";
                return conns.close(key, close::BAD_REQUEST, why, Disconnect::ProtocolError);
            }
            // `rpc` goes to the application (`--proxy-rpc-url`) as `/ws`'s
            // does; `send` has no hook here (the protocol gives it no reply):
            // it is read and dropped, as docs/PROTOCOL.md says.
            Method::Rpc { method, data } => (Tag::Rpc, Call::Rpc { method, data }),
            Method::Send => return,
            Method::SubRefresh => {
                let why =
                    "not available: subscription tokens are not used; the connection token's channels claim decides";
                return self.reply(key, &error_reply(id, code::NOT_AVAILABLE, why), conns);
            }
            Method::Unsubscribe { channel } => {
                let subscribed = self.sessions.get(&key).and_then(|s| s.subscription(&channel));
                if subscribed.is_none() {
                    // Centrifuge answers an unsubscribe of nothing with success.
                    let reply = format!("{{\"id\":{id},\"unsubscribe\":{{}}}}");
                    return self.reply(key, reply.as_bytes(), conns);
                }
                (Tag::Unsubscribe, Call::Unsubscribe { channel })
            }
            Method::Subscribe {
                channel,
                recover,
                join_leave,
            } => (
                Tag::Subscribe,
                Call::Subscribe {
                    channel,
                    recover,
                    join_leave,
                },
            ),
            Method::Publish { channel, data } => (Tag::Publish, Call::Publish { channel, data }),
            Method::Presence { channel } => (Tag::Presence, Call::Presence { channel }),
            Method::PresenceStats { channel } => (Tag::PresenceStats, Call::Presence { channel }),
            Method::History {
                channel,
                limit,
                since,
                reverse,
            } => history_call(channel, limit, since, reverse),
            Method::Refresh { token } => (Tag::Refresh, Call::Refresh { token }),
        };
        let (tag, call) = call;
        self.dispatch(key, Command { id: tag.pack(id), call }, conns);
    }

    /// `connect`: the token is verified as `/ws` verifies one at the
    /// upgrade; then the session is the user's, as a `/ws` one would be.
    fn centrifuge_connect(
        &mut self,
        key: usize,
        id: u32,
        token: Option<String>,
        data: Option<Box<serde_json::value::RawValue>>,
        conns: &mut dyn Conns,
    ) {
        let now = conns.now_unix();
        let token = token.filter(|t| !t.is_empty());
        // Without a token this node can verify, the connect hook
        // (`--proxy-connect-url`) says who the client is, as Centrifugo's
        // connect proxy does; a valid token skips it (as on `/ws`).
        let unverifiable = token.is_none() || self.config.jwt_secret.is_none();
        if unverifiable && self.proxy_has(crate::bus::proxy::Hook::Connect) {
            return self.centrifuge_ask_hook(key, id, data, conns);
        }
        let claims = match (self.config.jwt_secret.as_deref(), token) {
            (None, _) => None,
            (Some(_), None) if self.config.allow_anonymous => None,
            (Some(_), None) => {
                let reply = error_reply(id, code::UNAUTHORIZED, "unauthorized: a token is required");
                return self.reply(key, &reply, conns);
            }
            (Some(secret), Some(token)) => match auth::verify(&token, secret, now) {
                Ok(claims) if self.config.jwt_require_exp && claims.exp.is_none() => {
                    return conns.close(
                        key,
                        close::INVALID_TOKEN,
                        "invalid token: missing_exp",
                        Disconnect::Kicked,
                    );
                }
                Ok(claims) => Some(claims),
                Err(AuthError::Expired) => {
                    return self.reply(key, &error_reply(id, code::TOKEN_EXPIRED, "token expired"), conns);
                }
                Err(e) => {
                    let reason = format!("invalid token: {}", e.reason());
                    return conns.close(key, close::INVALID_TOKEN, &reason, Disconnect::Kicked);
                }
            },
        };
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.proto = Proto::Centrifuge;
        let generation = session.generation;
        let mut expires_in = None;
        if let Some(claims) = claims {
            let user: Arc<str> = claims.sub.as_str().into();
            session.user = Some(Arc::clone(&user));
            session.allowed = claims.channels.clone();
            self.lifetimes.begin(key, generation, &claims, false, conns.tick(), now);
            expires_in = claims.exp.map(|exp| exp.saturating_sub(now));
            self.online(key, generation, user, conns);
        }
        // The application hears of the connection once it is connected.
        self.announce(key);
        let client = self.client_id(key, generation);
        let body = translate::refresh_body(&client, expires_in);
        self.reply(key, format!("{{\"id\":{id},\"connect\":{body}}}").as_bytes(), conns);
    }

    /// A `connect` without a verifiable token, with a connect hook: the
    /// application is asked (the upgrade's listed headers, the connect's
    /// `data`); the reply waits for its answer. Nothing else is accepted
    /// meanwhile (the session is not connected), and a second `connect` is
    /// a protocol error.
    fn centrifuge_ask_hook(
        &mut self,
        key: usize,
        id: u32,
        data: Option<Box<serde_json::value::RawValue>>,
        conns: &mut dyn Conns,
    ) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.connecting = Some(Box::default());
        let generation = session.generation;
        let headers = self.take_connect_headers(key, Some(generation)).unwrap_or_default();
        let origin = self.origin(key, generation, u64::from(id));
        let data = data.map(|d| Box::<str>::from(d.get()));
        self.proxy_call(origin, None, Pending::Connect { headers, data }, conns);
    }

    /// The connect hook's answer for a Centrifuge `connect` (`to.id` is the
    /// command's id). Allowed: connected as the user it names, with its
    /// `data` in the reply; `expire_at` closes the connection then (3005,
    /// the SDK reconnects and the hook is asked again: there is no refresh
    /// hook, so the reply does not ask the client to refresh). `channels`
    /// are for `/ws` only (the protocol would need them in this reply's
    /// `subs` with their positions). Refused: the application's error,
    /// then a close the SDK does not retry (3503); the hook unreachable or
    /// late: error 100 (temporary: the SDK retries with backoff), then 3011.
    pub(in crate::hub) fn centrifuge_connect_answered(&mut self, to: Origin, verdict: Verdict, conns: &mut dyn Conns) {
        let key = to.key as usize;
        let id = to.id as u32;
        let allowed = match verdict {
            Verdict::Allow(allowed) => allowed,
            Verdict::Disconnect { code, reason } => {
                return conns.close(key, code, &reason, Disconnect::ConnectRefused);
            }
            Verdict::Refuse { code, message } => {
                self.reply(key, &error_reply(id, code, &message), conns);
                return conns.close(key, close::FORCE_NO_RECONNECT, &message, Disconnect::ConnectRefused);
            }
            Verdict::Failed { why, .. } => {
                self.reply(key, &error_reply(id, code::INTERNAL, &why), conns);
                return conns.close(key, close::FORCE_RECONNECT, &why, Disconnect::HookUnavailable);
            }
        };
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.proto = Proto::Centrifuge;
        let user = allowed.user.as_deref().filter(|u| !u.is_empty()).map(Arc::<str>::from);
        if let Some(user) = &user {
            self.become_user(to, user, allowed.expire_at, conns);
        }
        self.announce(key);
        let client = self.client_id(key, to.generation);
        let mut body = translate::refresh_body(&client, None);
        if let Some(data) = allowed.data.as_deref() {
            body.pop(); // the closing brace
            body.push_str(&format!(",\"data\":{data}}}"));
        }
        self.reply(key, format!("{{\"id\":{id},\"connect\":{body}}}").as_bytes(), conns);
    }

    /// The client id a connection is told (shard, slab key, generation).
    fn client_id(&self, key: usize, generation: u32) -> String {
        format!("{}-{key}-{generation}", self.shard)
    }

    /// Queues Centrifuge JSON made here (not by the hub's `/ws` paths).
    fn reply(&self, key: usize, json: &[u8], conns: &mut dyn Conns) {
        conns.queue(key, text_frame(json, &self.budget));
    }

    /// A `/ws` reply or push for the Centrifuge session at `key`.
    pub(super) fn centrifuge_send(&self, key: usize, generation: u32, json: &[u8], conns: &mut dyn Conns) {
        let client = self.client_id(key, generation);
        let ctx = Context {
            client: &client,
            max_reply_bytes: self.config.max_reply_bytes,
        };
        match translate::translate(json, &ctx) {
            Action::Send(json) => self.reply(key, &json, conns),
            Action::Close(code, reason) => conns.close(key, code, reason, Disconnect::MissedMessages),
            Action::Drop => {}
        }
    }

    /// Queues a shared frame for a group member (see [`member`]): as is for
    /// `/ws`, translated once into `centrifuge` for Centrifuge sessions.
    pub(super) fn queue_member(
        &self,
        member: usize,
        frame: &Bytes,
        centrifuge: &mut Option<Framed>,
        conns: &mut dyn Conns,
    ) {
        if member & MEMBER_TAG == 0 {
            return conns.queue(member, frame.clone());
        }
        let key = member & !MEMBER_TAG;
        match centrifuge.get_or_insert_with(|| self.centrifuge_push(frame)) {
            Framed::Frame(frame) => conns.queue(key, frame.clone()),
            Framed::Close(code, reason) => conns.close(key, *code, reason, Disconnect::MissedMessages),
            Framed::Drop => {}
        }
    }

    /// A `/ws` push frame, framed again for Centrifuge sessions.
    fn centrifuge_push(&self, frame: &Bytes) -> Framed {
        let ctx = Context {
            client: "",
            max_reply_bytes: self.config.max_reply_bytes,
        };
        match translate::translate(payload_of(frame), &ctx) {
            Action::Send(json) => Framed::Frame(text_frame(&json, &self.budget)),
            Action::Close(code, reason) => Framed::Close(code, reason),
            Action::Drop => Framed::Drop,
        }
    }
}

/// The hub's `history` query for Centrifuge's: forward pages start at the
/// stream's beginning, or after `since`; reverse ones end at the top, or
/// just before `since`, and are turned round. `limit` 0 asks for the
/// position only, a negative one for the server's default page.
fn history_call(channel: String, limit: i64, since: Option<u64>, reverse: bool) -> (Tag, Call<'static>) {
    let limit = match limit {
        0 => None,
        n if n < 0 => Some(DEFAULT_HISTORY_LIMIT as u64),
        n => Some(n as u64),
    };
    let position = |channel| {
        let call = Call::History {
            channel,
            limit: Some(1),
            since: None,
        };
        (Tag::HistoryPosition, call)
    };
    let Some(limit) = limit else { return position(channel) };
    let page = |since: Option<u64>, limit: u64| Call::History {
        channel: channel.clone(),
        limit: Some(usize::try_from(limit).unwrap_or(usize::MAX)),
        since,
    };
    match (reverse, since) {
        (false, since) => (Tag::History, page(Some(since.unwrap_or(0)), limit)),
        (true, None) => (Tag::HistoryReverse, page(None, limit)),
        (true, Some(before)) => {
            // Offsets are contiguous: the `n` before `before` follow `before - 1 - n`.
            let n = limit.min(before.saturating_sub(1));
            if n == 0 {
                return position(channel);
            }
            (Tag::HistoryReverse, page(Some(before - 1 - n), n))
        }
    }
}

/// The payload of a server frame (unmasked: a 2, 4 or 10 byte header).
fn payload_of(frame: &[u8]) -> &[u8] {
    let head = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(head..).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(limit: i64, since: Option<u64>, reverse: bool) -> (Tag, Option<usize>, Option<u64>) {
        match history_call("c".into(), limit, since, reverse) {
            (tag, Call::History { limit, since, .. }) => (tag, limit, since),
            _ => unreachable!(),
        }
    }

    #[test]
    fn centrifuge_history_becomes_the_hub_page_that_holds_it() {
        assert_eq!(
            call(10, None, false),
            (Tag::History, Some(10), Some(0)),
            "from the start"
        );
        assert_eq!(call(10, Some(4), false), (Tag::History, Some(10), Some(4)));
        assert_eq!(
            call(10, None, true),
            (Tag::HistoryReverse, Some(10), None),
            "the newest"
        );
        assert_eq!(
            call(3, Some(10), true),
            (Tag::HistoryReverse, Some(3), Some(6)),
            "7, 8, 9"
        );
        assert_eq!(call(10, Some(3), true), (Tag::HistoryReverse, Some(2), Some(0)), "1, 2");
        assert_eq!(call(10, Some(1), true).0, Tag::HistoryPosition, "nothing before 1");
        assert_eq!(call(0, None, false).0, Tag::HistoryPosition);
        assert_eq!(call(-1, None, false).1, Some(DEFAULT_HISTORY_LIMIT));
    }

    #[test]
    fn a_frame_payload_is_found_behind_any_header() {
        let budget = crate::buf::MemoryBudget::new(0);
        for len in [0usize, 125, 126, 70_000] {
            let json = vec![b'x'; len];
            assert_eq!(payload_of(&text_frame(&json, &budget)), &json[..]);
        }
    }
}
