//! Cluster mode when Redis fails: deadlines while it is away, and no
//! duplicate after an ambiguous publish failure (a proxy of the test's own
//! sits between a node and Redis and cuts the connection right after it
//! forwarded a publish script, swallowing the reply).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::redis::Redis;
use common::*;
use serde_json::{json, Value};

/// A TCP proxy to Redis. `cut_next_publish`: the next write carrying a
/// publish is forwarded, its reply swallowed, the connection closed.
/// `close_after_publish_reply`: the next write carrying a publish (a
/// script call naming an idempotency hash) is forwarded, and so is its
/// reply, right followed by the close (what the node writes once it has that
/// reply is not forwarded: on a real close it would not arrive either).
/// `stall_next_publish`: the next write carrying a publish, and all after
/// it on that connection, are held until the node closes the connection,
/// then forwarded `STALL_AFTER_CLOSE` later (data late on a dead path).
/// `refuse_next_publish`: the next write carrying a publish is not
/// forwarded; the proxy answers it `-BUSY` itself (one command per write).
/// `down`: new connections are closed at once.
struct Proxy {
    addr: SocketAddr,
    cut_next_publish: Arc<AtomicBool>,
    close_after_publish_reply: Arc<AtomicBool>,
    stall_next_publish: Arc<AtomicBool>,
    refuse_next_publish: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
    /// Both ends of every connection, to cut them all at once.
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(redis_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, down) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let down2 = Arc::clone(&down);
        let faults = Faults {
            cut: Arc::clone(&cut),
            close_after: Arc::new(AtomicBool::new(false)),
            stall: Arc::new(AtomicBool::new(false)),
            refuse: Arc::new(AtomicBool::new(false)),
        };
        let faults2 = faults.clone();
        let streams = Arc::new(Mutex::new(Vec::new()));
        let streams2 = Arc::clone(&streams);
        std::thread::spawn(move || {
            for client in listener.incoming().take(1000) {
                let Ok(client) = client else { continue };
                if down2.load(Ordering::SeqCst) {
                    continue; // dropped: closed
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)) else {
                    continue;
                };
                let mut kept = streams2.lock().unwrap();
                kept.extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                drop(kept);
                pipe_pair(client, server, faults2.clone());
            }
        });
        Proxy {
            addr,
            cut_next_publish: cut,
            close_after_publish_reply: faults.close_after,
            stall_next_publish: faults.stall,
            refuse_next_publish: faults.refuse,
            down,
            streams,
        }
    }

    /// Cuts every connection through the proxy now.
    fn cut_all(&self) {
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

/// The faults a proxied connection may be asked for (see `Proxy`).
#[derive(Clone)]
struct Faults {
    cut: Arc<AtomicBool>,
    close_after: Arc<AtomicBool>,
    stall: Arc<AtomicBool>,
    refuse: Arc<AtomicBool>,
}

/// How long stalled bytes stay held after the node closed the connection.
const STALL_AFTER_CLOSE: Duration = Duration::from_millis(700);

/// Whether `chunk` carries a publish: a script call naming a writer's
/// idempotency hash (no other command names one).
fn carries_publish(chunk: &[u8]) -> bool {
    chunk.windows(7).any(|w| w == b"EVALSHA") && chunk.windows(9).any(|w| w == b"hubbub:i:")
}

fn pipe_pair(client: TcpStream, server: TcpStream, faults: Faults) {
    let swallow = Arc::new(AtomicBool::new(false));
    let close_up = Arc::new(AtomicBool::new(false));
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    // Set before the last reply goes down: what the node writes after it
    // got that reply is not forwarded (the close is "right behind" the
    // reply, with nothing let through in between).
    let closing = Arc::new(AtomicBool::new(false));
    let (swallow_up, close_up2, closing_up) = (Arc::clone(&swallow), Arc::clone(&close_up), Arc::clone(&closing));
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        let mut held: Option<Vec<u8>> = None;
        while let Ok(n @ 1..) = c_in.read(&mut buf) {
            if closing_up.load(Ordering::SeqCst) {
                break;
            }
            let chunk = &buf[..n];
            // A publish only: the command thread's own script calls (the
            // node's entries, rewritten every few heartbeats) pass.
            let cut = carries_publish(chunk) && faults.cut.swap(false, Ordering::SeqCst);
            if cut {
                swallow_up.store(true, Ordering::SeqCst);
            }
            if carries_publish(chunk) && faults.close_after.swap(false, Ordering::SeqCst) {
                close_up2.store(true, Ordering::SeqCst);
            }
            // Armed with a cut, the refusal waits for the retry.
            if !cut && carries_publish(chunk) && faults.refuse.swap(false, Ordering::SeqCst) {
                let busy = b"-BUSY Redis is busy running a script (injected by the test proxy)\r\n";
                if c_in.write_all(busy).is_err() {
                    break;
                }
                continue;
            }
            if held.is_none() && carries_publish(chunk) && faults.stall.swap(false, Ordering::SeqCst) {
                held = Some(Vec::new());
            }
            if let Some(held) = &mut held {
                held.extend_from_slice(chunk);
                continue;
            }
            if s_out.write_all(chunk).is_err() {
                break;
            }
        }
        if let Some(held) = held {
            // The node gave up on this connection; what it wrote arrives
            // at Redis late all the same.
            std::thread::sleep(STALL_AFTER_CLOSE);
            let _ = s_out.write_all(&held);
            let _ = s_out.shutdown(Shutdown::Write);
            return;
        }
        let _ = s_out.shutdown(Shutdown::Both);
    });
    let (mut s_in, mut c_out) = (server, client);
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = s_in.read(&mut buf) {
            // Asked before this chunk is forwarded: what was read before the
            // publish went up is an older reply (the node sends the publish
            // only after it got that one), asked after it could be taken for
            // the publish's own and the close would beat its reply.
            let close = close_up.load(Ordering::SeqCst);
            closing.store(close, Ordering::SeqCst);
            if swallow.load(Ordering::SeqCst) || c_out.write_all(&buf[..n]).is_err() {
                break;
            }
            if close {
                break; // the reply went through, the close right behind it
            }
        }
        let _ = c_out.shutdown(Shutdown::Both);
        let _ = s_in.shutdown(Shutdown::Read);
    });
}

