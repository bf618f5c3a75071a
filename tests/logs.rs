//! What the binary tells its operator, read from its real stdout and JSON
//! logs: the endpoints at start, addresses without Rust debug formatting, a
//! drain's summary (connections closed, time taken), and one cluster
//! link-down warning per Redis outage, none at a normal stop.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A log file in the temp directory, removed when dropped.
struct LogFile(PathBuf);

impl LogFile {
    fn new(name: &str) -> LogFile {
        LogFile(std::env::temp_dir().join(format!("hubbub-{name}-{}.log", std::process::id())))
    }

    fn create(&self) -> std::fs::File {
        std::fs::File::create(&self.0).unwrap()
    }

    /// Every JSON log line written so far.
    fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    fn messages(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter_map(|e| e["fields"]["message"].as_str().map(String::from))
            .collect()
    }

    /// Waits until a message containing `what` has been logged `count` times.
    fn wait_for(&self, what: &str, count: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.messages().iter().filter(|m| m.contains(what)).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {count} x {what:?} in {:?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn start_prints_the_endpoints_and_a_drain_logs_what_it_closed() {
    let log = LogFile::new("drain");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--shards",
            "2",
        ])
        .args(["--drain-secs", "3", "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(log.create())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    let addr: SocketAddr = next()
        .strip_prefix("hubbub listening on ws://")
        .unwrap()
        .parse()
        .unwrap();
    let admin: SocketAddr = next().strip_prefix("hubbub admin on http://").unwrap().parse().unwrap();
    let endpoints = next();
    assert_eq!(
        endpoints,
        format!("hubbub endpoints: ws://{addr}/echo ws://{addr}/room/{{name}} ws://{addr}/ws")
    );
    log.wait_for("listening", 1);
    let listening = log
        .events()
        .into_iter()
        .find(|e| e["fields"]["message"] == "listening")
        .unwrap();
    assert_eq!(listening["fields"]["admin"], admin.to_string(), "{listening}");
    assert_eq!(listening["fields"]["addr"], addr.to_string(), "{listening}");
    assert!(
        listening["fields"]["endpoints"]
            .as_str()
            .unwrap()
            .contains("/room/{name}"),
        "{listening}"
    );

    let clients: Vec<Client> = (0..3).map(|_| open(addr, "/echo")).collect();
    wait_open(admin, 3);
    // SAFETY: signalling the child this test spawned, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for mut client in clients {
        assert_eq!(client.recv_close(), Some(1001));
        client.send(0x8, true, &1001u16.to_be_bytes());
        // Dropped: our FIN ends the server's linger at once.
    }
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status}");
    let drained = log
        .events()
        .into_iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("drained"))
        })
        .unwrap_or_else(|| panic!("no drain summary in {:?}", log.messages()));
    let fields = &drained["fields"];
    assert_eq!(fields["closed"], 3, "{drained}");
    assert_eq!(fields["open_at_start"], 3, "{drained}");
    assert_eq!(fields["still_open_at_the_end"], 0, "{drained}");
    assert!(fields["took_ms"].as_u64().unwrap() < 3000, "{drained}");
}

/// Waits until the published gauges (once per tick) count `n` connections.
fn wait_open(admin: SocketAddr, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, metrics) = http_get(admin, "/metrics");
        let open: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("hubbub_connections_open{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if open as u64 == n {
            return;
        }
        assert!(Instant::now() < deadline, "{open} connections open, not {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_link_down_warning_per_outage_and_none_at_a_normal_stop() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(redis) = common::redis::Redis::start_on(port) else {
        return;
    };
    let log = LogFile::new("cluster");
    let url = format!("redis://127.0.0.1:{port}");
    let mut node = Process::spawn_with_stderr(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--shards",
            "2",
            "--redis",
            &url,
            "--node-id",
            "logs-a",
            "--drain-secs",
            "1",
            "--log-format",
            "json",
        ],
        log.create(),
    );
    log.wait_for("cluster link up", 1);
    drop(redis);
    log.wait_for("cluster link down", 1);
    // Both Redis connections notice the outage and keep retrying meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    let _redis = common::redis::Redis::start_on(port).unwrap();
    log.wait_for("cluster link up", 2);
    node.signal(libc::SIGTERM);
    let status = node.wait_exit(PATIENCE).expect("the node exits");
    assert!(status.success(), "{status}");
    let messages = log.messages();
    let down = messages.iter().filter(|m| m.contains("cluster link down")).count();
    assert_eq!(down, 1, "{messages:#?}");
    let events = log.events();
    let stopping: Vec<&Value> = events
        .iter()
        .filter(|e| e["fields"]["error"].as_str().is_some_and(|m| m.contains("stopping")))
        .collect();
    assert!(stopping.is_empty(), "{stopping:#?}");
}
