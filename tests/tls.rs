//! `wss://`: real TLS clients against a server with a certificate the test
//! makes (a CA and a leaf from rcgen). The Rust client is rustls's own
//! buffered client; the Python one is `websockets` (tests/python).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};

fn start_wss(certs: &TestCerts, tune: impl FnOnce(&mut hubbub::config::Config)) -> TestServer {
    let files = certs.files();
    start(move |config| {
        config.tls = Some(files);
        tune(config);
    })
}

fn client_config(certs: &TestCerts, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(certs.ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn tls13(certs: &TestCerts) -> Arc<ClientConfig> {
    client_config(certs, &[&rustls::version::TLS13])
}

/// A WebSocket client over TLS: masked frames out, a blocking frame reader in.
struct WssClient {
    tls: StreamOwned<ClientConnection, TcpStream>,
    pending: Vec<u8>,
}

impl WssClient {
    fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> WssClient {
        let name = "localhost".try_into().unwrap();
        let conn = ClientConnection::new(Arc::clone(config), name).unwrap();
        WssClient {
            tls: StreamOwned::new(conn, connect(addr)),
            pending: Vec::new(),
        }
    }

    /// Connects and upgrades on `path`.
    fn open(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> WssClient {
        let mut client = WssClient::connect(addr, config);
        client.tls.write_all(upgrade_request(path, "").as_bytes()).unwrap();
        let head = client.read_head();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        client
    }

    fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.pending[..end + 4]).into_owned();
                self.pending.drain(..end + 4);
                return head;
            }
            let mut chunk = [0u8; 4096];
            let n = self.tls.read(&mut chunk).expect("read response");
            assert!(n > 0, "closed before a response");
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    fn send(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        self.tls.write_all(&client_frame(opcode, fin, payload, MASK)).unwrap();
    }

    fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.pending) {
                self.pending.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            match self.tls.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn echo(&mut self, opcode: u8, payload: &[u8]) {
        self.send(opcode, true, payload);
        let frame = self.recv().expect("an echo");
        assert_eq!(
            (frame.opcode, frame.payload.len()),
            (opcode, payload.len()),
            "{:?}",
            String::from_utf8_lossy(&frame.payload)
        );
        assert!(frame.payload == payload, "echo differs");
    }

    fn kind(&self) -> Option<HandshakeKind> {
        self.tls.conn.handshake_kind()
    }
}

#[test]
fn wss_echo_over_tls_1_3_and_1_2_with_alpn() {
    let certs = TestCerts::new("tls-echo");
    let server = start_wss(&certs, |_| {});
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let config = client_config(&certs, versions);
        let mut client = WssClient::open(server.addr, &config, "/echo");
        assert_eq!(client.tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(client.tls.conn.protocol_version(), Some(versions[0].version));
        client.echo(0x1, b"hello over tls");
        // Larger than a record, a pool buffer and the scratch buffer: many
        // records, partial records between reads, partial writes.
        for size in [0, 125, 16 * 1024 + 1, 70_000, 300_000] {
            let payload: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
            client.echo(0x2, &payload);
        }
        client.send(0x8, true, b"\x03\xe8");
        let close = client.recv().expect("close answer");
        assert_eq!(close.close_code(), Some(1000));
    }
    let stats = server.wait_for("two TLS handshakes", |s| s.tls_full == 2);
    assert_eq!(stats.upgraded, 2);
}

#[test]
fn every_cipher_suite_echoes_through_the_record_layer() {
    // After the handshake the server encrypts with its own record layer
    // (conn/record.rs): each AEAD, with TLS 1.3's inner content type and
    // TLS 1.2's explicit nonce (AES-GCM) or none (ChaCha20).
    let certs = TestCerts::new("tls-suites");
    let server = start_wss(&certs, |_| {});
    let suites = rustls::crypto::ring::default_provider().cipher_suites;
    let mut handshakes = 0;
    for suite in suites {
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![suite];
        let version = suite.version();
        let mut roots = RootCertStore::empty();
        roots.add(certs.ca_der.clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        // The test certificate's key is ECDSA: TLS 1.2's RSA suites cannot
        // be served with it.
        if format!("{:?}", suite.suite()).contains("_RSA_") {
            continue;
        }
        let mut client = WssClient::open(server.addr, &config, "/echo");
        assert_eq!(client.tls.conn.negotiated_cipher_suite(), Some(suite));
        for size in [0, 1, 125, 16 * 1024, 16 * 1024 + 1, 70_000] {
            let payload: Vec<u8> = (0..size).map(|i| (i * 13 + 1) as u8).collect();
            client.echo(0x2, &payload);
        }
        client.send(0x8, true, b"\x03\xe8");
        let close = client.recv().expect("close answer");
        assert_eq!(close.close_code(), Some(1000), "{suite:?}");
        handshakes += 1;
    }
    assert!(handshakes >= 5, "only {handshakes} suites tried");
    server.wait_for("every suite's handshake", |s| s.tls_full == handshakes);
}

#[test]
fn a_client_key_update_is_followed_and_answered() {
    // TLS 1.3 KeyUpdate (RFC 8446 §4.6.3) with update_requested: the server
    // switches its receiving key, sends a KeyUpdate of its own and switches
    // its sending key. The client's receive sequence number shows the
    // switch: it starts again at 0 with the server's new key.
    let certs = TestCerts::new("tls-keyupdate");
    let server = start_wss(&certs, |_| {});
    let mut config = (*tls13(&certs)).clone();
    config.enable_secret_extraction = true;
    let config = Arc::new(config);
    let mut client = WssClient::open(server.addr, &config, "/echo");
    client.echo(0x1, b"before");
    for round in 0..3 {
        client.tls.conn.refresh_traffic_keys().unwrap();
        client.echo(0x1, format!("after key update {round}").as_bytes());
        client.echo(0x2, &vec![round as u8; 40_000]);
    }
    let secrets = client.tls.conn.dangerous_extract_secrets().unwrap();
    // Since the last update: one record for the text echo, three for the
    // 40,000-byte one (16 KiB records) at most; far fewer than all of them.
    assert!(
        secrets.rx.0 <= 4,
        "server kept its old sending key: rx seq {}",
        secrets.rx.0
    );
    assert!(secrets.tx.0 <= 4, "client's own key update: tx seq {}", secrets.tx.0);
    let stats = server.wait_for("still one open connection", |s| s.open == 1);
    assert_eq!(stats.disconnects_for(hubbub::conn::Disconnect::ProtocolError), 0);
}

#[test]
fn a_forged_record_after_the_handshake_is_refused_and_counted() {
    let certs = TestCerts::new("tls-forged");
    let server = start_wss(&certs, |_| {});
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let mut client = WssClient::open(server.addr, &client_config(&certs, versions), "/echo");
        client.echo(0x1, b"fine so far");
        // An application-data record whose tag cannot verify.
        let mut forged = vec![23, 3, 3, 0, 40];
        forged.extend_from_slice(&[0x5a; 40]);
        client.tls.sock.write_all(&forged).unwrap();
        let mut rest = [0u8; 256];
        let answer = client.tls.read(&mut rest);
        assert!(
            matches!(
                &answer,
                Err(e) if e.to_string().contains("BadRecordMac") || e.to_string().contains("bad_record_mac")
            ),
            "expected a bad_record_mac alert, got {answer:?}"
        );
    }
    let stats = server.wait_for("both closed as protocol errors", |s| {
        s.open == 0 && s.disconnects_for(hubbub::conn::Disconnect::ProtocolError) == 2
    });
    let counted: Vec<_> = hubbub::conn::Disconnect::ALL
        .iter()
        .map(|d| (*d, stats.disconnects_for(*d)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        stats.disconnects_for(hubbub::conn::Disconnect::ProtocolError),
        2,
        "{counted:?}"
    );
}

#[test]
fn frame_rules_hold_over_tls() {
    // kosoku (the Autobahn runner) speaks ws:// only; these are the frame
    // cases of tests/frames.rs that touch buffering, run over wss://.
    let certs = TestCerts::new("tls-frames");
    let server = start_wss(&certs, |c| c.max_message_bytes = 1 << 20);
    let config = tls13(&certs);
    // Fragmented message with a ping between fragments.
    let mut client = WssClient::open(server.addr, &config, "/echo");
    client.send(0x1, false, b"frag");
    client.send(0x9, true, b"ping!");
    let pong = client.recv().unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"ping!"[..]));
    client.send(0x0, false, b"men");
    client.send(0x0, true, b"ted");
    let msg = client.recv().unwrap();
    assert_eq!((msg.opcode, msg.payload.as_slice()), (0x1, &b"fragmented"[..]));
    // Invalid UTF-8: 1007, then the server closes.
    client.send(
        0x1,
        true,
        &[
            0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
        ],
    );
    assert_eq!(client.recv().and_then(|f| f.close_code()), Some(1007));
    // Too big: 1009.
    let mut client = WssClient::open(server.addr, &config, "/echo");
    client.send(0x2, true, &vec![0u8; (1 << 20) + 1]);
    assert_eq!(client.recv().and_then(|f| f.close_code()), Some(1009));
    // A masked-bit violation (unmasked client frame): 1002.
    let mut client = WssClient::open(server.addr, &config, "/echo");
    client.tls.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(client.recv().and_then(|f| f.close_code()), Some(1002));
}

