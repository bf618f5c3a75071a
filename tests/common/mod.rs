//! Shared helpers for integration tests: a real server on an ephemeral
//! loopback port, raw-socket clients, and a blocking frame reader.
#![allow(dead_code)]

pub mod backend;
pub mod browser;
pub mod cluster;
pub mod redis;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hubbub::config::Config;
use hubbub::metrics::stats::ShardStats;
use hubbub::server::{self, ServerHandle};
pub use hubbub::ws::codec::client_frame;

pub const MASK: [u8; 4] = [0xa1, 0x5c, 0x03, 0x7e];
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// Upper bound for anything a test waits for; tests are not timed.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A server that is shut down and joined when dropped.
pub struct TestServer {
    handle: Option<ServerHandle>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn stats(&self) -> ShardStats {
        self.handle.as_ref().expect("running").stats()
    }

    pub fn shard_stats(&self) -> Vec<ShardStats> {
        self.handle.as_ref().expect("running").shard_stats()
    }

    /// The admin port (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.handle
            .as_ref()
            .expect("running")
            .admin_addr()
            .expect("admin port on")
    }

    /// Reloads the TLS certificate and key (what SIGHUP does).
    pub fn reload_tls(&self) -> Result<(), hubbub::net::tls::TlsError> {
        self.handle.as_ref().expect("running").reload_tls()
    }

    /// Shuts down and waits; returns the shards' result.
    pub fn stop(mut self) -> Result<(), hubbub::server::StartError> {
        let handle = self.handle.take().expect("running");
        handle.shutdown();
        handle.join()
    }

    /// Polls the published stats (refreshed every 250 ms) until `check` holds.
    pub fn wait_for(&self, what: &str, check: impl Fn(&ShardStats) -> bool) -> ShardStats {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let stats = self.stats();
            if check(&stats) {
                return stats;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {stats:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A series' value on the admin port's /metrics (0 when absent), e.g.
    /// `hubbub_memory_bytes{kind="proxy"}`.
    pub fn metric(&self, series: &str) -> f64 {
        metric_at(self.admin_addr(), series)
    }

    /// Polls `series` until `check` holds (at most `PATIENCE`); its value.
    pub fn wait_metric(&self, series: &str, check: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.metric(series);
            if check(value) {
                return value;
            }
            assert!(Instant::now() < deadline, "{series} stayed at {value}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A series' value on the /metrics of the admin port `admin` (0 when
/// absent).
#[allow(dead_code)]
pub fn metric_at(admin: SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(admin, "/metrics");
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
            let _ = handle.join();
        }
    }
}

/// Starts a server on 127.0.0.1:0 with `tune` applied to the defaults.
pub fn start(tune: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        shards: 2,
        drain: Duration::from_secs(5),
        ..Config::default()
    };
    tune(&mut config);
    let handle = server::start(&config).expect("server starts");
    let addr = handle.local_addr();
    TestServer {
        handle: Some(handle),
        addr,
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
    )
}

/// Reads an HTTP response head; returns (status, head text, bytes after it).
pub fn read_response(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            return (status, head, buf[end + 4..].to_vec());
        }
        let n = stream.read(&mut chunk).expect("read response");
        assert!(
            n > 0,
            "connection closed before a full response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until EOF (or error) and returns everything read.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An upgraded raw connection to `path`.
pub fn open(addr: SocketAddr, path: &str) -> Client {
    let mut stream = connect(addr);
    stream.write_all(upgrade_request(path, "").as_bytes()).unwrap();
    let (status, head, rest) = read_response(&mut stream);
    assert_eq!(status, 101, "upgrade refused: {head}");
    Client { stream, pending: rest }
}

/// A raw WebSocket client: masked frames out, a blocking frame reader in.
pub struct Client {
    pub stream: TcpStream,
    pub pending: Vec<u8>,
}

/// A server frame: opcode, fin, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub fin: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a Close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

impl Client {
    pub fn send(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        self.stream
            .write_all(&client_frame(opcode, fin, payload, MASK))
            .unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(0x1, true, text.as_bytes());
    }

    /// The next frame, or `None` at EOF/reset.
    pub fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.pending) {
                self.pending.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads frames until a Close arrives; returns its code (None: EOF first).
    pub fn recv_close(&mut self) -> Option<u16> {
        while let Some(frame) = self.recv() {
            if frame.opcode == 0x8 {
                return frame.close_code().or(Some(1005));
            }
        }
        None
    }

    /// True when the server closed TCP after its last frame.
    pub fn sees_eof(&mut self) -> bool {
        self.recv().is_none()
    }
}

pub fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames are never masked");
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return None;
    }
    let frame = Frame {
        opcode: buf[0] & 0x0f,
        fin: buf[0] & 0x80 != 0,
        payload: buf[at..at + len].to_vec(),
    };
    at += len;
    Some((frame, at))
}

/// A plain HTTP/1.1 GET against the admin port: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = connect(addr);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (status, _head, mut body) = read_response(&mut stream);
    body.extend(read_to_close(&mut stream));
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The `hubbub` binary running as a child process, killed (by its PID) if
/// still running when dropped.
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
}

impl Process {
    /// Starts the binary with `args` and reads its address lines.
    pub fn spawn(args: &[&str]) -> Process {
        Process::spawn_with_stderr(args, std::process::Stdio::null())
    }

