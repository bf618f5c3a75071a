//! Owns `--procs K`: starting K worker processes of this binary, each with its share, releasing
//! them together once all are connected, showing their summed progress, and merging their results
//! exactly (counts added, HDR histograms merged value by value).
//!
//! Workers are children of this process only; each is killed by its own handle if the run
//! overstays its time bound.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cli::Cli;
use crate::clock::now_ns;
use crate::coord::{GO, PROGRESS, READY, RESULT};
use crate::progress::Progress;
use crate::scenario::{Finished, Outcome, RunError};
use crate::stats::Counters;
use crate::sysmem::{MemReport, Probe};

/// A line from worker `index`, or `None` when its stdout closed.
type Line = (usize, Option<String>);

/// Runs the scenario in `cli.common.procs` workers and merges their outcomes.
pub fn run_parent(cli: &Cli, probe: Probe, bound: Duration) -> Result<Finished, RunError> {
    let k = cli.common.procs as usize;
    let before = probe.snapshot();
    let (tx, rx) = mpsc::channel::<Line>();
    let mut children = Vec::with_capacity(k);
    let mut stdins = Vec::with_capacity(k);
    for i in 0..k {
        let (child, stdin) = spawn(i, tx.clone())?;
        children.push(child);
        stdins.push(stdin);
    }
    drop(tx);
    let mut progress = Progress::new(cli.common.quiet, cli.common.progress_secs, now_ns());
    let result = collect(
        k,
        &rx,
        &mut stdins,
        &mut progress,
        &probe,
        before,
        Instant::now() + bound,
    );
    progress.finish();
    if result.is_err() {
        for child in &mut children {
            let _ = child.kill();
        }
    }
    for child in &mut children {
        let _ = child.wait();
    }
    result
}

fn spawn(index: usize, tx: mpsc::Sender<Line>) -> Result<(Child, ChildStdin), RunError> {
    let exe = std::env::current_exe().map_err(|e| RunError::Worker(format!("cannot find own binary: {e}")))?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--worker-index")
        .arg(index.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| RunError::Worker(format!("cannot start worker {index}: {e}")))?;
    let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
        return Err(RunError::Worker("worker pipes missing".into()));
    };
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((index, Some(line))).is_err() {
                return;
            }
        }
        let _ = tx.send((index, None));
    });
    Ok((child, stdin))
}

/// Reads the workers' lines until every one has sent its result.
fn collect(
    k: usize,
    rx: &mpsc::Receiver<Line>,
    stdins: &mut [ChildStdin],
    progress: &mut Progress,
    probe: &Probe,
    before: crate::sysmem::Snapshot,
    deadline: Instant,
) -> Result<Finished, RunError> {
    let mut latest = vec![Counters::default(); k];
    let mut results: Vec<Option<Outcome>> = vec![None; k];
    let (mut ready, mut opened, mut mem) = (0, 0u64, None);
    while results.iter().any(Option::is_none) {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Err(RunError::Worker("workers overran the run's time bound; killed".into()));
        }
        let (i, line) = match rx.recv_timeout(wait.min(Duration::from_millis(200))) {
            Ok(got) => got,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let Some(line) = line else {
            if results[i].is_none() {
                return Err(RunError::Worker(format!("worker {i} exited without a result")));
            }
            continue;
        };
        if let Some(rest) = line.strip_prefix(READY) {
            ready += 1;
            opened += rest.trim().parse::<u64>().unwrap_or(0);
            if ready == k {
                mem = Some(MemReport::new(before, probe.snapshot(), opened));
                for stdin in stdins.iter_mut() {
                    let _ = writeln!(stdin, "{GO}");
                    let _ = stdin.flush();
                }
            }
        } else if let Some(json) = line.strip_prefix(PROGRESS) {
            if let Ok(c) = serde_json::from_str(json) {
                latest[i] = c;
            }
            let mut sum = Counters::default();
            latest.iter().for_each(|c| sum.merge(c));
            progress.update(now_ns(), "run", &sum);
        } else if let Some(json) = line.strip_prefix(RESULT) {
            let out = serde_json::from_str(json).map_err(|e| RunError::Worker(format!("worker {i} result: {e}")))?;
            results[i] = Some(out);
        }
    }
    let mut merged = Outcome::default();
    for (i, r) in results.iter().enumerate() {
        merged.merge(
            r.as_ref()
                .ok_or_else(|| RunError::Worker(format!("worker {i} sent no result")))?,
        );
    }
    Ok(Finished { outcome: merged, mem })
}