#[test]
fn garbage_instead_of_a_client_hello_is_closed_and_counted() {
    let certs = TestCerts::new("tls-garbage");
    let server = start_wss(&certs, |_| {});
    // A plain HTTP upgrade on the TLS port.
    let mut plain = connect(server.addr);
    plain.write_all(upgrade_request("/echo", "").as_bytes()).unwrap();
    let answer = read_to_close(&mut plain);
    // At most a TLS alert (content type 21), never an HTTP answer.
    assert!(answer.is_empty() || answer[0] == 21, "answered {answer:?}");
    // A handshake record holding a ClientHello that is not one.
    let mut junk = connect(server.addr);
    junk.write_all(&[22, 3, 1, 0, 8, 1, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef])
        .unwrap();
    let _ = read_to_close(&mut junk);
    let stats = server.wait_for("two TLS failures", |s| s.handshake_failures_for("tls_error") == 2);
    assert_eq!(stats.upgraded, 0);
    // The server still serves well-behaved clients.
    WssClient::open(server.addr, &tls13(&certs), "/echo").echo(0x1, b"still fine");
}

#[test]
fn a_stalled_client_hello_is_closed_at_the_handshake_timeout() {
    let certs = TestCerts::new("tls-stall");
    let server = start_wss(&certs, |c| c.handshake_timeout = Duration::from_secs(1));
    // The first bytes of a real ClientHello, then nothing.
    let mut hello = Vec::new();
    let mut conn = ClientConnection::new(tls13(&certs), "localhost".try_into().unwrap()).unwrap();
    conn.write_tls(&mut hello).unwrap();
    let mut stalled = connect(server.addr);
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    // A client that finishes TLS but never sends its request is a plain
    // (request) timeout, told apart from the TLS one.
    let mut silent = WssClient::connect(server.addr, &tls13(&certs));
    silent.tls.conn.complete_io(&mut silent.tls.sock).unwrap();
    let began = Instant::now();
    assert!(read_to_close(&mut stalled).is_empty());
    assert!(began.elapsed() < PATIENCE);
    let stats = server.wait_for("both timeouts", |s| {
        s.handshake_failures_for("tls_timeout") == 1 && s.handshake_failures_for("timeout") == 1
    });
    assert_eq!(stats.upgraded, 0);
}

