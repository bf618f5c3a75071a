//! Helpers for the cluster-mode tests: a hubbub node joined to Redis by
//! any of `--redis`/`--redis-sentinel`, and the calls the tests make on it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{api_call, token, Process, WsClient, PATIENCE};

pub const KEY: &str = "cluster-api-key";
pub const SECRET: &str = "a-cluster-secret-of-at-least-32-bytes";
/// `--node-ttl-secs` of the test nodes.
pub const NODE_TTL_SECS: u64 = 3;

/// A node named `name`, joined by `link` (e.g. `["--redis", URL]`), with
/// two shards unless `extra` names `--shards`.
pub fn node_on(link: &[&str], name: &str, extra: &[&str]) -> Process {
    let ttl = NODE_TTL_SECS.to_string();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--node-id",
        name,
        "--node-ttl-secs",
        &ttl,
        "--api-key",
        KEY,
        "--jwt-secret",
        SECRET,
        "--allow-anonymous",
        "true",
    ];
    // Two shards unless the test says otherwise.
    if !extra.contains(&"--shards") {
        args.extend(["--shards", "2"]);
    }
    args.extend_from_slice(link);
    args.extend_from_slice(extra);
    Process::spawn(&args)
}

pub fn api(admin: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    api_call(admin, method, path, Some(KEY), body)
}

/// Waits until `node` sees the link up and `count` live nodes.
pub fn wait_cluster(node: &Process, count: usize) -> Value {
    wait_until(&format!("{count} live nodes"), || {
        let (_, stats) = api(node.admin.unwrap(), "GET", "/api/stats", "");
        let cluster = stats["cluster"].clone();
        let ok = cluster["link_up"] == true && cluster["nodes"].as_array().is_some_and(|n| n.len() == count);
        ok.then_some(cluster)
    })
}

pub fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `check` until it gives a value, or `None` after the tests' patience.
pub fn try_until<T>(mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + PATIENCE * 2;
    while Instant::now() < deadline {
        if let Some(value) = check() {
            return Some(value);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub fn user(addr: SocketAddr, sub: &str) -> WsClient {
    let token = token(SECRET, json!({"sub": sub}));
    WsClient::open(addr, &format!("Authorization: Bearer {token}\r\n"))
}

pub fn publish(client: &mut WsClient, channel: &str, data: Value) -> Value {
    let reply = client.call("publish", json!({"channel": channel, "data": data}));
    assert!(reply.get("result").is_some(), "publish failed: {reply}");
    reply["result"].clone()
}

/// The next publication push on `client`.
pub fn next_pub(client: &mut WsClient) -> Value {
    loop {
        let push = client.push().expect("connection open");
        if push["push"] == "pub" {
            return push;
        }
    }
}

/// A subscriber on `b` receives what a publisher on `a` publishes on
/// `channel` (subscribing first).
pub fn crosses(a: &Process, b: &Process, channel: &str) {
    let mut sub = WsClient::open(b.addr, "");
    let reply = sub.call("subscribe", json!({"channel": channel}));
    assert!(reply.get("result").is_some(), "subscribe failed: {reply}");
    let mut publisher = WsClient::open(a.addr, "");
    let result = publish(&mut publisher, channel, json!("across"));
    let push = next_pub(&mut sub);
    assert_eq!((&push["data"], &push["offset"]), (&json!("across"), &result["offset"]));
}
