//! Centrifugo's HTTP proxy format (docs/PROXY.md): the JSON body of each
//! hook's request, and the three shapes of an answer. No I/O.
//!
//! Requests carry `client` (`SHARD-KEY-GENERATION` of the connection: unique
//! on this node while it lives), `transport` `"websocket"`, `protocol` and
//! `encoding` `"json"`, and per hook `user`, `channel`, `data` (the client's
//! JSON as it sent it) and `method`. Answers are `{"result": {...}}`,
//! `{"error": {"code", "message"}}` or `{"disconnect": {"code", "reason"}}`;
//! a disconnect wins over an error, an error over a result.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::bus::proxy::{client_id, Allowed, Failure, Hook, Pending, ProxyCall, Verdict};

/// The JSON body of `call`'s request.
pub fn request_body(call: &ProxyCall) -> Vec<u8> {
    let mut out = format!(
        "{{\"client\":{},\"transport\":\"websocket\",\"protocol\":\"json\",\"encoding\":\"json\"",
        json_string(&client_id(&call.to))
    );
    if let Some(user) = &call.user {
        out.push_str(&format!(",\"user\":{}", json_string(user)));
    }
    match &call.pending {
        // `data` was checked to be JSON when the command was parsed.
        Pending::Connect { data, .. } => {
            if let Some(data) = data {
                out.push_str(&format!(",\"data\":{data}"));
            }
        }
        Pending::Subscribe { channel, .. } => out.push_str(&format!(",\"channel\":{}", json_string(channel))),
        // `data` was checked to be JSON when the command was parsed.
        Pending::Publish { channel, data } => {
            out.push_str(&format!(",\"channel\":{},\"data\":{data}", json_string(channel)))
        }
        Pending::Rpc { method, data } => out.push_str(&format!(",\"method\":{},\"data\":{data}", json_string(method))),
    }
    out.push('}');
    out.into_bytes()
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    result: Option<ResultBody<'a>>,
    error: Option<ErrorBody>,
    disconnect: Option<DisconnectBody>,
}

#[derive(Deserialize)]
struct ResultBody<'a> {
    user: Option<String>,
    expire_at: Option<u64>,
    channels: Option<Vec<String>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    b64data: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: u64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct DisconnectBody {
    code: u64,
    #[serde(default)]
    reason: String,
}

