//! The `/ws` JSON protocol against a real two-shard server: commands and
//! replies, publication order, history and recovery, presence, users.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn subscribe(client: &mut WsClient, channel: &str) -> serde_json::Value {
    let reply = client.call("subscribe", json!({"channel": channel}));
    assert!(reply.get("result").is_some(), "subscribe failed: {reply}");
    reply["result"].clone()
}

/// Opens `n` clients spread over both shards: SO_REUSEPORT picks a shard
/// per connection, so a set that landed on one shard is closed and opened again.
fn clients_on_both_shards(server: &TestServer, n: usize, headers: impl Fn(usize) -> String) -> Vec<WsClient> {
    for _attempt in 0..8 {
        let clients: Vec<WsClient> = (0..n).map(|i| WsClient::open(server.addr, &headers(i))).collect();
        server.wait_for("all upgraded", |s| s.open == n as u64);
        if server.shard_stats().iter().all(|s| s.open > 0) {
            return clients;
        }
        drop(clients);
        server.wait_for("all closed", |s| s.open == 0);
    }
    panic!("{n} connections kept landing on one shard");
}

#[test]
fn ping_gets_an_ok_reply() {
    let server = start(|_| {});
    let mut client = WsClient::open(server.addr, "");
    assert_eq!(client.call("ping", json!({})), json!({"id": 1, "result": {}}));
}

#[test]
fn publications_reach_every_subscriber_in_one_order_with_offsets() {
    let server = start(|c| c.shards = 2);
    let mut clients = clients_on_both_shards(&server, 10, |_| String::new());
    for client in &mut clients {
        assert_eq!(subscribe(client, "news")["offset"], 0);
    }
    const EACH: u64 = 50;
    for i in 0..EACH {
        for (p, publisher) in clients.iter_mut().take(3).enumerate() {
            let id = 1000 + i * 10 + p as u64;
            let command =
                json!({"id": id, "method": "publish", "params": {"channel": "news", "data": {"p": p, "i": i}}});
            publisher.raw.send_text(&command.to_string());
        }
    }
    let total = EACH * 3;
    let mut first: Option<Vec<serde_json::Value>> = None;
    for client in &mut clients {
        let mut seen = Vec::new();
        while seen.len() < total as usize {
            let push = client.push().expect("push");
            if push.get("push") == Some(&json!("pub")) {
                assert_eq!(push["offset"], seen.len() as u64 + 1, "offsets count up without gaps");
                seen.push(push["data"].clone());
            }
        }
        assert_eq!(
            first.get_or_insert_with(|| seen.clone()),
            &seen,
            "every subscriber sees one order"
        );
    }
}

#[test]
fn publish_reply_carries_the_offset_and_unsubscribe_stops_delivery() {
    let server = start(|_| {});
    let mut sub = WsClient::open(server.addr, "");
    let mut publisher = WsClient::open(server.addr, "");
    subscribe(&mut sub, "c");
    let reply = publisher.call("publish", json!({"channel": "c", "data": "one"}));
    assert_eq!(reply["result"]["offset"], 1);
    assert_eq!(sub.push().unwrap()["data"], "one");
    assert_eq!(sub.call("unsubscribe", json!({"channel": "c"}))["result"], json!({}));
    publisher.call("publish", json!({"channel": "c", "data": "two"}));
    assert_eq!(
        sub.call("ping", json!({}))["result"],
        json!({}),
        "no push arrived before the pong"
    );
    assert!(sub.pushes.is_empty());
    let again = sub.call("unsubscribe", json!({"channel": "c"}));
    assert_eq!(again["error"]["code"], 106);
}

