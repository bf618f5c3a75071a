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
        // These tests flood and keep history on purpose: the budget, not the
        // per-connection rates or the per-channel history bound, must act.
        "--max-messages-per-sec",
        "1000000000",
        "--max-bytes-per-sec",
        "1TiB",
        "--history-max-bytes",
        "1TiB",
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

/// A connection to `path` with a tiny receive window that never reads.
fn stalled(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(upgrade_request(path, "").as_bytes()).unwrap();
    assert_eq!(read_response(&mut stream).0, 101);
    stream
}

fn stalled_member(addr: SocketAddr) -> TcpStream {
    stalled(addr, "/room/flood")
}

#[test]
fn never_read_backlogs_past_the_budget_are_shed_largest_first() {
    // 12 echo clients that never read, each asking for 16 MiB of echoes
    // (the kernel's socket buffers take a few MiB of each, the rest is
    // distinct backlog in the server); the per-connection cap (64 MiB) is far
    // above what the 32 MiB budget allows: the budget, not the cap, must act.
    let server = spawn_server(&["--max-backlog-bytes", "67108864"]);
    let pid = server.child.id();
    let baseline = status_kib(pid, "VmRSS:");
    let message = client_frame(0x2, true, &vec![9u8; 64 * 1024], MASK);
    let clients: Vec<TcpStream> = (0..12).map(|_| stalled(server.addr, "/echo")).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = clients
        .into_iter()
        .map(|mut s| {
            let (message, stop) = (message.clone(), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                s.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
                for _ in 0..256 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(&message).is_err() {
                        break; // enough, or the server stopped reading it: shed
                    }
                }
                s
            })
        })
        .collect();
    let admin = server.admin.unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut shed = 0;
    while shed < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        shed = metric(admin, "hubbub_memory_shed_total", "outgoing");
    }
    // Read what the shed clients were sent while the server still waits for
    // their answer (it closes TCP 3 s after its Close).
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let stalled: Vec<TcpStream> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let peak_mib = (status_kib(pid, "VmHWM:") - baseline) / 1024;
    println!("12 never-readers of 16 MiB of echoes: {shed} shed, peak +{peak_mib} MiB");
    assert!(shed >= 5, "their backlogs cannot fit in {LIMIT_MIB} MiB: {shed} shed");
    assert!(peak_mib <= LIMIT_MIB + SLACK_MIB, "peak RSS grew {peak_mib} MiB");
    // The server gives a shed client 3 s to answer its Close before it drops
    // the socket (then the client sees a reset, its unread data lost): read
    // them all at once, not one after another (a client that was not shed
    // holds its reader for the whole timeout). On a loaded box some are read
    // too late, so the count of closes is the server's, and here at least
    // one client must read a well-framed 1008.
    let readers: Vec<_> = stalled
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                let mut member = Client {
                    stream: s,
                    pending: Vec::new(),
                };
                member.stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                member.recv_close() == Some(1008)
            })
        })
        .collect();
    let closed = readers
        .into_iter()
        .filter_map(|r| r.join().ok())
        .filter(|&read| read)
        .count();
    assert!(closed >= 1, "no shed client read its Close 1008");
}

#[test]
fn history_past_the_budget_is_trimmed_oldest_first() {
    // 80 publications of 512 KiB kept (40 MiB of data) against 32 MiB:
    // history alone passes the limit and the oldest goes first.
    // One reply holds all of history here (the test reads it whole).
    let server = spawn_server(&[
        "--history-size",
        "1000",
        "--history-ttl-secs",
        "3600",
        "--max-backlog-bytes",
        "64MiB",
        "--max-reply-bytes",
        "64MiB",
    ]);
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

#[test]
fn a_large_broadcast_is_charged_once_not_once_per_member() {
    // 60 stalled members and 18 publishes of 256 KiB: 4.5 MiB of frames,
    // 270 MiB if each member's copy were counted. The budget must not shed.
    let server = spawn_server(&["--max-backlog-bytes", "8388608"]);
    let stalled: Vec<TcpStream> = (0..60).map(|_| stalled_member(server.addr)).collect();
    let mut publisher = open(server.addr, "/room/flood");
    let reader = publisher.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut sink = vec![0u8; 1 << 16];
        while std::io::Read::read(&mut reader, &mut sink).is_ok_and(|n| n > 0) {}
    });
    for _ in 0..18 {
        publisher.send(0x2, true, &vec![5u8; 256 * 1024]);
    }
    let admin = server.admin.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while metric(admin, "hubbub_messages_out_total", "shard") < 18 * 61 {
        assert!(Instant::now() < deadline, "the deliveries were not queued");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(600)); // two ticks to shed in, if it would
    let outgoing = metric(admin, "hubbub_memory_bytes", "outgoing");
    assert!(outgoing < 8 << 20, "charged {outgoing} bytes for 4.5 MiB of frames");
    assert_eq!(metric(admin, "hubbub_memory_shed_total", "outgoing"), 0);
    assert_eq!(metric(admin, "hubbub_disconnects_total", "memory_shed"), 0);
    drop(stalled);
}

#[test]
fn holders_between_the_refusal_mark_and_the_limit_make_room_for_newcomers() {
    // Partial messages fill the budget to between 90% (upgrades refused) and
    // 100% (where the plain shed starts): newcomers must not wait for the
    // holders' 30 s message deadline.
    let server = spawn_server(&[]);
    let fragment = client_frame(0x2, false, &vec![3u8; 900 * 1024], MASK);
    let mut held: Vec<Client> = (0..36).map(|_| open(server.addr, "/echo")).collect();
    for client in &mut held {
        let _ = client.stream.write_all(&fragment);
    }
    std::thread::sleep(Duration::from_millis(600));
    let started = Instant::now();
    let mut refused = 0;
    loop {
        let mut s = connect(server.addr);
        s.write_all(upgrade_request("/echo", "").as_bytes()).unwrap();
        match read_response(&mut s).0 {
            101 => break,
            503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "newcomers refused for 5 s ({refused} tries)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let admin = server.admin.unwrap();
    println!("a newcomer got in after {:?} and {refused} refusals", started.elapsed());
    assert!(metric(admin, "hubbub_memory_shed_total", "partial_input") > 0);
}
