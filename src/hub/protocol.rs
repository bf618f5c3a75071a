//! The `/ws` JSON protocol: parsing client commands, encoding replies and
//! pushes. No I/O, no state: `docs/PROTOCOL.md` is the user's description
//! and must stay true to this file.
//!
//! Client data (`data` of publish and send) is kept as raw JSON text: it is
//! validated once when the command is parsed and then copied into pushes
//! verbatim, never re-parsed or re-serialised per receiver.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::bus::history::Recover;

/// Error codes of command replies.
pub mod code {
    /// The frame was not a JSON command object.
    pub(crate) const BAD_REQUEST: u16 = 100;
    /// `method` is not one this server knows.
    pub(crate) const UNKNOWN_METHOD: u16 = 101;
    /// `params` are missing or wrong for the method.
    pub(crate) const BAD_PARAMS: u16 = 102;
    /// The token does not allow this channel.
    pub(crate) const PERMISSION_DENIED: u16 = 103;
    /// Too many subscriptions on this connection.
    pub(crate) const LIMIT_EXCEEDED: u16 = 104;
    /// Over the per-connection message rate.
    pub(crate) const RATE_LIMITED: u16 = 105;
    /// Not subscribed to that channel.
    pub(crate) const NOT_SUBSCRIBED: u16 = 106;
    /// Already subscribed (or subscribing) to that channel.
    pub(crate) const ALREADY_SUBSCRIBED: u16 = 107;
    /// The server could not route the command (an internal queue was full);
    /// retrying later may work.
    pub(crate) const UNAVAILABLE: u16 = 108;
    /// The command needs an authenticated user.
    pub(crate) const UNAUTHENTICATED: u16 = 109;
    /// Channel creation refused: the node's `--max-channels`, or this
    /// connection's `--max-new-channels-per-minute`.
    pub(crate) const CHANNEL_LIMIT: u16 = 110;
    /// A `subscribe` cancelled by an `unsubscribe` sent before it took effect.
    pub(crate) const CANCELLED: u16 = 111;
    /// A `refresh` token refused: invalid, expired, or for another `sub`.
    pub(crate) const TOKEN_REFUSED: u16 = 112;
    /// The application's hook did not answer: it timed out, was out of
    /// reach, or answered something that is not a proxy answer. Retrying
    /// later may work.
    pub(crate) const PROXY_UNAVAILABLE: u16 = 113;
    /// Too many hook calls in flight on this server (`--proxy-max-in-flight`):
    /// the application was not asked; retry later.
    pub(crate) const PROXY_OVERLOADED: u16 = 114;
    /// A `send` refused: the user's mailbox holds the sender's share
    /// already (`hub/mailbox.rs`). Nothing was kept or delivered; retry
    /// after some of the sender's kept messages expired or were pushed out.
    pub(crate) const MAILBOX_SHARE: u16 = 115;
}

/// A parsed client command; client `data` is borrowed from the frame's
/// text (raw JSON), copied only where it is kept or framed.
#[derive(Debug)]
pub struct Command<'a> {
    pub id: u64,
    pub call: Call<'a>,
}

/// What a command asks for.
#[derive(Debug)]
pub enum Call<'a> {
    Subscribe {
        channel: String,
        recover: Option<Recover>,
        join_leave: bool,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        data: &'a RawValue,
    },
    Send {
        user: String,
        data: &'a RawValue,
    },
    Presence {
        channel: String,
    },
    History {
        channel: String,
        limit: Option<usize>,
        since: Option<u64>,
    },
    Ping,
    /// A call to the application (`--proxy-rpc-url`); `data` is raw JSON.
    Rpc {
        method: String,
        data: Option<&'a RawValue>,
    },
    /// A new token for the connection (`tokens.rs`).
    Refresh {
        token: String,
    },
}

