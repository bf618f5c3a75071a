//! The hub speaks `/ws` JSON (docs/PROTOCOL.md); a Centrifuge session is
//! sent the same replies and pushes in Centrifuge's JSON. Pure: one `/ws`
//! payload in, what to do for the Centrifuge client out.
//!
//! A command's reply shape depends on its method, which a `/ws` reply does
//! not carry: the hub is given an id that packs the client's id (low 32
//! bits) with a [`Tag`] (the next 8), so the answer, from whichever shard,
//! says how to encode itself and no per-connection table is kept.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::hub::protocol::{code as ws, json_string};

/// Centrifuge client error codes (docs/PROTOCOL.md lists them).
pub(crate) mod code {
    pub const INTERNAL: u16 = 100;
    pub const UNAUTHORIZED: u16 = 101;
    pub const PERMISSION_DENIED: u16 = 103;
    pub const METHOD_NOT_FOUND: u16 = 104;
    pub const ALREADY_SUBSCRIBED: u16 = 105;
    pub const LIMIT_EXCEEDED: u16 = 106;
    pub const BAD_REQUEST: u16 = 107;
    pub const NOT_AVAILABLE: u16 = 108;
    pub const TOKEN_EXPIRED: u16 = 109;
    pub const TOO_MANY_REQUESTS: u16 = 111;
}

/// The code of an `unsubscribe` push that ends a subscription for good
/// (below 2500 the SDK does not subscribe again).
const UNSUBSCRIBE_SERVER: u16 = 2000;

/// What reply a command's answer becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Tag {
    Subscribe = 1,
    Unsubscribe,
    Publish,
    Presence,
    PresenceStats,
    /// Oldest first, as the hub pages.
    History,
    /// Newest first: the page the hub gave, turned round.
    HistoryReverse,
    /// `limit` 0: the stream position only.
    HistoryPosition,
    Refresh,
    Rpc,
}

impl Tag {
    const ALL: [Tag; 10] = [
        Tag::Subscribe,
        Tag::Unsubscribe,
        Tag::Publish,
        Tag::Presence,
        Tag::PresenceStats,
        Tag::History,
        Tag::HistoryReverse,
        Tag::HistoryPosition,
        Tag::Refresh,
        Tag::Rpc,
    ];

    /// The id the hub is given for the client's command `id`.
    pub fn pack(self, id: u32) -> u64 {
        (self as u64) << 32 | id as u64
    }
}

/// The client's id and the tag in a packed id.
pub(crate) fn unpack(packed: u64) -> (u32, Option<Tag>) {
    let tag = (packed >> 32) as u8;
    (packed as u32, Tag::ALL.into_iter().find(|t| *t as u8 == tag))
}

/// What the Centrifuge client gets for one `/ws` payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// This JSON (one or more lines).
    Send(Vec<u8>),
    /// Close the connection: it missed publications (a dropped delivery, a
    /// changed epoch); the SDK reconnects and recovers.
    Close(u16, &'static str),
    /// Nothing this protocol has (a `/ws` refresh request, say).
    Drop,
}

/// What a translation needs to know of the session.
pub(crate) struct Context<'a> {
    /// The client id the connect reply gave.
    pub client: &'a str,
    /// Presence replies stop growing past this many bytes.
    pub max_reply_bytes: usize,
}

#[derive(Deserialize)]
struct WsError {
    code: u16,
    message: String,
}

/// Every field of every `/ws` reply and push the hub makes.
#[derive(Deserialize)]
struct WsOut<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    error: Option<WsError>,
    push: Option<String>,
    channel: Option<String>,
    offset: Option<u64>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    joined: Vec<String>,
    #[serde(default)]
    left: Vec<String>,
    reason: Option<String>,
    /// The sender of a `message` push (`null` from the server API).
    #[serde(borrow)]
    from: Option<&'a RawValue>,
}

