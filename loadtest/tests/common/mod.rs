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

/// The real `hubbub` with `extra` flags, for tests of behaviour only hubbub has (its deadlines,
/// its close codes). `None`, with a note, when it cannot be had; a failure instead with
/// `HUBBUB_LOAD_REQUIRE_HUBBUB=1`.
pub fn hubbub(extra: &[&str]) -> Option<Server> {
    match hubbub_bin().and_then(|bin| start_hubbub(&bin, extra)) {
        Ok(server) => Some(server),
        Err(why) if std::env::var_os("HUBBUB_LOAD_REQUIRE_HUBBUB").is_some() => {
            panic!("hubbub required: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: this test needs hubbub itself: {why}");
            None
        }
    }
}

/// `HUBBUB_BIN`, else `hubbub` brought up to date once with `cargo build --workspace --bins`
/// in the same profile as this test: the workspace build CI runs first, so this is a no-op
/// there, and it neither builds a debug server for a release test run nor rebuilds hubbub with
/// other dependency features (as `-p hubbub` alone would, replacing the binary).
fn hubbub_bin() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Some(bin) = std::env::var_os("HUBBUB_BIN") {
        return Ok(PathBuf::from(bin));
    }
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let profile: &[&str] = if cfg!(debug_assertions) { &[] } else { &["--release"] };
            let status = Command::new(cargo)
                .args(["build", "-q", "--workspace", "--bins"])
                .args(profile)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err("`cargo build --workspace --bins` failed".into());
            }
            // The load tester's binary and hubbub's share the target directory.
            let dir = PathBuf::from(env!("CARGO_BIN_EXE_hubbub-load"));
            Ok(dir.with_file_name("hubbub"))
        })
        .clone()
}

fn start_hubbub(bin: &PathBuf, extra: &[&str]) -> Result<Server, String> {
    // Its own admin port too: the default one (9090) is taken by the first of the servers the
    // tests start at the same time, and the others would not start.
    let admin: &[&str] = if extra.contains(&"--admin-listen") {
        &[]
    } else {
        &["--admin-listen", "127.0.0.1:0"]
    };
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .args(admin)
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

    /// The `attack` section of a trickle or flood report.
    pub fn attack(&self) -> &serde_json::Value {
        let attack = &self.report["attack"];
        assert!(attack.is_object(), "no attack section: {}", self.stdout());
        attack
    }

    /// A number from the `attack` section.
    pub fn attack_u64(&self, name: &str) -> u64 {
        self.attack()[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no attack.{name}: {}", self.stdout()))
    }

    /// `attack.ended_by` (or `failed_by`) as (label, count) pairs.
    pub fn attack_counts(&self, name: &str) -> Vec<(String, u64)> {
        let map = self.attack()[name].as_object().cloned().unwrap_or_default();
        map.into_iter().map(|(k, v)| (k, v.as_u64().unwrap_or(0))).collect()
    }

    /// Checks what every trickle and flood report must say: every attacker started and accounted
    /// for once (began + failed == attackers, ended + alive == began, the labels add up), and
    /// every way an attacker ended named with a label the tool defines.
    pub fn assert_attack_accounted(&self, attackers: u64) {
        let out = self.stdout();
        assert_eq!(self.attack()["accounted"], true, "{out}");
        assert_eq!(self.attack_u64("attackers"), attackers, "{out}");
        let (began, failed) = (self.attack_u64("began"), self.attack_u64("failed"));
        let (ended, alive) = (self.attack_u64("ended"), self.attack_u64("alive"));
        assert_eq!(self.attack_u64("unstarted"), 0, "every attacker started: {out}");
        assert_eq!(began + failed, attackers, "{out}");
        assert_eq!(ended + alive, began, "{out}");
        let ended_by = self.attack_counts("ended_by");
        assert_eq!(ended_by.iter().map(|(_, n)| n).sum::<u64>(), ended, "{out}");
        assert_eq!(
            self.attack_counts("failed_by").iter().map(|(_, n)| n).sum::<u64>(),
            failed,
            "{out}"
        );
        for (label, _) in &ended_by {
            assert!(is_known_end(label), "unknown end label {label:?}: {out}");
        }
        let lifetimes = self.report["latency"]["lifetime"]["count"].as_u64().unwrap_or(0);
        assert_eq!(lifetimes, ended, "one lifetime per ended attacker: {out}");
    }
}

/// Labels an ended connection may carry: `close_CODE` (a parsed Close frame), `http_STATUS` (a
/// parsed status line), or a TCP end.
pub fn is_known_end(label: &str) -> bool {
    let code = |prefix: &str, digits: usize| {
        label
            .strip_prefix(prefix)
            .is_some_and(|c| c.len() == digits && c.bytes().all(|b| b.is_ascii_digit()))
    };
    code("close_", 4) || code("http_", 3) || ["eof", "eof_mid_frame", "reset", "protocol_error"].contains(&label)
}

/// Runs `hubbub-load ARGS` expecting it to refuse them: exit 1 and no report; returns stderr.
pub fn refused(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hubbub-load"))
        .args(args)
        .output()
        .expect("run hubbub-load");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{args:?} must be refused: {stderr}");
    stderr
}

/// A loopback URL nobody listens on.
pub fn nothing_listening(path: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("ws://127.0.0.1:{port}{path}")
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