/// Why a frame could not become a command; `id` is echoed when it was read.
#[derive(Debug, PartialEq, Eq)]
pub struct BadCommand {
    pub id: Option<u64>,
    pub code: u16,
    pub message: String,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    id: Option<u64>,
    method: Option<String>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeParams {
    channel: String,
    recover: Option<Recover>,
    #[serde(default)]
    join_leave: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelParams {
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishParams<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendParams<'a> {
    user: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RpcParams<'a> {
    #[serde(default)]
    method: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshParams {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    channel: String,
    limit: Option<usize>,
    since: Option<u64>,
}

/// Parses one text frame as a command.
pub fn parse_command(text: &[u8]) -> Result<Command<'_>, BadCommand> {
    let bad = |id, code, message: String| BadCommand { id, code, message };
    let envelope: Envelope<'_> =
        serde_json::from_slice(text).map_err(|e| bad(None, code::BAD_REQUEST, format!("not a command object: {e}")))?;
    let id = envelope
        .id
        .ok_or_else(|| bad(None, code::BAD_REQUEST, "missing numeric \"id\"".into()))?;
    let method = envelope
        .method
        .ok_or_else(|| bad(Some(id), code::BAD_REQUEST, "missing \"method\"".into()))?;
    let params = envelope.params.map_or("{}", RawValue::get);
    let parsed = match method.as_str() {
        "subscribe" => params_of::<SubscribeParams>(params).map(|p| Call::Subscribe {
            channel: p.channel,
            recover: p.recover,
            join_leave: p.join_leave,
        }),
        "unsubscribe" => params_of::<ChannelParams>(params).map(|p| Call::Unsubscribe { channel: p.channel }),
        "publish" => params_of::<PublishParams>(params).map(|p| Call::Publish {
            channel: p.channel,
            data: p.data,
        }),
        "send" => params_of::<SendParams>(params).map(|p| Call::Send {
            user: p.user,
            data: p.data,
        }),
        "presence" => params_of::<ChannelParams>(params).map(|p| Call::Presence { channel: p.channel }),
        "history" => params_of::<HistoryParams>(params).map(|p| Call::History {
            channel: p.channel,
            limit: p.limit,
            since: p.since,
        }),
        "ping" => Ok(Call::Ping),
        "rpc" => params_of::<RpcParams>(params).map(|p| Call::Rpc {
            method: p.method,
            data: p.data,
        }),
        "refresh" => params_of::<RefreshParams>(params).map(|p| Call::Refresh { token: p.token }),
        other => return Err(bad(Some(id), code::UNKNOWN_METHOD, format!("unknown method {other:?}"))),
    };
    let call = parsed.map_err(|e| bad(Some(id), code::BAD_PARAMS, format!("bad params for {method}: {e}")))?;
    Ok(Command { id, call })
}

fn params_of<'a, T: Deserialize<'a>>(raw: &'a str) -> Result<T, serde_json::Error> {
    serde_json::from_str(raw)
}

/// `{"id":N,"result":RESULT}`; `result` is JSON text.
pub fn reply_ok(id: u64, result: &str) -> Vec<u8> {
    format!("{{\"id\":{id},\"result\":{result}}}").into_bytes()
}

/// `{"id":N,"error":{"code":C,"message":"..."}}` (`id` null when unknown).
pub fn reply_error(id: Option<u64>, code: u16, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Error<'a> {
        code: u16,
        message: &'a str,
    }
    #[derive(Serialize)]
    struct Reply<'a> {
        id: Option<u64>,
        error: Error<'a>,
    }
    serde_json::to_vec(&Reply {
        id,
        error: Error { code, message },
    })
    .unwrap_or_default()
}

/// A publication pushed to subscribers: encoded once per message.
pub fn push_publication(channel: &str, offset: u64, data: &str) -> Vec<u8> {
    format!(
        "{{\"push\":\"pub\",\"channel\":{},\"offset\":{offset},\"data\":{data}}}",
        json_string(channel)
    )
    .into_bytes()
}

/// Deliveries of `channel` to this connection were dropped under overload:
/// it has everything up to `offset` of `epoch` and should subscribe again
/// with `recover` from there.
pub(crate) fn push_gap(channel: &str, epoch: &str, offset: u64) -> Vec<u8> {
    format!(
        "{{\"push\":\"gap\",\"channel\":{},\"epoch\":{},\"offset\":{offset}}}",
        json_string(channel),
        json_string(epoch)
    )
    .into_bytes()
}

/// Cluster mode: `channel` now counts in `epoch`, no longer in `previous`
/// (Redis lost or rewound it: `reason`); its offsets restart after
/// `offset`. Offsets of the old epoch name nothing in the new one: subscribe
/// again with `recover` to learn what is lost (`recovered: false`).
pub(crate) fn push_epoch(channel: &str, epoch: &str, previous: &str, offset: u64, reason: &str) -> Vec<u8> {
    format!(
        "{{\"push\":\"epoch\",\"channel\":{},\"epoch\":{},\"previous\":{},\"offset\":{offset},\"reason\":{}}}",
        json_string(channel),
        json_string(epoch),
        json_string(previous),
        json_string(reason)
    )
    .into_bytes()
}

/// A private message to a user's connections.
pub fn push_message(from: Option<&str>, data: &str) -> Vec<u8> {
    let from = from.map_or_else(|| "null".to_string(), json_string);
    format!("{{\"push\":\"message\",\"from\":{from},\"data\":{data}}}").into_bytes()
}

/// The connect hook let the connection in: who it is, and the
/// application's `data` (raw JSON) if it sent any.
pub(crate) fn push_connect(client: &str, user: Option<&str>, data: Option<&str>) -> Vec<u8> {
    let user = user.map_or_else(|| "null".to_string(), json_string);
    let mut out = format!(
        "{{\"push\":\"connect\",\"client\":{},\"user\":{user}",
        json_string(client)
    );
    if let Some(data) = data {
        out.push_str(&format!(",\"data\":{data}"));
    }
    out.push('}');
    out.into_bytes()
}

