//! `echo` against a real server: every echo verified, figures that make sense.

mod common;

#[test]
fn closed_loop_echo_verifies_every_message() {
    let server = common::server(&[]);
    let url = server.url("/echo");
    let run = common::load(&[
        "echo",
        "--url",
        &url,
        "-c",
        "20",
        "--pipeline",
        "4",
        "-d",
        "1",
        "--messages",
        "4000",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stdout());
    assert_eq!(run.count("opened"), 20);
    let sent = run.count("sent");
    assert!((4000..4000 + 20 * 4).contains(&sent), "stops at the count: {sent}");
    assert_eq!(
        run.count("received"),
        sent,
        "every message echoed on loopback ({})",
        server.kind
    );
    assert_eq!(run.count("verify_errors"), 0);
    assert_eq!(run.count("unanswered"), 0);
    assert_eq!(run.count("closed"), 20, "clean close handshakes");
    assert!(run.latency("rtt", "p50_ms") > 0.0);
    assert!(run.latency("rtt", "p50_ms") <= run.latency("rtt", "p99_ms"));
}

#[test]
fn open_loop_echo_keeps_the_schedule_in_binary() {
    let server = common::server(&[]);
    let url = server.url("/echo");
    let run = common::load(&[
        "echo", "--url", &url, "-c", "10", "--rate", "500", "-d", "1", "--binary", "-s", "200",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stdout());
    let sent = run.count("sent");
    assert!((450..=510).contains(&sent), "500/s for 1 s: {sent}");
    assert_eq!(run.count("received"), sent);
    assert_eq!(run.count("verify_errors"), 0);
    assert_eq!(run.count("bytes_received"), sent * 200);
}

#[test]
fn latency_of_a_known_delay_is_measured() {
    let server = common::fixture();
    let url = server.url("/echo?delay_ms=20");
    let run = common::load(&["echo", "--url", &url, "-c", "4", "--rate", "100", "-d", "1"]);
    assert_eq!(run.count("verify_errors"), 0);
    let (p50, max) = (run.latency("rtt", "p50_ms"), run.latency("rtt", "max_ms"));
    // The median must read the delay (not 0, not two delays); the bounds
    // leave room for a CI box running other tests on the same two cores.
    assert!((20.0..30.0).contains(&p50), "20 ms server delay, p50 {p50}");
    assert!(max < 250.0, "max {max}");
}

#[test]
fn a_missed_latency_threshold_exits_2() {
    let server = common::fixture();
    let url = server.url("/echo?delay_ms=10");
    let run = common::load(&[
        "echo",
        "--url",
        &url,
        "-c",
        "2",
        "--rate",
        "50",
        "-d",
        "0.5",
        "--max-p99-ms",
        "5",
    ]);
    assert_eq!(run.code(), 2, "{}", run.stdout());
    assert_eq!(run.report["passed"], false);
    let ok = common::load(&[
        "echo",
        "--url",
        &url,
        "-c",
        "2",
        "--rate",
        "50",
        "-d",
        "0.5",
        "--max-p99-ms",
        "500",
        "--max-error-rate",
        "0",
    ]);
    assert_eq!(ok.code(), 0, "{}", ok.stdout());
}
