//! Headless Chromium running a test page against a real server: a loopback
//! HTTP "page server" that serves the page and its scripts, answers the
//! page's calls to the test (its application backend: tokens, server API
//! calls) through a handler the test gives, and takes the page's result, a
//! JSON document the page POSTs to `/result`. Chromium runs with
//! `--dump-dom`, which exits at the load event: the page holds that event
//! with an image from `/hold` that is answered only once the result is in
//! (or at the limit), so the browser ends by itself when the page is done.
//! Everything is bounded by the limit given to [`run_page`]; the browser's
//! process group is killed by its id at the end.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A request body larger than this is refused (the page's result is small).
const MAX_BODY_BYTES: usize = 1 << 20;

/// One call of the page to the test: method, path (with its query) and body.
pub struct PageCall {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub body: String,
}

/// What the test answers to a [`PageCall`]: status and body (sent as JSON
/// when it starts with `{` or `[`, else as text).
pub type Answer = (u16, String);

type Handler = dyn Fn(&PageCall) -> Answer + Send + Sync;

/// The outcome of a browser run.
pub struct PageRun {
    /// The JSON the page posted to `/result`; `None` if it never did.
    pub result: Option<serde_json::Value>,
    /// `None`: killed at the limit.
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

impl PageRun {
    /// The last `lines` lines of the browser's stderr, for failure messages.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.stderr.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

struct Shared {
    files: HashMap<String, PathBuf>,
    handler: Box<Handler>,
    result: Mutex<Option<serde_json::Value>>,
    reported: Condvar,
    deadline: Instant,
    /// Set when the browser is gone: held requests are answered at once.
    stop: AtomicBool,
}

/// Opens `/{page}` of a page server that serves `files` (URL path, such as
/// `/page.html`, to a file) and answers other calls with `handler`, in
/// headless Chromium, with `query` appended to the page's URL; returns the
/// page's result once it reported, or what there was at `limit`.
pub fn run_page(
    files: &[(&str, PathBuf)],
    page: &str,
    query: &str,
    handler: impl Fn(&PageCall) -> Answer + Send + Sync + 'static,
    profile: &Path,
    limit: Duration,
) -> PageRun {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
    listener.set_nonblocking(true).expect("nonblocking listener");
    let addr = listener.local_addr().expect("page server address");
    let shared = Arc::new(Shared {
        files: files.iter().map(|(p, f)| (p.to_string(), f.clone())).collect(),
        handler: Box::new(handler),
        result: Mutex::new(None),
        reported: Condvar::new(),
        deadline: Instant::now() + limit,
        stop: AtomicBool::new(false),
    });
    let server = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || accept_loop(listener, &shared))
    };
    let mut chromium = Command::new("chromium");
    chromium
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("http://{addr}{page}?{query}"));
    let (status, _stdout, stderr) = run_bounded(chromium, limit);
    {
        let _lock = shared.result.lock().unwrap();
        shared.stop.store(true, Ordering::Relaxed);
        shared.reported.notify_all();
    }
    let _ = server.join();
    let _ = std::fs::remove_dir_all(profile);
    let result = shared.result.lock().unwrap().take();
    PageRun { result, status, stderr }
}

/// Runs `command` in a process group of its own; past `limit` the whole
/// group (a browser's helper processes too) is killed by its id. Returns
/// the exit status (`None`: killed at the limit), stdout and stderr.
pub fn run_bounded(mut command: Command, limit: Duration) -> (Option<ExitStatus>, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("the client starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A helper the browser left behind could hold the pipes open: kill the
    // group (only this run's processes) before reading them to the end.
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    (
        status,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    )
}

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < shared.deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = Arc::clone(shared);
                std::thread::spawn(move || serve(stream, &shared));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let left = shared.deadline.saturating_duration_since(Instant::now());
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
    let Some(call) = read_call(&stream) else {
        return; // a preconnect that never asked for anything
    };
    let (status, body, kind) = match (call.method.as_str(), call.path.as_str()) {
        ("POST", "/result") => record_result(shared, &call.body),
        ("GET", "/hold") => {
            wait_for_result(shared);
            (204, String::new(), "text/plain")
        }
        ("GET", path) if shared.files.contains_key(path) => match std::fs::read_to_string(&shared.files[path]) {
            Ok(text) => (200, text, content_type(path)),
            Err(e) => (500, format!("cannot read {path}: {e}"), "text/plain"),
        },
        _ => {
            let (status, body) = (shared.handler)(&call);
            let kind = if body.starts_with(['{', '[']) {
                "application/json"
            } else {
                "text/plain"
            };
            (status, body, kind)
        }
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {kind}; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = (&stream).write_all(head.as_bytes());
    let _ = (&stream).write_all(body.as_bytes());
}

fn record_result(shared: &Shared, body: &str) -> (u16, String, &'static str) {
    match serde_json::from_str(body) {
        Ok(value) => {
            *shared.result.lock().unwrap() = Some(value);
            shared.reported.notify_all();
            (204, String::new(), "text/plain")
        }
        Err(e) => {
            // Still a result: the test shows what the page sent.
            *shared.result.lock().unwrap() =
                Some(serde_json::json!({"unparsable_result": body, "error": e.to_string()}));
            shared.reported.notify_all();
            (400, format!("not JSON: {e}"), "text/plain")
        }
    }
}

fn wait_for_result(shared: &Shared) {
    let mut result = shared.result.lock().unwrap();
    while result.is_none() && !shared.stop.load(Ordering::Relaxed) {
        let left = shared.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        result = shared.reported.wait_timeout(result, left).unwrap().0;
    }
}

fn read_call(stream: &TcpStream) -> Option<PageCall> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    if length > MAX_BODY_BYTES {
        return None;
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Some(PageCall {
        method,
        path: path.to_string(),
        query: parse_query(query),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `a=1&b=x%20y` (the page encodes with `URLSearchParams`).
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html",
        Some("js") => "text/javascript",
        _ => "application/octet-stream",
    }
}