    /// `spawn`, with the server's stderr (its logs) going to `stderr`.
    pub fn spawn_with_stderr(args: &[&str], stderr: impl Into<std::process::Stdio>) -> Process {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("hubbub starts");
        let mut lines = io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
        let first = next();
        let addr = first
            .strip_prefix("hubbub listening on ws://")
            .unwrap_or_else(|| panic!("no listening line: {first:?}"))
            .parse()
            .unwrap();
        let admin = args
            .windows(2)
            .all(|w| w != ["--admin-listen", "off"])
            .then(|| next().strip_prefix("hubbub admin on http://").unwrap().parse().unwrap());
        Process { child, addr, admin }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling the child this test spawned, by its PID.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits up to `limit` for the exit; `None` if still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `/ws` JSON-protocol client on top of `Client`: numbered commands, and
/// pushes kept aside while waiting for a reply.
pub struct WsClient {
    pub raw: Client,
    next_id: u64,
    pub pushes: std::collections::VecDeque<serde_json::Value>,
}

impl WsClient {
    pub fn open(addr: SocketAddr, extra_headers: &str) -> WsClient {
        Self::try_open(addr, "/ws", extra_headers).expect("upgrade accepted")
    }

    /// Upgrades, or returns the refusal's (status, body).
    pub fn try_open(addr: SocketAddr, path: &str, extra_headers: &str) -> Result<WsClient, (u16, String)> {
        let mut stream = connect(addr);
        stream
            .write_all(upgrade_request(path, extra_headers).as_bytes())
            .unwrap();
        let (status, _, rest) = read_response(&mut stream);
        if status != 101 {
            let mut body = rest;
            body.extend(read_to_close(&mut stream));
            return Err((status, String::from_utf8_lossy(&body).into_owned()));
        }
        Ok(WsClient {
            raw: Client { stream, pending: rest },
            next_id: 1,
            pushes: Default::default(),
        })
    }

    /// Sends a command and waits for its reply (the whole reply document).
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let command = serde_json::json!({"id": id, "method": method, "params": params});
        self.raw.send_text(&command.to_string());
        self.reply_for(id)
    }

    pub fn reply_for(&mut self, id: u64) -> serde_json::Value {
        loop {
            let message = self.next_json().expect("connection open while waiting for a reply");
            if message.get("id").and_then(|v| v.as_u64()) == Some(id) {
                return message;
            }
            self.pushes.push_back(message);
        }
    }

    /// The next push (buffered first), or `None` when the connection ended.
    pub fn push(&mut self) -> Option<serde_json::Value> {
        if let Some(p) = self.pushes.pop_front() {
            return Some(p);
        }
        self.next_json()
    }

    fn next_json(&mut self) -> Option<serde_json::Value> {
        loop {
            let frame = self.raw.recv()?;
            match frame.opcode {
                0x1 => return Some(serde_json::from_slice(&frame.payload).expect("server sends JSON")),
                0x8 => {
                    self.raw.pending.clear();
                    let code = frame.close_code().unwrap_or(1005);
                    return Some(serde_json::json!({"closed": code}));
                }
                _ => continue,
            }
        }
    }
}

/// An HS256 token for `sub` with extra claims, signed with `secret`; it
/// expires in an hour unless `claims` has an `exp` (`--jwt-require-exp`).
pub fn token(secret: &str, mut claims: serde_json::Value) -> String {
    if claims.get("exp").is_none() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        claims["exp"] = serde_json::json!(now + 3600);
    }
    hubbub::auth::sign_hs256(&claims.to_string(), secret.as_bytes())
}

/// One server API call on the admin port: (status, JSON body or null).
pub fn api_call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut stream = connect(admin);
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (status, _, mut rest) = read_response(&mut stream);
    rest.extend(read_to_close(&mut stream));
    (status, serde_json::from_slice(&rest).unwrap_or(serde_json::Value::Null))
}

/// A test CA and a leaf certificate for `localhost` and 127.0.0.1, written
/// as PEM files (`wss://` tests); `reissue` writes a new leaf and key.
pub struct TestCerts {
    pub dir: std::path::PathBuf,
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCerts {
    /// A fresh CA and leaf in a directory of their own under the temp dir.
    pub fn new(name: &str) -> TestCerts {
        let dir = std::env::temp_dir().join(format!("hubbub-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hubbub test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        let certs = TestCerts {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca,
            ca_der: ca_cert.der().clone(),
            issuer: rcgen::Issuer::new(params, ca_key),
            dir,
        };
        certs.reissue("hubbub test server");
        certs
    }

    /// Writes a new leaf (new key, `common_name`) signed by the same CA;
    /// returns its DER.
    pub fn reissue(&self, common_name: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(&self.cert, cert.pem()).unwrap();
        std::fs::write(&self.key, key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    pub fn files(&self) -> hubbub::net::tls::TlsFiles {
        hubbub::net::tls::TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lifts the per-connection rates (`--max-messages-per-sec`,
/// `--max-bytes-per-sec`) for tests that flood on purpose to load
/// something else (inboxes, backlogs, the memory budget).
pub fn unlimited_rates(c: &mut Config) {
    c.hub.max_messages_per_sec = 1 << 30;
    c.hub.max_bytes_per_sec = 1 << 40;
}

/// Whether `program` runs; if not, panics under CI and tells why the test
/// is skipped otherwise.
pub fn have(program: &str, install: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "`{program}` is missing under CI: .ci/run installs it ({install})"
        );
        eprintln!("SKIPPED: `{program}` is not installed here ({install}; .ci/run does it)");
    }
    found
}
