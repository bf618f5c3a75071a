//! Owns the Centrifuge client protocol (JSON encoding) as far as the load tester speaks it, on
//! hubbub's `/connection/websocket` or any server of that protocol (`--centrifuge`): the commands
//! it sends (`connect`, `subscribe`, `publish`, and the pong `{}` to the server's ping), reading
//! the lines that come back (one reply or push per line, several lines per frame), and [`Joiner`],
//! which takes each upgraded connection through `connect` and `subscribe` before the scenario
//! counts it as open.
//!
//! Builds and parses bytes only; the scenarios send them through the engine.

use std::borrow::Cow;
use std::collections::VecDeque;

use serde::Deserialize;

use crate::engine::Net;

/// Command id of a connection's `connect`.
pub const CONNECT_ID: u64 = 1;
/// Command id of a connection's `subscribe`.
pub const SUBSCRIBE_ID: u64 = 2;
/// The first command id of a publisher's `publish` commands.
pub const FIRST_PUBLISH_ID: u64 = 3;
/// The channel when `--channel` is not given.
pub const DEFAULT_CHANNEL: &str = "hubbub-load";
/// What a client answers to the server's ping (an empty object).
pub const PONG: &[u8] = b"{}";

/// One line from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The answer to command `id`; `error` is the protocol's error code if it was refused.
    Reply { id: u64, error: Option<u32> },
    /// A publication pushed on `channel`, whose data was the JSON string `data`.
    Publication { channel: Cow<'a, str>, data: Cow<'a, str> },
    /// The server's ping (`{}`): answer with [`PONG`].
    Ping,
    /// Any other push (join, leave, message, unsubscribe, disconnect, ...): not counted.
    OtherPush,
    /// Not a line of the protocol, or a publication whose data is not a string.
    Invalid,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default)]
    id: u64,
    error: Option<WireError>,
    #[serde(borrow)]
    push: Option<Push<'a>>,
    connect: Option<ConnectResult>,
}

/// A connect reply names the client: an echo of the command (an echo endpoint given by mistake)
/// does not, and is not taken for a reply.
#[derive(Deserialize)]
struct ConnectResult {
    client: Option<String>,
}

#[derive(Deserialize)]
struct WireError {
    code: u32,
}

#[derive(Deserialize)]
struct Push<'a> {
    #[serde(borrow, default)]
    channel: Cow<'a, str>,
    #[serde(borrow, rename = "pub")]
    publication: Option<Publication<'a>>,
}

#[derive(Deserialize)]
struct Publication<'a> {
    #[serde(borrow)]
    data: Cow<'a, str>,
}

/// Parses one line (without its `\n`).
pub fn parse_line(line: &[u8]) -> Line<'_> {
    if line == PONG {
        return Line::Ping;
    }
    let Ok(wire) = serde_json::from_slice::<Wire>(line) else {
        return Line::Invalid;
    };
    if wire.connect.is_some_and(|c| c.client.is_none()) {
        return Line::Invalid;
    }
    if wire.id > 0 {
        return Line::Reply {
            id: wire.id,
            error: wire.error.map(|e| e.code),
        };
    }
    match wire.push {
        Some(Push {
            channel,
            publication: Some(p),
        }) => Line::Publication { channel, data: p.data },
        Some(_) => Line::OtherPush,
        None => Line::Invalid,
    }
}