#[test]
fn a_reconnecting_client_resumes_its_session_on_any_shard() {
    let certs = TestCerts::new("tls-resume");
    let server = start_wss(&certs, |c| c.shards = 2);
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        // One config = one client: its session store keeps the tickets.
        let config = client_config(&certs, versions);
        let mut first = WssClient::open(server.addr, &config, "/echo");
        first.echo(0x1, b"first");
        assert_eq!(first.kind(), Some(HandshakeKind::Full));
        drop(first);
        // The kernel spreads connections over both shards: several reconnects
        // land on the shard that did not issue the ticket.
        for i in 0..6 {
            let mut again = WssClient::open(server.addr, &config, "/echo");
            again.echo(0x1, b"again");
            assert_eq!(
                again.kind(),
                Some(HandshakeKind::Resumed),
                "reconnect {i} ({versions:?})"
            );
        }
    }
    let stats = server.wait_for("resumed handshakes", |s| s.tls_resumed == 12);
    assert_eq!(stats.tls_full, 2);
    let resumed_on: Vec<u64> = server.shard_stats().iter().map(|s| s.tls_resumed).collect();
    assert!(resumed_on.iter().all(|&n| n > 0), "resumed per shard: {resumed_on:?}");
}

#[test]
fn a_certificate_reload_under_load_drops_no_connection() {
    let certs = TestCerts::new("tls-reload");
    let server = start_wss(&certs, |_| {});
    let config = tls13(&certs);
    let first_der = peer_cert(server.addr, &certs);
    let stop = Arc::new(AtomicBool::new(false));
    let echoes = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (stop, echoes, config) = (Arc::clone(&stop), Arc::clone(&echoes), Arc::clone(&config));
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut clients: Vec<WssClient> = (0..8).map(|_| WssClient::open(addr, &config, "/echo")).collect();
                let deadline = Instant::now() + PATIENCE;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    for client in &mut clients {
                        client.echo(0x1, b"under load");
                        echoes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                clients
            })
        })
        .collect();
    wait_until("echoes before the reload", || echoes.load(Ordering::Relaxed) > 500);
    let new_der = certs.reissue("hubbub reloaded");
    server.reload_tls().expect("reload");
    let before = echoes.load(Ordering::Relaxed);
    assert_eq!(
        peer_cert(server.addr, &certs),
        new_der,
        "new handshakes get the new pair"
    );
    assert_ne!(new_der, first_der);
    // A bad file: the reload fails, the pair in use stays.
    std::fs::write(&certs.key, "not a key").unwrap();
    let err = server.reload_tls().unwrap_err().to_string();
    assert!(err.contains("key.pem"), "{err}");
    assert_eq!(peer_cert(server.addr, &certs), new_der);
    wait_until("echoes after the reload", || {
        echoes.load(Ordering::Relaxed) > before + 500
    });
    stop.store(true, Ordering::Relaxed);
    let mut clients = Vec::new();
    for worker in workers {
        clients.extend(worker.join().expect("no client lost its connection"));
    }
    for client in &mut clients {
        client.echo(0x1, b"after the reload");
    }
    let stats = server.wait_for("the counters of the load", |s| s.upgraded == 67 && s.open == 64);
    let ended: u64 = hubbub::conn::Disconnect::ALL
        .iter()
        .map(|d| stats.disconnects_for(*d))
        .sum();
    assert_eq!(ended, 3, "only the three certificate probes ended");
}

