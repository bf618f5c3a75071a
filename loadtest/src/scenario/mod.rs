//! Owns what the scenarios share: the merged result of a run ([`Outcome`]), pacing at a fixed rate
//! ([`Pacer`]), and the stages most scenarios go through ([`Lifecycle`]): connect at a rate, tell the
//! coordinator, wait for its go, run for a fixed time, drain what is in flight, close everything.
//! Every stage has an end in time, so every run stops by itself.

pub mod attack;
pub mod broadcast;
pub mod churn;
pub mod connect;
pub mod echo;
pub mod flood;
pub mod probe;
pub mod slow;
pub mod trickle;

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cli::Cli;
use crate::clock::secs_to_ns;
use crate::coord::Coord;
use crate::engine::{Closed, Driver, Engine, EngineConfig, Net};
use crate::net::Reason;
use crate::stats::{count_failure, merge_failures, Counters, Failures, Latency};
use crate::sysmem::MemReport;
use crate::target::{SourceIps, Target, TargetError};
use crate::tls::{TlsSettings, TlsSetupError};

/// Why a run could not be carried out. The user fixes the flag or the environment.
#[derive(Debug, Error)]
pub enum RunError {
    /// A bad `--url` or `--source-ips`.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The event loop itself failed (not a connection: those are counted, not errors).
    #[error("event loop: {0}")]
    Io(#[from] io::Error),
    /// A worker process failed or said something unreadable.
    #[error("worker: {0}")]
    Worker(String),
    /// A flag combination that cannot work.
    #[error("{0}")]
    Usage(String),
    /// `wss://` settings that cannot work (`--ca`, `--insecure`).
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// A broadcast subscriber that missed or reordered messages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GapRecord {
    /// Global subscriber number.
    pub subscriber: u64,
    /// Messages missing in the middle of a sequence.
    pub gaps: u64,
    /// Messages that came with a lower sequence number than expected.
    pub reordered: u64,
}

/// Everything one process measured; workers send it to the parent, which merges them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub counters: Counters,
    /// Attempts that failed, and (prefixed `dropped_`) open connections lost, by reason.
    pub failures: Failures,
    /// Latency distributions by name (`handshake`, `rtt`, `delivery`, `ping`, `close`).
    pub latency: BTreeMap<String, Latency>,
    /// Time from the first connect to the last connection resolved (the slowest worker's).
    pub connect_ns: u64,
    /// Length of the measured phase (the longest worker's).
    pub measure_ns: u64,
    /// Subscribers with the most gaps (at most [`MAX_GAP_RECORDS`]).
    pub worst_gaps: Vec<GapRecord>,
}

/// How many gap records a report keeps.
pub const MAX_GAP_RECORDS: usize = 20;

impl Outcome {
    /// Adds another process's outcome: counts add, histograms merge exactly, times take the max.
    pub fn merge(&mut self, other: &Outcome) {
        self.counters.merge(&other.counters);
        merge_failures(&mut self.failures, &other.failures);
        for (name, h) in &other.latency {
            self.latency.entry(name.clone()).or_default().merge(h);
        }
        self.connect_ns = self.connect_ns.max(other.connect_ns);
        self.measure_ns = self.measure_ns.max(other.measure_ns);
        self.worst_gaps.extend(other.worst_gaps.iter().cloned());
        self.worst_gaps.sort_by_key(|g| std::cmp::Reverse(g.gaps + g.reordered));
        self.worst_gaps.truncate(MAX_GAP_RECORDS);
    }
}

/// What a scenario returns: its outcome, and the memory report of a single-process run.
pub struct Finished {
    pub outcome: Outcome,
    pub mem: Option<MemReport>,
}

