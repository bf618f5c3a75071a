//! The hub's limits hold for every client, on every path: a room member over
//! the rate is closed while the others get every message in order, replies
//! are bounded and paged, recovery too large for one reply says to page, and
//! channel creation stops at its limits. One test per rule (issue "Hub
//! limits that hold").

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const API_KEY: &str = "hub-limits-test-key";

/// Reads frames until `n` numbered text messages ("m0".."m{n-1}") arrived,
/// skipping anything else; returns the numbers in arrival order.
fn read_numbered(client: &mut Client, n: usize) -> Vec<usize> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let Some(frame) = client.recv() else { break };
        if frame.opcode == 0x1 {
            if let Some(number) = std::str::from_utf8(&frame.payload)
                .ok()
                .and_then(|t| t.strip_prefix('m'))
                .and_then(|n| n.parse().ok())
            {
                seen.push(number);
            }
        }
    }
    seen
}

#[test]
fn a_room_flooder_is_closed_while_the_others_get_every_message_in_order() {
    let server = start(|c| c.shards = 2);
    let mut members: Vec<Client> = (0..6).map(|_| open(server.addr, "/room/x")).collect();
    for member in &mut members {
        member.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    }
    let mut flooder = open(server.addr, "/room/x");
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let mut stream = flooder.stream.try_clone().unwrap();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let burst: Vec<u8> = (0..1000).flat_map(|_| client_frame(0x2, true, b"", MASK)).collect();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if stream.write_all(&burst).is_err() {
                    break;
                }
            }
        })
    };
    let publisher = {
        let mut publisher = open(server.addr, "/room/x");
        std::thread::spawn(move || {
            for n in 0..200 {
                publisher.send_text(&format!("m{n}"));
                std::thread::sleep(Duration::from_millis(10));
            }
            publisher
        })
    };
    flooder.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(flooder.recv_close(), Some(1008), "the flooder is closed for its rate");
    for (i, member) in members.iter_mut().enumerate() {
        let seen = read_numbered(member, 200);
        assert_eq!(
            seen,
            (0..200).collect::<Vec<_>>(),
            "member {i} got every message, in order"
        );
    }
    stop.store(true, Ordering::Relaxed);
    flooding.join().unwrap();
    drop(publisher.join().unwrap());
    // Counted when the flooder's connection is gone (it never reads, so
    // after the close timeout).
    let stats = server.wait_for("the flooder's close counted", |s| {
        s.disconnects_for(hubbub::metrics::disconnect::Disconnect::RateLimited) == 1
    });
    assert_eq!(stats.inbox_drops, 0, "nothing was dropped between shards");
}

#[test]
fn bytes_per_second_limit_rooms_and_ws_commands() {
    let server = start(|c| {
        c.shards = 1;
        c.hub.max_bytes_per_sec = 64 << 10;
        c.max_message_bytes = 64 << 10;
    });
    let mut member = open(server.addr, "/room/bytes");
    member.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let big = vec![b'a'; 40 << 10];
    for _ in 0..3 {
        member.send(0x2, true, &big);
    }
    assert_eq!(member.recv_close(), Some(1008), "120 KiB at once is over 64 KiB/s");

    let mut client = WsClient::open(server.addr, "");
    let data = "b".repeat(40 << 10);
    let first = client.call("publish", json!({"channel": "c", "data": data}));
    assert!(first.get("result").is_some(), "{first}");
    let second = client.call("publish", json!({"channel": "c", "data": data}));
    assert_eq!(second["error"]["code"], 105, "{second}");
}