/// The connect hook refused the connection (or gave no answer); the close
/// follows.
pub(crate) fn push_connect_error(code: u16, message: &str) -> Vec<u8> {
    format!(
        "{{\"push\":\"connect\",\"error\":{{\"code\":{code},\"message\":{}}}}}",
        json_string(message)
    )
    .into_bytes()
}

/// A server-side subscription (the connect hook's `channels`) took effect.
pub(crate) fn push_subscribed(channel: &str, epoch: &str, offset: u64) -> Vec<u8> {
    format!(
        "{{\"push\":\"subscribed\",\"channel\":{},\"epoch\":{},\"offset\":{offset}}}",
        json_string(channel),
        json_string(epoch)
    )
    .into_bytes()
}

/// A server-side subscription could not be made.
pub(crate) fn push_subscribe_error(channel: &str, code: u16, message: &str) -> Vec<u8> {
    format!(
        "{{\"push\":\"subscribe_error\",\"channel\":{},\"code\":{code},\"message\":{}}}",
        json_string(channel),
        json_string(message)
    )
    .into_bytes()
}

/// Joins and leaves of a channel gathered over one loop turn.
pub(crate) fn push_presence(channel: &str, joined: &[&str], left: &[&str]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Presence<'a> {
        push: &'static str,
        channel: &'a str,
        joined: &'a [&'a str],
        left: &'a [&'a str],
    }
    serde_json::to_vec(&Presence {
        push: "presence",
        channel,
        joined,
        left,
    })
    .unwrap_or_default()
}

/// A JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_method() {
        let cmd = parse_command(br#"{"id":7,"method":"subscribe","params":{"channel":"news","recover":{"offset":3,"epoch":"e1"},"join_leave":true}}"#).unwrap();
        assert_eq!(cmd.id, 7);
        match cmd.call {
            Call::Subscribe {
                channel,
                recover,
                join_leave,
            } => {
                assert_eq!(channel, "news");
                assert_eq!(
                    recover,
                    Some(Recover {
                        offset: 3,
                        epoch: "e1".into()
                    })
                );
                assert!(join_leave);
            }
            other => panic!("{other:?}"),
        }
        let publish =
            parse_command(br#"{"id":1,"method":"publish","params":{"channel":"c","data":{"a":[1,2]}}}"#).unwrap();
        match publish.call {
            Call::Publish { data, .. } => assert_eq!(data.get(), r#"{"a":[1,2]}"#),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_command(br#"{"id":2,"method":"ping"}"#).unwrap().call,
            Call::Ping
        ));
        match parse_command(br#"{"id":8,"method":"rpc","params":{"method":"sum","data":[1,2]}}"#)
            .unwrap()
            .call
        {
            Call::Rpc { method, data } => assert_eq!((method.as_str(), data.map(|d| d.get())), ("sum", Some("[1,2]"))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_command(br#"{"id":3,"method":"history","params":{"channel":"c","limit":5}}"#)
                .unwrap()
                .call,
            Call::History { limit: Some(5), .. }
        ));
    }

    #[test]
    fn errors_name_the_problem_and_keep_the_id() {
        assert_eq!(parse_command(b"nope").unwrap_err().code, code::BAD_REQUEST);
        assert_eq!(
            parse_command(br#"{"method":"ping"}"#).unwrap_err().code,
            code::BAD_REQUEST
        );
        let unknown = parse_command(br#"{"id":4,"method":"dance"}"#).unwrap_err();
        assert_eq!((unknown.id, unknown.code), (Some(4), code::UNKNOWN_METHOD));
        let params = parse_command(br#"{"id":5,"method":"publish","params":{"channel":"c"}}"#).unwrap_err();
        assert_eq!((params.id, params.code), (Some(5), code::BAD_PARAMS));
        let extra = parse_command(br#"{"id":6,"method":"unsubscribe","params":{"channel":"c","x":1}}"#).unwrap_err();
        assert_eq!(extra.code, code::BAD_PARAMS);
    }

    #[test]
    fn encodings_are_valid_json() {
        let check = |bytes: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
        assert_eq!(check(reply_ok(1, r#"{"offset":2}"#))["result"]["offset"], 2);
        assert_eq!(
            check(reply_error(None, 100, "bad \"quote\""))["error"]["message"],
            "bad \"quote\""
        );
        assert_eq!(check(push_publication("a\"b", 9, "[1]"))["channel"], "a\"b");
        assert_eq!(check(push_message(Some("u1"), "\"hi\""))["data"], "hi");
        assert_eq!(check(push_presence("c", &["a"], &[]))["joined"][0], "a");
        assert_eq!(
            check(push_connect("0-1-2", Some("u"), Some("{\"a\":1}")))["data"]["a"],
            1
        );
        assert_eq!(
            check(push_connect("0-1-2", None, None))["user"],
            serde_json::Value::Null
        );
        assert_eq!(check(push_connect_error(1000, "no \"way\""))["error"]["code"], 1000);
        assert_eq!(check(push_subscribed("c", "e", 3))["offset"], 3);
        assert_eq!(check(push_subscribe_error("c", 110, "x"))["code"], 110);
    }
}
