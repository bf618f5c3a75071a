//! What the server API answers where it used to mislead: without
//! `--api-key` it says the API is off (not "wrong token"), a broadcast with
//! one bad channel still publishes the others and says which failed, and a
//! disconnect says how many connections it closed.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::{json, Value};

const KEY: &str = "api-answers-key";
const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

/// One API call: (status, JSON body or null).
fn call(admin: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    api_call(admin, method, path, key, body)
}

fn api_server() -> TestServer {
    start(|c| {
        c.hub.api_key = Some(KEY.into());
        c.hub.jwt_secret = Some(SECRET.as_bytes().to_vec());
        c.hub.allow_anonymous = true;
    })
}

#[test]
fn without_a_key_the_api_says_it_is_off() {
    let server = start(|c| c.hub.api_key = None);
    let admin = server.admin_addr();
    for (method, path) in [
        ("GET", "/api/stats"),
        ("POST", "/api/publish"),
        ("GET", "/api/channels"),
    ] {
        for key in [None, Some("anything")] {
            let (status, body) = call(admin, method, path, key, "{}");
            assert_eq!(status, 403, "{method} {path}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains("API is off") && error.contains("--api-key"), "{body}");
        }
    }
    assert_eq!(
        http_get(admin, "/healthz").0,
        200,
        "the rest of the admin port still answers"
    );
}

#[test]
fn broadcast_gives_each_channel_its_own_result() {
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
        r#"{"channels":["a","no spaces","b"],"data":"hello"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{body}");
    assert_eq!(results[0]["channel"], "a");
    assert_eq!(results[0]["result"]["offset"], 1, "{body}");
    assert_eq!(results[1]["channel"], "no spaces");
    assert_eq!(results[1]["status"], 400, "{body}");
    assert!(
        results[1]["error"].as_str().unwrap().contains("bad channel name"),
        "{body}"
    );
    assert!(results[1].get("result").is_none(), "{body}");
    assert_eq!(results[2]["result"]["offset"], 1, "{body}");
    assert_eq!(a.push().unwrap()["data"], "hello");
    assert_eq!(b.push().unwrap()["data"], "hello");
    let (status, body) = call(
        server.admin_addr(),
        "POST",
        "/api/broadcast",
        Some(KEY),
        r#"{"channels":[],"data":1}"#,
    );
    assert_eq!((status, &body["error"]), (400, &json!("channels is empty")));
}

#[test]
fn disconnect_says_how_many_connections_it_closed() {
    let server = api_server();
    let bearer = format!("Authorization: Bearer {}\r\n", token(SECRET, json!({"sub": "mallory"})));
    let mut conns: Vec<WsClient> = (0..3).map(|_| WsClient::open(server.addr, &bearer)).collect();
    server.wait_for("all open", |s| s.open == 3);
    let disconnect = |user: &str| {
        call(
            server.admin_addr(),
            "POST",
            "/api/disconnect",
            Some(KEY),
            &json!({"user": user}).to_string(),
        )
    };
    assert_eq!(disconnect("mallory"), (200, json!({"closed": 3})));
    for conn in &mut conns {
        assert_eq!(conn.push().unwrap()["push"], "disconnect");
        assert_eq!(conn.push().unwrap(), json!({"closed": 4002}));
    }
    assert_eq!(disconnect("nobody"), (200, json!({"closed": 0})));
    let (status, _) = disconnect("");
    assert_eq!(status, 400);
}
