//! Hostile and unlucky clients: what the server holds for them is bounded in
//! bytes and in time, and only the offender notices.
//!
//! Sockets that hold partial input cannot pin the buffer pool, a partial
//! message has a deadline that pings do not extend, the process-wide
//! connection cap is exact across shards, and the per-address limits count
//! the right address behind a trusted proxy.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use hubbub::conn::Disconnect;
use hubbub::net::cidr::Cidr;

/// A partial request head: the start of an upgrade, never finished.
const PARTIAL_HEAD: &[u8] = b"GET /echo HTTP/1.1\r\nHost: x\r\n";

/// A fresh client must be upgraded and echoed while the attackers hold on;
/// returns how long that took.
fn fresh_client_is_served(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut client = open(addr, "/echo");
    client.send_text("still here");
    assert_eq!(client.recv().expect("an echo").payload, b"still here");
    started.elapsed()
}

#[test]
fn partial_heads_do_not_pin_the_buffer_pool() {
    let server = start(|c| c.shards = 1);
    let attackers: Vec<TcpStream> = (0..520)
        .map(|_| {
            let mut s = connect(server.addr);
            s.write_all(PARTIAL_HEAD).unwrap();
            s
        })
        .collect();
    server.wait_for("the attackers' bytes are read", |s| {
        s.bytes_in >= 520 * PARTIAL_HEAD.len() as u64
    });
    let took = fresh_client_is_served(server.addr);
    assert!(took < Duration::from_secs(3), "the fresh client waited {took:?}");
    assert_eq!(
        server.stats().buffers_leased,
        0,
        "request heads never lease a pool buffer"
    );
    drop(attackers);
}

#[test]
fn partial_frames_do_not_stop_the_shard_when_the_pool_is_empty() {
    // 8 bytes of a 10-byte frame (small: heap), and 8 KiB of a 10 KiB frame
    // (leases a pool buffer, and the pool holds only 8).
    let server = start(|c| {
        c.shards = 1;
        c.buffer_pool = 8;
    });
    let small = client_frame(0x2, true, &[7u8; 10], MASK);
    let large = client_frame(0x2, true, &[7u8; 10 * 1024], MASK);
    let mut attackers = Vec::new();
    for i in 0..40 {
        let mut client = open(server.addr, "/echo");
        let frame = if i % 2 == 0 { &small } else { &large };
        client.stream.write_all(&frame[..frame.len() - 2]).unwrap();
        attackers.push(client);
    }
    server.wait_for("the pool is empty", |s| s.buffers_leased == 8);
    let took = fresh_client_is_served(server.addr);
    assert!(took < Duration::from_secs(3), "the fresh client waited {took:?}");
    // The attackers' frames complete and are echoed: nothing was lost.
    for (i, client) in attackers.iter_mut().enumerate() {
        let frame = if i % 2 == 0 { &small } else { &large };
        client.stream.write_all(&frame[frame.len() - 2..]).unwrap();
        let want = if i % 2 == 0 { 10 } else { 10 * 1024 };
        assert_eq!(client.recv().unwrap().payload, vec![7u8; want]);
    }
}

#[test]
fn a_partial_message_kept_alive_by_pings_is_closed_at_the_message_deadline() {
    let server = start(|c| {
        c.shards = 1;
        c.message_timeout = Duration::from_secs(2);
    });
    let mut client = open(server.addr, "/echo");
    let started = Instant::now();
    client.send(0x2, false, &[1u8; 900 * 1024]);
    let code = loop {
        // Pings between fragments are answered but do not extend the deadline.
        client.send(0x9, true, b"still typing");
        client
            .stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match client.recv() {
            Some(frame) if frame.opcode == 0xA => {}
            Some(frame) if frame.opcode == 0x8 => break frame.close_code(),
            Some(frame) => panic!("unexpected frame {frame:?}"),
            None => {}
        }
        assert!(started.elapsed() < PATIENCE, "never closed");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, Some(1008));
    let lived = started.elapsed();
    assert!(lived >= Duration::from_millis(1900), "closed early: {lived:?}");
    server.wait_for("counted", |s| s.disconnects_for(Disconnect::MessageTimeout) == 1);
}

