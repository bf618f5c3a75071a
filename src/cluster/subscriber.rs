//! The subscriber thread: one Redis connection in Pub/Sub mode. Every
//! publication of every channel arrives here in the order the publish
//! script ran, and goes to the channel's owner shard through its inbox (one
//! producer, FIFO), so every node delivers one order per channel. Control
//! messages from other nodes (user messages, disconnects, kicks) go to the
//! shards that hold the connections.
//!
//! A PING every few seconds finds a Redis that stopped answering; any error
//! reconnects with backoff. Publications sent while this connection was
//! down are not replayed here: the owners see the gap in offsets (see
//! `ChannelLog::append_at`) and clients recover from Redis's history.

use std::io::{self, BufRead};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::backoff::Backoff;
use super::keys;
use super::resp::{Conn, Value};
use super::REDIS_TIMEOUT;
use crate::bus::cluster::{ClusterConfig, ClusterState};
use crate::bus::msg::{HubMsg, Origin};
use crate::bus::peers::Peers;
use crate::ws::codec::{self, Kind, MAX_SERVER_HEADER};

/// How long one read waits before the thread looks at the stop flag.
const READ_SLICE: Duration = Duration::from_millis(200);
const PING_EVERY: Duration = Duration::from_secs(2);
/// Silence (no message, no pong) after which the connection is given up.
const SILENCE_LIMIT: Duration = Duration::from_secs(6);

pub(crate) struct Subscriber {
    config: ClusterConfig,
    shards: Peers,
    state: Arc<ClusterState>,
    backoff: Backoff,
}

impl Subscriber {
    pub fn new(config: ClusterConfig, shards: Peers, state: Arc<ClusterState>) -> Subscriber {
        Subscriber {
            config,
            shards,
            state,
            backoff: Backoff::default(),
        }
    }

    pub fn run(mut self) {
        let mut logged = false;
        while !self.state.stop.load(Ordering::Relaxed) {
            let error = match self.connect() {
                Ok(conn) => {
                    logged = false;
                    self.backoff.reset();
                    self.state.set(&self.state.subscriber_up, true, "subscriber", None);
                    self.listen(conn)
                }
                Err(e) => e,
            };
            let error = (!logged).then_some(&error);
            logged = true;
            self.state.set(&self.state.subscriber_up, false, "subscriber", error);
            let delay = self.backoff.next_delay();
            self.sleep(delay);
        }
    }

    fn sleep(&self, total: Duration) {
        let until = Instant::now() + total;
        while Instant::now() < until && !self.state.stop.load(Ordering::Relaxed) {
            std::thread::sleep(READ_SLICE.min(until.saturating_duration_since(Instant::now())));
        }
    }

    fn connect(&self) -> io::Result<Conn> {
        let mut conn = Conn::connect(&self.config.redis, REDIS_TIMEOUT)?;
        conn.queue(&["SUBSCRIBE", keys::CONTROL]);
        conn.queue(&["PSUBSCRIBE", keys::PUB_PATTERN]);
        conn.flush()?;
        for _ in 0..2 {
            if let Value::Error(e) = conn.read()? {
                return Err(io::Error::other(e));
            }
        }
        Ok(conn)
    }

    /// Reads messages until the connection fails or the server stops.
    fn listen(&mut self, mut conn: Conn) -> io::Error {
        if let Err(e) = conn.set_read_timeout(READ_SLICE) {
            return e;
        }
        let (mut heard, mut pinged) = (Instant::now(), Instant::now());
        while !self.state.stop.load(Ordering::Relaxed) {
            if pinged.elapsed() >= PING_EVERY {
                pinged = Instant::now();
                conn.queue(&["PING"]);
                if let Err(e) = conn.flush() {
                    return e;
                }
            }
            if heard.elapsed() > SILENCE_LIMIT {
                return io::Error::new(io::ErrorKind::TimedOut, "Redis stopped answering");
            }
            match wait_readable(&mut conn) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => return e,
            }
            // A message has started: the rest comes within the same timeout.
            match conn.read() {
                Ok(value) => {
                    heard = Instant::now();
                    self.dispatch(value);
                }
                Err(e) => return e,
            }
        }
        io::Error::other("stopping")
    }

    fn dispatch(&self, value: Value) {
        let mut items = value.into_array();
        let kind = items.first().and_then(Value::as_str).unwrap_or("").to_string();
        match kind.as_str() {
            "pmessage" if items.len() == 4 => {
                let payload = items.pop().unwrap_or(Value::Nil);
                let channel = items.pop().unwrap_or(Value::Nil);
                self.publication(channel.as_str().unwrap_or(""), payload.as_bytes().unwrap_or(&[]));
            }
            "message" if items.len() == 3 => {
                let payload = items.pop().unwrap_or(Value::Nil);
                self.control(payload.as_bytes().unwrap_or(&[]));
            }
            _ => {} // pong, subscribe confirmations
        }
    }

    /// `EPOCH\nOFFSET\nDATA` on `hubbub:pub:CHANNEL` -> the owner shard.
    fn publication(&self, channel: &str, payload: &[u8]) {
        let Some(channel) = channel.strip_prefix(keys::PUB_PREFIX) else {
            return;
        };
        let Ok(text) = std::str::from_utf8(payload) else { return };
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

/// Waits up to the read timeout for the next reply to start: `false` when
/// nothing came (nothing was consumed, so the stream stays in step).
fn wait_readable(conn: &mut Conn) -> io::Result<bool> {
    if conn.has_buffered() {
        return Ok(true);
    }
    match conn.reader().fill_buf() {
        Ok([]) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "redis closed the connection",
        )),
        Ok(_) => Ok(true),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(false),
        Err(e) => Err(e),
    }
}

fn text_frame(json: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(json.len() + MAX_SERVER_HEADER);
    codec::encode_frame(&mut frame, Kind::Text, json);
    Bytes::from(frame)
}
