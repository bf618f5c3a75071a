//! The accept path: listeners defer accepts until the request arrives
//! (`TCP_DEFER_ACCEPT`, net/listener.rs) and the shard reads it right away.
//! A client that pauses before its request is still served, and one that
//! never sends is still closed, after the kernel's defer period plus the
//! handshake timeout.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use hubbub::net::listener::DEFER_ACCEPT_SECS;

#[test]
fn a_request_sent_after_a_pause_is_served() {
    let server = start(|_| {});
    let mut stream = connect(server.addr);
    std::thread::sleep(Duration::from_millis(1500));
    stream.write_all(upgrade_request("/echo", "").as_bytes()).unwrap();
    let (status, _, rest) = read_response(&mut stream);
    assert_eq!(status, 101);
    let mut client = Client { stream, pending: rest };
    client.send_text("after a pause");
    assert_eq!(client.recv().unwrap().payload, b"after a pause");
}

#[test]
fn a_request_in_two_pieces_a_second_apart_is_served() {
    let server = start(|_| {});
    let mut stream = connect(server.addr);
    let request = upgrade_request("/echo", "");
    let (head, tail) = request.as_bytes().split_at(20);
    stream.write_all(head).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    stream.write_all(tail).unwrap();
    let (status, _, _) = read_response(&mut stream);
    assert_eq!(status, 101);
}

#[cfg(target_os = "linux")]
#[test]
fn a_client_that_never_sends_is_closed_after_the_defer_period_and_the_handshake_timeout() {
    let server = start(|c| c.handshake_timeout = Duration::from_secs(1));
    let mut stream = connect(server.addr);
    // The kernel rounds the defer period up to its SYN-ACK schedule (7 s for 5).
    let limit = Duration::from_secs(u64::from(DEFER_ACCEPT_SECS) * 2 + 5);
    stream.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();

    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        server.stats().accepted,
        0,
        "a silent client is not handed to a shard at once"
    );

    let bytes = read_to_close(&mut stream);
    let waited = started.elapsed();
    assert!(bytes.is_empty(), "a silent client gets no response: {bytes:?}");
    assert!(
        waited >= Duration::from_secs(u64::from(DEFER_ACCEPT_SECS)) && waited < limit,
        "closed after {waited:?}"
    );
    server.wait_for("the timeout counted", |s| {
        s.accepted == 1 && s.handshake_failures_for("timeout") == 1
    });
}