/// Runs the scenario named on the command line in this process.
pub fn run(cli: &Cli, coord: Coord) -> Result<Finished, RunError> {
    use crate::cli::Scenario;
    let part = Part {
        index: cli.common.worker_index.unwrap_or(0),
        of: cli.common.procs,
    };
    match &cli.scenario {
        Scenario::Connect(a) => connect::run(cli, a, part, coord),
        Scenario::Echo(a) => echo::run(cli, a, part, coord),
        Scenario::Broadcast(a) => broadcast::run(cli, a, part, coord),
        Scenario::Churn(a) => churn::run(cli, a, part, coord),
        Scenario::Slow(a) => slow::run(cli, a, part, coord),
        Scenario::Trickle(a) => trickle::run(cli, a, part, coord),
        Scenario::Flood(a) => flood::run(cli, a, part, coord),
    }
}

/// This process's part of the run: worker `index` of `of`.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub index: u32,
    pub of: u32,
}

impl Part {
    /// This worker's share of a count.
    pub fn share(self, total: u64) -> u64 {
        crate::cli::share(total, self.index, self.of)
    }

    /// The global number of this worker's first item of a count.
    pub fn start(self, total: u64) -> u64 {
        crate::cli::share_start(total, self.index, self.of)
    }

    /// This worker's share of a rate.
    pub fn rate(self, total: f64) -> f64 {
        total / f64::from(self.of.max(1))
    }
}

/// The event loop for `url` with the common options applied.
pub fn engine_for(cli: &Cli, url: &str) -> Result<Engine, RunError> {
    let c = &cli.common;
    let sources = c.source_ips.as_deref().map(SourceIps::parse).transpose()?;
    let target = Target::parse(url)?;
    let cfg = EngineConfig {
        tls: tls_for(cli, &target)?,
        target,
        sources,
        handshake_timeout_ns: secs_to_ns(c.handshake_timeout_secs),
        close_timeout_ns: secs_to_ns(c.close_timeout_secs),
        max_frame: c.max_frame,
    };
    Ok(Engine::new(cfg)?)
}

/// The client TLS settings for a `wss://` target (`None` for `ws://`).
pub fn tls_for(cli: &Cli, target: &Target) -> Result<Option<TlsSettings>, RunError> {
    let Some(name) = &target.tls_name else {
        return Ok(None);
    };
    let c = &cli.common;
    let settings = TlsSettings::new(name, c.ca.as_deref(), c.insecure, !c.tls_no_resume)?;
    Ok(Some(settings))
}

/// Adds the engine's TLS handshake times to a run's latencies (`wss://` runs only).
pub fn add_tls_handshakes(engine: &mut Engine, out: &mut Outcome) {
    if let Some(tls) = engine.take_tls_handshakes() {
        out.latency.insert("tls_handshake".into(), tls);
    }
}

/// Turns the loop until the driver says it is done.
///
/// `epoll_wait` sleeps in whole milliseconds, so when the next scheduled send is less than one
/// away the loop polls without sleeping: an open-loop message leaves at its scheduled time, not up
/// to a millisecond later (which would show up as latency of the server).
pub fn drive<D: Driver + Staged>(engine: &mut Engine, driver: &mut D) -> Result<(), RunError> {
    while !driver.done() {
        let close = driver.next_due() < crate::clock::now_ns() + 1_000_000;
        let timeout = if close {
            Duration::ZERO
        } else {
            Duration::from_millis(1)
        };
        engine.turn(driver, timeout)?;
    }
    Ok(())
}

/// A driver that knows when it has finished and when it next has to send.
pub trait Staged {
    fn done(&self) -> bool;

    /// When the next scheduled send is due (`u64::MAX`: nothing scheduled).
    fn next_due(&self) -> u64 {
        u64::MAX
    }
}

/// Events at a fixed rate from a start time: event `k` is due at `start + k / rate`.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start: u64,
    interval_ns: f64,
}

impl Pacer {
    /// `rate` events per second from `start`; a rate of 0 or less means "all at once".
    pub fn new(start: u64, rate: f64) -> Pacer {
        let interval_ns = if rate > 0.0 && rate.is_finite() {
            1e9 / rate
        } else {
            0.0
        };
        Pacer { start, interval_ns }
    }

