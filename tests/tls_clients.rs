//! `wss://` with the clients people actually run: Node's `ws` library
//! (tests/node) and headless Chromium's own WebSocket (tests/browser), each
//! against a real server with a certificate the test makes. A missing
//! `node` or `chromium` skips the test locally with a message; under CI
//! (`CI` set, where .ci/run installs both) it fails instead.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// How long one client process may run before it is killed.
const CLIENT_LIMIT: Duration = Duration::from_secs(20);

fn start_wss(certs: &TestCerts) -> TestServer {
    let files = certs.files();
    start(move |config| config.tls = Some(files))
}

struct Outcome {
    /// `None`: killed at the limit.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// `common::browser::run_bounded`, as this file's `Outcome`.
fn run_bounded(command: Command, limit: Duration) -> Outcome {
    let (status, stdout, stderr) = common::browser::run_bounded(command, limit);
    Outcome { status, stdout, stderr }
}

#[test]
fn node_ws_client_over_wss() {
    if !have("node", "apt-get install nodejs npm") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/ws/package.json").exists(),
        "tests/node/node_modules/ws is missing: run `npm ci` in tests/node (.ci/run does)"
    );
    let certs = TestCerts::new("tls-node");
    let server = start_wss(&certs);
    let url = format!("wss://localhost:{}/echo", server.addr.port());
    let mut node = Command::new("node");
    node.arg(dir.join("echo_client.js"))
        .arg(&url)
        .env("HUBBUB_TEST_CA", &certs.ca)
        .current_dir(&dir);
    let out = run_bounded(node, CLIENT_LIMIT);
    assert!(
        out.status.is_some_and(|s| s.success()) && out.stdout.contains("ok 200 messages"),
        "node ws client failed ({:?}):\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    let stats = server.wait_for("the node handshake", |s| s.tls_full == 1);
    assert_eq!(stats.upgraded, 1);
}

#[test]
fn node_ws_client_refuses_a_server_its_ca_did_not_sign() {
    // The node client really checks the chain: with another CA it fails.
    if !have("node", "apt-get install nodejs npm") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/ws/package.json").exists(),
        "tests/node/node_modules/ws is missing: run `npm ci` in tests/node (.ci/run does)"
    );
    let certs = TestCerts::new("tls-node-bad");
    let other = TestCerts::new("tls-node-other");
    let server = start_wss(&certs);
    let mut node = Command::new("node");
    node.arg(dir.join("echo_client.js"))
        .arg(format!("wss://localhost:{}/echo", server.addr.port()))
        .env("HUBBUB_TEST_CA", &other.ca)
        .current_dir(&dir);
    let out = run_bounded(node, CLIENT_LIMIT);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(1),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.contains("failed:"), "{}", out.stderr);
    assert!(!out.stdout.contains("ok"), "{}", out.stdout);
}

/// A loopback HTTP server that keeps the page's load event waiting: the
/// page asks for `/hold` (an image) while it loads, and for `/done` once it
/// has written its result; `/done` answers both. Chromium's `--dump-dom`
/// runs at the load event, so it dumps the DOM with the result in it. Held
/// requests are answered at the limit anyway, so a page that never reports
/// still ends.
struct LoadGate {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    done: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoadGate {
    fn start() -> LoadGate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                let deadline = Instant::now() + CLIENT_LIMIT;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let done = Arc::clone(&done);
                            std::thread::spawn(move || serve_gate(stream, &done, deadline));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        LoadGate {
            addr,
            stop,
            done,
            thread: Some(thread),
        }
    }

    fn reported(&self) -> bool {
        *self.done.0.lock().unwrap()
    }
}

impl Drop for LoadGate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_gate(stream: TcpStream, done: &(Mutex<bool>, Condvar), deadline: Instant) {
    let _ = stream.set_read_timeout(Some(CLIENT_LIMIT));
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return; // a preconnect that never asked for anything
    }
    let (lock, ready) = done;
    if request.starts_with("GET /done") {
        *lock.lock().unwrap() = true;
        ready.notify_all();
    } else if request.starts_with("GET /hold") {
        let mut reported = lock.lock().unwrap();
        while !*reported {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            reported = ready.wait_timeout(reported, left).unwrap().0;
        }
    }
    let _ =
        (&stream).write_all(b"HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n");
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Opens the page in headless Chromium on `server`'s /echo; returns the
/// page's result line (from the dumped DOM) and the run's outcome.
fn chromium_echo(server: &TestServer, certs: &TestCerts, ignore_cert_errors: bool) -> (String, Outcome, bool) {
    let gate = LoadGate::start();
    let page: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/wss_echo.html");
    let url = format!(
        "{}?url=wss://localhost:{}/echo&gate=http://{}",
        file_url(&page),
        server.addr.port(),
        gate.addr
    );
    let profile = certs.dir.join("chromium-profile");
    let mut chromium = Command::new("chromium");
    chromium
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(ignore_cert_errors.then_some("--ignore-certificate-errors"))
        .arg("--dump-dom")
        .arg(&url);
    let out = run_bounded(chromium, CLIENT_LIMIT);
    let result = out
        .stdout
        .lines()
        .find(|line| line.contains("<pre id=\"result\">"))
        .unwrap_or("(no result element in the dump)")
        .to_string();
    let _ = std::fs::remove_dir_all(&profile);
    (result, out, gate.reported())
}

#[test]
fn headless_chromium_over_wss() {
    if !have("chromium", "apt-get install chromium") {
        return;
    }
    let certs = TestCerts::new("tls-chromium");
    let server = start_wss(&certs);
    let (result, out, reported) = chromium_echo(&server, &certs, true);
    assert!(
        result.contains("result: ok text=browser echo ✓ ünïcödé binary=70000 close=1000"),
        "chromium's page did not get its echoes ({:?}, page reported: {}):\n{result}\nstderr tail:\n{}",
        out.status,
        reported,
        tail(&out.stderr, 15)
    );
    let stats = server.wait_for("chromium's handshake", |s| s.upgraded >= 1);
    assert!(stats.tls_full >= 1, "{stats:?}");
}

#[test]
fn headless_chromium_refuses_the_test_certificate_unless_told_to_ignore_it() {
    // Without --ignore-certificate-errors the browser checks the chain (the
    // test CA is not in its store): the page reports the error, no upgrade.
    if !have("chromium", "apt-get install chromium") {
        return;
    }
    let certs = TestCerts::new("tls-chromium-strict");
    let server = start_wss(&certs);
    let (result, out, _) = chromium_echo(&server, &certs, false);
    assert!(
        result.contains("result: error"),
        "{result}\nstderr tail:\n{}",
        tail(&out.stderr, 15)
    );
    assert_eq!(server.stats().upgraded, 0);
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
