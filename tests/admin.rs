//! The admin port: Prometheus metrics, liveness and readiness probes.

mod common;

use common::*;
use hubbub::metrics::names;

#[test]
fn metrics_lists_every_described_metric_with_its_help() {
    let server = start(|_| {});
    // Histograms appear once they have observations; cluster metrics only in
    // cluster mode (tests/cluster.rs reads them).
    let expected: Vec<&str> = names::ALL
        .iter()
        .map(|d| d.name)
        .filter(|&n| n != names::DELIVERY_LATENCY_SECONDS && n != names::LOOP_TURN_SECONDS)
        .filter(|n| !n.starts_with("hubbub_cluster_"))
        .collect();
    // The shards publish their series as they start, which may be just after
    // `start` returns: look again until every series is there or time is up.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = http_get(server.admin_addr(), "/metrics");
        assert_eq!(status, 200);
        let missing: Vec<&&str> = expected
            .iter()
            .filter(|n| !body.contains(&format!("# HELP {n} ")))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no HELP for {missing:?}:\n{body}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn metrics_count_connections_and_messages_per_shard() {
    let server = start(|c| c.shards = 1);
    let mut client = open(server.addr, "/echo");
    client.send_text("hello");
    assert_eq!(client.recv().unwrap().payload, b"hello");
    server.wait_for("a message counted", |s| s.messages_in == 1 && s.open == 1);
    // One more tick so the flush after the stats above reached the handles.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (_, body) = http_get(server.admin_addr(), "/metrics");
    for line in [
        "hubbub_connections_open{shard=\"0\"} 1",
        "hubbub_messages_in_total{shard=\"0\"} 1",
        "hubbub_connections_upgraded_total{shard=\"0\"} 1",
        "hubbub_buffer_pool_capacity{shard=\"0\"} 512",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line}:\n{body}");
    }
    assert!(
        body.contains("hubbub_loop_turn_seconds_bucket{shard=\"0\",le=\"0.001\"}"),
        "{body}"
    );
    assert!(body.contains("hubbub_build_info{version=\""), "{body}");
    assert!(body.contains("hubbub_process_resident_memory_bytes "), "{body}");
}

#[test]
fn healthz_is_ok_and_unknown_paths_are_404() {
    let server = start(|_| {});
    assert_eq!(http_get(server.admin_addr(), "/healthz"), (200, "ok\n".into()));
    assert_eq!(http_get(server.admin_addr(), "/nope").0, 404);
}

#[test]
fn readyz_turns_503_when_a_drain_starts() {
    let server = start(|c| c.drain = std::time::Duration::from_secs(10));
    assert_eq!(http_get(server.admin_addr(), "/readyz"), (200, "ready\n".into()));
    let mut client = open(server.addr, "/echo");
    let admin = server.admin_addr();
    let stopper = std::thread::spawn(move || server.stop());
    assert_eq!(client.recv_close(), Some(1001));
    // The server is still up (the admin port answers until the shards exit).
    assert_eq!(http_get(admin, "/readyz"), (503, "draining\n".into()));
    client.send(0x8, true, b"\x03\xe9");
    stopper.join().unwrap().unwrap();
}

#[test]
fn readme_documents_every_metric() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for d in names::ALL {
        assert!(
            readme.contains(&format!("`{}`", d.name)),
            "README.md lacks `{}`",
            d.name
        );
    }
}