    /// How many events are due by `now` (`u64::MAX` when unpaced).
    pub fn due(&self, now: u64) -> u64 {
        if self.interval_ns == 0.0 {
            return u64::MAX;
        }
        (now.saturating_sub(self.start) as f64 / self.interval_ns) as u64 + 1
    }

    /// When event `k` is due.
    pub fn at(&self, k: u64) -> u64 {
        self.start + (k as f64 * self.interval_ns) as u64
    }
}

/// The stages of [`Lifecycle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Wait,
    Run,
    Drain,
    Close,
    Done,
}

impl Stage {
    /// A short name for progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Wait => "wait",
            Stage::Run => "run",
            Stage::Drain => "drain",
            Stage::Close => "close",
            Stage::Done => "done",
        }
    }
}

/// Timing of a [`Lifecycle`].
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Connections this process opens.
    pub connections: u64,
    /// Handshakes started per second (this process's share).
    pub connect_rate: f64,
    /// Length of the measured stage.
    pub run_ns: u64,
    /// Longest wait for in-flight work after the measured stage.
    pub drain_ns: u64,
    /// Longest wait for close handshakes.
    pub close_ns: u64,
}

/// Connect, wait, run, drain, close: the stages shared by `connect`, `echo`, `broadcast` and `slow`.
pub struct Lifecycle {
    pub stage: Stage,
    pub out: Outcome,
    pub handshake: Latency,
    pub coord: Coord,
    plan: Plan,
    pacer: Pacer,
    issued: u64,
    resolved: u64,
    connect_start: u64,
    run_start: u64,
    until: u64,
    /// Time of the last message received, to end the measured window there.
    pub last_rx_ns: u64,
}

impl Lifecycle {
    /// A lifecycle starting now.
    pub fn new(plan: Plan, coord: Coord, now: u64) -> Lifecycle {
        Lifecycle {
            stage: Stage::Connect,
            out: Outcome::default(),
            handshake: Latency::new(),
            coord,
            plan,
            pacer: Pacer::new(now, plan.connect_rate),
            issued: 0,
            resolved: 0,
            connect_start: now,
            run_start: 0,
            until: 0,
            last_rx_ns: 0,
        }
    }

    /// When the measured stage started.
    pub fn run_start(&self) -> u64 {
        self.run_start
    }

    /// Length of the measured stage.
    pub fn plan_run_ns(&self) -> u64 {
        self.plan.run_ns
    }

    /// Counts an upgrade.
    pub fn on_open(&mut self, handshake_ns: u64) {
        self.out.counters.opened += 1;
        self.resolved += 1;
        self.handshake.record(handshake_ns);
    }

    /// Counts a connection that upgraded but never joined (its joiner
    /// closed it: a Centrifuge `connect`/`subscribe` refused or unanswered).
    pub fn join_failed(&mut self, reason: Reason) {
        self.on_closed(&Closed {
            was_open: false,
            reason: Some(reason),
            started_ns: 0,
        });
    }

    /// Counts the end of a connection; returns `true` for an open connection lost unasked.
    pub fn on_closed(&mut self, closed: &Closed) -> bool {
        let c = &mut self.out.counters;
        if !closed.was_open {
            c.failed += 1;
            self.resolved += 1;
            count_failure(&mut self.out.failures, closed.reason.unwrap_or(Reason::Other));
            return false;
        }
        match closed.reason {
            None => {
                c.closed += 1;
                false
            }
            Some(reason) => {
                c.dropped += 1;
                *self
                    .out
                    .failures
                    .entry(format!("dropped_{}", reason.label()))
                    .or_default() += 1;
                true
            }
        }
    }