/// `POST /api/publish` with an optional `Idempotency-Key`.
fn api_publish(admin: SocketAddr, channel: &str, data: Value, key: Option<&str>) -> (u16, Value) {
    let body = json!({"channel": channel, "data": data}).to_string();
    let mut stream = connect(admin);
    let idem = key.map(|k| format!("Idempotency-Key: {k}\r\n")).unwrap_or_default();
    write!(
        stream,
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{idem}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        common::cluster::KEY,
        body.len()
    )
    .unwrap();
    let (status, _, mut rest) = read_response(&mut stream);
    rest.extend(read_to_close(&mut stream));
    (status, serde_json::from_slice(&rest).unwrap_or(Value::Null))
}

/// Publication pushes arriving on `client` within `wait`.
fn pubs_within(client: &mut WsClient, wait: Duration) -> Vec<Value> {
    let until = Instant::now() + wait;
    let mut pubs: Vec<Value> = client.pushes.drain(..).filter(|p| p["push"] == "pub").collect();
    while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        client.raw.stream.set_read_timeout(Some(left)).unwrap();
        match client.push() {
            Some(push) if push["push"] == "pub" => pubs.push(push),
            Some(_) => {}
            None => break, // the wait ended
        }
    }
    client.raw.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    pubs
}

#[test]
fn a_publish_whose_reply_was_lost_is_delivered_once() {
    let Some(redis) = Redis::start() else { return };
    let proxy = Proxy::start(redis.port);
    let (a, b) = (
        node_on(&["--redis", &proxy.url()], "a", &[]),
        node_on(&["--redis", &redis.url()], "b", &[]),
    );
    wait_cluster(&a, 2);
    let mut sub = WsClient::open(b.addr, "");
    assert!(sub
        .call("subscribe", json!({"channel": "once"}))
        .get("result")
        .is_some());
    let mut publisher = WsClient::open(a.addr, "");
    publish(&mut publisher, "once", json!(0));
    assert_eq!(next_pub(&mut sub)["offset"], 1);

    // The bridge retries on its next connection; the script knows the
    // publish ran and answers with its first offset.
    proxy.cut_next_publish.store(true, Ordering::SeqCst);
    let result = publish(&mut publisher, "once", json!("cut"));
    assert!(!proxy.cut_next_publish.load(Ordering::SeqCst), "the proxy cut nothing");
    assert_eq!(
        (&result["offset"], &result["duplicate"]),
        (&json!(2), &json!(true)),
        "{result}"
    );
    let pubs = pubs_within(&mut sub, Duration::from_millis(800));
    assert_eq!(
        pubs.iter().map(|p| p["data"].clone()).collect::<Vec<_>>(),
        [json!("cut")]
    );

    // Redis stays away after the cut: the API says it does not know (504),
    // and the same Idempotency-Key later publishes nothing new.
    proxy.cut_next_publish.store(true, Ordering::SeqCst);
    proxy.down.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let (status, body) = api_publish(a.admin.unwrap(), "once", json!("api"), Some("order-17"));
    assert_eq!(status, 504, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not known"), "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    proxy.down.store(false, Ordering::SeqCst);
    wait_cluster(&a, 2);
    let (status, body) = api_publish(a.admin.unwrap(), "once", json!("api"), Some("order-17"));
    assert_eq!(
        (status, &body["offset"], &body["duplicate"]),
        (200, &json!(3), &json!(true)),
        "{body}"
    );
    let pubs = pubs_within(&mut sub, Duration::from_millis(800));
    assert_eq!(
        pubs.iter().map(|p| p["data"].clone()).collect::<Vec<_>>(),
        [json!("api")]
    );
    let (status, body) = api_publish(a.admin.unwrap(), "once", json!("x"), Some("bad key"));
    assert_eq!(status, 400, "{body}");
}

#[test]
fn while_redis_is_away_subscribes_and_publishes_fail_within_the_deadline() {
    let Some(mut redis) = Redis::start() else { return };
    let a = node_on(&["--redis", &redis.url()], "a", &[]);
    wait_cluster(&a, 1);
    redis.kill();
    let mut client = WsClient::open(a.addr, "");
    for (method, params) in [
        ("subscribe", json!({"channel": "never-synced"})),
        ("publish", json!({"channel": "never-synced", "data": 1})),
    ] {
        let started = Instant::now();
        let reply = client.call(method, params);
        let took = started.elapsed();
        assert_eq!(reply["error"]["code"], 108, "{method}: {reply}");
        assert!(took < Duration::from_millis(3500), "{method} took {took:?}");
    }
    let (status, body) = api_publish(a.admin.unwrap(), "never-synced", json!(1), None);
    assert!(status == 503 || status == 504, "{status} {body}");
    let _redis = Redis::start_on(redis.port).expect("redis restarts");
    wait_cluster(&a, 1);
    let reply = client.call("subscribe", json!({"channel": "never-synced"}));
    assert!(reply.get("result").is_some(), "{reply}");
    assert_eq!(publish(&mut client, "never-synced", json!(2))["offset"], 1);
}

/// The next push named `kind` on `client`.
fn next_push(client: &mut WsClient, kind: &str) -> Value {
    loop {
        let push = client.push().expect("connection open");
        if push["push"] == kind {
            return push;
        }
    }
}

/// Nodes a and b on `redis`, with a subscriber of `channel` on each.
fn two_nodes_subscribed(redis: &Redis, channel: &str) -> (Process, Process, [WsClient; 2]) {
    let (a, b) = (
        node_on(&["--redis", &redis.url()], "a", &[]),
        node_on(&["--redis", &redis.url()], "b", &[]),
    );
    wait_cluster(&a, 2);
    let mut subs = [WsClient::open(a.addr, ""), WsClient::open(b.addr, "")];
    for sub in &mut subs {
        let reply = sub.call("subscribe", json!({"channel": channel}));
        assert!(reply.get("result").is_some(), "{reply}");
    }
    (a, b, subs)
}

/// Every one of `subs` is told that `channel`'s epoch `old` was lost;
/// returns the one new epoch they are all told.
fn told_new_epoch(subs: &mut [WsClient], channel: &str, old: &Value) -> Value {
    let mut epochs = Vec::new();
    for sub in subs.iter_mut() {
        let push = next_push(sub, "epoch");
        assert_eq!(
            (&push["channel"], &push["previous"], &push["reason"]),
            (&json!(channel), old, &json!("lost")),
            "{push}"
        );
        assert_ne!(&push["epoch"], old);
        epochs.push(push["epoch"].clone());
    }
    assert!(
        epochs.windows(2).all(|w| w[0] == w[1]),
        "one new epoch on every node: {epochs:?}"
    );
    epochs.swap_remove(0)
}

#[test]
fn a_redis_that_lost_its_data_tells_every_subscriber_the_new_epoch() {
    let Some(mut redis) = Redis::start() else { return };
    let (a, _b, mut subs) = two_nodes_subscribed(&redis, "ticker");
    let mut publisher = WsClient::open(a.addr, "");
    let old = publish(&mut publisher, "ticker", json!(1))["epoch"].clone();
    for i in 2..=5 {
        publish(&mut publisher, "ticker", json!(i));
    }
    for sub in &mut subs {
        assert_eq!(
            (1..=5).map(|_| next_pub(sub)["offset"].clone()).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
    }
    redis.kill();
    let _redis = Redis::start_on(redis.port).expect("redis restarts");
    // Before anyone publishes again, both nodes re-sync and tell.
    let epoch = told_new_epoch(&mut subs, "ticker", &old);
    wait_cluster(&a, 2);
    let result = publish(&mut publisher, "ticker", json!("new"));
    assert_eq!((&result["epoch"], &result["offset"]), (&epoch, &json!(1)));
    for sub in &mut subs {
        let push = next_pub(sub);
        assert_eq!((&push["offset"], &push["data"]), (&json!(1), &json!("new")));
    }
    let (_, metrics) = (0, http_get(a.admin.unwrap(), "/metrics").1);
    assert!(metrics.contains("hubbub_cluster_epoch_changes_total 1"), "{metrics}");
}

#[test]
fn a_redis_restored_from_an_older_snapshot_gets_a_new_epoch_and_every_subscriber_is_told() {
    let Some(mut redis) = Redis::start() else { return };
    let (a, _b, mut subs) = two_nodes_subscribed(&redis, "ledger");
    let mut publisher = WsClient::open(a.addr, "");
    let old = publish(&mut publisher, "ledger", json!(1))["epoch"].clone();
    publish(&mut publisher, "ledger", json!(2));
    // A snapshot at offset 2, then two more publications it does not hold.
    redis.run(&["SAVE"]);
    for i in 3..=4 {
        publish(&mut publisher, "ledger", json!(i));
    }
    for sub in &mut subs {
        let offsets: Vec<Value> = (1..=4).map(|_| next_pub(sub)["offset"].clone()).collect();
        assert_eq!(offsets, [1, 2, 3, 4]);
    }
    // Restarted from the snapshot (same directory): offset 2 under the old epoch.
    redis.kill();
    let _redis = Redis::start_on(redis.port).expect("redis restarts");
    let epoch = told_new_epoch(&mut subs, "ledger", &old);
    wait_cluster(&a, 2);
    // Offset 3 is never handed out again under the old epoch.
    let result = publish(&mut publisher, "ledger", json!("after"));
    assert_eq!(result["epoch"], epoch, "{result}");
    for sub in &mut subs {
        let push = next_pub(sub);
        assert_eq!((&push["offset"], &push["data"]), (&result["offset"], &json!("after")));
    }
}

fn presence(node: &Process, channel: &str) -> Value {
    api(
        node.admin.unwrap(),
        "GET",
        &format!("/api/presence?channel={channel}"),
        "",
    )
    .1
}

fn redis_cli(port: u16, args: &[&str]) {
    let status = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(status.status.success(), "redis-cli {args:?}");
}

#[test]
fn presence_heals_after_a_cut_burst_a_tampered_redis_and_a_restart_with_the_same_id() {
    let Some(redis) = Redis::start() else { return };
    let proxy = Proxy::start(redis.port);
    let (a, b) = (
        node_on(&["--redis", &proxy.url()], "a", &[]),
        node_on(&["--redis", &redis.url()], "b", &[]),
    );
    wait_cluster(&a, 2);
    // A burst of joins and leaves on node a, its link cut in the middle.
    let mut members = Vec::new();
    for i in 0..20 {
        let mut member = user(a.addr, &format!("u{i}"));
        assert!(member
            .call("subscribe", json!({"channel": "room"}))
            .get("result")
            .is_some());
        members.push(member);
        if i == 10 {
            proxy.cut_all();
        }
    }
    members.truncate(12); // u12..u19 leave
    proxy.cut_all();
    let want = json!({
        "users": (0..12).map(|i| (format!("u{i}"), json!(1))).collect::<serde_json::Map<_, _>>(),
        "anonymous": 0,
        "total": 12,
    });
    wait_until("presence after the cut burst", || {
        (presence(&b, "room") == want).then_some(())
    });

    // Redis drifts behind the node's back: repaired by the periodic heal
    // (every 5 heartbeats: 5 s with --node-ttl-secs 3).
    redis_cli(redis.port, &["HSET", "hubbub:n:a:p", "room", r#"{"ghost":7}"#]);
    assert_eq!(presence(&b, "room")["total"], 7);
    let started = Instant::now();
    wait_until("the heal", || (presence(&b, "room") == want).then_some(()));
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "healed after {:?}",
        started.elapsed()
    );

    // Node a is killed (its members still connected: it never says they
    // left) and a new process takes its id with one member: what its
    // predecessor left is replaced, not added to.
    drop(a);
    drop(members);
    let a = node_on(&["--redis", &redis.url()], "a", &[]);
    let mut one = user(a.addr, "solo");
    assert!(one
        .call("subscribe", json!({"channel": "room"}))
        .get("result")
        .is_some());
    let want = json!({"users": {"solo": 1}, "anonymous": 0, "total": 1});
    wait_until("the restarted node's presence only", || {
        (presence(&b, "room") == want).then_some(())
    });
}

#[test]
fn the_links_stay_up_across_heartbeats_and_pings() {
    let Some(redis) = Redis::start() else { return };
    let a = node_on(&["--redis", &redis.url()], "a", &[]);
    wait_cluster(&a, 1);
    // The subscriber pings every 2 s; heartbeats and heals run meanwhile.
    std::thread::sleep(Duration::from_millis(4500));
    let cluster = wait_cluster(&a, 1);
    assert_eq!(cluster["reconnects"], 0, "{cluster}");
}

/// The sequences recorded in a node's idempotency hashes
/// (`hubbub:i:n:NODE:INCARNATION:BUCKET`), all of one writer.
fn idempotency_fields(redis: &Redis) -> Vec<u64> {
    let keys = redis.keys("hubbub:i:n:*");
    let writers: BTreeSet<&str> = keys.iter().map(|k| k.rsplit_once(':').unwrap().0).collect();
    assert_eq!(writers.len(), 1, "one writer's hashes: {keys:?}");
    let client = ::redis::Client::open(redis.url()).expect("a redis URL");
    let mut conn = client.get_connection().expect("redis answers");
    let mut sequences = Vec::new();
    for key in &keys {
        let fields: Vec<String> = ::redis::cmd("HKEYS").arg(key).query(&mut conn).expect("HKEYS");
        sequences.extend(fields.iter().map(|f| f.parse::<u64>().expect("a sequence")));
    }
    sequences
}

/// Sends `commands` as one burst of publishes, then reads every reply
/// (replies of two shards come in any order); the count that succeeded.
fn publish_burst(client: &mut WsClient, first_id: u64, channels: &[String]) -> usize {
    for (i, channel) in channels.iter().enumerate() {
        let id = first_id + i as u64;
        let command = json!({"id": id, "method": "publish", "params": {"channel": channel, "data": i}});
        client.raw.send_text(&command.to_string());
    }
    let (mut replies, mut ok) = (0, 0);
    while replies < channels.len() {
        let message = client.push().expect("connection open");
        if message.get("id").is_some() {
            replies += 1;
            ok += usize::from(message.get("result").is_some());
        }
    }
    ok
}

#[test]
fn refused_publishes_do_not_leave_the_idempotency_window_growing() {
    // A connection out of channel creations publishes mostly to channels
    // that do not exist (each refused by the script, 110) between publishes
    // to one that does. Each publish carries its share of deleting the
    // sequences that left the window; a refused one must delete them too,
    // or the hash (its TTL refreshed by every publish) grows for ever.
    let Some(redis) = Redis::start() else { return };
    let a = node_on(
        &["--redis", &redis.url()],
        "a",
        &[
            "--max-new-channels-per-minute",
            "1",
            "--max-messages-per-sec",
            "1000000",
            "--max-bytes-per-sec",
            "1GiB",
            // One shard: every publish is one writer's (each shard numbers
            // its own in a hash of its own).
            "--shards",
            "1",
        ],
    );
    wait_cluster(&a, 1);
    let mut client = WsClient::open(a.addr, "");
    publish(&mut client, "kept", json!("made"));
    // Past the window (65,536 sequences) by a few thousand.
    let (rounds, per_round) = (180, 400);
    let mut good = 0;
    for round in 0..rounds {
        let channels: Vec<String> = (0..per_round)
            .map(|i| match i % 4 {
                0 => "kept".to_string(),
                _ => format!("absent-{round}-{i}"),
            })
            .collect();
        good += publish_burst(&mut client, 1_000 + (round * per_round) as u64, &channels);
    }
    assert_eq!(good, rounds * per_round / 4, "only the publishes to `kept` succeed");
    let fields = idempotency_fields(&redis);
    let newest = *fields.iter().max().expect("records");
    assert!(newest > 65_536 + 4_000, "past the window: {newest}");
    // Drops lag the window by at most a hash or two (1,024 sequences each).
    let stale = fields.iter().filter(|&&s| s + 65_536 + 2 * 1_024 < newest).count();
    assert_eq!(
        stale,
        0,
        "records left behind the window (newest {newest}, {} records)",
        fields.len()
    );
}

/// The keys matching `pattern` that never expire.
fn keys_without_ttl(redis: &Redis, pattern: &str) -> Vec<String> {
    let keys = redis.keys(pattern);
    assert!(!keys.is_empty(), "no keys match {pattern}");
    keys.into_iter().filter(|k| redis.ttl(k) == -1).collect()
}

#[test]
fn every_key_a_publish_leaves_expires_though_a_writer_refreshes_ttls_once_a_minute() {
    // A writer refreshes a channel's key TTLs once a minute, not per
    // publish; a key the script (re)makes between refreshes still gets one
    // at once: after Redis lost everything (the publish makes the channel
    // again), after another node's sync dropped the offset and stream, and
    // after the stream alone went.
    let Some(redis) = Redis::start() else { return };
    // An hour of history: a writer's period is then the whole minute,
    // and every step below runs within it (no refresh comes due).
    let history = ["--history-rule", "hist*=100:3600", "--shards", "1"];
    let a = node_on(&["--redis", &redis.url()], "a", &history);
    let b = node_on(&["--redis", &redis.url()], "b", &history);
    wait_cluster(&a, 2);
    let mut publisher = WsClient::open(a.addr, "");
    let all_expire = |when: &str| {
        for pattern in ["hubbub:c:*", "hubbub:i:*"] {
            let never = keys_without_ttl(&redis, pattern);
            assert!(never.is_empty(), "{when}: {never:?} never expire");
        }
    };
    for i in 0..3 {
        publish(&mut publisher, "hist", json!(i));
        publish(&mut publisher, "plain", json!(i));
    }
    assert_eq!(redis.keys("hubbub:c:hist:*").len(), 3, "epoch, offset, stream");
    all_expire("after the first publishes");
    // Lost: the next publish makes the channel again, within the minute.
    redis.run(&["FLUSHALL"]);
    for i in 0..2 {
        assert_eq!(publish(&mut publisher, "hist", json!(i))["offset"], i + 1);
        publish(&mut publisher, "plain", json!(i));
    }
    all_expire("after the channel was made again");
    // Lost again, and this time node b syncs first (a subscriber): its
    // script makes the epoch and drops the offset and stream; a's next
    // publish starts them again.
    redis.run(&["FLUSHALL"]);
    let mut sub = WsClient::open(b.addr, "");
    let reply = sub.call("subscribe", json!({"channel": "hist"}));
    assert_eq!(reply["result"]["offset"], 0, "{reply}");
    assert_eq!(publish(&mut publisher, "hist", json!("after"))["offset"], 1);
    all_expire("after another node's sync");
    // The stream alone gone (evicted, expired under a shorter rule of
    // another node, deleted by hand): the publish that makes it again
    // gives it its TTL.
    redis.run(&["DEL", "hubbub:c:hist:s"]);
    assert_eq!(publish(&mut publisher, "hist", json!("again"))["offset"], 2);
    assert_eq!(redis.keys("hubbub:c:hist:s").len(), 1, "made again");
    all_expire("after the stream alone was deleted");
}

#[test]
fn a_burst_cut_in_the_middle_is_published_once_each_and_in_order() {
    // Each shard writes its publishes on a connection of its own, pipelined:
    // when that connection is cut with publishes in flight, those that ran
    // are answered from the idempotency record, the others run on the next
    // connection, and none overtakes one made before it.
    let Some(redis) = Redis::start() else { return };
    let proxy = Proxy::start(redis.port);
    let (a, b) = (
        node_on(&["--redis", &proxy.url()], "a", &["--max-messages-per-sec", "100000"]),
        node_on(&["--redis", &redis.url()], "b", &[]),
    );
    wait_cluster(&a, 2);
    let mut sub = WsClient::open(b.addr, "");
    assert!(sub
        .call("subscribe", json!({"channel": "burst"}))
        .get("result")
        .is_some());
    let mut publisher = WsClient::open(a.addr, "");
    publish(&mut publisher, "burst", json!(-1));
    assert_eq!(next_pub(&mut sub)["data"], -1);

    let count = 400;
    let send = |publisher: &mut WsClient, range: std::ops::Range<i64>| {
        // Raw: all sent before any answer is read.
        for i in range {
            let command = json!({"id": 1_000 + i, "method": "publish", "params": {"channel": "burst", "data": i}});
            publisher.raw.send_text(&command.to_string());
        }
    };
    // The connection is cut once the first script call is through, its
    // answers lost: what ran is not known to the node.
    proxy.cut_next_publish.store(true, Ordering::SeqCst);
    send(&mut publisher, 0..count / 2);
    std::thread::sleep(Duration::from_millis(5));
    send(&mut publisher, count / 2..count);
    let mut answers = Vec::new();
    while answers.len() < count as usize {
        let message = publisher.push().expect("connection open");
        if message.get("id").is_some() {
            answers.push(message);
        }
    }
    let failed: Vec<&Value> = answers.iter().filter(|m| m.get("result").is_none()).collect();
    assert!(failed.is_empty(), "every publish done within its deadline: {failed:?}");
    assert!(!proxy.cut_next_publish.load(Ordering::SeqCst), "the proxy cut nothing");
    let again = answers.iter().filter(|m| m["result"]["duplicate"] == true).count();
    assert!(again > 0, "some ran before the cut and were answered from their record");

    let mut pubs = Vec::new();
    while pubs.len() < count as usize {
        let got = pubs_within(&mut sub, Duration::from_secs(3));
        assert!(!got.is_empty(), "only {} of {count} arrived", pubs.len());
        pubs.extend(got);
    }
    let data: Vec<i64> = pubs.iter().map(|p| p["data"].as_i64().unwrap()).collect();
    assert_eq!(data, (0..count).collect::<Vec<_>>(), "each once, in the order made");
    let offsets: Vec<u64> = pubs.iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(
        offsets,
        (2..count as u64 + 2).collect::<Vec<_>>(),
        "no offset skipped or reused"
    );
    assert!(
        pubs_within(&mut sub, Duration::from_millis(500)).is_empty(),
        "nothing more"
    );
}

/// One node through `proxy`, one shard (one publishing connection), and a
/// publisher on it whose first publish went through.
fn one_shard_through(proxy: &Proxy) -> (Process, WsClient) {
    let a = node_on(&["--redis", &proxy.url()], "a", &["--shards", "1"]);
    wait_cluster(&a, 1);
    let mut publisher = WsClient::open(a.addr, "");
    publish(&mut publisher, "warm", json!(0));
    (a, publisher)
}

/// `one_shard_through(proxy)` for the publisher, and a subscriber of
/// `channel` on a node b that reaches `redis` directly (what it receives
/// is what Redis published). The nodes are kept alive by the caller.
fn publisher_through_subscriber_direct(
    proxy: &Proxy,
    redis: &Redis,
    channel: &str,
) -> ([Process; 2], WsClient, WsClient) {
    let (a, publisher) = one_shard_through(proxy);
    let b = node_on(&["--redis", &redis.url()], "b", &[]);
    wait_cluster(&a, 2);
    let mut sub = WsClient::open(b.addr, "");
    let reply = sub.call("subscribe", json!({"channel": channel}));
    assert!(reply.get("result").is_some(), "{reply}");
    ([a, b], publisher, sub)
}

#[test]
fn a_retry_refused_after_its_first_copy_may_have_run_is_not_known_not_refused() {
    // The first copy ran and its answer was lost with the connection; the
    // retry is refused (`BUSY`: not one of the "did not run" answers).
    // That copy did nothing, but the first did: "not known", so the client
    // retries with its key instead of taking it as not done.
    let Some(redis) = Redis::start() else { return };
    let proxy = Proxy::start(redis.port);
    let (_nodes, mut publisher, mut sub) = publisher_through_subscriber_direct(&proxy, &redis, "busy");
    proxy.cut_next_publish.store(true, Ordering::SeqCst);
    proxy.refuse_next_publish.store(true, Ordering::SeqCst);
    let reply = publisher.call("publish", json!({"channel": "busy", "data": "once"}));
    assert!(
        !proxy.refuse_next_publish.load(Ordering::SeqCst),
        "the proxy refused nothing"
    );
    assert_eq!(reply["error"]["code"], 108, "{reply}");
    let why = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("not known"), "{reply}");
    // It was published, once.
    let pubs = pubs_within(&mut sub, Duration::from_millis(800));
    assert_eq!(
        pubs.iter().map(|p| p["data"].clone()).collect::<Vec<_>>(),
        [json!("once")]
    );
    // A first copy refused is refused: not done.
    proxy.refuse_next_publish.store(true, Ordering::SeqCst);
    let reply = publisher.call("publish", json!({"channel": "busy", "data": "never"}));
    let why = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("refused") && !why.contains("not known"), "{reply}");
    assert!(pubs_within(&mut sub, Duration::from_millis(500)).is_empty());
}

#[test]
fn answers_read_together_with_the_close_are_not_thrown_away() {
    // Redis answers a publish and the connection closes right behind the
    // answer (a restart, `CLIENT KILL`, a proxy): the answer was received
    // and is the publish's, not "not known" and not a duplicate's.
    let Some(redis) = Redis::start() else { return };
    let proxy = Proxy::start(redis.port);
    let (a, mut publisher) = one_shard_through(&proxy);
    for i in 0..8 {
        proxy.close_after_publish_reply.store(true, Ordering::SeqCst);
        let result = publish(&mut publisher, "closing", json!(i));
        assert!(
            !proxy.close_after_publish_reply.load(Ordering::SeqCst),
            "the proxy closed nothing"
        );
        assert_eq!(result.get("duplicate"), None, "publish {i}: {result}");
    }
    // No next connection: the answer that came is still the answer. (The
    // publish before makes sure a connection is there to close.)
    assert_eq!(publish(&mut publisher, "closing", json!(8))["offset"], 9);
    proxy.down.store(true, Ordering::SeqCst);
    proxy.close_after_publish_reply.store(true, Ordering::SeqCst);
    let reply = publisher.call("publish", json!({"channel": "closing", "data": "last"}));
    assert_eq!(reply["result"]["offset"], 10, "{reply}");
    proxy.down.store(false, Ordering::SeqCst);
    wait_cluster(&a, 1);
}

#[test]
fn a_publish_late_on_a_dead_connection_is_not_published_again_by_its_retry() {
    // The path to Redis stalls with a publish on it; the node gives up on
    // the connection after REDIS_TIMEOUT and retries the publish on the next
    // one, where it runs. The first copy still reaches Redis afterwards (TCP
    // delivers what was sent before the close): it must find the retry's
    // record and publish nothing.
    let Some(redis) = Redis::start() else { return };
    let proxy = Proxy::start(redis.port);
    let (_nodes, mut publisher, mut sub) = publisher_through_subscriber_direct(&proxy, &redis, "late");
    proxy.stall_next_publish.store(true, Ordering::SeqCst);
    let reply = publisher.call("publish", json!({"channel": "late", "data": "once"}));
    assert!(
        !proxy.stall_next_publish.load(Ordering::SeqCst),
        "the proxy stalled nothing"
    );
    assert_eq!(reply["result"]["offset"], 1, "{reply}");
    // The late copy arrives STALL_AFTER_CLOSE after the close.
    let pubs = pubs_within(&mut sub, STALL_AFTER_CLOSE + Duration::from_millis(1500));
    let data: Vec<&Value> = pubs.iter().map(|p| &p["data"]).collect();
    assert_eq!(data, [&json!("once")], "published once: {pubs:?}");
}

/// `INFO stats` field `field` of the server on `port`.
fn info_stat(port: u16, field: &str) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "stats"])
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {text}"))
}