/// The lines of one text message (the protocol puts several in a frame, one per line).
pub fn lines(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    message.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// `{"id":1,"connect":{...}}`, with the token when one is given.
pub fn connect_command(token: Option<&str>) -> Vec<u8> {
    let params = match token {
        Some(t) => serde_json::json!({ "token": t }),
        None => serde_json::json!({}),
    };
    serde_json::json!({ "id": CONNECT_ID, "connect": params })
        .to_string()
        .into_bytes()
}

/// `{"id":2,"subscribe":{"channel":...}}`.
pub fn subscribe_command(channel: &str) -> Vec<u8> {
    serde_json::json!({ "id": SUBSCRIBE_ID, "subscribe": { "channel": channel } })
        .to_string()
        .into_bytes()
}

/// A `publish` command whose data is a JSON string of exactly `size` bytes that `fill` writes
/// (it must write JSON string characters that need no escaping: the tool's payloads are ASCII
/// letters and hex digits). Built in place: `prefix` is `{"id":N,"publish":{"channel":C,"data":"`.
pub struct PublishFrame {
    prefix: Vec<u8>,
}

/// What follows the data of a `publish` command.
const PUBLISH_SUFFIX: &[u8] = b"\"}}";

impl PublishFrame {
    /// The frame of command `id` on `channel`.
    pub fn new(id: u64, channel: &str) -> PublishFrame {
        let channel = serde_json::to_string(channel).unwrap_or_else(|_| "\"\"".into());
        let prefix = format!("{{\"id\":{id},\"publish\":{{\"channel\":{channel},\"data\":\"");
        PublishFrame {
            prefix: prefix.into_bytes(),
        }
    }

    /// Bytes of the whole frame for `size` bytes of data.
    pub fn len(&self, size: usize) -> usize {
        self.prefix.len() + size + PUBLISH_SUFFIX.len()
    }

    /// Writes the frame into `out` (of [`PublishFrame::len`] bytes).
    pub fn write(&self, out: &mut [u8], fill: impl FnOnce(&mut [u8])) {
        let (head, rest) = out.split_at_mut(self.prefix.len());
        head.copy_from_slice(&self.prefix);
        let (data, tail) = rest.split_at_mut(rest.len() - PUBLISH_SUFFIX.len());
        fill(data);
        tail.copy_from_slice(PUBLISH_SUFFIX);
    }
}

/// A connection on its way in: upgraded, `connect` sent, maybe `subscribe` sent.
#[derive(Debug, Clone, Copy)]
struct Pending {
    handshake_ns: u64,
    upgraded_ns: u64,
    subscribing: bool,
}

/// What a reply did to a connection on its way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Nothing yet (or not a reply of the join).
    Waiting,
    /// Subscribed: the connection is open for the scenario. `handshake_ns` is its upgrade's,
    /// `join_ns` the time from the upgrade to the subscribe reply.
    Joined { handshake_ns: u64, join_ns: u64 },
    /// The server refused the connect or the subscribe with this error code; the connection
    /// was closed (the caller counts it as failed, it gets no `on_closed` as an open one).
    Refused(u32),
}

/// Takes upgraded connections through `connect` and `subscribe`, each bounded by a deadline.
pub struct Joiner {
    connect: Vec<u8>,
    subscribe: Vec<u8>,
    timeout_ns: u64,
    /// By connection id.
    pending: Vec<Option<Pending>>,
    /// (deadline, id, upgraded_ns) in deadline order; stale entries are skipped.
    deadlines: VecDeque<(u64, usize, u64)>,
}

impl Joiner {
    /// Joins `channel`, connecting with `token` if given; a join that takes longer than
    /// `timeout_ns` from the upgrade fails as a timeout.
    pub fn new(channel: &str, token: Option<&str>, timeout_ns: u64) -> Joiner {
        Joiner {
            connect: connect_command(token),
            subscribe: subscribe_command(channel),
            timeout_ns,
            pending: Vec::new(),
            deadlines: VecDeque::new(),
        }
    }

    /// The connection upgraded: sends its `connect`.
    pub fn start(&mut self, net: &mut Net, id: usize, now: u64, handshake_ns: u64) {
        if self.pending.len() <= id {
            self.pending.resize(id + 1, None);
        }
        self.pending[id] = Some(Pending {
            handshake_ns,
            upgraded_ns: now,
            subscribing: false,
        });
        self.deadlines.push_back((now + self.timeout_ns, id, now));
        let command = &self.connect;
        net.send(id, true, command.len(), |p| p.copy_from_slice(command));
    }

    /// Forgets `id` (it closed); returns whether it was still on its way in.
    pub fn forget(&mut self, id: usize) -> bool {
        self.pending.get_mut(id).and_then(Option::take).is_some()
    }