#[test]
fn idle_wss_connections_hold_no_tls_buffers() {
    let certs = TestCerts::new("tls-idle");
    let server = start_wss(&certs, |_| {});
    let config = tls13(&certs);
    let mut clients: Vec<WssClient> = (0..20)
        .map(|_| WssClient::open(server.addr, &config, "/echo"))
        .collect();
    for client in &mut clients {
        client.echo(0x2, &vec![7u8; 100_000]);
    }
    // Only the sessions' fixed charge stays once the traffic is over.
    let expected = 20 * hubbub::conn::tls::SESSION_CHARGE_BYTES;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, body) = http_get(server.admin_addr(), "/metrics");
        let tls = body
            .lines()
            .find(|l| l.starts_with("hubbub_memory_bytes{kind=\"tls\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(-1.0) as usize;
        if tls == expected {
            break;
        }
        assert!(Instant::now() < deadline, "tls memory {tls}, expected {expected}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(clients);
    server.wait_for("all gone", |s| s.open == 0);
}

#[test]
fn drain_closes_wss_connections_with_1001() {
    let certs = TestCerts::new("tls-drain");
    let server = start_wss(&certs, |c| c.drain = Duration::from_secs(1));
    let mut client = WssClient::open(server.addr, &tls13(&certs), "/echo");
    client.echo(0x1, b"before");
    let stopper = std::thread::spawn(move || server.stop());
    let close = client.recv().expect("a close frame");
    assert_eq!(close.close_code(), Some(1001));
    client.send(0x8, true, b"\x03\xe9");
    stopper.join().unwrap().unwrap();
}

#[test]
fn python_websockets_client_over_wss() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "run .ci/run first: it creates .venv with the Python test clients"
    );
    let certs = TestCerts::new("tls-python");
    let server = start_wss(&certs, |_| {});
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/echo_client.py");
    let url = format!("wss://localhost:{}/echo", server.addr.port());
    let out = Command::new(python)
        .arg(script)
        .arg(&url)
        .env("HUBBUB_TEST_CA", &certs.ca)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok 200 messages"),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.wait_for("the python handshake", |s| s.tls_full == 1);
}

#[test]
fn check_config_validates_the_certificate_and_key() {
    let certs = TestCerts::new("tls-check");
    let bin = env!("CARGO_BIN_EXE_hubbub");
    let run = |cert: &Path, key: &Path| {
        Command::new(bin)
            .args(["--check-config", "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .unwrap()
    };
    let ok = run(&certs.cert, &certs.key);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let swapped = run(&certs.key, &certs.cert);
    assert_eq!(swapped.status.code(), Some(2));
    let err = String::from_utf8_lossy(&swapped.stderr);
    assert!(
        err.contains("--tls-cert") && err.contains("no PEM certificate"),
        "{err}"
    );
    let other = TestCerts::new("tls-check-other");
    let mismatched = run(&certs.cert, &other.key);
    let err = String::from_utf8_lossy(&mismatched.stderr);
    assert_eq!(mismatched.status.code(), Some(2), "{err}");
    assert!(err.contains("--tls-cert"), "{err}");
}

/// The leaf certificate a new full handshake gets (a fresh client: no
/// ticket to resume with).
fn peer_cert(addr: SocketAddr, certs: &TestCerts) -> Vec<u8> {
    let mut client = WssClient::open(addr, &tls13(certs), "/echo");
    client.echo(0x1, b"which cert?");
    let certs = client.tls.conn.peer_certificates().expect("a certificate");
    certs[0].to_vec()
}

fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