/// The backend's answer `body` to a `hook` call, judged.
pub fn parse_answer(hook: Hook, body: &[u8]) -> Verdict {
    let bad = |why: String| Verdict::Failed {
        failure: Failure::Unavailable,
        why: format!("bad answer from the application: {why}"),
    };
    let answer: Answer<'_> = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(e) => return bad(format!("not a proxy answer object: {e}")),
    };
    if let Some(DisconnectBody { code, reason }) = answer.disconnect {
        return match u16::try_from(code) {
            Ok(code) if (3000..=4999).contains(&code) => Verdict::Disconnect { code, reason },
            _ => bad(format!("disconnect code {code} is outside 3000-4999")),
        };
    }
    if let Some(ErrorBody { code, message }) = answer.error {
        return match u16::try_from(code) {
            // The application's range (docs/PROXY.md), and 103 "permission
            // denied"; another code below 400 would read as one of hubbub's
            // own (105 rate limit, 113, 114...).
            Ok(code) if code == 103 || (400..=1999).contains(&code) => Verdict::Refuse { code, message },
            _ => bad(format!("error code {code} is outside 400-1999 (or 103)")),
        };
    }
    let Some(result) = answer.result else {
        // Centrifugo lets a subscribe, publish or rpc through on an empty
        // answer; a connect needs to be told who the user is.
        return match hook {
            Hook::Connect => bad("no result, error or disconnect".into()),
            _ => Verdict::Allow(Allowed::default()),
        };
    };
    if result.b64data.is_some() {
        return bad("b64data is not supported: /ws speaks JSON, answer with data".into());
    }
    Verdict::Allow(Allowed {
        user: result.user,
        expire_at: result.expire_at.filter(|&at| at > 0),
        channels: result.channels.unwrap_or_default(),
        data: result.data.map(|d| d.get().to_string()),
    })
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::msg::Origin;

    fn call(pending: Pending) -> ProxyCall {
        ProxyCall {
            queued: std::time::Instant::now(),
            to: Origin {
                shard: 1,
                key: 2,
                generation: 3,
                id: 4,
            },
            user: Some("u\"1".into()),
            pending,
        }
    }

    #[test]
    fn requests_carry_the_documented_fields() {
        let body = request_body(&call(Pending::Publish {
            channel: "chat".into(),
            data: r#"{"a":[1]}"#.into(),
        }));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["client"], "1-2-3");
        assert_eq!(
            (v["transport"].as_str(), v["protocol"].as_str()),
            (Some("websocket"), Some("json"))
        );
        assert_eq!(v["encoding"], "json");
        assert_eq!(
            (v["user"].as_str(), v["channel"].as_str()),
            (Some("u\"1"), Some("chat"))
        );
        assert_eq!(v["data"]["a"][0], 1);
        let rpc = request_body(&call(Pending::Rpc {
            method: "sum".into(),
            data: "[1,2]".into(),
        }));
        let v: serde_json::Value = serde_json::from_slice(&rpc).unwrap();
        assert_eq!((v["method"].as_str(), v["data"][1].as_i64()), (Some("sum"), Some(2)));
        let connect = request_body(&ProxyCall {
            user: None,
            ..call(Pending::Connect {
                headers: Vec::new(),
                data: None,
            })
        });
        let v: serde_json::Value = serde_json::from_slice(&connect).unwrap();
        assert!(v.get("user").is_none() && v.get("channel").is_none());
    }

    #[test]
    fn answers_are_judged_disconnect_first() {
        let connect = parse_answer(
            Hook::Connect,
            br#"{"result":{"user":"42","expire_at":99,"channels":["a"],"data":{"x":1},"info":{}}}"#,
        );
        let Verdict::Allow(allowed) = connect else {
            panic!("{connect:?}")
        };
        assert_eq!(allowed.user.as_deref(), Some("42"));
        assert_eq!((allowed.expire_at, allowed.channels.len()), (Some(99), 1));
        assert_eq!(allowed.data.as_deref(), Some(r#"{"x":1}"#));
        assert_eq!(
            parse_answer(
                Hook::Publish,
                br#"{"error":{"code":1001,"message":"no"},"disconnect":{"code":4500,"reason":"bye"}}"#
            ),
            Verdict::Disconnect {
                code: 4500,
                reason: "bye".into()
            }
        );
        assert_eq!(
            parse_answer(Hook::Publish, br#"{"error":{"code":1001,"message":"no"}}"#),
            Verdict::Refuse {
                code: 1001,
                message: "no".into()
            }
        );
        assert_eq!(parse_answer(Hook::Subscribe, b"{}"), Verdict::Allow(Allowed::default()));
    }

    #[test]
    fn bad_answers_are_failures_that_say_why() {
        let failed = |hook, body: &[u8]| match parse_answer(hook, body) {
            Verdict::Failed { failure, why } => (failure, why),
            other => panic!("{other:?}"),
        };
        assert!(failed(Hook::Connect, b"{}").1.contains("no result"));
        assert!(failed(Hook::Publish, b"<html>").1.contains("not a proxy answer"));
        assert!(failed(Hook::Rpc, br#"{"disconnect":{"code":1000}}"#)
            .1
            .contains("3000-4999"));
        assert!(failed(Hook::Rpc, br#"{"error":{"code":70000}}"#).1.contains("400-1999"));
        assert!(failed(Hook::Rpc, br#"{"error":{"code":105}}"#).1.contains("400-1999"));
        assert!(matches!(
            parse_answer(Hook::Rpc, br#"{"error":{"code":103,"message":"no"}}"#),
            Verdict::Refuse { code: 103, .. }
        ));
        let (failure, why) = failed(Hook::Publish, br#"{"result":{"b64data":"AA=="}}"#);
        assert_eq!(failure, Failure::Unavailable);
        assert!(why.contains("b64data"));
    }
}