/// Publishes `count` publications of `size` bytes to `channel` through the
/// server API (not rate-limited).
fn publish_many(admin: std::net::SocketAddr, channel: &str, count: usize, size: usize) {
    let data = "p".repeat(size);
    for i in 0..count {
        let body = json!({"channel": channel, "data": format!("{i}:{data}")}).to_string();
        let (status, reply) = api_call(admin, "POST", "/api/publish", Some(API_KEY), &body);
        assert_eq!(status, 200, "publish {i}: {reply}");
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn history_is_paged_and_large_recovery_says_to_page() {
    let server = start(|c| {
        c.shards = 2;
        c.hub.api_key = Some(API_KEY.into());
        c.hub.history.max_bytes = 64 << 20;
        // The pager sends ~100 commands in a row: this test is about pages.
        c.hub.max_messages_per_sec = 10_000;
    });
    let admin = server.admin_addr();
    publish_many(admin, "big", 100, 512 << 10);

    // Twenty clients ask for the whole history at once and do not read.
    let before = rss_bytes();
    let mut idle: Vec<Client> = (0..20).map(|_| open(server.addr, "/ws")).collect();
    for client in &mut idle {
        let command = json!({"id": 1, "method": "history", "params": {"channel": "big"}}).to_string();
        client.send_text(&command);
    }
    std::thread::sleep(Duration::from_secs(1));
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "20 unread history replies grew the process by {} MiB (whole replies would be ~1 GiB)",
        grown >> 20
    );

    // One client pages through all of it: every publication once, in order.
    let mut pager = WsClient::open(server.addr, "");
    let mut seen = Vec::new();
    let mut since = 0u64;
    loop {
        let reply = pager.call("history", json!({"channel": "big", "since": since}));
        let result = &reply["result"];
        let page = result["publications"].as_array().expect("publications");
        assert!(!page.is_empty() || seen.len() == 100, "{reply}");
        assert!(
            page.len() <= 1,
            "512 KiB publications come one per page under the 256 KiB cap"
        );
        for publication in page {
            seen.push(publication["offset"].as_u64().unwrap());
        }
        if result["more"] != true {
            break;
        }
        since = *seen.last().unwrap();
    }
    assert_eq!(seen, (1..=100).collect::<Vec<u64>>());

    // Recovering all of it would be a 50 MiB reply: refused, with what to do.
    let epoch = pager.call("history", json!({"channel": "big", "limit": 1}))["result"]["epoch"].clone();
    let reply = pager.call(
        "subscribe",
        json!({"channel": "big", "recover": {"offset": 0, "epoch": epoch}}),
    );
    assert_eq!(reply["result"]["recovered"], false, "{reply}");
    let reason = reply["result"]["reason"].as_str().unwrap();
    assert!(reason.contains("page through history"), "{reason}");
    drop(idle);
}

#[test]
fn small_publications_share_a_page_and_history_defaults_to_a_bounded_count() {
    let server = start(|c| {
        c.shards = 1;
        c.hub.api_key = Some(API_KEY.into());
        c.hub.history.size = 500;
    });
    let admin = server.admin_addr();
    publish_many(admin, "small", 300, 10);
    let mut client = WsClient::open(server.addr, "");
    let reply = client.call("history", json!({"channel": "small"}));
    let page = reply["result"]["publications"].as_array().unwrap();
    assert_eq!(page.len(), 100, "the default limit");
    assert_eq!(page[0]["offset"], 201, "the newest hundred, oldest first");
    assert_eq!(reply["result"]["more"], false);
    let reply = client.call("history", json!({"channel": "small", "since": 10, "limit": 50}));
    let page = reply["result"]["publications"].as_array().unwrap();
    assert_eq!((page[0]["offset"].as_u64(), page.len()), (Some(11), 50));
    assert_eq!(reply["result"]["more"], true);
}

#[test]
fn channel_creation_past_the_limits_is_refused() {
    let server = start(|c| {
        c.shards = 2;
        c.hub.max_channels = 8;
        c.hub.max_new_channels_per_minute = 5;
    });
    let mut first = WsClient::open(server.addr, "");
    for i in 0..5 {
        let reply = first.call("publish", json!({"channel": format!("a{i}"), "data": i}));
        assert!(reply.get("result").is_some(), "{reply}");
    }
    let reply = first.call("publish", json!({"channel": "a5", "data": 5}));
    assert_eq!(reply["error"]["code"], 110, "sixth new channel in a minute: {reply}");
    let reply = first.call("publish", json!({"channel": "a0", "data": "again"}));
    assert!(
        reply.get("result").is_some(),
        "an existing channel is no creation: {reply}"
    );

    let mut second = WsClient::open(server.addr, "");
    let mut refused = None;
    for i in 0..10 {
        let reply = second.call("subscribe", json!({"channel": format!("b{i}")}));
        if reply.get("error").is_some() {
            refused = Some((i, reply));
            break;
        }
    }
    let (i, reply) = refused.expect("the node's limit refuses at last");
    assert_eq!(reply["error"]["code"], 110, "{reply}");
    assert_eq!(i, 3, "the node holds 8 channels; five were made already");
}
