//! A client that never reads: its backlog hits the cap and it is closed as a
//! slow consumer, while another client on the same shard keeps getting its
//! echoes on time.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use hubbub::conn::Disconnect;

/// A connection with a tiny receive buffer, so its backlog builds up in the
/// server rather than in the kernel.
fn connect_small_window(addr: std::net::SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

#[test]
fn non_reading_client_is_closed_while_its_neighbour_keeps_flowing() {
    let server = start(|c| {
        c.shards = 1;
        c.max_backlog_bytes = 256 * 1024;
    });
    let mut stalled = connect_small_window(server.addr);
    stalled.write_all(upgrade_request("/echo", "").as_bytes()).unwrap();
    assert_eq!(read_response(&mut stalled).0, 101);

    let mut neighbour = open(server.addr, "/echo");
    let flood = std::thread::spawn(move || {
        // Echoes it will never read, until the server cuts it off (after
        // Close 1008 it drops the socket at the close timeout).
        let frame = client_frame(0x2, true, &[0x5a; 16 * 1024], MASK);
        stalled.set_write_timeout(Some(PATIENCE)).unwrap();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if stalled.write_all(&frame).is_err() {
                return true;
            }
        }
        false
    });

    let mut slowest = Duration::ZERO;
    let deadline = Instant::now() + PATIENCE;
    while server.stats().slow_consumers == 0 {
        assert!(Instant::now() < deadline, "the stalled client was never cut off");
        let sent = Instant::now();
        neighbour.send_text("ping-pong");
        assert_eq!(neighbour.recv().unwrap().payload, b"ping-pong");
        slowest = slowest.max(sent.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    // Liveness, not performance: a starved neighbour would take seconds.
    assert!(
        slowest < Duration::from_secs(1),
        "neighbour waited {slowest:?} for an echo"
    );
    let stats = server.wait_for("the slow consumer is gone", |s| s.open == 1);
    assert_eq!(stats.disconnects_for(Disconnect::SlowConsumer), 1);
    assert!(flood.join().unwrap(), "the flooding client saw its connection end");
    neighbour.send_text("after");
    assert_eq!(neighbour.recv().unwrap().payload, b"after");
}

#[test]
fn one_message_larger_than_the_cap_still_reaches_a_reading_client() {
    let server = start(|c| c.max_backlog_bytes = 64 * 1024);
    let mut client = open(server.addr, "/echo");
    let big = vec![b'x'; 512 * 1024];
    client.send(0x2, true, &big);
    assert_eq!(client.recv().unwrap().payload, big);
    assert_eq!(server.stats().slow_consumers, 0);
}