/// Translates one `/ws` payload for a Centrifuge session.
pub(crate) fn translate(json: &[u8], ctx: &Context<'_>) -> Action {
    let Ok(out) = serde_json::from_slice::<WsOut<'_>>(json) else {
        return Action::Drop;
    };
    if let Some(push) = out.push.as_deref() {
        return push_of(push, &out);
    }
    let Some((id, tag)) = out.id.map(unpack) else {
        return Action::Drop;
    };
    if let Some(error) = out.error {
        return Action::Send(error_reply(id, error_code(error.code), &error.message));
    }
    match (tag, out.result) {
        (Some(tag), Some(result)) => result_of(id, tag, result.get(), ctx).map_or(Action::Drop, Action::Send),
        _ => Action::Drop,
    }
}

/// `{"id":N,"error":{...}}`; internal errors are temporary (the SDKs retry).
pub(crate) fn error_reply(id: u32, code: u16, message: &str) -> Vec<u8> {
    let temporary = if matches!(code, code::INTERNAL | code::TOO_MANY_REQUESTS) {
        ",\"temporary\":true"
    } else {
        ""
    };
    format!(
        "{{\"id\":{id},\"error\":{{\"code\":{code},\"message\":{}{temporary}}}}}",
        json_string(message)
    )
    .into_bytes()
}

/// A `/ws` error code as the Centrifuge SDKs understand it.
fn error_code(code: u16) -> u16 {
    match code {
        ws::UNKNOWN_METHOD => code::METHOD_NOT_FOUND,
        ws::PERMISSION_DENIED => code::PERMISSION_DENIED,
        ws::LIMIT_EXCEEDED | ws::CHANNEL_LIMIT => code::LIMIT_EXCEEDED,
        ws::RATE_LIMITED => code::TOO_MANY_REQUESTS,
        ws::ALREADY_SUBSCRIBED => code::ALREADY_SUBSCRIBED,
        ws::UNAVAILABLE => code::INTERNAL,
        ws::UNAUTHENTICATED => code::UNAUTHORIZED,
        ws::TOKEN_REFUSED => code::TOKEN_EXPIRED,
        // The application's hooks: unreachable or slow, or too many calls.
        ws::PROXY_UNAVAILABLE => code::NOT_AVAILABLE,
        ws::PROXY_OVERLOADED => code::TOO_MANY_REQUESTS,
        // The application's own codes (docs/PROXY.md: 400-1999) as given.
        app @ 400..=1999 => app,
        _ => code::BAD_REQUEST,
    }
}

fn push_of(push: &str, out: &WsOut<'_>) -> Action {
    let channel = json_string(out.channel.as_deref().unwrap_or(""));
    let line = match (push, out.data) {
        ("pub", Some(data)) => format!(
            "{{\"push\":{{\"channel\":{channel},\"pub\":{{\"data\":{},\"offset\":{}}}}}}}",
            data.get(),
            out.offset.unwrap_or(0)
        ),
        // A message from the server API is the application's: its data as
        // given, as Centrifugo sends it. One from another user says who sent
        // it, so it cannot pass for the application's: the data is the
        // mailbox's envelope `{"from":USER,"data":D}` (as recovered mailbox
        // publications are).
        ("message", Some(data)) => match out.from.map(RawValue::get).filter(|f| *f != "null") {
            None => format!("{{\"push\":{{\"message\":{{\"data\":{}}}}}}}", data.get()),
            Some(from) => format!(
                "{{\"push\":{{\"message\":{{\"data\":{{\"from\":{from},\"data\":{}}}}}}}}}",
                data.get()
            ),
        },
        ("gap" | "epoch", _) => return Action::Close(crate::ws::centrifuge::INSUFFICIENT_STATE, "insufficient state"),
        ("presence", _) => return presence_pushes(&channel, &out.joined, &out.left),
        ("unsubscribe", _) => format!(
            "{{\"push\":{{\"channel\":{channel},\"unsubscribe\":{{\"code\":{UNSUBSCRIBE_SERVER},\"reason\":{}}}}}}}",
            json_string(out.reason.as_deref().unwrap_or(""))
        ),
        _ => return Action::Drop,
    };
    Action::Send(line.into_bytes())
}