    /// Moves through the stages; returns the stage just entered, if any. `user_of` maps the
    /// connection counter to the scenario's client number and receive buffer; `outstanding` is the
    /// work still in flight (drain ends early at 0).
    pub fn advance(
        &mut self,
        net: &mut Net,
        now: u64,
        outstanding: u64,
        user_of: impl Fn(u64) -> (u32, Option<usize>),
    ) -> Option<Stage> {
        self.coord.progress(now, self.stage.name(), &self.out.counters);
        let entered = match self.stage {
            Stage::Connect => self.connect_step(net, now, user_of),
            Stage::Wait if self.coord.go() => {
                self.run_start = now;
                self.until = now + self.plan.run_ns;
                Some(Stage::Run)
            }
            Stage::Run if now >= self.until => {
                self.until = now + self.plan.drain_ns;
                Some(Stage::Drain)
            }
            Stage::Drain if outstanding == 0 || now >= self.until => {
                let end = self.last_rx_ns.max(self.run_start + self.plan.run_ns).min(now);
                self.out.measure_ns = end.saturating_sub(self.run_start);
                for id in net.open_ids() {
                    net.close(id, 1000, now);
                }
                self.until = now + self.plan.close_ns + 500_000_000;
                Some(Stage::Close)
            }
            Stage::Close if net.len() == 0 || now >= self.until => Some(Stage::Done),
            _ => None,
        };
        if let Some(stage) = entered {
            self.stage = stage;
        }
        entered
    }

    /// Ends the measured stage now (a count limit was reached).
    pub fn stop_running(&mut self, now: u64) {
        if self.stage == Stage::Run {
            self.until = now;
        }
    }

    fn connect_step(
        &mut self,
        net: &mut Net,
        now: u64,
        user_of: impl Fn(u64) -> (u32, Option<usize>),
    ) -> Option<Stage> {
        let due = self.pacer.due(now).min(self.plan.connections);
        while self.issued < due {
            let (user, rcvbuf) = user_of(self.issued);
            self.issued += 1;
            self.out.counters.attempts += 1;
            if let Err(reason) = net.connect(user, rcvbuf, now) {
                self.out.counters.failed += 1;
                self.resolved += 1;
                count_failure(&mut self.out.failures, reason);
            }
        }
        if self.resolved < self.plan.connections {
            return None;
        }
        self.out.connect_ns = now - self.connect_start;
        self.coord.ready(self.out.counters.opened);
        Some(Stage::Wait)
    }

    /// Hands back the outcome with the handshake histogram.
    pub fn finish(mut self) -> Finished {
        self.out.latency.insert("handshake".into(), self.handshake);
        let mem = self.coord.finish();
        Finished { outcome: self.out, mem }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spaces_events_evenly() {
        let p = Pacer::new(1_000, 1000.0);
        assert_eq!(p.due(1_000), 1);
        assert_eq!(p.due(1_000 + 999_999), 1);
        assert_eq!(p.due(1_000 + 10_000_000), 11);
        assert_eq!(p.at(5), 1_000 + 5_000_000);
        assert_eq!(Pacer::new(0, 0.0).due(0), u64::MAX);
    }

    #[test]
    fn outcomes_merge_counts_histograms_and_worst_gaps() {
        let mut a = Outcome::default();
        a.counters.received = 3;
        a.latency.entry("rtt".into()).or_default().record(1_000_000);
        a.worst_gaps.push(GapRecord {
            subscriber: 1,
            gaps: 1,
            reordered: 0,
        });
        let mut b = a.clone();
        b.connect_ns = 9;
        b.worst_gaps[0] = GapRecord {
            subscriber: 2,
            gaps: 5,
            reordered: 0,
        };
        a.merge(&b);
        assert_eq!(a.counters.received, 6);
        assert_eq!(a.latency["rtt"].count(), 2);
        assert_eq!(a.connect_ns, 9);
        assert_eq!(a.worst_gaps[0].subscriber, 2);
    }
}