#[test]
fn a_server_that_turned_replica_is_not_redialed_in_a_tight_loop() {
    // Without Sentinel nothing moves the node to the new master: every
    // publish is refused READONLY. The shard's connection is replaced and
    // the publish retried until its deadline, but with a backoff between
    // connections, not as fast as they can be opened.
    let Some(redis) = Redis::start() else { return };
    let Some(master) = Redis::start() else { return };
    let a = node_on(&["--redis", &redis.url()], "a", &["--shards", "1"]);
    wait_cluster(&a, 1);
    let mut publisher = WsClient::open(a.addr, "");
    publish(&mut publisher, "ro", json!(0));
    redis_cli(redis.port, &["REPLICAOF", "127.0.0.1", &master.port.to_string()]);
    let before = info_stat(redis.port, "total_connections_received");
    let reply = publisher.call("publish", json!({"channel": "ro", "data": 1}));
    assert_eq!(reply["error"]["code"], 108, "{reply}");
    // Every try was refused, none ran: "not done", not "not known".
    let why = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("not done"), "{reply}");
    let opened = info_stat(redis.port, "total_connections_received") - before;
    assert!(opened < 40, "{opened} connections opened for one refused publish");
    let held = metric_at(a.admin.unwrap(), "hubbub_memory_bytes{kind=\"cluster\"}");
    assert_eq!(held, 0.0, "the refused publish's bytes are released");
}