/// One `join` or `leave` push per user, a line each. The hub tracks users,
/// not client ids: `client` is empty.
fn presence_pushes(channel: &str, joined: &[String], left: &[String]) -> Action {
    let lines: Vec<String> = joined
        .iter()
        .map(|u| ("join", u))
        .chain(left.iter().map(|u| ("leave", u)))
        .map(|(kind, user)| {
            format!(
                "{{\"push\":{{\"channel\":{channel},\"{kind}\":{{\"info\":{{\"user\":{},\"client\":\"\"}}}}}}}}",
                json_string(user)
            )
        })
        .collect();
    if lines.is_empty() {
        return Action::Drop;
    }
    Action::Send(lines.join("\n").into_bytes())
}

#[derive(Deserialize)]
struct SubscribeResult<'a> {
    epoch: Option<String>,
    offset: u64,
    recovered: Option<bool>,
    #[serde(borrow)]
    publications: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PresenceResult {
    users: std::collections::BTreeMap<String, u64>,
    anonymous: u64,
    total: u64,
}

#[derive(Deserialize)]
struct HistoryResult<'a> {
    epoch: Option<String>,
    offset: u64,
    #[serde(borrow)]
    publications: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RefreshResult {
    expires_in: Option<u64>,
}

/// The reply to a command that succeeded; `None` if the hub's answer was
/// not the shape this tag expects (never for the hub's own answers).
fn result_of(id: u32, tag: Tag, result: &str, ctx: &Context<'_>) -> Option<Vec<u8>> {
    let (name, body) = match tag {
        Tag::Subscribe => ("subscribe", subscribe_body(serde_json::from_str(result).ok()?)),
        Tag::Unsubscribe => ("unsubscribe", "{}".to_string()),
        Tag::Publish => ("publish", "{}".to_string()),
        Tag::Presence => ("presence", presence_body(serde_json::from_str(result).ok()?, ctx)),
        Tag::PresenceStats => {
            let p: PresenceResult = serde_json::from_str(result).ok()?;
            let users = p.users.len() as u64 + u64::from(p.anonymous > 0);
            let body = format!("{{\"num_clients\":{},\"num_users\":{users}}}", p.total);
            ("presence_stats", body)
        }
        Tag::History | Tag::HistoryReverse | Tag::HistoryPosition => {
            ("history", history_body(tag, serde_json::from_str(result).ok()?))
        }
        // `{data}`: the application's answer, as Centrifuge's RpcResult.
        Tag::Rpc => ("rpc", result.to_string()),
        Tag::Refresh => {
            let r: RefreshResult = serde_json::from_str(result).ok()?;
            ("refresh", refresh_body(ctx.client, r.expires_in))
        }
    };
    Some(format!("{{\"id\":{id},\"{name}\":{body}}}").into_bytes())
}

/// Every channel keeps offsets and an epoch, so every subscription is
/// positioned and recoverable; whether a recovery worked is `recovered`.
fn subscribe_body(r: SubscribeResult<'_>) -> String {
    let mut body = format!(
        "{{\"recoverable\":true,\"positioned\":true,\"epoch\":{},\"offset\":{}",
        json_string(r.epoch.as_deref().unwrap_or("")),
        r.offset
    );
    if let Some(recovered) = r.recovered {
        body.push_str(&format!(",\"was_recovering\":true,\"recovered\":{recovered}"));
        if let (true, Some(publications)) = (recovered, r.publications) {
            // `{"offset","data"}` objects: Centrifuge's publication fields.
            body.push_str(&format!(",\"publications\":{}", publications.get()));
        }
    }
    body.push('}');
    body
}

/// One entry per connection: `{user}#{n}` keys (the hub counts each user's
/// subscriptions, it does not name them), stopping at the reply size cap.
fn presence_body(p: PresenceResult, ctx: &Context<'_>) -> String {
    let mut body = String::from("{\"presence\":{");
    let anonymous = std::iter::once((String::new(), p.anonymous));
    let mut first = true;
    'users: for (user, count) in p.users.into_iter().chain(anonymous) {
        for n in 1..=count {
            if body.len() > ctx.max_reply_bytes {
                break 'users;
            }
            let client = json_string(&format!("{user}#{n}"));
            let comma = if first { "" } else { "," };
            first = false;
            body.push_str(&format!(
                "{comma}{client}:{{\"user\":{},\"client\":{client}}}",
                json_string(&user)
            ));
        }
    }
    body.push_str("}}");
    body
}

