//! Owns one invocation from parsed flags to exit status: run in this process, as a worker, or as
//! the parent of workers; then print the table, write `--json` and `--plot`, and exit with the
//! report's verdict (0 passed, 1 nothing worked or could not run, 2 a threshold was missed).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::{Cli, Scenario};
use crate::clock::now_ns;
use crate::coord::{self, Coord};
use crate::progress::Progress;
use crate::report::Report;
use crate::scenario::{self, RunError};
use crate::sysmem::Probe;

/// Runs the invocation; `Ok` carries the exit status.
pub fn main(cli: Cli) -> Result<ExitCode, RunError> {
    let fd_limit = crate::net::raise_fd_limit();
    if cli.common.worker_index.is_some() {
        let finished = scenario::run(&cli, Coord::worker(cli.common.progress_secs))?;
        let json = serde_json::to_string(&finished.outcome).map_err(|e| RunError::Worker(e.to_string()))?;
        coord::say(&format!("{}{json}", coord::RESULT));
        return Ok(ExitCode::SUCCESS);
    }
    warn_about_fd_limit(&cli, fd_limit);
    let started = Instant::now();
    let probe = probe_of(&cli);
    let finished = if cli.common.procs > 1 {
        crate::procs::run_parent(&cli, probe, time_bound(&cli))?
    } else {
        let progress = Progress::new(cli.common.quiet, cli.common.progress_secs, now_ns());
        scenario::run(&cli, Coord::local(progress, probe))?
    };
    let memory = finished.mem.filter(|_| matches!(cli.scenario, Scenario::Connect(_)));
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = crate::sysmem::own_cpu_secs();
    let report = Report::new(&cli, finished.outcome, memory, elapsed, cpu);
    print!("{}", report.table());
    write_outputs(&cli, &report)?;
    Ok(ExitCode::from(report.exit_code))
}

fn write_outputs(cli: &Cli, report: &Report) -> Result<(), RunError> {
    if let Some(path) = &cli.common.json {
        let text = serde_json::to_string_pretty(report).map_err(|e| RunError::Usage(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| RunError::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    if let Some(path) = &cli.common.plot {
        let title = format!("hubbub-load {}: {}", report.scenario, report.target);
        // The attackers' lifetimes (seconds) would flatten the probe's round trips (ms).
        let hostile = cli.scenario.is_hostile();
        let shown = report
            .histograms
            .iter()
            .filter(|(name, _)| !hostile || name.starts_with("probe"))
            .map(|(name, h)| (name.clone(), h.clone()))
            .collect();
        let svg = crate::plot::svg(&title, &shown);
        std::fs::write(path, svg).map_err(|e| RunError::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

fn probe_of(cli: &Cli) -> Probe {
    match &cli.scenario {
        Scenario::Connect(a) => Probe {
            server_pid: a.server_pid,
            metrics_url: a.metrics_url.clone(),
        },
        _ => Probe::default(),
    }
}

/// Connections one process is asked to hold.
fn per_process_connections(cli: &Cli) -> u64 {
    let total = match &cli.scenario {
        Scenario::Connect(a) => a.connections,
        Scenario::Echo(a) => a.connections,
        Scenario::Broadcast(a) => a.subscribers + a.publishers,
        Scenario::Slow(a) => a.connections,
        Scenario::Trickle(a) => a.connections + 1,
        Scenario::Flood(a) => a.connections + 1,
        Scenario::Churn(a) => a
            .max_concurrent
            .min((a.rate * (a.hold_ms as f64 / 1000.0 + 1.0)) as u64),
    };
    total.div_ceil(u64::from(cli.common.procs))
}

fn warn_about_fd_limit(cli: &Cli, fd_limit: u64) {
    let need = per_process_connections(cli);
    if need + 64 > fd_limit {
        eprintln!(
            "hubbub-load: {need} connections per process but the open-file limit is {fd_limit}; \
             use --procs {} (the excess will fail as no_files)",
            (need * u64::from(cli.common.procs)).div_ceil(fd_limit.saturating_sub(64).max(1))
        );
    }
}

/// The longest a whole run may take before the parent kills its workers.
fn time_bound(cli: &Cli) -> Duration {
    let c = &cli.common;
    let conn = |n: u64, rate: f64| n as f64 / rate.max(1.0) + c.handshake_timeout_secs;
    let join = |cf: &crate::cli::CentrifugeArgs| if cf.centrifuge { c.handshake_timeout_secs } else { 0.0 };
    let body = match &cli.scenario {
        // --centrifuge: the join (connect, subscribe) has a deadline of its own, as long.
        Scenario::Connect(a) => conn(a.connections, a.rate) + a.hold_secs + join(&a.centrifuge),
        Scenario::Echo(a) => conn(a.connections, a.connect_rate) + a.duration_secs + a.drain_secs,
        Scenario::Broadcast(a) => {
            conn(a.subscribers + a.publishers, a.connect_rate)
                + join(&a.centrifuge)
                + a.duration_secs
                + a.drain_secs
                + a.settle_ms as f64 / 1e3
        }
        Scenario::Churn(a) => a.duration_secs + c.handshake_timeout_secs + a.hold_ms as f64 / 1e3,
        Scenario::Slow(a) => conn(a.connections, a.connect_rate) + a.duration_secs * 2.0,
        Scenario::Trickle(a) => c.handshake_timeout_secs + a.probe.probe_baseline_secs + a.duration_secs,
        Scenario::Flood(a) => c.handshake_timeout_secs + a.probe.probe_baseline_secs + a.duration_secs + a.drain_secs,
    };
    Duration::from_secs_f64(body + c.close_timeout_secs + 30.0)
}
