//! A node's subscriber connection to one Redis server, in Pub/Sub mode.
//! Every publication of every channel arrives there in the order the
//! publish script ran, and goes to the channel's owner shard through its
//! inbox (one producer, FIFO), so every node delivers one order per
//! channel. Control messages from other nodes (user messages, disconnects,
//! kicks) go to the shards that hold the connections.
//!
//! `Dispatch` is what does that, without I/O. It runs in one shard's event
//! loop for a server reached over plain TCP (`listen`), and in a thread of
//! its own (`Subscriber`, here) for a `rediss://` server, whose connection
//! is the `redis` crate's.
//!
//! A PING every few seconds finds a Redis that stopped answering; any error
//! reconnects with backoff (through Sentinel, to whichever server is the
//! master by then). Publications sent while this connection was
//! down are not replayed here: the owners see the gap in offsets (see
//! `ChannelLog::append_at`) and clients recover from Redis's history.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::backoff::Backoff;
use super::keys;
use super::link::Target;
use super::REDIS_TIMEOUT;
use crate::bus::cluster::{ClusterConfig, ClusterLink, ClusterState};
use crate::bus::msg::{HubMsg, Origin};
use crate::bus::peers::Peers;
use crate::hub::mailbox;
use crate::metrics::names;
use crate::ws::codec::{self, Kind, MAX_SERVER_HEADER};

/// How long one read waits before the thread looks at the stop flag.
const READ_SLICE: Duration = Duration::from_millis(200);
/// A PING finds a Redis that stopped answering (its pong must come within
/// `REDIS_TIMEOUT`).
pub(crate) const PING_EVERY: Duration = Duration::from_secs(2);

pub(crate) struct Subscriber {
    target: Target,
    backoff: Backoff,
    dispatch: Dispatch,
    /// To ask the command thread to read the channels' positions again
    /// once a new connection is subscribed (`ClusterLink::ask_resync`).
    link: ClusterLink,
}

/// What arrives on a subscriber connection, sent where it goes: the part
/// of the subscriber that does no I/O, shared by this thread (a `rediss://`
/// server) and a shard's own subscriber connection (`listen`).
pub(crate) struct Dispatch {
    config: ClusterConfig,
    /// Which Redis server (`--redis` order) this one listens to.
    server: usize,
    shards: Peers,
    state: Arc<ClusterState>,
    /// Room messages got into each shard's data lane so far (the last
    /// `ClusterRoomMessage::seq` sent there).
    rooms_sent: Vec<u64>,
}

impl Subscriber {
    pub fn new(target: Target, dispatch: Dispatch, link: ClusterLink) -> Subscriber {
        Subscriber {
            target,
            backoff: Backoff::default(),
            dispatch,
            link,
        }
    }

    pub fn run(mut self) {
        let state = Arc::clone(&self.dispatch.state);
        let mut logged = false;
        while !state.stop.load(Ordering::Relaxed) {
            let error = self.listen();
            if self.dispatch.lost() {
                logged = false; // it was up: this is a new outage
            }
            let error = (!logged).then_some(&error);
            logged = true;
            self.dispatch.down(error);
            let delay = self.backoff.next_delay();
            self.sleep(delay);
        }
    }

    fn sleep(&self, total: Duration) {
        let until = Instant::now() + total;
        while Instant::now() < until && !self.dispatch.state.stop.load(Ordering::Relaxed) {
            std::thread::sleep(READ_SLICE.min(until.saturating_duration_since(Instant::now())));
        }
    }

