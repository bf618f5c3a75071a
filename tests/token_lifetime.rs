//! Token lifetime on open connections (issue 12, docs/PROTOCOL.md "Token
//! lifetime"): a `refresh` push before `exp`, the `refresh` command with a
//! new token of the same `sub`, a close with 4003 "token expired" at `exp`
//! plus the grace for a connection that does not refresh (on every
//! endpoint), and `POST /api/disconnect {"token_id"}`.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use hubbub::conn::Disconnect;
use serde_json::{json, Value};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
const KEY: &str = "api-key-for-tests";

fn server() -> TestServer {
    start(|c| {
        c.shards = 2;
        c.hub.api_key = Some(KEY.into());
        c.hub.jwt_secret = Some(SECRET.as_bytes().to_vec());
        c.hub.allow_anonymous = false;
    })
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn bearer(claims: Value) -> String {
    format!("Authorization: Bearer {}\r\n", token(SECRET, claims))
}

/// A `/ws` client with a token of `claims`.
fn ws(server: &TestServer, claims: Value) -> WsClient {
    WsClient::open(server.addr, &bearer(claims))
}

/// Pushes until one of kind `push` (the others are returned too).
fn wait_push(client: &mut WsClient, push: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let next = client
            .push()
            .unwrap_or_else(|| panic!("connection ended before a {push} push: {seen:?}"));
        let found = next["push"] == push;
        seen.push(next);
        if found {
            return seen;
        }
    }
}

fn error_code(reply: &Value) -> Option<u64> {
    reply["error"]["code"].as_u64()
}

#[test]
fn a_token_refreshed_before_exp_keeps_the_connection_past_the_old_exp() {
    let server = server();
    let exp = now() + 3;
    let mut ann = ws(&server, json!({"sub": "ann", "exp": exp}));
    let refresh = wait_push(&mut ann, "refresh").pop().unwrap();
    let left = refresh["expires_in"].as_u64().unwrap();
    assert!((1..=3).contains(&left), "{refresh}");
    let reply = ann.call(
        "refresh",
        json!({"token": token(SECRET, json!({"sub": "ann", "exp": now() + 60}))}),
    );
    let expires_in = reply["result"]["expires_in"]
        .as_u64()
        .unwrap_or_else(|| panic!("{reply}"));
    assert!((55..=60).contains(&expires_in), "{reply}");
    // Past the old exp and its grace, with a margin for the tick.
    while now() < exp + 3 {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ann.call("ping", json!({})).get("result").is_some());
    assert!(ann.pushes.is_empty(), "no second refresh push yet: {:?}", ann.pushes);
    assert_eq!(server.stats().disconnects_for(Disconnect::TokenExpired), 0);
}

#[test]
fn a_token_not_refreshed_is_closed_with_4003_on_every_endpoint_and_counted() {
    let server = server();
    let started = Instant::now();
    let exp = now() + 3;
    let claims = json!({"sub": "ben", "exp": exp});
    let mut ws_client = ws(&server, claims.clone());
    let mut room = WsClient::try_open(server.addr, "/room/lobby", &bearer(claims.clone())).unwrap();
    let mut echo = WsClient::try_open(server.addr, "/echo", &bearer(claims)).unwrap();
    let mut seen = wait_push(&mut ws_client, "disconnect");
    assert_eq!(seen[0]["push"], "refresh", "asked first: {seen:?}");
    assert_eq!(
        seen.pop().unwrap(),
        json!({"push": "disconnect", "code": 4003, "reason": "token expired", "reconnect": true})
    );
    assert_eq!(ws_client.push(), Some(json!({"closed": 4003})));
    // No command channel: no push, the same close.
    assert_eq!(room.raw.recv_close(), Some(4003));
    assert_eq!(echo.raw.recv_close(), Some(4003));
    let elapsed = started.elapsed();
    // exp is whole seconds: it was 2-3 s ahead; the close comes 1 s after it.
    assert!(elapsed >= Duration::from_secs(2), "closed before exp: {elapsed:?}");
    assert!(elapsed <= Duration::from_secs(7), "closed late: {elapsed:?}");
    server.wait_for("three token_expired disconnects", |s| {
        s.disconnects_for(Disconnect::TokenExpired) == 3
    });
}

