//! Events for the application (docs/EVENTS.md): a real server, a real
//! `redis-server` read back through a consumer group, and a real HTTP
//! receiver written here on std::net for the webhook.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::redis::Redis;
use common::{http_get, start, token, unlimited_rates, WsClient, PATIENCE};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use hubbub::config::Config;
use hubbub::events::{EventsConfig, StreamConfig, WebhookConfig};
use serde_json::{json, Value};

const SECRET: &str = "0123456789abcdef0123456789abcdef-jwt";
const HOOK_SECRET: &str = "webhook-secret-of-at-least-32-bytes!";
const STREAM: &str = "hubbub:events";

fn events(stream: Option<StreamConfig>, webhook: Option<WebhookConfig>, max_bytes: usize) -> EventsConfig {
    EventsConfig {
        node: "test-node".into(),
        stream,
        webhook,
        max_bytes,
    }
}

fn stream_to(redis: &str, maxlen: u64) -> StreamConfig {
    StreamConfig {
        redis: redis.to_string(),
        key: STREAM.to_string(),
        maxlen,
    }
}

fn webhook_to(addr: SocketAddr) -> WebhookConfig {
    WebhookConfig {
        url: format!("http://{addr}/hook"),
        secret: HOOK_SECRET.as_bytes().to_vec(),
        batch: 20,
        linger: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
    }
}

fn authenticated(c: &mut Config) {
    c.hub.jwt_secret = Some(SECRET.as_bytes().to_vec());
}

fn open_as(addr: SocketAddr, user: &str) -> WsClient {
    let header = format!("Authorization: Bearer {}\r\n", token(SECRET, json!({"sub": user})));
    WsClient::open(addr, &header)
}

/// subscribe, publish, unsubscribe, then a client Close.
fn one_session(addr: SocketAddr, user: &str) {
    let mut ws = open_as(addr, user);
    assert!(ws.call("subscribe", json!({"channel": "news"}))["result"].is_object());
    let published = ws.call("publish", json!({"channel": "news", "data": {"text": "hi", "n": 1}}));
    assert!(published["result"].is_object(), "{published}");
    assert!(ws.call("unsubscribe", json!({"channel": "news"}))["result"].is_object());
    ws.raw.send(0x8, true, &1000u16.to_be_bytes());
    while ws.raw.recv().is_some() {}
}

fn redis_conn(redis: &Redis) -> redis::Connection {
    redis::Client::open(redis.url()).unwrap().get_connection().unwrap()
}

/// Reads entries through the consumer group until `n` arrived; each one is
/// acknowledged. Returns the `event` documents in stream order.
fn read_group(conn: &mut redis::Connection, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} events: {out:?}", out.len());
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("app")
            .arg("worker-1")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(500)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">")
            .query(conn)
            .unwrap();
        for (id, fields) in entries(reply) {
            let event: Value = serde_json::from_str(&fields["event"]).unwrap();
            assert_eq!(
                fields["kind"],
                event["kind"].as_str().unwrap(),
                "kind field matches the document"
            );
            let acked: u64 = redis::cmd("XACK").arg(STREAM).arg("app").arg(&id).query(conn).unwrap();
            assert_eq!(acked, 1);
            out.push(event);
        }
    }
    out
}

/// `(id, fields)` of an XREADGROUP reply (one stream), in order.
fn entries(reply: redis::Value) -> Vec<(String, HashMap<String, String>)> {
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
        redis::Value::SimpleString(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    };
    let streams = match reply {
        redis::Value::Nil => return Vec::new(),
        redis::Value::Array(streams) => streams,
        redis::Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| redis::Value::Array(vec![k, v]))
            .collect(),
        other => panic!("unexpected reply {other:?}"),
    };
    let mut out = Vec::new();
    for stream in streams {
        let redis::Value::Array(parts) = stream else { panic!() };
        let redis::Value::Array(items) = &parts[1] else {
            panic!()
        };
        for item in items {
            let redis::Value::Array(pair) = item else { panic!() };
            let redis::Value::Array(kv) = &pair[1] else { panic!() };
            let fields = kv.chunks(2).map(|c| (text(&c[0]), text(&c[1]))).collect();
            out.push((text(&pair[0]), fields));
        }
    }
    out
}

