//! The process-wide memory budget (`--memory-limit`): clients piling up
//! partial messages or never-read backlogs are shed, largest first, counted
//! by reason, and the server's resident memory stays under the limit plus
//! the documented slack. The server runs as its own process so its RSS is
//! its own.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

const LIMIT_MIB: u64 = 32;
/// Fixed part and slack: code, threads, 16 pool buffers, allocator slack,
/// one tick of growth (docs/CONNECTION.md, "Memory budget").
const SLACK_MIB: u64 = 24;

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sum of a metric's series whose labels contain `label`.
fn metric(admin: SocketAddr, name: &str, label: &str) -> u64 {
    let (_, body) = http_get(admin, "/metrics");
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn spawn_server(extra: &[&str]) -> Process {
    let limit = format!("{LIMIT_MIB}MiB");
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--buffer-pool",
        "16",
        "--memory-limit",
        &limit,
    ];
    args.extend_from_slice(extra);
    Process::spawn(&args)
}

#[test]
fn partial_messages_past_the_budget_are_shed_and_rss_stays_bounded() {
    let server = spawn_server(&[]);
    let pid = server.child.id();
    let baseline = status_kib(pid, "VmRSS:");
    let fragment = client_frame(0x2, false, &vec![3u8; 900 * 1024], MASK);
    // Half upgrade first and then send (the budget must close some of them,
    // 1013), half upgrade while memory is short (503 near the limit).
    let mut held: Vec<Client> = (0..40).map(|_| open(server.addr, "/echo")).collect();
    for client in &mut held {
        // The server may close it while it writes: that is the point.
        let _ = client.stream.write_all(&fragment);
    }
    let mut refused = 0;
    for _ in 0..40 {
        let mut s = connect(server.addr);
        s.write_all(upgrade_request("/echo", "").as_bytes()).unwrap();
        let (status, _, rest) = read_response(&mut s);
        if status == 503 {
            refused += 1;
            continue;
        }
        assert_eq!(status, 101);
        let _ = s.write_all(&fragment);
        held.push(Client {
            stream: s,
            pending: rest,
        });
    }
    // Let the server read what it will and shed what it must (a tick or two).
    std::thread::sleep(Duration::from_millis(1500));
    let mut closed_1013 = 0;
    for client in &mut held {
        client.stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        if client.recv_close() == Some(1013) {
            closed_1013 += 1;
        }
    }
    let peak_mib = (status_kib(pid, "VmHWM:") - baseline) / 1024;
    let admin = server.admin.unwrap();
    let shed = metric(admin, "hubbub_memory_shed_total", "partial_input")
        + metric(admin, "hubbub_memory_shed_total", "upgrade_refused");
    println!("80 holders of 900 KiB: {closed_1013} closed 1013, {refused} refused 503, peak +{peak_mib} MiB");
    assert!(
        closed_1013 + refused >= 40,
        "80 x 900 KiB cannot fit in {LIMIT_MIB} MiB"
    );
    assert!(closed_1013 > 0 && refused > 0, "both policies acted");
    assert!(shed >= (closed_1013 + refused) as u64, "every shed is counted: {shed}");
    assert!(peak_mib <= LIMIT_MIB + SLACK_MIB, "peak RSS grew {peak_mib} MiB");
    let held_now = metric(admin, "hubbub_memory_bytes", "partial_input");
    assert!(held_now <= LIMIT_MIB << 20, "holds {held_now} bytes of partial input");
}

/// A member with a tiny receive window that never reads.
fn stalled_member(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(upgrade_request("/room/flood", "").as_bytes()).unwrap();
    assert_eq!(read_response(&mut stream).0, 101);
    stream
}

#[test]
fn never_read_backlogs_past_the_budget_are_shed_largest_first() {
    // The per-connection cap (8 MiB) is far above what the budget allows
    // for 20 members (32 MiB): the budget, not the cap, must act.
    let server = spawn_server(&["--max-backlog-bytes", "8388608"]);
    let stalled: Vec<TcpStream> = (0..20).map(|_| stalled_member(server.addr)).collect();
    let mut publisher = open(server.addr, "/room/flood");
    let reader = publisher.stream.try_clone().unwrap();
    // The publisher reads its own copies, so it is never a slow consumer.
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut sink = vec![0u8; 1 << 16];
        while std::io::Read::read(&mut reader, &mut sink).is_ok_and(|n| n > 0) {}
    });
    let admin = server.admin.unwrap();
    let chunk = vec![9u8; 64 * 1024];
    let deadline = Instant::now() + PATIENCE;
    let mut sent = 0;
    while metric(admin, "hubbub_memory_shed_total", "outgoing") < 10 {
        assert!(Instant::now() < deadline, "nothing shed after {sent} messages");
        for _ in 0..50 {
            publisher.send(0x2, true, &chunk);
            sent += 1;
        }
    }
    let outgoing = metric(admin, "hubbub_memory_bytes", "outgoing");
    println!("shed after {sent} messages of 64 KiB; outgoing now {outgoing} bytes");
    assert!(outgoing <= LIMIT_MIB << 20, "the budget bounds the backlogs");
    let mut closed = 0;
    for s in stalled {
        let mut member = Client {
            stream: s,
            pending: Vec::new(),
        };
        member.stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if member.recv_close() == Some(1008) {
            closed += 1;
        }
    }
    assert!(closed >= 10, "only {closed} members were told they were shed");
}

#[test]
fn history_past_the_budget_is_trimmed_oldest_first() {
    // 80 publications of 512 KiB kept (40 MiB of data) against 32 MiB:
    // history alone passes the limit and the oldest goes first.
    let server = spawn_server(&["--history-size", "1000", "--history-ttl-secs", "3600"]);
    let mut publisher = WsClient::open(server.addr, "");
    let data = "h".repeat(512 * 1024);
    for i in 0..80 {
        let reply = publisher.call("publish", serde_json::json!({"channel": "big", "data": data}));
        assert!(reply.get("result").is_some(), "publish {i} refused: {reply}");
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(300)); // a tick to shed in
        }
    }
    let admin = server.admin.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while metric(admin, "hubbub_memory_shed_total", "history") == 0 {
        assert!(Instant::now() < deadline, "history never trimmed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let kept = metric(admin, "hubbub_memory_bytes", "history");
    assert!(kept <= LIMIT_MIB << 20, "history holds {kept} bytes");
    let history = publisher.call("history", serde_json::json!({"channel": "big", "limit": 1000}));
    let offsets: Vec<u64> = history["result"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert!(
        !offsets.is_empty() && offsets.len() < 80,
        "kept {} of 80",
        offsets.len()
    );
    assert_eq!(*offsets.last().unwrap(), 80, "the newest stays, the oldest went");
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "what is kept has no gap");
}