    /// Reads messages until the connection fails or the server stops.
    fn listen(&mut self) -> io::Error {
        let mut conn = match self.target.connect(REDIS_TIMEOUT) {
            Ok(conn) => conn,
            Err(e) => return e.into(),
        };
        let mut pubsub = conn.as_pubsub();
        let subscribed = pubsub
            .subscribe(keys::CONTROL)
            .and_then(|()| pubsub.psubscribe(keys::PUB_PATTERN))
            .and_then(|()| pubsub.psubscribe(keys::ROOM_PATTERN))
            .and_then(|()| pubsub.set_read_timeout(Some(READ_SLICE)));
        if let Err(e) = subscribed {
            return io::Error::other(e);
        }
        self.backoff.reset();
        self.dispatch.up();
        // Subscribed: what was published while this connection was down is
        // found now, not at the channel's next publication.
        self.link.ask_resync(self.dispatch.server);
        let mut pinged = Instant::now();
        while !self.dispatch.state.stop.load(Ordering::Relaxed) {
            if pinged.elapsed() >= PING_EVERY {
                pinged = Instant::now();
                // Messages that arrive before the pong are kept by the crate.
                let ping = pubsub
                    .set_read_timeout(Some(REDIS_TIMEOUT))
                    .and_then(|()| pubsub.ping::<redis::Value>())
                    .and_then(|_| pubsub.set_read_timeout(Some(READ_SLICE)));
                if let Err(e) = ping {
                    return io::Error::other(format!("Redis stopped answering: {e}"));
                }
            }
            // A timeout in the middle of a message keeps what was read (the
            // crate's parser resumes): only the wait for the next one ends.
            match pubsub.get_message() {
                Ok(msg) => {
                    let from_pattern = msg.from_pattern();
                    self.dispatch
                        .message(msg.get_channel_name(), from_pattern, msg.get_payload_bytes())
                }
                Err(e) if e.is_timeout() => continue,
                Err(e) => return io::Error::other(e),
            }
        }
        io::Error::other("stopping")
    }
}

impl Dispatch {
    pub fn new(config: ClusterConfig, server: usize, shards: Peers, state: Arc<ClusterState>) -> Dispatch {
        Dispatch {
            config,
            server,
            rooms_sent: vec![0; shards.len()],
            shards,
            state,
        }
    }

    /// Whether an owner shard here keeps a log of `channel`.
    pub fn wants(&self, channel: &str) -> bool {
        self.state.wanted.contains(channel)
    }

    /// The connection is subscribed: messages flow.
    pub fn up(&mut self) {
        self.state
            .set(&self.state.subscriber_up[self.server], true, "subscriber", None);
    }

    /// The connection failed (or could not be opened, `error` the first
    /// time in an outage): counted down.
    pub fn down(&mut self, error: Option<&io::Error>) {
        self.state
            .set(&self.state.subscriber_up[self.server], false, "subscriber", error);
    }

    /// The connection is gone. If it was up, this is a new outage: room
    /// messages have no offsets to find a gap by, so the members here are
    /// told now that they miss messages, each after what was sent to its
    /// shard before the loss. Returns whether it was up.
    pub fn lost(&mut self) -> bool {
        if !self.state.subscriber_up[self.server].load(Ordering::Relaxed) {
            return false;
        }
        if !self.state.stop.load(Ordering::Relaxed) {
            for shard in 0..self.shards.len() {
                let (server, after) = (self.server as u16, self.rooms_sent[shard]);
                // Control lane: refused only when the shard is gone.
                let _ = self.shards.to(shard, HubMsg::ClusterRoomsLost { server, after });
            }
            self.state.reconnects.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(names::CLUSTER_RECONNECTS).increment(1);
        }
        true
    }

    /// One message as Redis delivered it: on `channel` (matched by a
    /// pattern, or subscribed by name), with `payload`. A channel's
    /// publications come either way: by name on a shard's connection
    /// (`listen`), by pattern on this thread's.
    pub fn message(&mut self, channel: &str, from_pattern: bool, payload: &[u8]) {
        if let Some(room) = channel.strip_prefix(keys::ROOM_PREFIX).filter(|_| from_pattern) {
            self.room_message(room, payload);
        } else if channel == keys::CONTROL {
            self.control(payload);
        } else {
            self.publication(channel, payload);
        }
    }

