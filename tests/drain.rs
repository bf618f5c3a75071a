//! Graceful drain: Close 1001 with a reconnect hint, spread over the window,
//! readiness 503 meanwhile, exit when the last connection is gone.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn drain_spreads_close_frames_over_the_window() {
    // A 9 s window spreads the closes over 4 s.
    let server = start(|c| {
        c.shards = 1;
        c.drain = Duration::from_secs(9);
    });
    let clients: Vec<Client> = (0..40).map(|_| open(server.addr, "/echo")).collect();
    server.wait_for("all open", |s| s.open == 40);
    let begun = Instant::now();
    let stopper = std::thread::spawn(move || server.stop());
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            std::thread::spawn(move || {
                let frame = loop {
                    let frame = client.recv().expect("a close frame");
                    if frame.opcode == 0x8 {
                        break frame;
                    }
                };
                let at = begun.elapsed();
                client.send(0x8, true, b"\x03\xe9");
                (at, frame)
            })
        })
        .collect();
    let mut times = Vec::new();
    for reader in readers {
        let (at, frame) = reader.join().unwrap();
        assert_eq!(frame.close_code(), Some(1001));
        let reason = String::from_utf8_lossy(&frame.payload[2..]).into_owned();
        assert!(reason.starts_with("server restarting; reconnect in "), "{reason}");
        times.push(at);
    }
    times.sort();
    let (first, last) = (times[0], times[times.len() - 1]);
    assert!(
        last - first >= Duration::from_millis(2500),
        "closes not spread: {times:?}"
    );
    assert!(last <= Duration::from_millis(5000), "spread past its end: {times:?}");
    let in_first_second = times.iter().filter(|t| **t < first + Duration::from_secs(1)).count();
    assert!(in_first_second <= 20, "too many at once: {times:?}");
    stopper.join().unwrap().unwrap();
}

#[test]
fn sigusr2_drains_with_readiness_503_and_exits_zero() {
    let mut server = Process::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--drain-secs",
        "10",
    ]);
    let admin = server.admin.unwrap();
    assert_eq!(http_get(admin, "/readyz").0, 200);
    let mut client = open(server.addr, "/echo");
    server.signal(libc::SIGUSR2);
    assert_eq!(client.recv_close(), Some(1001));
    assert_eq!(http_get(admin, "/readyz"), (503, "draining\n".into()));
    assert_eq!(http_get(admin, "/healthz").0, 200);
    client.send(0x8, true, b"\x03\xe9");
    let status = server
        .wait_exit(PATIENCE)
        .expect("exits once the last connection is gone");
    assert!(status.success(), "{status}");
}

#[test]
fn drain_with_a_silent_client_ends_with_the_window() {
    let mut server = Process::spawn(&["--listen", "127.0.0.1:0", "--admin-listen", "off", "--drain-secs", "2"]);
    let mut client = open(server.addr, "/echo");
    let begun = Instant::now();
    server.signal(libc::SIGTERM);
    assert_eq!(client.recv_close(), Some(1001));
    // The client never answers: the window (2 s) ends the process.
    let status = server.wait_exit(PATIENCE).expect("exits at the end of the window");
    assert!(status.success(), "{status}");
    assert!(begun.elapsed() >= Duration::from_millis(1900));
}

#[test]
fn second_signal_exits_at_once() {
    let mut server = Process::spawn(&["--listen", "127.0.0.1:0", "--admin-listen", "off", "--drain-secs", "30"]);
    let mut client = open(server.addr, "/echo");
    server.signal(libc::SIGTERM);
    assert_eq!(client.recv_close(), Some(1001));
    let begun = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(PATIENCE).expect("exits at once");
    assert!(!status.success());
    assert!(begun.elapsed() < Duration::from_secs(2));
}
