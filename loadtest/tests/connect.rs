//! `connect` against a real server: counts, failure reasons, memory figures.

mod common;

#[test]
fn opens_holds_pings_and_closes_every_connection() {
    let server = common::server(&[]);
    let url = server.url("/echo");
    let mut args = vec![
        "connect",
        "--url",
        &url,
        "-n",
        "300",
        "--rate",
        "3000",
        "--hold-secs",
        "1",
        "--ping-secs",
        "0.4",
    ];
    let pid = server.pid.map(|p| p.to_string());
    if let Some(pid) = &pid {
        args.extend(["--server-pid", pid]);
    }
    let run = common::load(&args);
    assert_eq!(run.code(), 0, "{}", run.stdout());
    assert_eq!(
        (run.count("attempts"), run.count("opened"), run.count("failed")),
        (300, 300, 0)
    );
    assert_eq!(run.count("closed"), 300, "every close handshake answered");
    assert_eq!(run.count("dropped"), 0);
    let pings = run.count("pings");
    assert!(pings >= 600, "two ping rounds over 300 connections: {pings}");
    assert_eq!(run.count("pongs"), pings, "loopback loses no pong");
    assert_eq!(run.report["latency"]["handshake"]["count"], 300);
    let connect_secs = run.report["connect_secs"].as_f64().unwrap();
    assert!(
        (0.09..2.0).contains(&connect_secs),
        "300 at 3000/s take about 0.1 s: {connect_secs}"
    );
    if pid.is_some() {
        let per_conn = run.report["memory"]["server_rss_per_conn_bytes"].as_f64().unwrap();
        assert!(
            per_conn.abs() < 1_000_000.0,
            "a server RSS delta per connection is reported: {per_conn}"
        );
    }
}

#[test]
fn failures_are_counted_by_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = format!("ws://127.0.0.1:{port}/echo");
    let run = common::load(&["connect", "--url", &refused, "-n", "20", "--hold-secs", "0"]);
    assert_eq!(run.report["failures"]["refused"], 20, "{}", run.report["failures"]);
    assert_eq!(run.count("opened"), 0);
    assert_eq!(
        (run.code(), &run.report["passed"]),
        (1, &serde_json::Value::Bool(false))
    );

    let server = common::fixture();
    let url = server.url("/no-such-path");
    let run = common::load(&[
        "connect",
        "--url",
        &url,
        "-n",
        "10",
        "--hold-secs",
        "0",
        "--max-error-rate",
        "0.5",
    ]);
    assert_eq!(run.report["failures"]["http_404"], 10, "{}", run.report["failures"]);
    assert_eq!(run.code(), 1, "nothing worked: 1, before any threshold");
    assert_eq!(run.report["reasons"][0], "no connection was established (http_404 10)");
}

#[test]
fn handshake_timeout_is_a_timeout() {
    // A listener that never answers the upgrade: TCP connects (backlog), HTTP never comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/echo", listener.local_addr().unwrap());
    let run = common::load(&[
        "connect",
        "--url",
        &url,
        "-n",
        "5",
        "--hold-secs",
        "0",
        "--handshake-timeout-secs",
        "0.5",
    ]);
    assert_eq!(run.report["failures"]["timeout"], 5, "{}", run.report["failures"]);
    drop(listener);
}

#[test]
fn source_ips_spread_connections_over_addresses() {
    let server = common::server(&[]);
    let url = server.url("/echo");
    let run = common::load(&[
        "connect",
        "--url",
        &url,
        "-n",
        "30",
        "--hold-secs",
        "0",
        "--source-ips",
        "127.0.0.2-127.0.0.4",
    ]);
    assert_eq!(
        (run.count("opened"), run.count("failed")),
        (30, 0),
        "{}",
        run.report["failures"]
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub-load"))
        .args([
            "connect",
            "--url",
            &url,
            "-n",
            "1",
            "--source-ips",
            "127.0.0.9-127.0.0.1",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--source-ips"));
}