#[test]
fn recovery_after_reconnect_gives_exactly_the_missed_publications() {
    let server = start(|c| c.shards = 2);
    let mut publisher = WsClient::open(server.addr, "");
    let mut sub = WsClient::open(server.addr, "");
    let position = subscribe(&mut sub, "feed");
    for i in 0..3 {
        publisher.call("publish", json!({"channel": "feed", "data": i}));
    }
    let mut last = 0;
    for _ in 0..3 {
        last = sub.push().unwrap()["offset"].as_u64().unwrap();
    }
    drop(sub);
    for i in 3..8 {
        publisher.call("publish", json!({"channel": "feed", "data": i}));
    }
    // Reconnect (maybe to the other shard) and resume from the last offset.
    let mut back = WsClient::open(server.addr, "");
    let reply = back.call(
        "subscribe",
        json!({"channel": "feed", "recover": {"offset": last, "epoch": position["epoch"]}}),
    );
    let result = &reply["result"];
    assert_eq!(result["recovered"], true, "{reply}");
    let recovered: Vec<u64> = result["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].as_u64().unwrap())
        .collect();
    assert_eq!(recovered, vec![3, 4, 5, 6, 7], "exactly the missed ones");
    assert_eq!(result["offset"], 8);
    publisher.call("publish", json!({"channel": "feed", "data": 8}));
    let live = back.push().unwrap();
    assert_eq!(
        (live["offset"].as_u64(), live["data"].as_u64()),
        (Some(9), Some(8)),
        "then live, no duplicate"
    );
}

#[test]
fn recovery_that_would_leave_a_gap_is_refused_with_the_reason() {
    let server = start(|c| c.hub.history.size = 2);
    let mut publisher = WsClient::open(server.addr, "");
    let mut sub = WsClient::open(server.addr, "");
    let epoch = subscribe(&mut sub, "short")["epoch"].clone();
    for i in 0..5 {
        publisher.call("publish", json!({"channel": "short", "data": i}));
    }
    let mut late = WsClient::open(server.addr, "");
    let gone = late.call(
        "subscribe",
        json!({"channel": "short", "recover": {"offset": 1, "epoch": epoch}}),
    );
    assert_eq!(gone["result"]["recovered"], false);
    assert!(
        gone["result"]["reason"].as_str().unwrap().starts_with("history gone"),
        "{gone}"
    );
    let mut other = WsClient::open(server.addr, "");
    let changed = other.call(
        "subscribe",
        json!({"channel": "short", "recover": {"offset": 5, "epoch": "not-it"}}),
    );
    assert_eq!(changed["result"]["recovered"], false);
    assert!(changed["result"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("epoch changed"));
}

#[test]
fn history_returns_the_latest_publications() {
    let server = start(|_| {});
    let mut client = WsClient::open(server.addr, "");
    for i in 0..4 {
        client.call("publish", json!({"channel": "log", "data": i}));
    }
    let history = client.call("history", json!({"channel": "log", "limit": 2}));
    let data: Vec<u64> = history["result"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].as_u64().unwrap())
        .collect();
    assert_eq!(data, vec![2, 3]);
    assert_eq!(history["result"]["offset"], 4);
}

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn bearer(claims: serde_json::Value) -> String {
    format!("Authorization: Bearer {}\r\n", token(SECRET, claims))
}

fn auth_server(tune: impl FnOnce(&mut hubbub::config::Config)) -> TestServer {
    start(|c| {
        c.shards = 2;
        c.hub.jwt_secret = Some(SECRET.as_bytes().to_vec());
        c.hub.allow_anonymous = false;
        tune(c);
    })
}

#[test]
fn bad_tokens_are_refused_at_the_handshake_with_401() {
    let server = auth_server(|_| {});
    let refused = |headers: String| WsClient::try_open(server.addr, "/ws", &headers).err().expect("refused");
    let (status, body) = refused(String::new());
    assert_eq!((status, body.trim()), (401, "token required"));
    let wrong_key = hubbub::auth::sign_hs256(r#"{"sub":"eve"}"#, b"some-other-secret-of-32-bytes-or-more");
    assert_eq!(
        refused(format!("Authorization: Bearer {wrong_key}\r\n")).1.trim(),
        "bad_signature"
    );
    assert_eq!(
        refused(bearer(json!({"sub": "old", "exp": 1000}))).1.trim(),
        "token_expired"
    );
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(r#"{"sub":"mallory"}"#)
    );
    assert_eq!(refused(format!("Authorization: Bearer {none}\r\n")).0, 401);
    // A good token by header, by query parameter and by subprotocol.
    WsClient::open(server.addr, &bearer(json!({"sub": "alice"})));
    let query = token(SECRET, json!({"sub": "bob"}));
    assert!(WsClient::try_open(server.addr, &format!("/ws?token={query}"), "").is_ok());
    let proto = format!(
        "Sec-WebSocket-Protocol: hubbub.v1, bearer.{}\r\n",
        token(SECRET, json!({"sub": "carol"}))
    );
    assert!(WsClient::try_open(server.addr, "/ws", &proto).is_ok());
    server.wait_for("the refusals counted", |s| {
        s.handshake_failures_for("unauthorized") == 4
    });
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn channel_claims_limit_subscribe_and_publish() {
    let server = auth_server(|_| {});
    let mut client = WsClient::open(server.addr, &bearer(json!({"sub": "u", "channels": ["chat:*"]})));
    assert!(client
        .call("subscribe", json!({"channel": "chat:1"}))
        .get("result")
        .is_some());
    assert_eq!(
        client.call("subscribe", json!({"channel": "admin"}))["error"]["code"],
        103
    );
    assert_eq!(
        client.call("publish", json!({"channel": "admin", "data": 1}))["error"]["code"],
        103
    );
}

#[test]
fn channel_claims_decide_which_rooms_a_token_may_join() {
    let server = auth_server(|_| {});
    let limited = bearer(json!({"sub": "u", "channels": ["chat:*"]}));
    assert!(WsClient::try_open(server.addr, "/room/chat:lobby", &limited).is_ok());
    let (status, body) = WsClient::try_open(server.addr, "/room/admin", &limited)
        .err()
        .expect("refused");
    assert_eq!(status, 403);
    assert!(body.contains("the token does not allow this room"), "{body}");
    let unlimited = bearer(json!({"sub": "u"}));
    assert!(WsClient::try_open(server.addr, "/room/admin", &unlimited).is_ok());
    server.wait_for("the refusal is counted", |s| {
        s.handshake_failures_for("room_forbidden") == 1
    });
}

#[test]
fn presence_counts_users_across_shards() {
    let server = auth_server(|_| {});
    let users = ["ann", "ann", "ben", "cat", "cat", "cat"];
    let mut clients = clients_on_both_shards(&server, users.len(), |i| bearer(json!({"sub": users[i]})));
    for client in &mut clients {
        subscribe(client, "room:1");
    }
    let presence = clients[0].call("presence", json!({"channel": "room:1"}));
    assert_eq!(
        presence["result"],
        json!({"users": {"ann": 2, "ben": 1, "cat": 3}, "anonymous": 0, "total": 6})
    );
    drop(clients.pop());
    server.wait_for("a leaver", |s| s.open == 5);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let presence = clients[0].call("presence", json!({"channel": "room:1"}));
        if presence["result"]["total"] == 5 {
            assert_eq!(presence["result"]["users"]["cat"], 2);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "presence never dropped the leaver"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn join_and_leave_events_reach_watchers() {
    let server = auth_server(|_| {});
    let mut watcher = WsClient::open(server.addr, &bearer(json!({"sub": "watcher"})));
    watcher.call("subscribe", json!({"channel": "lobby", "join_leave": true}));
    let mut events = Vec::new();
    let next = |w: &mut WsClient| loop {
        let push = w.push().unwrap();
        if push["push"] == "presence" {
            return push;
        }
    };
    events.push(next(&mut watcher));
    let mut guest = WsClient::open(server.addr, &bearer(json!({"sub": "guest"})));
    subscribe(&mut guest, "lobby");
    events.push(next(&mut watcher));
    drop(guest);
    events.push(next(&mut watcher));
    assert_eq!(events[0]["joined"], json!(["watcher"]));
    assert_eq!(events[1]["joined"], json!(["guest"]));
    assert_eq!(events[2]["left"], json!(["guest"]));
}

#[test]
fn private_messages_reach_every_connection_of_the_user() {
    let server = auth_server(|_| {});
    let mut alice = clients_on_both_shards(&server, 6, |_| bearer(json!({"sub": "alice"})));
    let mut bob = WsClient::open(server.addr, &bearer(json!({"sub": "bob"})));
    assert_eq!(
        bob.call("send", json!({"user": "alice", "data": {"text": "hi"}}))["result"],
        json!({})
    );
    for conn in &mut alice {
        let push = conn.push().unwrap();
        assert_eq!(push, json!({"push": "message", "from": "bob", "data": {"text": "hi"}}));
    }
}

#[test]
fn a_user_over_the_session_limit_loses_the_oldest_connection() {
    let server = auth_server(|c| c.hub.max_connections_per_user = 2);
    let mut first = WsClient::open(server.addr, &bearer(json!({"sub": "sam"})));
    first.call("ping", json!({}));
    let mut second = WsClient::open(server.addr, &bearer(json!({"sub": "sam"})));
    second.call("ping", json!({}));
    let _third = WsClient::open(server.addr, &bearer(json!({"sub": "sam"})));
    let notice = first.push().unwrap();
    assert_eq!(
        notice,
        json!({"push": "disconnect", "code": 4001, "reason": "replaced", "reconnect": false})
    );
    assert_eq!(first.push().unwrap(), json!({"closed": 4001}));
    assert!(
        second.call("ping", json!({})).get("result").is_some(),
        "the second one stays"
    );
    let stats = server.wait_for("the replaced one counted", |s| {
        s.disconnects_for(hubbub::conn::Disconnect::Replaced) == 1
    });
    assert_eq!(stats.open, 2);
}

#[test]
fn malformed_commands_get_errors_and_persistent_abuse_closes_with_1008() {
    let server = start(|_| {});
    let mut client = WsClient::open(server.addr, "");
    client.raw.send_text("this is not json");
    assert_eq!(client.push().unwrap()["error"]["code"], 100);
    assert_eq!(client.call("dance", json!({}))["error"]["code"], 101);
    assert_eq!(
        client.call("subscribe", json!({"channel": "bad name"}))["error"]["code"],
        102
    );
    assert!(
        client.call("ping", json!({})).get("result").is_some(),
        "still connected"
    );
    for _ in 0..30 {
        client.raw.send_text("{{{");
    }
    let mut closed = None;
    while let Some(message) = client.push() {
        if let Some(code) = message.get("closed") {
            closed = Some(code.clone());
            break;
        }
    }
    assert_eq!(closed, Some(json!(1008)));
}

#[test]
fn commands_over_the_rate_limit_are_refused_with_105() {
    let server = start(|c| c.hub.max_messages_per_sec = 5);
    let mut client = WsClient::open(server.addr, "");
    for id in 1..=12u64 {
        client.raw.send_text(&json!({"id": id, "method": "ping"}).to_string());
    }
    let codes: Vec<Option<u64>> = (1..=12u64)
        .map(|id| client.reply_for(id)["error"]["code"].as_u64())
        .collect();
    assert_eq!(
        codes.iter().filter(|c| c.is_none()).count(),
        5,
        "the burst passes: {codes:?}"
    );
    assert!(codes[5..].iter().all(|c| *c == Some(105)), "{codes:?}");
    server.wait_for("counted", |s| s.rate_limited == 7);
}

#[test]
fn subscriptions_are_limited_per_connection() {
    let server = start(|c| c.hub.max_subscriptions = 3);
    let mut client = WsClient::open(server.addr, "");
    for i in 0..3 {
        subscribe(&mut client, &format!("c{i}"));
    }
    assert_eq!(client.call("subscribe", json!({"channel": "c3"}))["error"]["code"], 104);
    assert_eq!(
        client.call("subscribe", json!({"channel": "c0"}))["error"]["code"],
        107,
        "already subscribed"
    );
    client.call("unsubscribe", json!({"channel": "c0"}));
    subscribe(&mut client, "c3");
}

/// A channel's owner sends its publications only to shards with
/// subscribers of it (it counts them per shard from the subscribes).
#[test]
fn publications_go_only_to_shards_with_subscribers() {
    let server = start(|c| c.shards = 2);
    let owner = hubbub::bus::owner_of("solo", 2);
    let other = 1 - owner;
    // A subscriber on the owner's shard only: keep connecting until one lands there.
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut subscriber = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no connection landed on shard {owner}"
        );
        let before = server.shard_stats()[owner].upgraded;
        let client = WsClient::open(server.addr, "");
        server.wait_for("the upgrade is published", |s| s.upgraded > 0);
        std::thread::sleep(std::time::Duration::from_millis(300));
        if server.shard_stats()[owner].upgraded > before {
            break client;
        }
    };
    let reply = subscriber.call("subscribe", serde_json::json!({"channel": "solo"}));
    assert!(reply.get("result").is_some(), "{reply}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let data_before = server.shard_stats()[other].inbox_data;
    for i in 0..50 {
        let reply = subscriber.call("publish", serde_json::json!({"channel": "solo", "data": i}));
        assert!(reply.get("result").is_some(), "{reply}");
    }
    let mut got = 0;
    while got < 50 {
        let push = subscriber.push().expect("a publication");
        if push["push"] == "pub" {
            got += 1;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        server.shard_stats()[other].inbox_data,
        data_before,
        "shard {other} has no subscriber and got deliveries"
    );
}
