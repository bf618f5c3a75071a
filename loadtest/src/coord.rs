//! Owns how a running scenario talks to whoever started it: the terminal (one process), or the
//! parent (a worker of `--procs`). Both see the same calls: `ready` when the connections are up,
//! `go` to start the measured phase, `progress` every turn.
//!
//! A worker speaks a line protocol on stdout (`READY`, `PROGRESS {json}`, `RESULT {json}`) and waits
//! for `GO` on stdin, so every worker starts measuring at the same moment.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::progress::Progress;
use crate::stats::Counters;
use crate::sysmem::{MemReport, Probe, Snapshot};

/// Line prefixes of the worker protocol.
pub const READY: &str = "READY";
pub const GO: &str = "GO";
pub const PROGRESS: &str = "PROGRESS ";
pub const RESULT: &str = "RESULT ";

/// The scenario's side of the coordination. One per process, so the size of the variants does
/// not matter.
#[allow(clippy::large_enum_variant)]
pub enum Coord {
    /// A single process: shows progress and measures memory itself.
    Local {
        progress: Progress,
        probe: Probe,
        before: Snapshot,
        mem: Option<MemReport>,
    },
    /// A worker: reports to the parent and waits for its word.
    Worker {
        go: Arc<AtomicBool>,
        interval_ns: u64,
        last_ns: u64,
    },
}

impl Coord {
    /// The coordinator of a single-process run; takes the "before" memory snapshot now.
    pub fn local(progress: Progress, probe: Probe) -> Coord {
        let before = probe.snapshot();
        Coord::Local {
            progress,
            probe,
            before,
            mem: None,
        }
    }

    /// The coordinator of a worker: starts a thread that waits for `GO` on stdin.
    pub fn worker(interval_secs: f64) -> Coord {
        let go = Arc::new(AtomicBool::new(false));
        let flag = go.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == GO => flag.store(true, Ordering::Release),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            // Parent gone: start anyway so the run ends by itself.
            flag.store(true, Ordering::Release);
        });
        Coord::Worker {
            go,
            interval_ns: crate::clock::secs_to_ns(interval_secs.max(0.05)),
            last_ns: 0,
        }
    }

    /// Every connection of this process is up (or failed); `opened` of them are open.
    pub fn ready(&mut self, opened: u64) {
        match self {
            Coord::Local { probe, before, mem, .. } => *mem = Some(MemReport::new(*before, probe.snapshot(), opened)),
            Coord::Worker { .. } => say(READY),
        }
    }

    /// Whether the measured phase may start.
    pub fn go(&self) -> bool {
        match self {
            Coord::Local { .. } => true,
            Coord::Worker { go, .. } => go.load(Ordering::Acquire),
        }
    }

    /// Shows or reports the counters, at most once per interval.
    pub fn progress(&mut self, now: u64, stage: &str, counters: &Counters) {
        match self {
            Coord::Local { progress, .. } => progress.update(now, stage, counters),
            Coord::Worker {
                interval_ns, last_ns, ..
            } => {
                if now >= *last_ns + *interval_ns {
                    *last_ns = now;
                    if let Ok(json) = serde_json::to_string(counters) {
                        say(&format!("{PROGRESS}{json}"));
                    }
                }
            }
        }
    }

    /// Clears the live display; returns the memory report of a local run.
    pub fn finish(&mut self) -> Option<MemReport> {
        match self {
            Coord::Local { progress, mem, .. } => {
                progress.finish();
                mem.take()
            }
            Coord::Worker { .. } => None,
        }
    }
}

/// Writes one protocol line to stdout and flushes it.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