    /// Acts on reply `reply` of connection `id`.
    pub fn on_reply(&mut self, net: &mut Net, id: usize, now: u64, reply: u64, error: Option<u32>) -> Join {
        let Some(p) = self.pending.get_mut(id).and_then(Option::as_mut) else {
            return Join::Waiting;
        };
        let expected = if p.subscribing { SUBSCRIBE_ID } else { CONNECT_ID };
        if reply != expected {
            return Join::Waiting;
        }
        if let Some(code) = error {
            self.pending[id] = None;
            net.abort(id);
            return Join::Refused(code);
        }
        if !p.subscribing {
            p.subscribing = true;
            let command = &self.subscribe;
            net.send(id, true, command.len(), |b| b.copy_from_slice(command));
            return Join::Waiting;
        }
        let joined = Join::Joined {
            handshake_ns: p.handshake_ns,
            join_ns: now.saturating_sub(p.upgraded_ns),
        };
        self.pending[id] = None;
        joined
    }

    /// The next connection whose join ran out of time, aborted (it gets no `on_closed`: the
    /// caller counts it as a failed attempt that timed out).
    pub fn expired(&mut self, net: &mut Net, now: u64) -> Option<usize> {
        while let Some(&(deadline, id, upgraded)) = self.deadlines.front() {
            if deadline > now {
                return None;
            }
            self.deadlines.pop_front();
            let current = self.pending.get(id).copied().flatten();
            if current.is_some_and(|p| p.upgraded_ns == upgraded) {
                self.pending[id] = None;
                net.abort(id);
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_as_replies_publications_and_pings() {
        assert_eq!(
            parse_line(br#"{"id":1,"connect":{"client":"c","version":"0"}}"#),
            Line::Reply { id: 1, error: None }
        );
        assert_eq!(
            parse_line(br#"{"id":2,"error":{"code":103,"message":"permission denied"}}"#),
            Line::Reply {
                id: 2,
                error: Some(103)
            }
        );
        assert_eq!(
            parse_line(br#"{"push":{"channel":"c","pub":{"data":"00ab","offset":7}}}"#),
            Line::Publication {
                channel: "c".into(),
                data: "00ab".into()
            }
        );
        assert_eq!(parse_line(b"{}"), Line::Ping);
        assert_eq!(
            parse_line(br#"{"push":{"channel":"c","join":{"info":{"user":"u"}}}}"#),
            Line::OtherPush
        );
        assert_eq!(
            parse_line(br#"{"push":{"channel":"c","pub":{"data":{"n":1}}}}"#),
            Line::Invalid,
            "the tool publishes strings"
        );
        assert_eq!(
            parse_line(br#"{"id":1,"connect":{}}"#),
            Line::Invalid,
            "an echo of the connect command is no reply"
        );
        assert_eq!(parse_line(b"{not json"), Line::Invalid);
        assert_eq!(parse_line(br#"{"other":1}"#), Line::Invalid);
        let frame = b"{}\n{\"id\":3,\"publish\":{}}\n";
        assert_eq!(lines(frame).count(), 2);
    }

    #[test]
    fn commands_are_the_protocol_json() {
        let v: serde_json::Value = serde_json::from_slice(&connect_command(Some("t.o.k"))).unwrap();
        assert_eq!(v, serde_json::json!({"id": 1, "connect": {"token": "t.o.k"}}));
        let v: serde_json::Value = serde_json::from_slice(&connect_command(None)).unwrap();
        assert_eq!(v, serde_json::json!({"id": 1, "connect": {}}));
        let v: serde_json::Value = serde_json::from_slice(&subscribe_command("a\"b")).unwrap();
        assert_eq!(v, serde_json::json!({"id": 2, "subscribe": {"channel": "a\"b"}}));
        let frame = PublishFrame::new(42, "room");
        let mut out = vec![0u8; frame.len(5)];
        frame.write(&mut out, |d| d.copy_from_slice(b"abcde"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": 42, "publish": {"channel": "room", "data": "abcde"}})
        );
    }
}