    /// `EPOCH\nOFFSET\nDATA` on `hubbub:pub:CHANNEL` -> the owner shard.
    fn publication(&self, channel: &str, payload: &[u8]) {
        let Some(channel) = channel.strip_prefix(keys::PUB_PREFIX) else {
            return;
        };
        let Ok(text) = std::str::from_utf8(payload) else { return };
        if let Some((node, json)) = keys::parse_presence(text) {
            return self.presence(channel, node, json);
        }
        // Only channels with a log here, and mailboxes (their users'
        // connections here get them without one).
        if !self.state.wanted.contains(channel) && mailbox::user_of(channel).is_none() {
            metrics::counter!(names::CLUSTER_SKIPPED).increment(1);
            return;
        }
        let mut parts = text.splitn(3, '\n');
        let (Some(epoch), Some(offset), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let Ok(offset) = offset.parse() else { return };
        let msg = HubMsg::ClusterPublication {
            channel: channel.into(),
            epoch: epoch.into(),
            offset,
            data: data.into(),
        };
        self.send(self.shards.owner_of(channel), msg);
    }

    /// Another node's joins and leaves of a channel -> every shard, which
    /// pushes them to its `join_leave` watchers of the channel (if any).
    /// This node's own come back too and are skipped: they were pushed here
    /// when they happened.
    fn presence(&self, channel: &str, node: &str, json: &str) {
        if node == &*self.config.node {
            return;
        }
        let Ok(push) = serde_json::from_str::<serde_json::Value>(json) else {
            return;
        };
        let about = |key: &str| push.get(key).and_then(|v| v.as_str());
        if about("push") != Some("presence") || about("channel") != Some(channel) {
            return; // not a node's push for this channel
        }
        let (channel, frame): (Arc<str>, Bytes) = (channel.into(), text_frame(json.as_bytes()));
        for shard in 0..self.shards.len() {
            let msg = HubMsg::PresenceEvents {
                channel: Arc::clone(&channel),
                frame: frame.clone(),
            };
            self.send(shard, msg);
        }
    }

    /// A room message on `hubbub:room:ROOM` (from any node, this one's
    /// included) -> the room's owner shard, which delivers it to every
    /// member here. Only one whole final text (UTF-8) or binary server frame
    /// is passed on: anything else on that channel was not sent by a node
    /// and is ignored. If the owner's inbox is full, the room's members here
    /// missed it: the owner is told (control lane) after which of this
    /// thread's messages, and once it has delivered those it closes the
    /// members (1013) on every shard, as for a local overload.
    fn room_message(&mut self, room: &str, payload: &[u8]) {
        if room.is_empty() || !is_room_frame(payload) {
            return;
        }
        let room: Arc<str> = room.into();
        let owner = self.shards.owner_of(&room);
        let server = self.server as u16;
        let msg = HubMsg::ClusterRoomMessage {
            room: Arc::clone(&room),
            frame: Bytes::copy_from_slice(payload),
            server,
            seq: self.rooms_sent[owner] + 1,
        };
        if self.shards.to(owner, msg).is_ok() {
            self.rooms_sent[owner] += 1;
            return;
        }
        self.state.drop_one();
        let after = self.rooms_sent[owner];
        // Control lane: refused only when the shard is gone.
        let _ = self.shards.to(owner, HubMsg::ClusterRoomGap { room, server, after });
    }

    fn control(&self, payload: &[u8]) {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        let text = |key: &str| message.get(key).and_then(|v| v.as_str()).unwrap_or("");
        let number = |key: &str| message.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
        let me = &*self.config.node;
        match text("k") {
            "m" if text("from") != me => {
                let frame = text_frame(text("json").as_bytes());
                let user: Arc<str> = text("user").into();
                for shard in 0..self.shards.len() {
                    let msg = HubMsg::UserMessage {
                        user: Arc::clone(&user),
                        frame: frame.clone(),
                        mail: None,
                    };
                    self.send(shard, msg);
                }
            }
            "d" if text("from") != me => {
                let (user, reason): (Arc<str>, Arc<str>) = (text("user").into(), text("reason").into());
                for shard in 0..self.shards.len() {
                    let msg = HubMsg::DisconnectUser {
                        user: Arc::clone(&user),
                        code: number("code") as u16,
                        reason: Arc::clone(&reason),
                        reply: None,
                    };
                    self.send(shard, msg);
                }
            }
            "t" if text("from") != me => {
                let (token_id, reason): (Arc<str>, Arc<str>) = (text("token_id").into(), text("reason").into());
                for shard in 0..self.shards.len() {
                    let msg = HubMsg::DisconnectToken {
                        token_id: Arc::clone(&token_id),
                        code: number("code") as u16,
                        reason: Arc::clone(&reason),
                        reply: None,
                    };
                    self.send(shard, msg);
                }
            }
            "x" if text("node") == me => {
                let conn = Origin {
                    shard: number("shard") as u16,
                    key: number("key") as u32,
                    generation: number("generation") as u32,
                    id: 0,
                };
                if (conn.shard as usize) < self.shards.len() {
                    let msg = HubMsg::Kick {
                        conn,
                        code: crate::hub::config::CLOSE_REPLACED,
                        reason: "replaced".into(),
                    };
                    self.send(conn.shard as usize, msg);
                }
            }
            _ => {}
        }
    }

    fn send(&self, shard: usize, msg: HubMsg) {
        if self.shards.to(shard, msg).is_err() {
            self.state.drop_one();
        }
    }
}

/// Whether `frame` is exactly one unmasked, final server frame of text
/// (valid UTF-8) or binary data, as `codec::encode_frame` writes it.
fn is_room_frame(frame: &[u8]) -> bool {
    let [first, second, rest @ ..] = frame else {
        return false;
    };
    if *first != 0x81 && *first != 0x82 {
        return false;
    }
    let (len, payload) = match second {
        0..=125 => (u64::from(*second), rest),
        126 if rest.len() >= 2 => (u64::from(u16::from_be_bytes([rest[0], rest[1]])), &rest[2..]),
        127 if rest.len() >= 8 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&rest[..8]);
            (u64::from_be_bytes(bytes), &rest[8..])
        }
        _ => return false,
    };
    if payload.len() as u64 != len {
        return false;
    }
    *first == 0x82 || std::str::from_utf8(payload).is_ok()
}