#[test]
fn a_backlog_on_the_subscriber_connection_is_delivered_whole_and_in_order() {
    // Node b was away from its CPU for a moment (here: stopped) while the
    // cluster published: thousands of publications wait in its subscriber
    // connection. The shard that reads that connection must hand them on
    // no faster than the owner (here itself) takes them, not overflow the
    // owner's inbox with all of them in one go.
    let Some(redis) = Redis::start() else { return };
    let fast = ["--max-messages-per-sec", "1000000", "--max-bytes-per-sec", "1GiB"];
    let a = node_on(&["--redis", &redis.url()], "a", &fast);
    let b = node_on(
        &["--redis", &redis.url()],
        "b",
        &["--shards", "1", "--max-backlog-bytes", "64MiB"],
    );
    wait_cluster(&a, 2);
    let mut sub = WsClient::open(b.addr, "");
    assert!(sub
        .call("subscribe", json!({"channel": "flood"}))
        .get("result")
        .is_some());
    let mut publisher = WsClient::open(a.addr, "");
    publish(&mut publisher, "flood", json!(0));
    assert_eq!(next_pub(&mut sub)["offset"], 1);

    // Under the 10,000 a shard's publishing connection holds, twice the 4,096
    // an inbox's data lane holds.
    let count: i64 = 8_000;
    b.signal(libc::SIGSTOP);
    for i in 1..=count {
        let command = json!({"id": i, "method": "publish", "params": {"channel": "flood", "data": i}});
        publisher.raw.send_text(&command.to_string());
    }
    let mut answered = 0;
    while answered < count {
        let message = publisher.push().expect("connection open");
        if message.get("id").is_some() {
            assert!(message.get("result").is_some(), "{message}");
            answered += 1;
        }
    }
    b.signal(libc::SIGCONT);
    let mut offsets = Vec::new();
    while offsets.len() < count as usize {
        let got = pubs_within(&mut sub, Duration::from_secs(3));
        if got.is_empty() {
            break;
        }
        offsets.extend(got.iter().map(|p| p["offset"].as_i64().unwrap()));
    }
    let expected: Vec<i64> = (2..count + 2).collect();
    let first_gap = offsets.iter().zip(&expected).position(|(a, b)| a != b);
    assert!(
        offsets.len() == expected.len() && first_gap.is_none(),
        "{} of {count} delivered, first gap at {first_gap:?}",
        offsets.len()
    );
}