fn history_body(tag: Tag, mut r: HistoryResult<'_>) -> String {
    match tag {
        Tag::HistoryPosition => r.publications.clear(),
        Tag::HistoryReverse => r.publications.reverse(),
        _ => {}
    }
    let publications: Vec<&str> = r.publications.iter().map(|p| p.get()).collect();
    format!(
        "{{\"publications\":[{}],\"epoch\":{},\"offset\":{}}}",
        publications.join(","),
        json_string(r.epoch.as_deref().unwrap_or("")),
        r.offset
    )
}

/// A connect or refresh result: whether the connection expires, and in how
/// many seconds the SDK should refresh (before the server's deadline).
pub(crate) fn refresh_body(client: &str, expires_in: Option<u64>) -> String {
    let expiry = match expires_in {
        Some(secs) => format!(",\"expires\":true,\"ttl\":{}", refresh_after(secs)),
        None => String::new(),
    };
    format!(
        "{{\"client\":{},\"version\":{}{expiry}}}",
        json_string(client),
        json_string(super::VERSION)
    )
}

/// When to refresh a token that expires in `secs`: as early as the hub
/// would ask a `/ws` client (`tokens.rs`), and never at once.
fn refresh_after(secs: u64) -> u64 {
    let lead = crate::hub::tokens::REFRESH_LEAD_SECS.min(secs / 2);
    secs.saturating_sub(lead).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::protocol::{push_gap, push_message, push_presence, push_publication, reply_error, reply_ok};

    const CTX: Context<'static> = Context {
        client: "c1",
        max_reply_bytes: 1 << 16,
    };

    fn sent(action: Action) -> Vec<serde_json::Value> {
        let Action::Send(bytes) = action else {
            panic!("{action:?}")
        };
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn one(action: Action) -> serde_json::Value {
        sent(action).remove(0)
    }

    #[test]
    fn ids_pack_a_tag_and_come_back_whole() {
        for tag in Tag::ALL {
            assert_eq!(unpack(tag.pack(u32::MAX)), (u32::MAX, Some(tag)));
        }
        assert_eq!(unpack(7), (7, None));
    }

    #[test]
    fn publications_and_messages_become_centrifuge_pushes() {
        let p = one(translate(&push_publication("news", 12, r#"{"t":"hi"}"#), &CTX));
        assert_eq!(p["push"]["channel"], "news");
        assert_eq!(p["push"]["pub"]["offset"], 12);
        assert_eq!(p["push"]["pub"]["data"]["t"], "hi");
        let m = one(translate(&push_message(Some("ann"), "[1]"), &CTX));
        assert_eq!(
            m["push"]["message"]["data"]["from"], "ann",
            "a user's message names its sender"
        );
        assert_eq!(m["push"]["message"]["data"]["data"][0], 1);
        let api = one(translate(&push_message(None, r#"{"x":1}"#), &CTX));
        assert_eq!(
            api["push"]["message"]["data"],
            serde_json::json!({"x": 1}),
            "the server API's as given"
        );
        let joins = sent(translate(&push_presence("c", &["a", "b"], &["z"]), &CTX));
        assert_eq!(joins.len(), 3);
        assert_eq!(joins[1]["push"]["join"]["info"]["user"], "b");
        assert_eq!(joins[2]["push"]["leave"]["info"]["user"], "z");
        assert_eq!(
            translate(&push_gap("c", "e", 3), &CTX),
            Action::Close(crate::ws::centrifuge::INSUFFICIENT_STATE, "insufficient state")
        );
        assert_eq!(translate(br#"{"push":"refresh","expires_in":3}"#, &CTX), Action::Drop);
    }

    #[test]
    fn subscribe_replies_say_what_was_recovered() {
        let plain = reply_ok(Tag::Subscribe.pack(4), r#"{"channel":"c","epoch":"e","offset":3}"#);
        let s = one(translate(&plain, &CTX));
        assert_eq!(
            (s["id"].clone(), s["subscribe"]["offset"].clone()),
            (4.into(), 3.into())
        );
        assert_eq!(s["subscribe"]["recoverable"], true);
        assert!(s["subscribe"].get("was_recovering").is_none());
        let back = reply_ok(
            Tag::Subscribe.pack(5),
            r#"{"channel":"c","epoch":"e","offset":3,"recovered":true,"publications":[{"offset":3,"data":1}]}"#,
        );
        let s = one(translate(&back, &CTX));
        assert_eq!(s["subscribe"]["recovered"], true);
        assert_eq!(s["subscribe"]["publications"][0]["offset"], 3);
        let gone = reply_ok(
            Tag::Subscribe.pack(6),
            r#"{"channel":"c","epoch":"e","offset":9,"recovered":false,"reason":"history gone"}"#,
        );
        let s = one(translate(&gone, &CTX));
        assert_eq!(
            (
                s["subscribe"]["was_recovering"].clone(),
                s["subscribe"]["recovered"].clone()
            ),
            (true.into(), false.into())
        );
    }

    #[test]
    fn query_replies_take_centrifuge_shapes() {
        let presence = r#"{"users":{"ann":2,"bob":1},"anonymous":1,"total":4}"#;
        let p = one(translate(&reply_ok(Tag::Presence.pack(1), presence), &CTX));
        let clients = p["presence"]["presence"].as_object().unwrap();
        assert_eq!(clients.len(), 4);
        assert_eq!(clients["ann#2"]["user"], "ann");
        let s = one(translate(&reply_ok(Tag::PresenceStats.pack(2), presence), &CTX));
        assert_eq!(
            (
                s["presence_stats"]["num_clients"].clone(),
                s["presence_stats"]["num_users"].clone()
            ),
            (4.into(), 3.into())
        );
        let history =
            r#"{"epoch":"e","offset":9,"publications":[{"offset":8,"data":"a"},{"offset":9,"data":"b"}],"more":false}"#;
        let h = one(translate(&reply_ok(Tag::HistoryReverse.pack(3), history), &CTX));
        assert_eq!(h["history"]["publications"][0]["offset"], 9);
        assert_eq!(h["history"]["epoch"], "e");
        let h = one(translate(&reply_ok(Tag::HistoryPosition.pack(3), history), &CTX));
        assert_eq!(
            (
                h["history"]["publications"].as_array().unwrap().len(),
                h["history"]["offset"].clone()
            ),
            (0, 9.into())
        );
        let r = one(translate(&reply_ok(Tag::Refresh.pack(8), r#"{"expires_in":60}"#), &CTX));
        assert_eq!(
            (r["refresh"]["expires"].clone(), r["refresh"]["ttl"].clone()),
            (true.into(), 50.into())
        );
        assert_eq!(r["refresh"]["client"], "c1");
    }

    #[test]
    fn errors_keep_the_client_id_and_take_centrifuge_codes() {
        let e = one(translate(
            &reply_error(Some(Tag::Subscribe.pack(3)), ws::PERMISSION_DENIED, "no"),
            &CTX,
        ));
        assert_eq!((e["id"].clone(), e["error"]["code"].clone()), (3.into(), 103.into()));
        let e = one(translate(
            &reply_error(Some(Tag::Publish.pack(4)), ws::UNAVAILABLE, "busy"),
            &CTX,
        ));
        assert_eq!(
            (e["error"]["code"].clone(), e["error"]["temporary"].clone()),
            (100.into(), true.into())
        );
        assert_eq!(translate(&reply_error(None, ws::BAD_REQUEST, "x"), &CTX), Action::Drop);
    }

    #[test]
    fn short_tokens_are_refreshed_at_half_life_and_long_ones_ten_seconds_early() {
        assert_eq!((refresh_after(2), refresh_after(1), refresh_after(0)), (1, 1, 1));
        assert_eq!((refresh_after(8), refresh_after(3600)), (4, 3590));
    }
}
