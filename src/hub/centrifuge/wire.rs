//! Centrifuge client commands, JSON encoding: one command object per line,
//! several lines to a frame. Pure: bytes in, commands out.
//!
//! A command is `{"id":N, "<method>":{params}}`; the empty object `{}` is the
//! client's pong. Fields this server does not act on (`delta`, `tf`, `flag`,
//! a subscription `token` or `data`, connect `data`, `subs`, `name`,
//! `version`) are read past, so newer SDKs keep working; docs/PROTOCOL.md
//! says what each means here. Client `data` stays raw JSON, borrowed.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::bus::history::Recover;

/// The largest command id the protocol has (`uint32`).
pub(crate) type Id = u32;

/// One parsed command.
#[derive(Debug)]
pub(crate) struct Command<'a> {
    /// 0 for commands that want no reply (`send`, the pong).
    pub id: Id,
    pub method: Method<'a>,
}

/// What a command asks for.
#[derive(Debug)]
pub(crate) enum Method<'a> {
    /// `{}`: the client's answer to a server ping.
    Pong,
    Connect {
        token: Option<String>,
        data: Option<Box<RawValue>>,
    },
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
    Presence {
        channel: String,
    },
    PresenceStats {
        channel: String,
    },
    History {
        channel: String,
        /// Centrifuge's: 0 asks for the position only, a negative one for
        /// as many as the server gives.
        limit: i64,
        since: Option<u64>,
        reverse: bool,
    },
    Refresh {
        token: String,
    },
    /// A call to the application (`--proxy-rpc-url`); `data` is raw JSON.
    Rpc {
        method: String,
        data: Option<&'a RawValue>,
    },
    SubRefresh,
    Send,
}

/// Why a line is not a command: the connection is closed with 3501.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub String);

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Id,
    #[serde(borrow)]
    connect: Option<&'a RawValue>,
    #[serde(borrow)]
    subscribe: Option<&'a RawValue>,
    #[serde(borrow)]
    unsubscribe: Option<&'a RawValue>,
    #[serde(borrow)]
    publish: Option<&'a RawValue>,
    #[serde(borrow)]
    presence: Option<&'a RawValue>,
    #[serde(borrow)]
    presence_stats: Option<&'a RawValue>,
    #[serde(borrow)]
    history: Option<&'a RawValue>,
    #[serde(borrow)]
    ping: Option<&'a RawValue>,
    #[serde(borrow)]
    send: Option<&'a RawValue>,
    #[serde(borrow)]
    rpc: Option<&'a RawValue>,
    #[serde(borrow)]
    refresh: Option<&'a RawValue>,
    #[serde(borrow)]
    sub_refresh: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ConnectParams {
    token: Option<String>,
    /// Passed to the connect hook as the request's `data`.
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct SubscribeParams {
    channel: String,
    #[serde(default)]
    recover: bool,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    epoch: String,
    #[serde(default)]
    join_leave: bool,
}

#[derive(Deserialize)]
struct RpcParams<'a> {
    #[serde(default)]
    method: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChannelParams {
    channel: String,
}

#[derive(Deserialize)]
struct PublishParams<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct StreamPosition {
    #[serde(default)]
    offset: u64,
}

#[derive(Deserialize)]
struct HistoryParams {
    channel: String,
    #[serde(default)]
    limit: i64,
    since: Option<StreamPosition>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
struct RefreshParams {
    token: String,
}

/// The commands of one frame, in order, each with its length in bytes:
/// blank lines are skipped.
pub(crate) fn commands(frame: &[u8]) -> impl Iterator<Item = (usize, Result<Command<'_>, Malformed>)> {
    frame
        .split(|&b| b == b'\n')
        .filter(|line| !line.trim_ascii().is_empty())
        .map(|line| (line.len(), parse(line)))
}

/// Parses one line as a command.
pub(crate) fn parse(line: &[u8]) -> Result<Command<'_>, Malformed> {
    let env: Envelope<'_> =
        serde_json::from_slice(line).map_err(|e| Malformed(format!("not a command object: {e}")))?;
    let given = [
        env.connect,
        env.subscribe,
        env.unsubscribe,
        env.publish,
        env.presence,
        env.presence_stats,
        env.history,
        env.ping,
        env.send,
        env.rpc,
        env.refresh,
        env.sub_refresh,
    ];
    match given.iter().filter(|m| m.is_some()).count() {
        0 if env.id == 0 => {
            return Ok(Command {
                id: 0,
                method: Method::Pong,
            })
        }
        0 => return Err(Malformed("a command with an id names no known method".into())),
        1 => {}
        _ => return Err(Malformed("a command names more than one method".into())),
    }
    let method = method_of(&env)?;
    let wants_reply = !matches!(method, Method::Send | Method::Pong);
    if wants_reply && env.id == 0 {
        return Err(Malformed("a command that expects a reply needs a non-zero id".into()));
    }
    Ok(Command { id: env.id, method })
}

fn method_of<'a>(env: &Envelope<'a>) -> Result<Method<'a>, Malformed> {
    if let Some(p) = env.connect {
        let p: ConnectParams = params(p, "connect")?;
        return Ok(Method::Connect {
            token: p.token,
            data: p.data,
        });
    }
    if let Some(p) = env.subscribe {
        let p: SubscribeParams = params(p, "subscribe")?;
        let recover = p.recover.then_some(Recover {
            offset: p.offset,
            epoch: p.epoch,
        });
        return Ok(Method::Subscribe {
            channel: p.channel,
            recover,
            join_leave: p.join_leave,
        });
    }
    if let Some(p) = env.unsubscribe {
        let p: ChannelParams = params(p, "unsubscribe")?;
        return Ok(Method::Unsubscribe { channel: p.channel });
    }
    if let Some(p) = env.publish {
        let p: PublishParams<'a> = serde_json::from_str(p.get()).map_err(|e| Malformed(format!("bad publish: {e}")))?;
        return Ok(Method::Publish {
            channel: p.channel,
            data: p.data,
        });
    }
    if let Some(p) = env.presence {
        let p: ChannelParams = params(p, "presence")?;
        return Ok(Method::Presence { channel: p.channel });
    }
    if let Some(p) = env.presence_stats {
        let p: ChannelParams = params(p, "presence_stats")?;
        return Ok(Method::PresenceStats { channel: p.channel });
    }
    if let Some(p) = env.history {
        let p: HistoryParams = params(p, "history")?;
        return Ok(Method::History {
            channel: p.channel,
            limit: p.limit,
            since: p.since.map(|s| s.offset),
            reverse: p.reverse,
        });
    }
    if let Some(p) = env.refresh {
        let p: RefreshParams = params(p, "refresh")?;
        return Ok(Method::Refresh { token: p.token });
    }
    if let Some(p) = env.rpc {
        let p: RpcParams<'a> = serde_json::from_str(p.get()).map_err(|e| Malformed(format!("bad rpc: {e}")))?;
        return Ok(Method::Rpc {
            method: p.method,
            data: p.data,
        });
    }
    if env.sub_refresh.is_some() {
        return Ok(Method::SubRefresh);
    }
    if env.send.is_some() {
        return Ok(Method::Send);
    }
    // `ping` is a command of the older protocol the SDKs no longer send.
    Err(Malformed(
        "\"ping\" is not a command of this protocol version; pong with {}".into(),
    ))
}

