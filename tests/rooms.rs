//! `/room/{name}`: every message a member sends reaches every member on every
//! shard, the sender included, in one order for all.

mod common;

use std::time::Duration;

use common::*;

/// Opens `n` members of `room` and waits until both shards hold some, so
/// delivery really crosses shards.
fn members_on_both_shards(server: &TestServer, room: &str, n: usize) -> Vec<Client> {
    let clients: Vec<Client> = (0..n).map(|_| open(server.addr, &format!("/room/{room}"))).collect();
    server.wait_for("all upgraded", |s| s.open == n as u64);
    let per_shard: Vec<u64> = server.shard_stats().iter().map(|s| s.open).collect();
    assert!(
        per_shard.iter().all(|&o| o > 0),
        "SO_REUSEPORT put every member on one shard: {per_shard:?}"
    );
    clients
}

#[test]
fn every_member_gets_every_message_including_the_sender() {
    let server = start(|c| {
        c.shards = 2;
        unlimited_rates(c);
    });
    let mut members = members_on_both_shards(&server, "lobby", 16);
    members[3].send_text("hello room");
    members[9].send(0x2, true, &[1, 2, 3]);
    // The two senders race (they may sit on different shards), so either may
    // come first, but every member sees the same order, opcodes intact.
    let mut first_order = None;
    for member in &mut members {
        let got: Vec<(u8, Vec<u8>)> = (0..2)
            .map(|_| member.recv().map(|f| (f.opcode, f.payload)).unwrap())
            .collect();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, vec![(0x1, b"hello room".to_vec()), (0x2, vec![1, 2, 3])]);
        assert_eq!(
            first_order.get_or_insert_with(|| got.clone()),
            &got,
            "same order for everyone"
        );
    }
}

#[test]
fn publishers_on_different_shards_are_seen_in_one_order_by_all() {
    let server = start(|c| {
        c.shards = 2;
        unlimited_rates(c);
    });
    let mut members = members_on_both_shards(&server, "ordered", 12);
    const PER_PUBLISHER: usize = 300;
    let publishers = [0usize, 1, 2, 3];
    // Interleave the publishers' sends so their messages race across shards.
    for i in 0..PER_PUBLISHER {
        for &p in &publishers {
            members[p].send_text(&format!("p{p}-{i}"));
        }
    }
    let total = PER_PUBLISHER * publishers.len();
    let mut orders = Vec::new();
    for member in &mut members {
        let seen: Vec<Vec<u8>> = (0..total).map(|_| member.recv().expect("delivery").payload).collect();
        orders.push(seen);
    }
    for (i, order) in orders.iter().enumerate() {
        assert_eq!(order, &orders[0], "member {i} saw another order");
    }
    // Each publisher's own messages keep their send order.
    for &p in &publishers {
        let mine: Vec<&Vec<u8>> = orders[0]
            .iter()
            .filter(|m| m.starts_with(format!("p{p}-").as_bytes()))
            .collect();
        let expected: Vec<Vec<u8>> = (0..PER_PUBLISHER).map(|i| format!("p{p}-{i}").into_bytes()).collect();
        assert_eq!(mine.len(), PER_PUBLISHER);
        assert!(
            mine.iter().zip(&expected).all(|(a, b)| *a == b),
            "publisher {p} reordered"
        );
    }
    assert_eq!(server.stats().inbox_drops, 0);
}

#[test]
fn rooms_are_isolated() {
    let server = start(|c| {
        c.shards = 2;
        unlimited_rates(c);
    });
    let mut red = open(server.addr, "/room/red");
    let mut blue = open(server.addr, "/room/blue");
    red.send_text("for red");
    blue.send_text("for blue");
    assert_eq!(red.recv().unwrap().payload, b"for red");
    assert_eq!(blue.recv().unwrap().payload, b"for blue");
    red.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(red.recv().is_none(), "red got nothing else");
}

#[test]
fn members_that_leave_stop_receiving_and_the_rest_carry_on() {
    let server = start(|c| {
        c.shards = 2;
        unlimited_rates(c);
    });
    let mut members = members_on_both_shards(&server, "churn", 8);
    for mut gone in members.drain(4..) {
        gone.send(0x8, true, b"\x03\xe8");
        assert_eq!(gone.recv_close(), Some(1000));
    }
    server.wait_for("leavers gone", |s| s.open == 4);
    members[0].send_text("after the leave");
    for member in &mut members {
        assert_eq!(member.recv().unwrap().payload, b"after the leave");
    }
}

#[test]
fn bad_room_names_are_refused_with_400() {
    let server = start(|_| {});
    let mut stream = connect(server.addr);
    std::io::Write::write_all(&mut stream, upgrade_request("/room/bad%20name", "").as_bytes()).unwrap();
    let (status, _, body) = read_response(&mut stream);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("character outside"));
}

#[test]
fn a_slow_member_is_cut_off_while_the_room_keeps_flowing() {
    let server = start(|c| {
        unlimited_rates(c);
        c.shards = 2;
        c.max_backlog_bytes = 128 * 1024;
    });
    // The stalled member reads nothing and has a tiny receive window.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stalled: std::net::TcpStream = socket.into();
    std::io::Write::write_all(&mut stalled, upgrade_request("/room/busy", "").as_bytes()).unwrap();
    stalled.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(read_response(&mut stalled).0, 101);
    let mut publisher = open(server.addr, "/room/busy");
    let mut listener = open(server.addr, "/room/busy");
    let chunk = vec![b'x'; 8 * 1024];
    // Bounded by time: the counters are published once per 250 ms tick,
    // so the loop may run on a little after the cut.
    let deadline = std::time::Instant::now() + PATIENCE;
    while server.stats().slow_consumers == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled member was never cut off"
        );
        publisher.send(0x2, true, &chunk);
        // Everyone who reads keeps getting every message.
        assert_eq!(listener.recv().unwrap().payload.len(), chunk.len());
        assert_eq!(publisher.recv().unwrap().payload.len(), chunk.len());
    }
    publisher.send_text("still flowing");
    assert_eq!(listener.recv().unwrap().payload, b"still flowing");
    // Wait on the disconnect itself: per-shard snapshots are published once
    // per tick, so a sum of open counts can be stale on one shard.
    server.wait_for("the slow member removed", |s| {
        s.disconnects_for(hubbub::conn::Disconnect::SlowConsumer) == 1
    });
    server.wait_for("two members left", |s| s.open == 2);
}

#[test]
fn room_deliveries_feed_the_publish_to_deliver_histogram() {
    let server = start(|c| {
        c.shards = 2;
        unlimited_rates(c);
    });
    let mut members = members_on_both_shards(&server, "timed", 8);
    for member in members.iter_mut().take(5) {
        member.send_text("tick");
    }
    for member in &mut members {
        for _ in 0..5 {
            assert_eq!(member.recv().unwrap().payload, b"tick");
        }
    }
    // Each shard records once per message it delivers: 5 messages x 2 shards.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, body) = http_get(server.admin_addr(), "/metrics");
        let count: f64 = body
            .lines()
            .filter(|l| l.starts_with("hubbub_publish_to_deliver_seconds_count"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if count >= 10.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "histogram count {count}:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
