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
    let mut flooder = open(addr, "/room/flood");
    // Its own copies pile up unread: it may well be cut off as a slow
    // consumer; that only ends the flood early.
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
    let server = start(|c| c.shards = 2);
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
        c.hub.max_messages_per_sec = 1000;
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