#[test]
fn stream_events_are_read_back_with_a_consumer_group_in_order() {
    let Some(redis) = Redis::start() else { return };
    let mut conn = redis_conn(&redis);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg("app")
        .arg("$")
        .arg("MKSTREAM")
        .query(&mut conn)
        .unwrap();
    let server = start(|c| {
        authenticated(c);
        c.events = events(Some(stream_to(&redis.url(), 1000)), None, 1 << 20);
    });
    one_session(server.addr, "ann");
    let got = read_group(&mut conn, 5);
    let kinds: Vec<&str> = got.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["connect", "subscribe", "publish", "unsubscribe", "disconnect"]);
    let client = &got[0]["client"];
    for event in &got {
        assert_eq!(event["user"], "ann");
        assert_eq!(&event["client"], client, "one connection");
        assert_eq!(event["node"], "test-node");
        assert!(event["time_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }
    assert_eq!(got[1]["channel"], "news");
    assert_eq!(
        got[2]["data"],
        json!({"text": "hi", "n": 1}),
        "the data as the client sent it"
    );
    assert_eq!(got[3]["reason"], "client");
    assert_eq!(got[4]["reason"], "client_close", "the counted disconnect reason");
    // Everything acknowledged: nothing pending for the group.
    let pending: redis::Value = redis::cmd("XPENDING").arg(STREAM).arg("app").query(&mut conn).unwrap();
    let redis::Value::Array(summary) = pending else {
        panic!("{pending:?}")
    };
    assert_eq!(summary[0], redis::Value::Int(0), "{summary:?}");
}

#[test]
fn maxlen_trimming_bounds_the_stream() {
    let Some(redis) = Redis::start() else { return };
    let server = start(|c| {
        unlimited_rates(c);
        c.events = events(Some(stream_to(&redis.url(), 100)), None, 16 << 20);
    });
    let mut ws = WsClient::open(server.addr, "");
    for i in 0..2000 {
        let reply = ws.call("publish", json!({"channel": "load", "data": i}));
        assert!(reply["result"].is_object(), "{reply}");
    }
    // The connect and 2000 publications all went in...
    server.wait_metric("hubbub_events_sent_total{sink=\"stream\"}", |v| v >= 2001.0);
    let mut conn = redis_conn(&redis);
    let len: u64 = redis::cmd("XLEN").arg(STREAM).query(&mut conn).unwrap();
    // ...and `MAXLEN ~ 100` kept about 100 (whole radix-tree nodes of up to
    // 100 entries are trimmed, so up to one node more).
    assert!((100..=300).contains(&len), "XLEN {len}");
    let last: redis::Value = redis::cmd("XREVRANGE")
        .arg(STREAM)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    assert!(
        format!("{last:?}").contains("1999"),
        "the newest entry is the last publish: {last:?}"
    );
}

#[test]
fn redis_down_does_not_stall_the_server_and_nothing_is_lost_when_it_returns() {
    let port = Redis::free_port();
    let server = start(|c| {
        unlimited_rates(c);
        c.events = events(
            Some(stream_to(&format!("redis://127.0.0.1:{port}"), 10_000)),
            None,
            16 << 20,
        );
    });
    // Nothing listens on `port`: clients are served as usual.
    let began = Instant::now();
    let mut ws = WsClient::open(server.addr, "");
    for i in 0..200 {
        let reply = ws.call("publish", json!({"channel": "c", "data": i}));
        assert!(reply["result"].is_object(), "{reply}");
    }
    assert!(began.elapsed() < PATIENCE, "commands answered while Redis is down");
    let held = server.wait_metric("hubbub_events_queue_bytes{sink=\"stream\"}", |v| v > 0.0);
    assert_eq!(server.metric("hubbub_events_sent_total{sink=\"stream\"}"), 0.0);
    // What the sink holds counts toward --memory-limit.
    server.wait_metric("hubbub_memory_bytes{kind=\"events\"}", |v| v >= held);
    // Redis comes up: the held events are written, in order.
    let Some(redis) = Redis::start_on(port) else { return };
    server.wait_metric("hubbub_events_sent_total{sink=\"stream\"}", |v| v >= 201.0);
    let mut conn = redis_conn(&redis);
    let all: Vec<(String, HashMap<String, String>)> = {
        let reply: redis::Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("STREAMS")
            .arg(STREAM)
            .arg("0")
            .query(&mut conn)
            .unwrap();
        entries(reply)
    };
    let data: Vec<i64> = all
        .iter()
        .filter(|(_, f)| f["kind"] == "publish")
        .map(|(_, f)| {
            serde_json::from_str::<Value>(&f["event"]).unwrap()["data"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(data, (0..200).collect::<Vec<_>>(), "every publication, once, in order");
    assert_eq!(server.metric("hubbub_events_queue_bytes{sink=\"stream\"}"), 0.0);
    server.wait_metric("hubbub_memory_bytes{kind=\"events\"}", |v| v == 0.0);
}

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Request {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A webhook receiver on std::net: answers 500 to the first `fail_first`
/// requests (or to all while `down`), 200 after, and keeps what it took.
struct Receiver {
    addr: SocketAddr,
    fail_first: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    taken: Arc<Mutex<Vec<Request>>>,
    refused: Arc<AtomicUsize>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
            down: Arc::new(AtomicBool::new(false)),
            taken: Arc::default(),
            refused: Arc::default(),
        };
        let (fail_first, down, taken, refused) = (
            Arc::clone(&receiver.fail_first),
            Arc::clone(&receiver.down),
            Arc::clone(&receiver.taken),
            Arc::clone(&receiver.refused),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().take(64) {
                let Ok(stream) = stream else { continue };
                let (fail_first, down, taken, refused) = (
                    Arc::clone(&fail_first),
                    Arc::clone(&down),
                    Arc::clone(&taken),
                    Arc::clone(&refused),
                );
                std::thread::spawn(move || serve(stream, &fail_first, &down, &taken, &refused));
            }
        });
        receiver
    }

    fn events(&self) -> Vec<Value> {
        let taken = self.taken.lock().unwrap();
        taken
            .iter()
            .flat_map(|r| serde_json::from_slice::<Vec<Value>>(&r.body).unwrap())
            .collect()
    }

    fn wait_events(&self, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let events = self.events();
            if check(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "the receiver got {events:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Keep-alive HTTP/1.1: requests one after another on one connection.
fn serve(
    stream: TcpStream,
    fail_first: &AtomicUsize,
    down: &AtomicBool,
    taken: &Mutex<Vec<Request>>,
    refused: &AtomicUsize,
) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        assert!(line.starts_with("POST /hook HTTP/1.1"), "{line:?}");
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        let length: usize = headers["content-length"].parse().unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let fail = down.load(Ordering::SeqCst)
            || fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail {
            refused.fetch_add(1, Ordering::SeqCst);
            writer
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nbusy")
                .unwrap();
        } else {
            taken.lock().unwrap().push(Request { headers, body });
            writer
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        }
    }
}

/// The receiver's check, as docs/EVENTS.md gives it: HMAC-SHA256 of
/// `TIMESTAMP.BODY`, compared in constant time, and a recent timestamp.
fn verified(request: &Request) -> bool {
    let timestamp: u64 = request.headers["x-hubbub-timestamp"].parse().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    if now.abs_diff(timestamp) > 300 {
        return false;
    }
    let Some(hex) = request.headers["x-hubbub-signature"].strip_prefix("sha256=") else {
        return false;
    };
    let expected: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&request.body);
    mac.verify_slice(&expected).is_ok()
}

#[test]
fn webhook_batches_are_signed_and_verifiable() {
    let receiver = Receiver::start(0);
    let server = start(|c| {
        authenticated(c);
        c.events = events(None, Some(webhook_to(receiver.addr)), 1 << 20);
    });
    one_session(server.addr, "ben");
    let got = receiver.wait_events(|e| e.iter().any(|e| e["kind"] == "disconnect"));
    let kinds: Vec<&str> = got.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["connect", "subscribe", "publish", "unsubscribe", "disconnect"]);
    assert!(got.iter().all(|e| e["user"] == "ben"));
    let taken = receiver.taken.lock().unwrap().clone();
    for request in &taken {
        assert_eq!(request.headers["content-type"], "application/json");
        assert!(request.headers.contains_key("x-hubbub-delivery"));
        assert!(verified(request), "signature verifies: {request:?}");
        // A body changed on the way, or another secret, does not.
        let mut forged = request.clone();
        forged.body.push(b' ');
        assert!(!verified(&forged));
        let mut replayed = request.clone();
        let old: u64 = replayed.headers["x-hubbub-timestamp"].parse::<u64>().unwrap() - 3600;
        replayed.headers.insert("x-hubbub-timestamp".into(), old.to_string());
        assert!(!verified(&replayed), "an old timestamp does not verify");
    }
}

#[test]
fn a_webhook_that_fails_then_recovers_gets_every_batch_again() {
    let receiver = Receiver::start(4);
    let server = start(|c| {
        unlimited_rates(c);
        c.events = events(None, Some(webhook_to(receiver.addr)), 1 << 20);
    });
    let mut ws = WsClient::open(server.addr, "");
    for i in 0..100 {
        assert!(ws.call("publish", json!({"channel": "c", "data": i}))["result"].is_object());
    }
    let got = receiver.wait_events(|e| e.iter().filter(|e| e["kind"] == "publish").count() >= 100);
    let data: Vec<i64> = got
        .iter()
        .filter(|e| e["kind"] == "publish")
        .map(|e| e["data"].as_i64().unwrap())
        .collect();
    assert_eq!(data, (0..100).collect::<Vec<_>>(), "no loss, no duplicate, in order");
    assert_eq!(receiver.refused.load(Ordering::SeqCst), 4);
    let retries = server.wait_metric("hubbub_events_webhook_retries_total", |v| v >= 4.0);
    assert_eq!(retries, 4.0);
    // The retried batch kept its delivery id: the first accepted request
    // carries the id its four refusals had.
    let taken = receiver.taken.lock().unwrap();
    assert!(
        taken[0].headers["x-hubbub-delivery"].ends_with("-1"),
        "{:?}",
        taken[0].headers
    );
}

#[test]
fn a_webhook_that_stays_down_costs_bounded_memory_and_counted_drops_only() {
    let receiver = Receiver::start(0);
    receiver.down.store(true, Ordering::SeqCst);
    let bound = 64 << 10;
    let server = start(|c| {
        unlimited_rates(c);
        c.events = events(None, Some(webhook_to(receiver.addr)), bound);
    });
    let mut publisher = WsClient::open(server.addr, "");
    let data = "x".repeat(200);
    for _ in 0..1000 {
        let reply = publisher.call("publish", json!({"channel": "c", "data": data}));
        assert!(reply["result"].is_object(), "{reply}");
    }
    // Every publish made its event before its reply; the sink copies its
    // counters about every 250 ms: wait for the count, then two copies more.
    server.wait_metric("hubbub_events_produced_total{kind=\"publish\"}", |v| v == 1000.0);
    std::thread::sleep(Duration::from_millis(600));
    let dropped = server.metric("hubbub_events_dropped_total{sink=\"webhook\",reason=\"queue_full\"}");
    let held = server.metric("hubbub_events_queue_bytes{sink=\"webhook\"}");
    assert!(held > 0.0 && held <= bound as f64, "held {held} of {bound}");
    // Publications fill three quarters of the bound at most; the rest of
    // the 1000 were dropped, counted.
    assert!(held <= (bound / 4 * 3) as f64 + 400.0, "held {held}");
    assert!(dropped < 1000.0 && dropped > 500.0, "dropped {dropped}");
    // Clients never notice: an echo client gets its 200 round trips at once.
    let mut echo = common::open(server.addr, "/echo");
    let began = Instant::now();
    for i in 0..200 {
        echo.send_text(&format!("ping {i}"));
        let frame = echo.recv().expect("echo");
        assert_eq!(frame.payload, format!("ping {i}").as_bytes());
    }
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "echo took {:?}",
        began.elapsed()
    );
    // The publishing flood filled only its share: a connection that comes
    // and goes now still has its events kept.
    let mut late = WsClient::open(server.addr, "");
    late.raw.send(0x8, true, &1000u16.to_be_bytes());
    while late.raw.recv().is_some() {}
    server.wait_metric("hubbub_events_produced_total{kind=\"disconnect\"}", |v| v >= 1.0);
    // The receiver comes back: what was held is delivered.
    receiver.down.store(false, Ordering::SeqCst);
    let got = receiver.wait_events(|e| e.iter().any(|e| e["kind"] == "disconnect"));
    assert!(
        got.len() as f64 <= 1003.0 - dropped,
        "only what was held: {}",
        got.len()
    );
    let publishes = got.iter().filter(|e| e["kind"] == "publish").count();
    assert!(publishes > 0, "held publications are delivered too");
}

#[test]
fn an_event_held_by_two_sinks_is_charged_to_the_memory_limit_once() {
    // Both sinks down: Redis on a port nothing listens on, the webhook
    // answering 500. Each holds every event.
    let port = Redis::free_port();
    let receiver = Receiver::start(0);
    receiver.down.store(true, Ordering::SeqCst);
    let server = start(|c| {
        unlimited_rates(c);
        c.events = events(
            Some(stream_to(&format!("redis://127.0.0.1:{port}"), 10_000)),
            Some(webhook_to(receiver.addr)),
            16 << 20,
        );
    });
    let mut ws = WsClient::open(server.addr, "");
    for i in 0..100 {
        let reply = ws.call("publish", json!({"channel": "c", "data": i}));
        assert!(reply["result"].is_object(), "{reply}");
    }
    server.wait_metric("hubbub_events_produced_total{kind=\"publish\"}", |v| v == 100.0);
    let stream = "hubbub_events_queue_bytes{sink=\"stream\"}";
    let held = server.wait_metric(stream, |v| v > 0.0);
    server.wait_metric("hubbub_events_queue_bytes{sink=\"webhook\"}", |v| v == held);
    assert_eq!(server.metric(stream), held, "both hold every event");
    // The sinks share each event's memory: it is held once, not per sink.
    server.wait_metric("hubbub_memory_bytes{kind=\"events\"}", |v| v == held);
    // The webhook takes them; the stream still holds them: still charged.
    receiver.down.store(false, Ordering::SeqCst);
    server.wait_metric("hubbub_events_sent_total{sink=\"webhook\"}", |v| v >= 101.0);
    server.wait_metric("hubbub_events_queue_bytes{sink=\"webhook\"}", |v| v == 0.0);
    assert_eq!(server.metric(stream), held);
    assert_eq!(server.metric("hubbub_memory_bytes{kind=\"events\"}"), held);
    // Redis comes up: the last holder lets go, the charge is released.
    let Some(_redis) = Redis::start_on(port) else { return };
    server.wait_metric("hubbub_events_sent_total{sink=\"stream\"}", |v| v >= 101.0);
    server.wait_metric("hubbub_memory_bytes{kind=\"events\"}", |v| v == 0.0);
}

#[test]
fn every_event_metric_is_described_once_a_sink_runs() {
    let receiver = Receiver::start(0);
    let server = start(|c| c.events = events(None, Some(webhook_to(receiver.addr)), 1 << 20));
    let names = [
        "hubbub_events_produced_total",
        "hubbub_events_sent_total",
        "hubbub_events_dropped_total",
        "hubbub_events_webhook_retries_total",
        "hubbub_events_queue_bytes",
    ];
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, body) = http_get(server.admin_addr(), "/metrics");
        let missing: Vec<&&str> = names
            .iter()
            .filter(|n| !body.contains(&format!("# HELP {n} ")))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "no HELP for {missing:?}:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `hubbub ARGS` through the real binary: (exit code, stderr).
fn hubbub(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("HUBBUB_WEBHOOK_SECRET")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_webhook_or_stream_that_cannot_work_stops_the_start_with_exit_2() {
    let secret = ["--webhook-secret", HOOK_SECRET];
    for (args, names) in [
        (vec!["--webhook-url", "ftp://app/hook"], "--webhook-url"),
        (vec!["--webhook-url", "app.example.com/hook"], "--webhook-url"),
        (vec!["--webhook-url", "http:///hook"], "--webhook-url"),
    ] {
        let mut args = args;
        args.extend(secret);
        args.push("--check-config");
        let (code, err) = hubbub(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(names) && err.contains("invalid"), "{args:?}: {err}");
    }
    let (code, err) = hubbub(&["--webhook-url", "http://127.0.0.1:9/hook", "--check-config"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--webhook-secret") && err.contains("32 bytes"), "{err}");
    let (code, err) = hubbub(&["--events-stream", "ev", "--check-config"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--events-redis"), "a stream needs a Redis: {err}");
    let (code, err) = hubbub(&["--events-stream", "ev", "--events-redis", "mysql://x", "--check-config"]);
    assert_eq!(code, 2, "{err}");
    let (code, err) = hubbub(&[
        "--events-stream",
        "ev",
        "--events-redis",
        "127.0.0.1:6379",
        "--check-config",
    ]);
    assert_eq!(code, 0, "a HOST:PORT is a redis:// URL: {err}");
}

#[test]
fn events_name_the_hook_s_user_and_carry_the_data_the_publish_hook_let_out() {
    // The connect hook names a tokenless /ws client; the publish hook
    // rewrites its data. The application's events say what really happened:
    // one connect, with the hook's user, and the rewritten publication.
    let backend = common::backend::Backend::start(|call| match call.path.as_str() {
        "/connect" => (Duration::ZERO, json!({"result": {"user": "hooked"}})),
        _ => (Duration::ZERO, json!({"result": {"data": {"text": "rewritten"}}})),
    });
    let receiver = Receiver::start(0);
    let server = start(|c| {
        c.events = events(None, Some(webhook_to(receiver.addr)), 1 << 20);
        c.proxy = Some(hubbub::proxy::ProxyConfig {
            connect_url: Some(backend.url("/connect")),
            subscribe_url: None,
            publish_url: Some(backend.url("/publish")),
            rpc_url: None,
            workers: 2,
            timeout: Duration::from_millis(1000),
            max_in_flight: 64,
            http_headers: Vec::new(),
            max_answer_bytes: 1 << 20,
        });
    });
    let mut ws = WsClient::open(server.addr, "");
    let connect = ws.push().unwrap();
    assert_eq!(connect["user"], "hooked", "{connect}");
    let published = ws.call("publish", json!({"channel": "news", "data": {"text": "original"}}));
    assert!(published["result"].is_object(), "{published}");
    ws.raw.send(0x8, true, &1000u16.to_be_bytes());
    while ws.raw.recv().is_some() {}
    let got = receiver.wait_events(|e| e.iter().any(|e| e["kind"] == "disconnect"));
    let kinds: Vec<&str> = got.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["connect", "publish", "disconnect"], "{got:?}");
    assert!(got.iter().all(|e| e["user"] == "hooked"), "{got:?}");
    assert_eq!(got[1]["data"], json!({"text": "rewritten"}), "{got:?}");
}

#[test]
fn a_webhook_that_never_answers_does_not_hold_the_stop() {
    // A receiver that takes the request and never answers, with the longest
    // timeout allowed: the stop still ends within the sinks' grace.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let took_request = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&took_request);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten().take(4) {
            let mut buf = [0u8; 4096];
            if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                flag.store(true, Ordering::SeqCst);
            }
            held.push(stream); // never answered, never closed
        }
        std::thread::sleep(Duration::from_secs(90));
    });
    let server = start(|c| {
        authenticated(c);
        let mut webhook = webhook_to(addr);
        webhook.timeout = Duration::from_secs(60);
        c.events = events(None, Some(webhook), 1 << 20);
    });
    one_session(server.addr, "ann");
    let deadline = Instant::now() + PATIENCE;
    while !took_request.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the webhook was never called");
        std::thread::sleep(Duration::from_millis(20));
    }
    let began = Instant::now();
    let _ = server.stop();
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the stop waited {took:?} for a POST that never ends"
    );
}
