//! Publish throughput and latency with the publish hook off and on (issue
//! 14's figure), in one run: starts a backend here (std threads, HTTP/1.1
//! keep-alive, answers `{"result":{}}` after `--backend-ms`), then `hubbub`
//! (path as the first argument) twice per round, without and with
//! `--proxy-publish-url`, and drives it with `--clients` connections each
//! keeping `--window` publishes outstanding (closed loop) for `--secs`.
//! Prints publishes/s, the reply latency p50/p99, and the server's CPU
//! (utime + stime from /proc/PID/stat) per publish. Written in Rust rather
//! than Python so the client is not what is measured.
//!
//! cargo run --release --example proxy_publish -- target/release/hubbub \
//!     --clients 16 --window 4 --secs 5 --rounds 2 --backend-ms 1 \
//!     [--proxy-workers 16] [--server-flags "--busy-poll-us 0"]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hubbub::ws::codec::client_frame;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].clone())
        .unwrap_or_else(|| default.to_string())
}

/// The application: answers every call after `delay`, one thread per
/// connection (the server keeps at most one per worker).
fn backend(delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream, delay));
        }
    });
    addr
}

fn serve(stream: TcpStream, delay: Duration) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let answer = br#"{"result":{}}"#;
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        answer.len()
    );
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(v) = header.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        std::thread::sleep(delay);
        let mut out = head.clone().into_bytes();
        out.extend_from_slice(answer);
        if writer.write_all(&out).is_err() {
            return;
        }
    }
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &str, extra: &[String]) -> Server {
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off", "--shards", "2"])
        .args([
            "--max-messages-per-sec",
            "1000000",
            "--max-bytes-per-sec",
            "1GiB",
            "--history-size",
            "10",
        ])
        .args(extra)
        .args(arg("--server-flags", "").split_whitespace())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hubbub starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ws://"))
        .expect("banner names the address")
        .to_string();
    Server { child, addr }
}

/// utime + stime of `pid`, seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn open(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    let request = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed during upgrade");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "upgrade refused");
    stream
}

/// One client: `window` publishes outstanding until `until`; returns the
/// reply latencies (ns) and the errors seen.
fn client(addr: String, n: usize, window: usize, until: Instant) -> (Vec<u64>, u64) {
    let mut stream = open(&addr);
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sent: std::collections::VecDeque<Instant> = Default::default();
    let (mut latencies, mut errors, mut buf) = (Vec::new(), 0u64, Vec::new());
    let mut chunk = vec![0u8; 1 << 16];
    let mut id = 0u64;
    loop {
        let open = Instant::now() < until;
        while open && sent.len() < window {
            id += 1;
            let cmd =
                format!(r#"{{"id":{id},"method":"publish","params":{{"channel":"bench{n}","data":{{"n":{id}}}}}}}"#);
            stream
                .write_all(&client_frame(1, true, cmd.as_bytes(), [1, 2, 3, 4]))
                .unwrap();
            sent.push_back(Instant::now());
        }
        if sent.is_empty() {
            return (latencies, errors);
        }
        let got = stream.read(&mut chunk).expect("reply within 5 s");
        assert!(got > 0, "server closed");
        buf.extend_from_slice(&chunk[..got]);
        // Replies of one connection come in command order (one owner per channel).
        while buf.len() >= 2 {
            let (len, head) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                126 => break,
                n => (n as usize, 2),
            };
            if buf.len() < head + len {
                break;
            }
            if buf[head..head + len].windows(8).any(|w| w == b"\"error\":") {
                errors += 1;
            }
            let at = sent.pop_front().expect("a reply per publish");
            latencies.push(at.elapsed().as_nanos() as u64);
            buf.drain(..head + len);
        }
    }
}

struct Figures {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    errors: u64,
}

fn measure(bin: &str, extra: &[String], clients: usize, window: usize, secs: f64) -> Figures {
    let server = start(bin, extra);
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(300));
    let cpu0 = cpu_secs(pid);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..clients)
        .map(|n| {
            let addr = server.addr.clone();
            std::thread::spawn(move || client(addr, n, window, until))
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (l, e) = t.join().unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1e6;
    Figures {
        rate: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        cpu_us: cpu * 1e6 / all.len() as f64,
        errors,
    }
}

fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: proxy_publish PATH/TO/hubbub [flags]");
    let clients: usize = arg("--clients", "16").parse().unwrap();
    let window: usize = arg("--window", "4").parse().unwrap();
    let secs: f64 = arg("--secs", "5").parse().unwrap();
    let rounds: usize = arg("--rounds", "2").parse().unwrap();
    let delay = Duration::from_secs_f64(arg("--backend-ms", "1").parse::<f64>().unwrap() / 1e3);
    let workers = arg("--proxy-workers", "16");
    let backend = backend(delay);
    let on = vec![
        "--proxy-publish-url".to_string(),
        format!("http://{backend}/publish"),
        "--proxy-workers".into(),
        workers.clone(),
    ];
    println!(
        "{clients} clients x {window} outstanding, {secs} s per run, backend {:.1} ms, {workers} workers",
        delay.as_secs_f64() * 1e3
    );
    println!("proxy  publishes/s  p50 ms  p99 ms  server CPU us/publish  errors");
    for _ in 0..rounds {
        for (label, extra) in [("off", Vec::new()), ("on", on.clone())] {
            let f = measure(&bin, &extra, clients, window, secs);
            println!(
                "{label:<5}  {:>11.0}  {:>6.2}  {:>6.2}  {:>21.1}  {}",
                f.rate, f.p50_ms, f.p99_ms, f.cpu_us, f.errors
            );
        }
    }
}
