//! Helpers shared by the integration tests: a server to test against (the real `hubbub` when it
//! can be found and starts, else the tungstenite fixture), and running `hubbub-load` with `--json`.

#![allow(dead_code)]

pub mod fixture;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// A server under test; a `hubbub` child is killed (by its own handle) on drop.
pub struct Server {
    pub addr: SocketAddr,
    pub kind: &'static str,
    pub pid: Option<u32>,
    child: Option<Child>,
}

impl Server {
    /// `ws://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The fixture server (always available).
pub fn fixture() -> Server {
    Server {
        addr: fixture::start(),
        kind: "fixture",
        pid: None,
        child: None,
    }
}

/// The real `hubbub` with `extra` flags when it can be had, else the fixture. Set
/// `HUBBUB_LOAD_REQUIRE_HUBBUB=1` to make a missing or broken `hubbub` fail the test instead.
pub fn server(extra: &[&str]) -> Server {
    match hubbub_bin().and_then(|bin| start_hubbub(&bin, extra)) {
        Ok(server) => server,
        Err(why) if std::env::var_os("HUBBUB_LOAD_REQUIRE_HUBBUB").is_some() => {
            panic!("hubbub required: {why}")
        }
        Err(why) => {
            eprintln!("note: testing against the tungstenite fixture, not hubbub: {why}");
            fixture()
        }
    }
}

/// `HUBBUB_BIN`, else `target/debug/hubbub` built once with `cargo build -p hubbub --bin hubbub`.
fn hubbub_bin() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Some(bin) = std::env::var_os("HUBBUB_BIN") {
        return Ok(PathBuf::from(bin));
    }
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-q", "-p", "hubbub", "--bin", "hubbub"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err("`cargo build -p hubbub --bin hubbub` failed".into());
            }
            // The load tester's binary and hubbub's share the target directory.
            let dir = PathBuf::from(env!("CARGO_BIN_EXE_hubbub-load"));
            Ok(dir.with_file_name("hubbub"))
        })
        .clone()
}

fn start_hubbub(bin: &PathBuf, extra: &[&str]) -> Result<Server, String> {
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().and_then(Result::ok));
        for _ in lines {} // keep the pipe drained
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).ok().flatten();
    let addr = line
        .as_deref()
        .and_then(|l| l.strip_prefix("hubbub listening on ws://"))
        .and_then(|a| a.trim().parse().ok());
    match addr {
        Some(addr) => Ok(Server {
            addr,
            kind: "hubbub",
            pid: Some(child.id()),
            child: Some(child),
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("hubbub did not print its listening line (got {line:?})"))
        }
    }
}

/// The result of one `hubbub-load` run.
pub struct Run {
    pub output: Output,
    pub report: serde_json::Value,
}

impl Run {
    /// A counter from the JSON report.
    pub fn count(&self, name: &str) -> u64 {
        self.report["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name}: {}", self.report))
    }

    /// A latency percentile (ms) from the JSON report.
    pub fn latency(&self, hist: &str, field: &str) -> f64 {
        self.report["latency"][hist][field]
            .as_f64()
            .unwrap_or_else(|| panic!("no {hist}.{field}"))
    }

    /// Exit code.
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    /// stdout, for assertion messages.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
}

/// Runs `hubbub-load ARGS --quiet --json TMP` and parses the report.
pub fn load(args: &[&str]) -> Run {
    let dir = std::env::temp_dir().join(format!("hubbub-load-test-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_hubbub-load"))
        .args(args)
        .arg("--quiet")
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run hubbub-load");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|_| {
        panic!(
            "no report; stdout: {} stderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        report: serde_json::from_str(&text).expect("report is JSON"),
        output,
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
