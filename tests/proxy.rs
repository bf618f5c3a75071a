//! The application hooks (`--proxy-*-url`, docs/PROXY.md) against a real
//! HTTP backend (tests/common/backend.rs) answering each call as the
//! test's handler says.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::backend::{Backend, Seen};
use common::{http_get, start, WsClient, PATIENCE};
use hubbub::conn::Disconnect;
use serde_json::{json, Value};

fn now() -> Duration {
    Duration::ZERO
}

fn data_text(seen: &Seen) -> &str {
    seen.body["data"]["text"].as_str().unwrap_or("")
}

/// A second client on `channel`.
fn subscriber(addr: SocketAddr, channel: &str) -> WsClient {
    let mut client = WsClient::open(addr, "");
    let reply = client.call("subscribe", json!({"channel": channel}));
    assert!(reply.get("result").is_some(), "{reply}");
    client
}

#[test]
fn publish_hook_allows_refuses_and_rewrites() {
    let backend = Backend::start(|call| match data_text(call) {
        "refuse" => (
            now(),
            json!({"error": {"code": 1403, "message": "not on this channel"}}),
        ),
        "rewrite" => (now(), json!({"result": {"data": {"text": "rewritten"}}})),
        _ => (now(), json!({"result": {}})),
    });
    let server = start(|c| {
        c.proxy = proxy(|p| p.publish_url = Some(backend.url("/publish")));
    });
    let mut sub = subscriber(server.addr, "chat");
    let mut publisher = WsClient::open(server.addr, "");
    for text in ["hello", "refuse", "rewrite"] {
        let reply = publisher.call("publish", json!({"channel": "chat", "data": {"text": text}}));
        if text == "refuse" {
            assert_eq!(reply["error"]["code"], 1403, "{reply}");
            assert_eq!(reply["error"]["message"], "not on this channel");
        } else {
            assert!(reply["result"]["offset"].is_u64(), "{reply}");
        }
    }
    let got: Vec<Value> = (0..2).map(|_| sub.push().unwrap()["data"]["text"].clone()).collect();
    assert_eq!(
        got,
        [json!("hello"), json!("rewritten")],
        "refused never goes out, rewritten does"
    );
    let first = &backend.seen()[0];
    assert_eq!(first.path, "/publish");
    assert_eq!(first.body["channel"], "chat");
    assert_eq!(first.body["transport"], "websocket");
    assert_eq!(
        (first.body["protocol"].as_str(), first.body["encoding"].as_str()),
        (Some("json"), Some("json"))
    );
    assert!(first.body["client"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(first.body.get("user").is_none(), "an anonymous client has no user");
    let metrics = http_get(server.admin_addr(), "/metrics").1;
    assert!(
        metrics.contains(r#"hubbub_proxy_calls_total{hook="publish",outcome="ok"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"hubbub_proxy_calls_total{hook="publish",outcome="refused"} 1"#));
    assert!(metrics.contains("hubbub_proxy_latency_seconds_bucket{hook=\"publish\""));
    for name in [
        "hubbub_proxy_calls_total",
        "hubbub_proxy_latency_seconds",
        "hubbub_proxy_in_flight",
    ] {
        assert!(metrics.contains(&format!("# HELP {name} ")), "{name} described");
    }
}

#[test]
fn calls_reuse_kept_alive_connections() {
    let backend = Backend::start(|_| (now(), json!({"result": {}})));
    let server = start(|c| {
        c.proxy = proxy(|p| {
            p.publish_url = Some(backend.url("/publish"));
            p.workers = 2;
        });
    });
    let mut publisher = WsClient::open(server.addr, "");
    for i in 0..50 {
        let reply = publisher.call("publish", json!({"channel": "c", "data": i}));
        assert!(reply.get("result").is_some(), "{reply}");
    }
    assert_eq!(backend.seen().len(), 50);
    let accepted = backend.accepted.load(Ordering::SeqCst);
    assert!(
        accepted <= 2,
        "50 calls over {accepted} connections: at most one per worker"
    );
}

#[test]
fn subscribe_hook_allows_refuses_and_disconnects() {
    let backend = Backend::start(|call| match call.body["channel"].as_str() {
        Some("secret") => (now(), json!({"error": {"code": 1403, "message": "members only"}})),
        Some("trap") => (now(), json!({"disconnect": {"code": 4501, "reason": "go away"}})),
        _ => (now(), json!({"result": {}})),
    });
    let server = start(|c| {
        c.proxy = proxy(|p| p.subscribe_url = Some(backend.url("/subscribe")));
    });
    let mut client = WsClient::open(server.addr, "");
    let open = client.call("subscribe", json!({"channel": "open"}));
    assert!(open["result"]["epoch"].is_string(), "{open}");
    let secret = client.call("subscribe", json!({"channel": "secret"}));
    assert_eq!(secret["error"]["code"], 1403, "{secret}");
    // Refused means not subscribed: a second try is asked again, not 107.
    let again = client.call("subscribe", json!({"channel": "secret"}));
    assert_eq!(again["error"]["code"], 1403, "{again}");
    client
        .raw
        .send_text(&json!({"id": 99, "method": "subscribe", "params": {"channel": "trap"}}).to_string());
    let disconnect = client.push().unwrap();
    assert_eq!(disconnect["push"], "disconnect", "{disconnect}");
    assert_eq!(
        (disconnect["code"].as_u64(), disconnect["reason"].as_str()),
        (Some(4501), Some("go away"))
    );
    assert_eq!(client.raw.recv_close(), Some(4501));
}

#[test]
fn rpc_round_trip_and_without_a_url() {
    let backend = Backend::start(|call| {
        let sum: i64 = call.body["data"]
            .as_array()
            .map_or(0, |a| a.iter().filter_map(Value::as_i64).sum());
        (
            now(),
            json!({"result": {"data": {"method": call.body["method"], "sum": sum}}}),
        )
    });
    let server = start(|c| {
        c.proxy = proxy(|p| p.rpc_url = Some(backend.url("/rpc")));
    });
    let mut client = WsClient::open(server.addr, "");
    let reply = client.call("rpc", json!({"method": "sum", "data": [1, 2, 39]}));
    assert_eq!(reply["result"]["data"], json!({"method": "sum", "sum": 42}), "{reply}");
    let plain = start(|_| {});
    let mut other = WsClient::open(plain.addr, "");
    let refused = other.call("rpc", json!({"method": "sum"}));
    assert_eq!(refused["error"]["code"], 101, "{refused}");
}

#[test]
fn a_backend_too_slow_is_a_timeout_and_a_backend_down_is_unavailable() {
    let slow = Backend::start(|_| (Duration::from_millis(1500), json!({"result": {}})));
    let down = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed again
    let server = start(|c| {
        c.proxy = proxy(|p| {
            p.rpc_url = Some(slow.url("/rpc"));
            p.publish_url = Some(format!("http://{down}/publish"));
            p.timeout = Duration::from_millis(200);
        });
    });
    let mut client = WsClient::open(server.addr, "");
    let asked = Instant::now();
    let late = client.call("rpc", json!({"method": "x"}));
    assert_eq!(late["error"]["code"], 113, "{late}");
    assert!(
        asked.elapsed() < Duration::from_millis(1400),
        "answered at the timeout, not the backend's pace"
    );
    assert!(late["error"]["message"].as_str().unwrap().contains("in time"), "{late}");
    let unreachable = client.call("publish", json!({"channel": "c", "data": 1}));
    assert_eq!(unreachable["error"]["code"], 113, "{unreachable}");
    let metrics = http_get(server.admin_addr(), "/metrics").1;
    assert!(
        metrics.contains(r#"hubbub_proxy_calls_total{hook="rpc",outcome="timeout"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"hubbub_proxy_calls_total{hook="publish",outcome="error"} 1"#));
}

#[test]
fn over_the_in_flight_cap_calls_are_refused_at_once() {
    let backend = Backend::start(|_| (Duration::from_millis(800), json!({"result": {"data": "late"}})));
    let server = start(|c| {
        c.proxy = proxy(|p| {
            p.rpc_url = Some(backend.url("/rpc"));
            p.max_in_flight = 2;
        });
    });
    let mut client = WsClient::open(server.addr, "");
    for id in 1..=5u64 {
        let command = json!({"id": id, "method": "rpc", "params": {"method": "m"}});
        client.raw.send_text(&command.to_string());
    }
    let mut replies: Vec<Value> = (1..=5).map(|_| client.push().unwrap()).collect();
    // The refusals come at once, before the two answers.
    let order: Vec<u64> = replies.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(&order[..3], [3, 4, 5], "{replies:?}");
    replies.sort_by_key(|r| r["id"].as_u64());
    let codes: Vec<Option<u64>> = replies.iter().map(|r| r["error"]["code"].as_u64()).collect();
    assert_eq!(codes, [None, None, Some(114), Some(114), Some(114)], "{replies:?}");
    assert_eq!(replies[0]["result"]["data"], "late");
    assert_eq!(backend.seen().len(), 2, "refused calls never reach the application");
    let metrics = http_get(server.admin_addr(), "/metrics").1;
    assert!(
        metrics.contains(r#"hubbub_proxy_calls_total{hook="rpc",outcome="overloaded"} 3"#),
        "{metrics}"
    );
}

#[test]
fn client_data_of_calls_in_flight_counts_toward_the_memory_limit() {
    let backend = Backend::start(|_| (Duration::from_millis(1500), json!({"result": {}})));
    let server = start(|c| {
        c.proxy = proxy(|p| {
            p.rpc_url = Some(backend.url("/rpc"));
            p.timeout = Duration::from_secs(5);
        })
    });
    let mut client = WsClient::open(server.addr, "");
    let data = "d".repeat(100_000);
    for id in 1..=3u64 {
        let command = json!({"id": id, "method": "rpc", "params": {"method": "m", "data": data}});
        client.raw.send_text(&command.to_string());
    }
    let series = "hubbub_memory_bytes{kind=\"proxy\"}";
    let held = server.wait_metric(series, |v| v >= 300_000.0);
    assert!(held < 400_000.0, "three calls of 100 KB held as {held} bytes");
    for _ in 1..=3 {
        let reply = client.push().unwrap();
        assert!(reply.get("result").is_some(), "{reply}");
    }
    server.wait_metric(series, |v| v == 0.0);
}

#[test]
fn connect_hook_names_the_user_subscribes_and_sees_only_listed_headers() {
    let backend = Backend::start(|call| match call.path.as_str() {
        "/connect" => (
            Duration::from_millis(200),
            json!({"result": {"user": "alice", "channels": ["news", "bad name"], "data": {"welcome": true}}}),
        ),
        _ => (now(), json!({"result": {}})),
    });
    let server = start(|c| {
        c.proxy = proxy(|p| {
            p.connect_url = Some(backend.url("/connect"));
            p.http_headers = vec!["cookie".into(), "x-real-ip".into()];
        });
    });
    let mut alice = WsClient::open(
        server.addr,
        "Cookie: sid=42\r\nX-Real-Ip: 10.1.2.3\r\nX-Secret: keep\r\n",
    );
    // Sent before the hook answered: held, then run.
    alice.raw.send_text(r#"{"id":1,"method":"ping"}"#);
    let connect = alice.push().unwrap();
    assert_eq!(connect["push"], "connect", "{connect}");
    assert_eq!(
        (connect["user"].as_str(), connect["data"]["welcome"].as_bool()),
        (Some("alice"), Some(true))
    );
    assert!(alice.reply_for(1).get("result").is_some());
    let mut pushes = vec![alice.push().unwrap(), alice.push().unwrap()];
    pushes.sort_by_key(|p| p["push"].to_string());
    assert_eq!(pushes[0]["push"], "subscribe_error", "{pushes:?}");
    assert_eq!(pushes[0]["channel"], "bad name");
    assert_eq!(
        (pushes[1]["push"].as_str(), pushes[1]["channel"].as_str()),
        (Some("subscribed"), Some("news"))
    );
    // The server-side subscription delivers; the user sends as alice.
    let mut other = WsClient::open(server.addr, "");
    assert!(other
        .call("publish", json!({"channel": "news", "data": "extra"}))
        .get("result")
        .is_some());
    assert_eq!(alice.push().unwrap()["data"], "extra");
    let call = backend.seen().into_iter().find(|s| s.path == "/connect").unwrap();
    let header = |name: &str| call.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(header("cookie").as_deref(), Some("sid=42"));
    assert_eq!(header("x-real-ip").as_deref(), Some("10.1.2.3"));
    assert_eq!(header("x-secret"), None, "only --proxy-http-headers are passed on");
    assert_eq!(call.body["transport"], "websocket");
    let calls = backend.seen().iter().filter(|s| s.path == "/connect").count();
    assert_eq!(calls, 2, "the second client was asked too");
}

#[test]
fn unsubscribing_a_pending_server_side_subscription_is_answered_with_a_push_not_id_0() {
    // Sixteen server-side channels over two shards: those owned by the other
    // shard are still pending when the held unsubscribes run (the same turn).
    let channels: Vec<String> = (0..16).map(|i| format!("side{i}")).collect();
    let listed = channels.clone();
    let backend = Backend::start(move |_| {
        (
            Duration::from_millis(200),
            json!({"result": {"user": "ann", "channels": listed}}),
        )
    });
    let server = start(|c| {
        c.shards = 2;
        c.proxy = proxy(|p| p.connect_url = Some(backend.url("/connect")));
    });
    let mut ann = WsClient::open(server.addr, "");
    for (i, channel) in channels.iter().enumerate() {
        let command = json!({"id": i + 1, "method": "unsubscribe", "params": {"channel": channel}});
        ann.raw.send_text(&command.to_string());
    }
    let (mut replies, mut cancelled, mut other) = (Vec::new(), Vec::new(), Vec::new());
    while replies.len() < channels.len() {
        let frame = ann.push().expect("open");
        match (frame.get("id").and_then(Value::as_u64), frame["push"].as_str()) {
            (Some(id), _) => {
                assert!(id >= 1, "a reply to a command the client never sent: {frame}");
                assert!(frame.get("result").is_some(), "{frame}");
                replies.push(id);
            }
            (None, Some("subscribe_error")) => {
                assert_eq!(frame["code"], 111, "{frame}");
                cancelled.push(frame["channel"].as_str().unwrap().to_string());
            }
            _ => other.push(frame),
        }
    }
    replies.sort_unstable();
    assert_eq!(replies, (1..=16).collect::<Vec<u64>>());
    assert!(!cancelled.is_empty(), "no subscription was pending: {other:?}");
    // Pending ones get a cancellation push; joined ones their subscribed push.
    let subscribed = other.iter().filter(|p| p["push"] == "subscribed").count();
    assert_eq!(cancelled.len() + subscribed, 16, "{cancelled:?} {other:?}");
}

#[test]
fn connect_hook_refusal_closes_and_a_valid_token_skips_it() {
    let secret = "a-proxy-test-secret-of-32-bytes!!";
    let backend = Backend::start(
        |call| match call.headers.iter().any(|(n, v)| n == "cookie" && v == "ok") {
            true => (now(), json!({"result": {"user": "bob"}})),
            false => (now(), json!({"error": {"code": 1401, "message": "who are you"}})),
        },
    );
    let server = start(|c| {
        c.hub.jwt_secret = Some(secret.as_bytes().to_vec());
        c.hub.allow_anonymous = false;
        c.proxy = proxy(|p| {
            p.connect_url = Some(backend.url("/connect"));
            p.http_headers = vec!["cookie".into()];
        });
    });
    let mut stranger = WsClient::open(server.addr, "Cookie: nope\r\n");
    let refused = stranger.push().unwrap();
    assert_eq!(refused["error"]["code"], 1401, "{refused}");
    assert_eq!(stranger.push().unwrap()["push"], "disconnect");
    assert_eq!(stranger.raw.recv_close(), Some(4403));
    server.wait_for("a connect_refused disconnect", |s| {
        s.disconnects_for(Disconnect::ConnectRefused) == 1 && s.disconnects_for(Disconnect::Kicked) == 0
    });
    let mut bob = WsClient::open(server.addr, "Cookie: ok\r\n");
    assert_eq!(bob.push().unwrap()["user"], "bob");
    let token = common::token(secret, json!({"sub": "carol"}));
    let before = backend.seen().len();
    let mut carol = WsClient::open(server.addr, &format!("Authorization: Bearer {token}\r\n"));
    assert!(carol.call("ping", json!({})).get("result").is_some());
    assert_eq!(backend.seen().len(), before, "a valid token is not asked about");
    // Without a token, /echo and /room still need one: the hook is /ws only.
    let echo = WsClient::try_open(server.addr, "/echo", "")
        .err()
        .map(|(status, _)| status);
    assert_eq!(echo, Some(401));
}

#[test]
fn a_slow_backend_never_delays_other_clients_of_the_shard() {
    let backend = Backend::start(|call| match call.body["channel"].as_str() {
        Some("slow") => (Duration::from_millis(1500), json!({"result": {}})),
        _ => (now(), json!({"result": {}})),
    });
    let server = start(|c| {
        c.shards = 1;
        c.proxy = proxy(|p| {
            p.publish_url = Some(backend.url("/publish"));
            p.timeout = Duration::from_secs(5);
        });
    });
    let mut waiting = WsClient::open(server.addr, "");
    let mut busy = WsClient::open(server.addr, "");
    let mut sub = subscriber(server.addr, "fast");
    waiting
        .raw
        .send_text(&json!({"id": 1, "method": "publish", "params": {"channel": "slow", "data": 0}}).to_string());
    while !backend.seen().iter().any(|s| s.body["channel"] == "slow") {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    for i in 0..20 {
        assert!(busy.call("ping", json!({})).get("result").is_some());
        assert!(busy
            .call("publish", json!({"channel": "fast", "data": i}))
            .get("result")
            .is_some());
        assert_eq!(sub.push().unwrap()["data"], i);
    }
    let fast = started.elapsed();
    // The slow call is still in flight: every echo and publish above was
    // served while the shard had a call outstanding.
    assert!(
        fast < Duration::from_millis(1200),
        "20 round trips took {fast:?} behind a 1.5 s call"
    );
    let slow = waiting.reply_for(1);
    assert!(slow.get("result").is_some(), "{slow}");
    assert!(started.elapsed() > fast, "the slow answer came after the others");
}

#[test]
fn an_answer_for_a_closed_connection_is_dropped() {
    let backend = Backend::start(|_| (Duration::from_millis(500), json!({"result": {"data": "stale"}})));
    let server = start(|c| {
        c.shards = 1;
        c.proxy = proxy(|p| p.rpc_url = Some(backend.url("/rpc")));
    });
    let mut gone = WsClient::open(server.addr, "");
    gone.raw.send_text(r#"{"id":1,"method":"rpc","params":{"method":"m"}}"#);
    while backend.seen().is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(gone);
    // Likely the same slab slot, a new generation: it must not get id 1's answer.
    let mut next = WsClient::open(server.addr, "");
    std::thread::sleep(Duration::from_millis(700));
    let pong = next.call("ping", json!({}));
    assert_eq!(pong["id"], 1, "{pong}");
    assert!(
        pong.get("result").is_some(),
        "the first reply with id 1 is the ping's own: {pong}"
    );
    assert!(next.pushes.is_empty(), "{:?}", next.pushes);
    let _ = PATIENCE;
}

/// A proxy configuration with `set` applied to the defaults.
fn proxy(set: impl FnOnce(&mut hubbub::proxy::ProxyConfig)) -> Option<hubbub::proxy::ProxyConfig> {
    let mut config = hubbub::proxy::ProxyConfig {
        connect_url: None,
        subscribe_url: None,
        publish_url: None,
        rpc_url: None,
        workers: 4,
        timeout: Duration::from_millis(1000),
        max_in_flight: 64,
        http_headers: Vec::new(),
        max_answer_bytes: 1 << 20,
    };
    set(&mut config);
    Some(config)
}

#[test]
fn one_connection_cannot_take_every_call_in_flight() {
    let backend = Backend::start(|_| (Duration::from_millis(600), json!({"result": {}})));
    let server = start(|c| {
        c.proxy = proxy(|p| {
            p.rpc_url = Some(backend.url("/rpc"));
            p.max_in_flight = 64;
            p.workers = 16;
        });
    });
    let mut greedy = WsClient::open(server.addr, "");
    for id in 1..=12u64 {
        greedy
            .raw
            .send_text(&json!({"id": id, "method": "rpc", "params": {"method": "m"}}).to_string());
    }
    // Another connection still gets its call through meanwhile.
    let mut other = WsClient::open(server.addr, "");
    let reply = other.call("rpc", json!({"method": "m"}));
    assert!(reply.get("result").is_some(), "{reply}");
    let replies: Vec<Value> = (0..12).map(|_| greedy.push().unwrap()).collect();
    let refused = replies.iter().filter(|r| r["error"]["code"] == 114).count();
    assert_eq!(refused, 4, "8 in flight per connection: {replies:?}");
}

#[test]
fn a_subscribe_cancelled_while_the_hook_thinks_stays_cancelled() {
    let backend = Backend::start(|_| (Duration::from_millis(300), json!({"result": {}})));
    let server = start(|c| {
        c.proxy = proxy(|p| p.subscribe_url = Some(backend.url("/subscribe")));
    });
    let mut client = WsClient::open(server.addr, "");
    client
        .raw
        .send_text(&json!({"id": 100, "method": "subscribe", "params": {"channel": "news"}}).to_string());
    let unsubscribed = client.call("unsubscribe", json!({"channel": "news"}));
    assert!(unsubscribed.get("result").is_some(), "{unsubscribed}");
    let cancelled = client.pushes.pop_front().expect("the subscribe's own reply came first");
    assert_eq!(
        (cancelled["id"].as_u64(), cancelled["error"]["code"].as_u64()),
        (Some(100), Some(111)),
        "{cancelled}"
    );
    std::thread::sleep(Duration::from_millis(500)); // the hook's late "allow" arrives
    let mut publisher = WsClient::open(server.addr, "");
    assert!(publisher
        .call("publish", json!({"channel": "news", "data": 1}))
        .get("result")
        .is_some());
    let pong = client.call("ping", json!({}));
    assert!(pong.get("result").is_some(), "{pong}");
    assert!(
        client.pushes.is_empty(),
        "no late reply, no publication: {:?}",
        client.pushes
    );
}

#[test]
fn a_connect_hook_that_does_not_answer_closes_with_1013() {
    let backend = Backend::start(|_| (Duration::from_millis(1500), json!({"result": {"user": "late"}})));
    let server = start(|c| {
        c.proxy = proxy(|p| {
            p.connect_url = Some(backend.url("/connect"));
            p.timeout = Duration::from_millis(200);
        });
    });
    let mut client = WsClient::open(server.addr, "");
    let push = client.push().unwrap();
    assert_eq!(push["error"]["code"], 113, "{push}");
    assert_eq!(client.push().unwrap()["push"], "disconnect");
    assert_eq!(client.raw.recv_close(), Some(1013));
    server.wait_for("a hook_unavailable disconnect", |s| {
        s.disconnects_for(Disconnect::HookUnavailable) == 1 && s.disconnects_for(Disconnect::Kicked) == 0
    });
}

#[test]
fn calls_that_waited_out_their_timeout_for_a_worker_are_not_made() {
    // One worker, a backend slower than the timeout: the first call times
    // out at the backend; the calls queued behind it have waited their
    // whole timeout by the time the worker is free, so they are answered
    // 113 without being made (the backend is spared calls nobody waits for).
    let backend = Backend::start(|_| (Duration::from_millis(700), json!({"result": {"data": 1}})));
    let server = start(|c| {
        c.proxy = proxy(|p| {
            p.rpc_url = Some(backend.url("/rpc"));
            p.workers = 1;
            p.timeout = Duration::from_millis(400);
        });
    });
    let mut client = WsClient::open(server.addr, "");
    for id in 1..=4 {
        client
            .raw
            .send_text(&json!({"id": id, "method": "rpc", "params": {"method": "slow"}}).to_string());
    }
    for id in 1..=4 {
        let reply = client.reply_for(id);
        assert_eq!(reply["error"]["code"], 113, "{reply}");
    }
    let made = backend.seen().len();
    assert!(made <= 2, "{made} of 4 calls were made to the backend");
}