fn params<T: serde::de::DeserializeOwned>(raw: &RawValue, method: &str) -> Result<T, Malformed> {
    serde_json::from_str(raw.get()).map_err(|e| Malformed(format!("bad {method}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<Command<'_>, Malformed> {
        parse(line.as_bytes())
    }

    #[test]
    fn the_sdk_commands_parse() {
        let frame = concat!(
            r#"{"id":1,"connect":{"token":"t","data":{"a":1},"name":"js","version":"5","subs":{}}}"#,
            "\n",
            r#"{"id":2,"subscribe":{"channel":"c","recover":true,"offset":7,"epoch":"e","flag":1,"positioned":true,"recoverable":true,"join_leave":true}}"#,
            "\n\n",
            r#"{"id":3,"publish":{"channel":"c","data":{"text":"hi"}}}"#,
            "\n{}\n",
            r#"{"send":{"data":1}}"#
        );
        let parsed: Vec<Command<'_>> = commands(frame.as_bytes()).map(|(_, c)| c.unwrap()).collect();
        assert_eq!(parsed.len(), 5);
        assert!(matches!(&parsed[0].method, Method::Connect { token: Some(t), .. } if t == "t"));
        match &parsed[1].method {
            Method::Subscribe {
                channel,
                recover: Some(r),
                join_leave: true,
            } => assert_eq!((channel.as_str(), r.offset, r.epoch.as_str()), ("c", 7, "e")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&parsed[2].method, Method::Publish { data, .. } if data.get() == r#"{"text":"hi"}"#));
        assert!(matches!(parsed[3].method, Method::Pong));
        assert!(matches!(parsed[4].method, Method::Send));
        assert_eq!(parsed[4].id, 0);
    }

    #[test]
    fn history_reads_centrifuge_limits_and_positions() {
        let c = one(r#"{"id":9,"history":{"channel":"c","limit":5,"since":{"offset":3,"epoch":"e"},"reverse":true}}"#)
            .unwrap();
        assert!(matches!(
            c.method,
            Method::History {
                limit: 5,
                since: Some(3),
                reverse: true,
                ..
            }
        ));
        let bare = one(r#"{"id":9,"history":{"channel":"c"}}"#).unwrap();
        assert!(matches!(
            bare.method,
            Method::History {
                limit: 0,
                since: None,
                reverse: false,
                ..
            }
        ));
    }

    #[test]
    fn broken_commands_are_refused_with_a_reason() {
        for (line, why) in [
            ("nope", "not a command object"),
            (r#"{"id":1}"#, "no known method"),
            (
                r#"{"id":1,"subscribe":{"channel":"a"},"publish":{"channel":"a","data":1}}"#,
                "more than one",
            ),
            (r#"{"subscribe":{"channel":"a"}}"#, "non-zero id"),
            (r#"{"id":1,"subscribe":{}}"#, "bad subscribe"),
            (r#"{"id":1,"publish":{"channel":"a"}}"#, "bad publish"),
            (r#"{"id":-1,"presence":{"channel":"a"}}"#, "not a command object"),
            (r#"{"id":1,"ping":{}}"#, "pong with {}"),
        ] {
            let err = one(line).unwrap_err();
            assert!(err.0.contains(why), "{line}: {err:?}");
        }
    }
}