#[test]
fn a_refresh_with_another_sub_or_a_bad_token_is_refused_and_the_connection_kept() {
    let server = server();
    let mut ann = ws(&server, json!({"sub": "ann"}));
    let refused = |ann: &mut WsClient, token: String| {
        let reply = ann.call("refresh", json!({ "token": token }));
        assert_eq!(error_code(&reply), Some(112), "{reply}");
        reply["error"]["message"].as_str().unwrap().to_string()
    };
    assert!(refused(&mut ann, token(SECRET, json!({"sub": "bob"}))).contains("another user"));
    assert_eq!(
        refused(&mut ann, token(SECRET, json!({"sub": "ann", "exp": now() - 5}))),
        "token_expired"
    );
    assert_eq!(
        refused(
            &mut ann,
            token("another-secret-of-at-least-32-bytes!", json!({"sub": "ann"}))
        ),
        "bad_signature"
    );
    let no_exp = hubbub::auth::sign_hs256(r#"{"sub":"ann"}"#, SECRET.as_bytes());
    assert_eq!(refused(&mut ann, no_exp), "missing_exp");
    assert_eq!(refused(&mut ann, "garbage".into()), "malformed_token");
    let bad_params = ann.call("refresh", json!({}));
    assert_eq!(error_code(&bad_params), Some(102), "{bad_params}");
    assert!(ann.call("ping", json!({})).get("result").is_some());
}

#[test]
fn a_refreshed_channels_claim_ends_the_subscriptions_it_no_longer_allows() {
    let server = server();
    let mut ann = ws(&server, json!({"sub": "ann", "channels": ["news", "chat:*"]}));
    for channel in ["news", "chat:1"] {
        let reply = ann.call("subscribe", json!({ "channel": channel }));
        assert!(reply.get("result").is_some(), "{reply}");
    }
    let narrower = token(SECRET, json!({"sub": "ann", "channels": ["news"]}));
    let reply = ann.call("refresh", json!({ "token": narrower }));
    assert!(reply["result"]["expires_in"].as_u64().is_some(), "{reply}");
    assert_eq!(
        ann.push().unwrap(),
        json!({"push": "unsubscribe", "channel": "chat:1", "reason": "the refreshed token does not allow this channel"})
    );
    assert_eq!(
        error_code(&ann.call("subscribe", json!({"channel": "chat:2"}))),
        Some(103)
    );
    assert_eq!(
        error_code(&ann.call("unsubscribe", json!({"channel": "chat:1"}))),
        Some(103)
    );
    // The allowed subscription goes on.
    let published = api_call(
        server.admin_addr(),
        "POST",
        "/api/publish",
        Some(KEY),
        r#"{"channel":"news","data":1}"#,
    );
    assert_eq!(published.0, 200);
    assert_eq!(ann.push().unwrap()["channel"], "news");
}

#[test]
fn disconnect_by_token_id_closes_only_the_matching_connections() {
    let server = server();
    let admin = server.admin_addr();
    let mut t1: Vec<WsClient> = ["ann", "bob"]
        .iter()
        .map(|sub| ws(&server, json!({"sub": sub, "jti": "t1"})))
        .collect();
    let mut t2 = ws(&server, json!({"sub": "ann", "jti": "t2"}));
    let mut plain = ws(&server, json!({"sub": "ann"}));
    let mut moved = ws(&server, json!({"sub": "cy", "jti": "t1"}));
    let renewed = token(SECRET, json!({"sub": "cy", "jti": "t3"}));
    assert!(moved
        .call("refresh", json!({ "token": renewed }))
        .get("result")
        .is_some());
    server.wait_for("all open", |s| s.open == 5);
    for bad in [r#"{"user":"ann","token_id":"t1"}"#, r#"{}"#, r#"{"token_id":""}"#] {
        assert_eq!(
            api_call(admin, "POST", "/api/disconnect", Some(KEY), bad).0,
            400,
            "{bad}"
        );
    }
    let (status, body) = api_call(
        admin,
        "POST",
        "/api/disconnect",
        Some(KEY),
        r#"{"token_id":"t1","reason":"revoked"}"#,
    );
    assert_eq!((status, &body), (200, &json!({"closed": 2})));
    for client in &mut t1 {
        assert_eq!(
            client.push().unwrap(),
            json!({"push": "disconnect", "code": 4002, "reason": "revoked", "reconnect": true})
        );
        assert_eq!(client.push(), Some(json!({"closed": 4002})));
    }
    for client in [&mut t2, &mut plain, &mut moved] {
        assert!(client.call("ping", json!({})).get("result").is_some());
    }
    let (_, body) = api_call(admin, "POST", "/api/disconnect", Some(KEY), r#"{"token_id":"nope"}"#);
    assert_eq!(body, json!({"closed": 0}));
}