fn text_frame(json: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(json.len() + MAX_SERVER_HEADER);
    codec::encode_frame(&mut frame, Kind::Text, json);
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        codec::encode_frame(&mut out, kind, payload);
        out
    }

    #[test]
    fn room_frames_of_every_length_pass_and_anything_else_is_refused() {
        for len in [0, 1, 125, 126, 65_535, 65_536, 200_000] {
            assert!(is_room_frame(&frame(Kind::Binary, &vec![0xff; len])), "binary of {len}");
            assert!(is_room_frame(&frame(Kind::Text, &vec![b'a'; len])), "text of {len}");
        }
        let good = frame(Kind::Binary, &[1, 2, 3]);
        assert!(!is_room_frame(&good[..good.len() - 1]), "cut short");
        assert!(!is_room_frame(&[good.clone(), vec![0]].concat()), "trailing byte");
        assert!(
            !is_room_frame(&frame(Kind::Text, &[0xff, 0xfe])),
            "text that is not UTF-8"
        );
        assert!(!is_room_frame(&frame(Kind::Ping, b"x")), "control frame");
        assert!(!is_room_frame(&[0x01, 0x01, b'a']), "not final");
        assert!(!is_room_frame(&[0x81, 0x81, 0, 0, 0, 0, b'a']), "masked");
        assert!(!is_room_frame(b""), "empty");
        assert!(!is_room_frame(b"\x81\x7e\x00"), "header cut short");
    }
}
