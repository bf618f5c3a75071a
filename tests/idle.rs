//! Heartbeats and idle reaping: silent connections are pinged, then closed
//! at the idle timeout, while active ones keep being served.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::*;
use hubbub::conn::Disconnect;

#[test]
fn silent_connection_is_pinged_then_closed_with_1001() {
    let server = start(|c| {
        c.ping_interval = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(2);
    });
    let mut client = open(server.addr, "/echo");
    let ping = client.recv().unwrap();
    assert_eq!(ping.opcode, 0x9, "first a ping");
    let close = client.recv().unwrap();
    assert_eq!(close.close_code(), Some(1001));
    assert_eq!(&close.payload[2..], b"idle timeout");
    let stats = server.wait_for("the idle close counted", |s| s.open == 0);
    assert_eq!(stats.disconnects_for(Disconnect::IdleTimeout), 1);
}

#[test]
fn answering_pings_keeps_a_connection_alive() {
    let server = start(|c| {
        c.ping_interval = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(2);
    });
    let mut client = open(server.addr, "/echo");
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let frame = client.recv().expect("still connected");
        assert_eq!(frame.opcode, 0x9);
        client.send(0xA, true, &frame.payload);
    }
    assert_eq!(server.stats().open, 1);
}

#[test]
fn five_thousand_connections_half_silent_are_reaped_and_the_count_is_true() {
    const TOTAL: usize = 5000;
    let server = start(|c| {
        // Generous: a round over 2,500 active clients may take a second or
        // two on a loaded 2-core machine, and they must not look idle.
        c.ping_interval = Duration::from_secs(2);
        c.idle_timeout = Duration::from_secs(5);
    });
    let mut active = Vec::new();
    let mut silent = Vec::new();
    for i in 0..TOTAL {
        let client = open(server.addr, "/echo");
        if i % 2 == 0 {
            active.push(client);
        } else {
            silent.push(client);
        }
    }
    server.wait_for("all upgraded", |s| s.open == TOTAL as u64);
    // The active half talks for longer than the idle timeout.
    let until = Instant::now() + Duration::from_secs(7);
    let mut round = 0u32;
    while Instant::now() < until {
        round += 1;
        let text = format!("round {round}");
        for client in &mut active {
            client.send_text(&text);
        }
        for client in &mut active {
            loop {
                let frame = client.recv().expect("active client served");
                if frame.opcode == 0x1 {
                    assert_eq!(frame.payload, text.as_bytes());
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = server.wait_for("silent half reaped", |s| s.open == (TOTAL / 2) as u64);
    assert_eq!(stats.disconnects_for(Disconnect::IdleTimeout), (TOTAL / 2) as u64);
    // Every silent client saw a ping, then Close 1001, then EOF.
    for client in silent.iter_mut().take(50) {
        client.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        assert_eq!(client.recv_close(), Some(1001));
    }
    let mut probe = [0u8; 1];
    let err = silent[0].stream.peek(&mut probe);
    assert!(matches!(err, Ok(0)) || err.is_err_and(|e| e.kind() != ErrorKind::WouldBlock));
}

/// A `/ws` client closed by the server itself (idle timeout, drain) first
/// gets a `disconnect` push with the Close frame's code and reason.
#[test]
fn ws_clients_get_a_disconnect_push_before_idle_and_drain_closes() {
    let server = start(|c| {
        c.shards = 1;
        c.ping_interval = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(2);
    });
    let mut idle = WsClient::open(server.addr, "");
    let push = loop {
        match idle.push() {
            Some(p) if p.get("push").is_some() => break p,
            Some(p) if p.get("closed").is_some() => panic!("closed without a push: {p}"),
            Some(_) => continue,
            None => panic!("connection ended without a push"),
        }
    };
    assert_eq!(push["push"], "disconnect");
    assert_eq!(push["code"], 1001);
    assert_eq!(push["reason"], "idle timeout");
    assert_eq!(push["reconnect"], true);
    assert_eq!(idle.push().unwrap()["closed"], 1001);

    let mut draining = WsClient::open(server.addr, "");
    let reply = draining.call("ping", serde_json::json!({}));
    assert!(reply.get("result").is_some());
    let stopper = std::thread::spawn(move || server.stop());
    let push = draining.push().expect("a push before the drain's Close");
    assert_eq!(push["push"], "disconnect", "{push}");
    assert_eq!(push["code"], 1001);
    assert!(
        push["reason"].as_str().unwrap().starts_with("server restarting"),
        "{push}"
    );
    assert_eq!(draining.push().unwrap()["closed"], 1001);
    stopper.join().unwrap().unwrap();
}
