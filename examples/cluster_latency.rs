//! Publish-to-deliver latency of `/ws` channels between two nodes (or
//! within one): publishers on `--pub`, subscribers on `--sub`, open loop at
//! `--rate` messages/s, every publication stamped with its send time.
//! Both ends on this box, so one clock. See docs/CLUSTER.md for the runs.
//!
//! cargo run --release --example cluster_latency -- --pub 127.0.0.1:8081 \
//!     --sub 127.0.0.1:8082 --subscribers 10 --rate 10000 --secs 10
//!
//! With `--redis-tap redis://HOST:PORT` it also listens to the channel's
//! Redis Pub/Sub key itself and prints a second line: publish to the moment
//! Redis pushed the publication (the publishing node's half of the path);
//! the rest of the end-to-end figure is the subscribing node's half.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hubbub::ws::codec::client_frame;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].clone())
        .unwrap_or_else(|| default.to_string())
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Upgrades a connection to `/ws`; returns it with any bytes after the head.
fn open(addr: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    let request = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    stream.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(buf.starts_with(b"HTTP/1.1 101"), "upgrade refused");
            return (stream, buf[end + 4..].to_vec());
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed during upgrade");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Splits complete server frames off `buf`, calling `each` with payloads.
fn frames(buf: &mut Vec<u8>, mut each: impl FnMut(&[u8])) {
    let mut at = 0;
    loop {
        let b = &buf[at..];
        if b.len() < 2 {
            break;
        }
        let (len, head) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if b.len() < head + len {
            break;
        }
        each(&b[head..head + len]);
        at += head + len;
    }
    buf.drain(..at);
}

/// Every subscriber in one thread on one `mio` poll: the client's own cost
/// stays small (a thread per socket took a quarter of a core at 5,000 msg/s
/// on this two-core box and competed with the servers it measures).
fn subscribe_all(addr: String, count: usize, channel: String, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut poll = mio::Poll::new().expect("poll");
    let mut events = mio::Events::with_capacity(64);
    let sub = format!(r#"{{"id":1,"method":"subscribe","params":{{"channel":"{channel}"}}}}"#);
    let mut conns: Vec<(mio::net::TcpStream, Vec<u8>)> = (0..count)
        .map(|i| {
            let (mut stream, buf) = open(&addr);
            stream
                .write_all(&client_frame(1, true, sub.as_bytes(), [1, 2, 3, 4]))
                .unwrap();
            stream.set_nonblocking(true).unwrap();
            let mut stream = mio::net::TcpStream::from_std(stream);
            poll.registry()
                .register(&mut stream, mio::Token(i), mio::Interest::READABLE)
                .unwrap();
            (stream, buf)
        })
        .collect();
    let mut latencies = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        let _ = poll.poll(&mut events, Some(Duration::from_millis(200)));
        for event in events.iter() {
            let (stream, buf) = &mut conns[event.token().0];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("subscriber read: {e}"),
                }
            }
            let now = now_ns();
            frames(buf, |payload| {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
                    return;
                };
                if let Some(t) = v["data"]["t"].as_u64() {
                    latencies.push(now.saturating_sub(t));
                }
            });
        }
    }
    latencies
}

/// Publish-to-Redis-push latencies: what a Pub/Sub listener of the
/// channel's key sees (`EPOCH\nOFFSET\nDATA`, DATA stamped by the publisher).
fn redis_tap(url: String, channel: String, stop: Arc<AtomicBool>, ready: std::sync::mpsc::Sender<()>) -> Vec<u64> {
    let client = redis::Client::open(url.as_str()).expect("--redis-tap URL");
    let mut conn = client.get_connection().expect("connect to --redis-tap");
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(format!("hubbub:pub:{channel}")).expect("SUBSCRIBE");
    pubsub.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let _ = ready.send(());
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(msg) = pubsub.get_message() else { continue };
        let now = now_ns();
        let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
        let Some(data) = payload.splitn(3, |&b| b == b'\n').nth(2) else {
            continue;
        };
        if let Some(t) = serde_json::from_slice::<serde_json::Value>(data)
            .ok()
            .and_then(|v| v["t"].as_u64())
        {
            latencies.push(now.saturating_sub(t));
        }
    }
    latencies
}

/// `latency us p50 .. p99 .. p99.9 .. max ..` of `all` (sorted here).
fn summary(all: &mut [u64]) -> String {
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1e3
    };
    format!(
        "latency us p50 {:.0} p99 {:.0} p99.9 {:.0} max {:.0}",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    )
}

fn main() {
    let (pub_addr, sub_addr) = (arg("--pub", "127.0.0.1:8080"), arg("--sub", "127.0.0.1:8080"));
    let subscribers: usize = arg("--subscribers", "10").parse().unwrap();
    let rate: f64 = arg("--rate", "10000").parse().unwrap();
    let secs: f64 = arg("--secs", "10").parse().unwrap();
    let channel = arg("--channel", "bench");
    let stop = Arc::new(AtomicBool::new(false));
    let subs = {
        let (addr, channel, stop) = (sub_addr.clone(), channel.clone(), Arc::clone(&stop));
        std::thread::spawn(move || subscribe_all(addr, subscribers, channel, stop))
    };
    let tap = (!arg("--redis-tap", "").is_empty()).then(|| {
        let (url, channel, stop) = (arg("--redis-tap", ""), channel.clone(), Arc::clone(&stop));
        let (ready, listening) = std::sync::mpsc::channel();
        let tap = std::thread::spawn(move || redis_tap(url, channel, stop, ready));
        listening.recv().expect("the Redis tap did not start");
        tap
    });
    std::thread::sleep(Duration::from_millis(500));
    let (mut publisher, _) = open(&pub_addr);
    let mut reader = publisher.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut chunk = vec![0u8; 1 << 16];
        while matches!(reader.read(&mut chunk), Ok(n) if n > 0) {}
    });
    let start = Instant::now();
    let total = (rate * secs) as u64;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let cmd = format!(
            r#"{{"id":{i},"method":"publish","params":{{"channel":"{channel}","data":{{"t":{}}}}}}}"#,
            now_ns()
        );
        publisher
            .write_all(&client_frame(1, true, cmd.as_bytes(), [1, 2, 3, 4]))
            .unwrap();
    }
    let sent_for = start.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<u64> = subs.join().unwrap();
    let _ = publisher.shutdown(std::net::Shutdown::Both);
    let _ = drain.join();
    let expected = total * subscribers as u64;
    let delivered = all.len();
    println!(
        "published {total} in {:.2}s; delivered {delivered}/{expected} ({:.0} deliveries/s); {}",
        sent_for.as_secs_f64(),
        delivered as f64 / sent_for.as_secs_f64(),
        summary(&mut all)
    );
    if let Some(tap) = tap {
        let mut seen = tap.join().unwrap();
        println!(
            "  publish -> Redis push: {} of {total}; {}",
            seen.len(),
            summary(&mut seen)
        );
    }
}