#[test]
fn a_slow_but_steady_message_is_delivered() {
    // 256 KiB spread over ~1.5 s against a 3 s deadline: a slow link, not an
    // attacker (the defaults give a 1 MiB message 30 s, ~280 kbit/s).
    let server = start(|c| {
        c.shards = 1;
        c.message_timeout = Duration::from_secs(3);
    });
    let mut client = open(server.addr, "/echo");
    let payload: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let frame = client_frame(0x2, true, &payload, MASK);
    for chunk in frame.chunks(frame.len() / 15 + 1) {
        client.stream.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(client.recv().expect("the echo").payload, payload);
    assert_eq!(server.stats().disconnects_for(Disconnect::MessageTimeout), 0);
}

#[test]
fn the_connection_cap_is_exact_across_shards() {
    let server = start(|c| {
        c.shards = 2;
        c.max_connections = Some(200);
    });
    let mut upgraded = Vec::new();
    let mut refused = 0;
    for _ in 0..250 {
        let mut s = connect(server.addr);
        s.write_all(upgrade_request("/echo", "").as_bytes()).unwrap();
        match read_response(&mut s).0 {
            101 => upgraded.push(s),
            503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((upgraded.len(), refused), (200, 50));
    server.wait_for("the counters are published", |s| s.upgraded == 200);
    let per_shard: Vec<u64> = server.shard_stats().iter().map(|s| s.upgraded).collect();
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "both shards took connections: {per_shard:?}"
    );
    // A place freed by a close is free again, on whichever shard.
    drop(upgraded.pop());
    server.wait_for("the close is seen", |s| s.open == 199);
    let mut s = connect(server.addr);
    s.write_all(upgrade_request("/echo", "").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).0, 101);
}

/// A connection from the given loopback source address.
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

fn try_upgrade(mut s: TcpStream, extra: &str) -> (u16, String, TcpStream) {
    s.write_all(upgrade_request("/echo", extra).as_bytes()).unwrap();
    let (status, head, rest) = read_response(&mut s);
    let mut body = String::from_utf8_lossy(&rest).into_owned();
    if status != 101 {
        let _ = s.read_to_string(&mut body);
    }
    (status, head + &body, s)
}

#[test]
fn connections_per_address_are_limited_per_address() {
    let server = start(|c| c.per_ip.max_connections = 3);
    let mut held = Vec::new();
    for _ in 0..3 {
        let (status, _, s) = try_upgrade(connect_from("127.0.0.1", server.addr), "");
        assert_eq!(status, 101);
        held.push(s);
    }
    let (status, text, _) = try_upgrade(connect_from("127.0.0.1", server.addr), "");
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("too many connections from your address"), "{text}");
    let (status, _, other) = try_upgrade(connect_from("127.0.0.2", server.addr), "");
    assert_eq!(status, 101, "another address is not affected");
    drop(held.pop());
    server.wait_for("the close is seen", |s| s.open == 3);
    let (status, _, _s) = try_upgrade(connect_from("127.0.0.1", server.addr), "");
    assert_eq!(status, 101, "a closed connection gives its place back");
    assert_eq!(server.stats().handshake_failures_for("per_ip_connections"), 1);
    drop(other);
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_address_is_counted() {
    let server = start(|c| {
        c.per_ip.max_connections = 2;
        c.per_ip.trusted_proxies = vec![Cidr::parse("127.0.0.1").unwrap()];
    });
    let proxy = |xff: &str| {
        try_upgrade(
            connect_from("127.0.0.1", server.addr),
            &format!("X-Forwarded-For: {xff}\r\n"),
        )
    };
    let (a, _, _k1) = proxy("203.0.113.7");
    let (b, _, _k2) = proxy("198.51.100.1, 203.0.113.7");
    let (c, text, _) = proxy("203.0.113.7");
    assert_eq!((a, b, c), (101, 101, 429), "{text}");
    let (d, _, _k3) = proxy("203.0.113.8");
    assert_eq!(d, 101, "each forwarded client has its own count");
    // An untrusted peer's X-Forwarded-For is ignored: it is counted itself.
    let (e, _, _k4) = try_upgrade(
        connect_from("127.0.0.2", server.addr),
        "X-Forwarded-For: 203.0.113.7\r\n",
    );
    let (f, _, _k5) = try_upgrade(
        connect_from("127.0.0.2", server.addr),
        "X-Forwarded-For: 203.0.113.7\r\n",
    );
    let (g, _, _) = try_upgrade(connect_from("127.0.0.2", server.addr), "X-Forwarded-For: 10.9.9.9\r\n");
    assert_eq!((e, f, g), (101, 101, 429));
}

#[test]
fn handshakes_per_address_are_rate_limited() {
    let server = start(|c| c.per_ip.handshakes_per_sec = 5);
    let mut statuses = Vec::new();
    let mut held = Vec::new();
    for _ in 0..8 {
        let (status, _, s) = try_upgrade(connect_from("127.0.0.3", server.addr), "");
        statuses.push(status);
        held.push(s);
    }
    let allowed = statuses.iter().filter(|&&s| s == 101).count();
    // The burst is 5; a sixth may have been earned while the loop ran.
    assert!((5..=6).contains(&allowed), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let (status, _, _) = try_upgrade(connect_from("127.0.0.4", server.addr), "");
    assert_eq!(status, 101, "another address has its own bucket");
    std::thread::sleep(Duration::from_millis(450));
    let (status, _, _) = try_upgrade(connect_from("127.0.0.3", server.addr), "");
    assert_eq!(status, 101, "the bucket refills");
    assert!(server.stats().handshake_failures_for("per_ip_rate") >= 2);
}

#[test]
fn idle_sockets_filling_the_process_cannot_lock_out_a_newcomer() {
    // 50 upgrades + 16 refusal sockets per shard: 82 sockets of any phase.
    let server = start(|c| {
        c.shards = 2;
        c.max_connections = Some(50);
    });
    let idle: Vec<TcpStream> = (0..120).map(|_| connect(server.addr)).collect();
    server.wait_for("the idle sockets are accepted", |s| s.accepted >= 120);
    let took = fresh_client_is_served(server.addr);
    assert!(took < Duration::from_secs(3), "the fresh client waited {took:?}");
    let stats = server.stats();
    // Past the cap a shard evicts its oldest handshake, or closes the new
    // socket at once when the other shard holds them all (which of the two
    // depends on how the kernel spread the 120 over the shards).
    let refused = stats.handshake_failures_for("evicted") + stats.accept_overflow;
    assert!(refused >= 30, "{stats:?}");
    drop(idle);
}

#[test]
fn one_address_cannot_hold_more_handshakes_than_its_connection_limit() {
    let server = start(|c| {
        c.shards = 1;
        c.per_ip.max_connections = 5;
    });
    let idle: Vec<TcpStream> = (0..40).map(|_| connect_from("127.0.0.5", server.addr)).collect();
    server.wait_for("the idle sockets are judged", |s| s.accepted >= 40);
    assert!(server.stats().handshake_failures_for("per_ip_connections") >= 35);
    let (status, _, _s) = try_upgrade(connect_from("127.0.0.6", server.addr), "");
    assert_eq!(status, 101);
    drop(idle);
    // Their places come back: the address may connect again.
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Refused at accept (a reset) while the server still counts the old ones.
        let mut s = connect_from("127.0.0.5", server.addr);
        let _ = s.write_all(upgrade_request("/echo", "").as_bytes());
        let mut head = [0u8; 12];
        if s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 101") {
            break;
        }
        assert!(Instant::now() < deadline, "the address stayed locked out");
        std::thread::sleep(Duration::from_millis(100));
    }
}
