//! Control messages are never dropped like data: while one room client
//! floods the shards' inboxes, every `/ws` command still gets its one
//! reply, presence returns to the truth, and a shutdown drains every shard.
//! Deliveries that are dropped are not silent: a `/ws` subscriber gets a
//! `gap` push, a room member a close it can reconnect after.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A room client writing empty frames as fast as it can until `stop`.
fn flood(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    // Its own copies pile up unread: it may well be cut off as a slow
    // consumer; that only ends the flood early.
    flood_with(open(addr, "/room/flood"), stop)
}

/// `flood`, from a room member already open.
fn flood_with(mut flooder: Client, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let burst: Vec<u8> = (0..1000).flat_map(|_| client_frame(0x2, true, b"", MASK)).collect();
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            if flooder.stream.write_all(&burst).is_err() {
                break;
            }
            sent += 1000;
        }
        sent
    })
}

#[test]
fn every_command_gets_its_reply_during_a_room_flood() {
    let server = start(|c| {
        c.shards = 2;
        unlimited_rates(c);
    });
    // Members on both shards, so the owner fans out to the other shard.
    let members: Vec<Client> = (0..4).map(|_| open(server.addr, "/room/flood")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(server.addr, Arc::clone(&stop));
    server.wait_for("the flood is on", |s| s.inbox_drops > 0 || s.messages_in_rooms > 20_000);

    let mut clients: Vec<WsClient> = (0..50).map(|_| WsClient::open(server.addr, "")).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.raw.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let reply = client.call("subscribe", json!({"channel": format!("c{i}")}));
        assert!(reply.get("result").is_some(), "client {i}: subscribe answered {reply}");
        let reply = client.call("publish", json!({"channel": format!("c{i}"), "data": i}));
        assert!(reply.get("result").is_some(), "client {i}: publish answered {reply}");
    }
    for (i, client) in clients.iter_mut().enumerate().take(25) {
        let reply = client.call("unsubscribe", json!({"channel": format!("c{i}")}));
        assert!(
            reply.get("result").is_some(),
            "client {i}: unsubscribe answered {reply}"
        );
    }
    // Half leave by disconnecting; presence must return to the truth.
    clients.truncate(40);
    let mut probe = WsClient::open(server.addr, "");
    probe.raw.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let deadline = Instant::now() + PATIENCE;
    for i in 0..50 {
        let want = if (25..40).contains(&i) { 1 } else { 0 };
        loop {
            let reply = probe.call("presence", json!({"channel": format!("c{i}")}));
            let count = reply["result"]["total"].as_u64();
            if count == Some(want) {
                break;
            }
            assert!(Instant::now() < deadline, "channel c{i}: presence {reply}, want {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    println!(
        "flooded {sent} empty frames; inbox drops {}",
        server.stats().inbox_drops
    );
    drop(members);
    // A shutdown reaches every shard, flooded or not.
    let started = Instant::now();
    server.stop().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "drain took {:?}",
        started.elapsed()
    );
}

/// Every publication a subscriber misses is covered by a `gap` push naming
/// an offset before it: no silent gap, however full the inboxes are.
#[test]
fn a_dropped_delivery_is_never_a_silent_gap() {
    let server = start(|c| {
        c.shards = 2;
        unlimited_rates(c);
    });
    let mut subscribers: Vec<WsClient> = (0..6).map(|_| WsClient::open(server.addr, "")).collect();
    for s in &mut subscribers {
        let reply = s.call("subscribe", json!({"channel": "g"}));
        assert!(reply.get("result").is_some(), "{reply}");
    }
    let mut members: Vec<Client> = (0..6).map(|_| open(server.addr, "/room/flood")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(server.addr, Arc::clone(&stop));
    server.wait_for("the flood is on", |s| s.inbox_drops > 0 || s.messages_in_rooms > 20_000);
    let mut publisher = WsClient::open(server.addr, "");
    publisher.raw.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    for i in 0..300 {
        let reply = publisher.call("publish", json!({"channel": "g", "data": i}));
        assert!(reply.get("result").is_some(), "publish {i}: {reply}");
    }
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    let drops = server.stats().inbox_drops;
    let mut gaps_seen = 0;
    for s in &mut subscribers {
        s.raw
            .stream
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let (mut got, mut covered_from) = (Vec::new(), u64::MAX);
        while let Some(push) = s.push() {
            match push["push"].as_str() {
                Some("pub") => got.push(push["offset"].as_u64().unwrap()),
                Some("gap") => {
                    gaps_seen += 1;
                    covered_from = covered_from.min(push["offset"].as_u64().unwrap() + 1);
                }
                _ => {}
            }
        }
        for offset in 1..=300u64 {
            assert!(
                got.contains(&offset) || offset >= covered_from,
                "offset {offset} missed without a gap push ({} received)",
                got.len()
            );
        }
    }
    // Room members whose deliveries were dropped are told to reconnect.
    let mut told = 0;
    for m in &mut members {
        m.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        while let Some(frame) = m.recv() {
            if frame.opcode == 0x8 {
                told += u32::from(frame.close_code() == Some(1013));
                break;
            }
        }
    }
    println!("inbox drops {drops}; gap pushes {gaps_seen}; members closed 1013: {told}");
    if drops > 0 && gaps_seen == 0 {
        // Room deliveries or room messages were dropped: a member (or the
        // flooder, whose own message was dropped) was closed with 1013 and
        // counted as missed_messages, never as kicked.
        let stats = server.wait_for("the drops are told", |s| {
            s.disconnects_for(hubbub::conn::Disconnect::MissedMessages) > 0
        });
        assert_eq!(
            stats.disconnects_for(hubbub::conn::Disconnect::Kicked),
            0,
            "counted as kicked"
        );
    }
}

const SECRET: &str = "a-secret-of-at-least-thirty-two-bytes!!";

fn user(addr: std::net::SocketAddr, sub: &str) -> WsClient {
    let bearer = format!("Authorization: Bearer {}\r\n", token(SECRET, json!({"sub": sub})));
    let client = WsClient::open(addr, &bearer);
    client.raw.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    client
}

/// Sends a command without waiting for its reply.
fn send(client: &mut WsClient, id: u64, method: &str, params: serde_json::Value) {
    let command = json!({"id": id, "method": method, "params": params});
    client.raw.send_text(&command.to_string());
}

/// The replies to commands `ids`, in any order: answers from different
/// owners may overtake each other. Other messages are left aside.
fn replies(client: &mut WsClient, ids: &[u64]) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    let mut aside = Vec::new();
    while found.len() < ids.len() {
        let message = client.push().expect("connection open while waiting for replies");
        match message["id"].as_u64() {
            Some(id) if ids.contains(&id) => found.push(message),
            _ => aside.push(message),
        }
    }
    client.pushes.extend(aside);
    found
}

/// The ghost cases under a flood: subscriptions that end (by unsubscribe or
/// disconnect) before the owner's answer arrives, and users who leave, must
/// leave no trace in presence, `/api/channels` or the subscription gauge.
#[test]
fn presence_and_subscription_counts_return_to_the_truth_after_a_flood() {
    const KEY: &str = "lanes-api-key";
    let server = start(|c| {
        unlimited_rates(c);
        c.shards = 2;
        c.hub.jwt_secret = Some(SECRET.as_bytes().to_vec());
        c.hub.api_key = Some(KEY.into());
    });
    let members: Vec<Client> = (0..4).map(|_| open(server.addr, "/room/flood")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(server.addr, Arc::clone(&stop));
    server.wait_for("the flood is on", |s| s.inbox_drops > 0 || s.messages_in_rooms > 20_000);

    // 0..20 stay subscribed; 20..30 unsubscribe in the same write as their
    // subscribe; 30..40 disconnect right after sending their subscribe.
    let mut stay = Vec::new();
    for i in 0..40 {
        let mut client = user(server.addr, &format!("u{i}"));
        send(&mut client, 1, "subscribe", json!({"channel": "p"}));
        send(&mut client, 2, "subscribe", json!({"channel": format!("own{i}")}));
        match i {
            0..20 => {
                for reply in replies(&mut client, &[1, 2]) {
                    assert!(reply.get("result").is_some(), "u{i}: subscribe answered {reply}");
                }
                stay.push(client);
            }
            20..30 => {
                send(&mut client, 3, "unsubscribe", json!({"channel": "p"}));
                send(&mut client, 4, "unsubscribe", json!({"channel": format!("own{i}")}));
                // Every command gets its one reply: each subscribe took
                // effect or was cancelled (111) by the unsubscribe.
                for reply in replies(&mut client, &[1, 2, 3, 4]) {
                    let subscribe = reply["id"].as_u64() <= Some(2);
                    let cancelled = subscribe && reply["error"]["code"] == 111;
                    assert!(reply.get("result").is_some() || cancelled, "u{i}: answered {reply}");
                }
                stay.push(client);
            }
            _ => drop(client),
        }
    }
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    drop(members);

    // The gauges first: they settle once every answer and undo arrived.
    server.wait_for("subscriptions back to the truth", |s| s.subscriptions == 40);
    server.wait_for("users back to the truth", |s| s.users == 30);
    let mut probe = WsClient::open(server.addr, "");
    probe.raw.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let presence = probe.call("presence", json!({"channel": "p"}))["result"].clone();
    let users: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    let mut seen: Vec<String> = presence["users"].as_object().unwrap().keys().cloned().collect();
    seen.sort_unstable_by_key(|u| u[1..].parse::<u32>().unwrap());
    assert_eq!(seen, users, "{presence}");
    assert_eq!(presence["total"], 20, "{presence}");
    for i in 20..40 {
        let own = probe.call("presence", json!({"channel": format!("own{i}")}));
        assert_eq!(own["result"]["total"], 0, "own{i}: {own}");
    }
    let (status, channels) = api_call(server.admin_addr(), "GET", "/api/channels", Some(KEY), "");
    assert_eq!(status, 200, "{channels}");
    let mut listed: Vec<(String, u64)> = channels["channels"]
        .as_array()
        .expect("a list of channels")
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap().to_string(),
                c["subscribers"].as_u64().unwrap(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    listed.sort_unstable();
    let mut want: Vec<(String, u64)> = (0..20).map(|i| (format!("own{i}"), 1)).collect();
    want.push(("p".into(), 20));
    want.sort_unstable();
    assert_eq!(listed, want, "only live subscriptions are counted");
    drop(stay);
    server.wait_for("everyone gone", |s| s.subscriptions == 0 && s.users == 0);
    let presence = probe.call("presence", json!({"channel": "p"}));
    assert_eq!(presence["result"]["total"], 0, "{presence}");
}

/// SIGTERM while a room flood fills the inboxes: the `Shutdown` reaches both
/// shards, every client gets 1001 and the process exits within the window.
#[test]
fn sigterm_drains_every_shard_during_a_flood() {
    let mut server = Process::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--drain-secs",
        "4",
        "--max-messages-per-sec",
        "1000000000",
        "--max-bytes-per-sec",
        "1TiB",
    ]);
    let admin = server.admin.expect("an admin port");
    let mut echo: Vec<Client> = (0..20).map(|_| open(server.addr, "/echo")).collect();
    let mut ws: Vec<WsClient> = (0..20).map(|_| WsClient::open(server.addr, "")).collect();
    for (i, client) in ws.iter_mut().enumerate() {
        client.raw.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let reply = client.call("subscribe", json!({"channel": format!("c{i}")}));
        assert!(reply.get("result").is_some(), "{reply}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = relentless_flood(server.addr, Arc::clone(&stop));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (data, drops) = inbox_figures(admin);
        if data >= 10_000 || drops > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the flood never reached the inboxes");
        std::thread::sleep(Duration::from_millis(50));
    }
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    for client in &mut echo {
        assert_eq!(client.recv_close(), Some(1001));
    }
    for client in &mut ws {
        let push = client.push().expect("a disconnect push");
        assert_eq!(
            (push["push"].as_str(), push["code"].as_u64()),
            (Some("disconnect"), Some(1001)),
            "{push}"
        );
        assert_eq!(client.push(), Some(json!({"closed": 1001})));
    }
    let status = server
        .wait_exit(Duration::from_secs(4) + PATIENCE / 2)
        .expect("the server exits");
    assert!(status.success(), "exit status {status}");
    println!("exited {:?} after SIGTERM", signalled.elapsed());
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
}

/// Data-lane messages every shard handled, and inbox drops, so far (from
/// `/metrics`).
fn inbox_figures(admin: std::net::SocketAddr) -> (u64, u64) {
    let (_, body) = http_get(admin, "/metrics");
    let sum = |prefix: &str, label: &str| {
        body.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (
        sum("hubbub_inbox_messages_total", "lane=\"data\""),
        sum("hubbub_inbox_drops_total", ""),
    )
}

/// Room clients flooding one after another until `stop`, or until the
/// server takes no new one: a flooder cut off (1013 when the owner's lane
/// was full) is replaced at once, so the flood is on when a drain begins.
/// Each reads (and discards) its own copies, so none is a slow consumer.
fn relentless_flood(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let burst: Vec<u8> = (0..1000).flat_map(|_| client_frame(0x2, true, b"", MASK)).collect();
        let (mut sent, deadline) = (0, Instant::now() + Duration::from_secs(20));
        let going = || !stop.load(Ordering::Relaxed) && Instant::now() < deadline;
        while going() {
            let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
                break;
            };
            let Ok(mut reader) = stream.try_clone() else { break };
            // The 101 and the copies are read and dropped; frames may follow
            // the request at once.
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            if stream.write_all(upgrade_request("/room/flood", "").as_bytes()).is_err() {
                break;
            }
            while going() && stream.write_all(&burst).is_ok() {
                sent += 1000;
            }
        }
        sent
    })
}
