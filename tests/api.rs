//! The server API on the admin port: bearer key, publish, broadcast,
//! disconnect, presence, history, channels, connections, stats.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::{json, Value};

const KEY: &str = "api-key-for-tests";
const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn api_server() -> TestServer {
    start(|c| {
        c.shards = 2;
        c.hub.api_key = Some(KEY.into());
        c.hub.jwt_secret = Some(SECRET.as_bytes().to_vec());
        c.hub.allow_anonymous = true;
    })
}

/// One API call: (status, JSON body or null).
fn call(admin: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    api_call(admin, method, path, key, body)
}

fn user(addr: SocketAddr, sub: &str) -> WsClient {
    let token = token(SECRET, json!({"sub": sub}));
    WsClient::open(addr, &format!("Authorization: Bearer {token}\r\n"))
}

#[test]
fn wrong_or_missing_key_is_401() {
    let server = api_server();
    let admin = server.admin_addr();
    assert_eq!(call(admin, "GET", "/api/stats", None, "").0, 401);
    assert_eq!(call(admin, "GET", "/api/stats", Some("nope"), "").0, 401);
    assert_eq!(call(admin, "GET", "/api/stats", Some(KEY), "").0, 200);
}

#[test]
fn publish_reaches_subscribers_and_bad_json_is_400_with_the_reason() {
    let server = api_server();
    let mut sub = WsClient::open(server.addr, "");
    sub.call("subscribe", json!({"channel": "alerts"}));
    let (status, body) = call(
        server.admin_addr(),
        "POST",
        "/api/publish",
        Some(KEY),
        r#"{"channel":"alerts","data":{"level":"high"}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offset"], 1);
    assert_eq!(
        sub.push().unwrap(),
        json!({"push": "pub", "channel": "alerts", "offset": 1, "data": {"level": "high"}})
    );
    let (status, body) = call(
        server.admin_addr(),
        "POST",
        "/api/publish",
        Some(KEY),
        r#"{"channel":"alerts""#,
    );
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("bad JSON"), "{body}");
    let (status, _) = call(
        server.admin_addr(),
        "POST",
        "/api/publish",
        Some(KEY),
        r#"{"channel":"no spaces","data":1}"#,
    );
    assert_eq!(status, 400);
}

#[test]
fn broadcast_publishes_one_payload_to_many_channels() {
    let server = api_server();
    let mut a = WsClient::open(server.addr, "");
    let mut b = WsClient::open(server.addr, "");
    a.call("subscribe", json!({"channel": "a"}));
    b.call("subscribe", json!({"channel": "b"}));
    let (status, body) = call(
        server.admin_addr(),
        "POST",
        "/api/broadcast",
        Some(KEY),
        r#"{"channels":["a","b"],"data":"hello"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
    assert_eq!(a.push().unwrap()["data"], "hello");
    assert_eq!(b.push().unwrap()["data"], "hello");
}

#[test]
fn disconnect_closes_every_connection_of_the_user() {
    let server = api_server();
    let mut conns: Vec<WsClient> = (0..4).map(|_| user(server.addr, "mallory")).collect();
    let mut other = user(server.addr, "alice");
    server.wait_for("all open", |s| s.open == 5);
    let (status, _) = call(
        server.admin_addr(),
        "POST",
        "/api/disconnect",
        Some(KEY),
        r#"{"user":"mallory","reason":"banned"}"#,
    );
    assert_eq!(status, 200);
    for conn in &mut conns {
        assert_eq!(
            conn.push().unwrap(),
            json!({"push": "disconnect", "code": 4002, "reason": "banned", "reconnect": true})
        );
        assert_eq!(conn.push().unwrap(), json!({"closed": 4002}));
    }
    assert!(other.call("ping", json!({})).get("result").is_some());
}

#[test]
fn presence_history_channels_connections_and_stats_describe_the_hub() {
    let server = api_server();
    let mut ann = user(server.addr, "ann");
    ann.call("subscribe", json!({"channel": "lobby"}));
    ann.call("publish", json!({"channel": "lobby", "data": 1}));
    ann.call("publish", json!({"channel": "lobby", "data": 2}));
    let admin = server.admin_addr();
    let (_, presence) = call(admin, "GET", "/api/presence?channel=lobby", Some(KEY), "");
    assert_eq!(presence, json!({"users": {"ann": 1}, "anonymous": 0, "total": 1}));
    let (_, history) = call(admin, "GET", "/api/history?channel=lobby&limit=1", Some(KEY), "");
    assert_eq!(history["publications"], json!([{"offset": 2, "data": 2}]));
    let (_, channels) = call(admin, "GET", "/api/channels", Some(KEY), "");
    assert_eq!(channels["channels"][0]["channel"], "lobby");
    assert_eq!(channels["channels"][0]["subscribers"], 1);
    let (_, connections) = call(admin, "GET", "/api/connections?user=ann", Some(KEY), "");
    let conn = &connections["connections"][0];
    assert_eq!(conn["endpoint"], "ws");
    assert_eq!(conn["subscriptions"], json!(["lobby"]));
    assert!(
        conn["queued_bytes"].is_u64() && conn["age_secs"].is_f64() && conn["shard"].is_u64(),
        "{conn}"
    );
    server.wait_for("counters published", |s| s.open == 1);
    let (_, stats) = call(admin, "GET", "/api/stats", Some(KEY), "");
    assert_eq!(stats["total"]["connections"], 1);
    assert_eq!(stats["shards"].as_array().unwrap().len(), 2);
    assert_eq!(
        call(admin, "GET", "/api/presence", Some(KEY), "").0,
        400,
        "missing channel"
    );
}