/// `CLIENT LIST` of the server on `port`, one line per connection.
fn client_list(port: u16) -> Vec<String> {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "CLIENT", "LIST"])
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn idle_publishing_connections_closed_by_redis_are_replaced_at_once() {
    // Redis closes a shard's publishing connection that never published
    // (its `timeout`, an operator's `CLIENT KILL`), again and again, each
    // time after it was up a while. Each is replaced at once, not after a
    // backoff grown by every close: the next publish would wait for it past
    // its deadline.
    let Some(redis) = Redis::start() else { return };
    let a = node_on(&["--redis", &redis.url()], "a", &["--shards", "1"]);
    wait_cluster(&a, 1);
    // The shard's connection: its last command was the script's load (the
    // command thread's are its heartbeats, the subscriber's PSUBSCRIBE).
    let publishing = || {
        client_list(redis.port)
            .into_iter()
            .find(|c| c.contains("cmd=script|load"))
            .and_then(|c| Some((field(&c, "id")?, field(&c, "age")?.parse::<u64>().ok()?)))
    };
    for close in 0..8 {
        let id = wait_until(&format!("publishing connection {close} up 2 s"), || {
            publishing().filter(|(_, age)| *age >= 2).map(|(id, _)| id)
        });
        redis_cli(redis.port, &["CLIENT", "KILL", "ID", &id]);
    }
    let mut publisher = WsClient::open(a.addr, "");
    let reply = publisher.call("publish", json!({"channel": "idle", "data": 1}));
    assert!(reply.get("result").is_some(), "{reply}");
}

/// The value of `name=` in a `CLIENT LIST` line.
fn field(line: &str, name: &str) -> Option<String> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .map(str::to_string)
}
