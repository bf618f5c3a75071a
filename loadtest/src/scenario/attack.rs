//! Owns what the hostile scenarios (`trickle`, `flood`) share: starting attackers at a rate within
//! a bounded window, remembering when each one began its attack, and accounting for every one of
//! them exactly once: failed to begin, ended by the server (how, and after how long), or still
//! alive when the run ends.
//!
//! The invariant the report checks: `attempts == opened + failed`, `opened == ended + alive`, and
//! `attempts + unstarted` is the number of attackers asked for.

use std::time::Duration;

use crate::cli::{Cli, ProbeArgs};
use crate::coord::Coord;
use crate::engine::{Closed, Net};
use crate::net::Reason;
use crate::scenario::probe::{self, ProbeHandle};
use crate::scenario::{Finished, Outcome, Pacer, Part, RunError};
use crate::stats::{count_failure, Latency};

/// Prefix of the failure labels of attackers the server ended (`ended_close_1008`, `ended_eof`).
pub const ENDED_PREFIX: &str = "ended_";

/// An attacker that began its attack: when, and which attacker it was (slab ids are reused).
#[derive(Debug, Clone, Copy)]
struct Began {
    at_ns: u64,
    user: u32,
}

/// The attackers of one process.
pub struct Attackers {
    pub out: Outcome,
    lifetime: Latency,
    alive_age: Latency,
    began: Vec<Option<Began>>,
    rate: f64,
    window_ns: u64,
    /// Set when the attack starts.
    pacer: Option<Pacer>,
    issued: u64,
    total: u64,
    first_user: u32,
    /// When the attack window ends (no new connects after it); `u64::MAX` before the start.
    pub end_ns: u64,
}

impl Attackers {
    /// `total` attackers numbered from `first_user`, to be started at `rate` per second within
    /// a window of `window_ns` from [`Attackers::start`].
    pub fn new(total: u64, first_user: u32, rate: f64, window_ns: u64) -> Attackers {
        Attackers {
            out: Outcome::default(),
            lifetime: Latency::new(),
            alive_age: Latency::new(),
            began: Vec::new(),
            rate,
            window_ns,
            pacer: None,
            issued: 0,
            total,
            first_user,
            end_ns: u64::MAX,
        }
    }

    /// The attack starts now.
    pub fn start(&mut self, now: u64) {
        self.pacer = Some(Pacer::new(now, self.rate));
        self.end_ns = now + self.window_ns;
    }

    /// Whether the attack has started.
    pub fn started(&self) -> bool {
        self.pacer.is_some()
    }

    /// Starts the attackers that are due, through `connect` (which returns the new id).
    pub fn start_due(
        &mut self,
        net: &mut Net,
        now: u64,
        mut connect: impl FnMut(&mut Net, u32) -> Result<usize, Reason>,
    ) {
        let Some(pacer) = self.pacer.filter(|_| now < self.end_ns) else {
            return;
        };
        let due = pacer.due(now).min(self.total);
        while self.issued < due {
            let user = self.first_user.wrapping_add(self.issued as u32);
            self.issued += 1;
            self.out.counters.attempts += 1;
            if let Err(reason) = connect(net, user) {
                self.out.counters.failed += 1;
                count_failure(&mut self.out.failures, reason);
            }
        }
    }

    /// How many attackers are attacking now.
    pub fn attacking(&self) -> u64 {
        self.out.counters.opened - self.out.counters.ended - self.out.counters.alive
    }

    /// One more than the highest connection id seen (for loops over ids).
    pub fn capacity(&self) -> usize {
        self.began.len()
    }

    /// Ids of the attackers attacking now (allocates).
    pub fn attacking_ids(&self) -> Vec<usize> {
        (0..self.began.len()).filter(|&id| self.began[id].is_some()).collect()
    }

    /// Attacker `id` began its attack now (head: TCP connected; the others: upgraded).
    pub fn began(&mut self, net: &Net, id: usize, now: u64) {
        if self.began.len() <= id {
            self.began.resize(id + 1, None);
        }
        let user = net.user(id).unwrap_or(0);
        self.began[id] = Some(Began { at_ns: now, user });
        self.out.counters.opened += 1;
    }

    /// Whether `id` is an attacker that began its attack (and is the same one as `user`, when given).
    pub fn is_attacking(&self, id: usize, user: Option<u32>) -> bool {
        match self.began.get(id).copied().flatten() {
            Some(b) => user.is_none_or(|u| u == b.user),
            None => false,
        }
    }

    /// Accounts for a connection that ended; `late`: found after the attack window (the client
    /// had stopped reading and only now saw it).
    pub fn on_closed(&mut self, id: usize, now: u64, closed: &Closed, late: bool) {
        let c = &mut self.out.counters;
        let Some(began) = self.began.get_mut(id).and_then(Option::take) else {
            c.failed += 1;
            count_failure(&mut self.out.failures, closed.reason.unwrap_or(Reason::Other));
            return;
        };
        c.ended += 1;
        if late {
            c.ended_late += 1;
        }
        let label = closed.reason.map_or_else(|| "client_close".to_string(), Reason::label);
        *self.out.failures.entry(format!("{ENDED_PREFIX}{label}")).or_default() += 1;
        self.lifetime.record(now.saturating_sub(began.at_ns));
    }

    /// Ends the run: every attacker still attacking is counted alive (with its age), every one
    /// still connecting failed (`timeout`), every one never started is counted `unstarted`, and
    /// all are dropped.
    pub fn finish(&mut self, net: &mut Net, now: u64) {
        self.out.counters.unstarted += self.total - self.issued;
        self.issued = self.total;
        for id in net.all_ids() {
            net.abort(id);
            match self.began.get_mut(id).and_then(Option::take) {
                Some(b) => {
                    self.out.counters.alive += 1;
                    self.alive_age.record(now.saturating_sub(b.at_ns));
                }
                None => {
                    self.out.counters.failed += 1;
                    count_failure(&mut self.out.failures, Reason::Timeout);
                }
            }
        }
    }

    /// The outcome, with the `lifetime` and `alive_age` histograms.
    pub fn into_outcome(self) -> Outcome {
        let mut out = self.out;
        out.latency.insert("lifetime".into(), self.lifetime);
        out.latency.insert("alive_age".into(), self.alive_age);
        out
    }
}

/// Starts the probe when asked (in the first process only: one probe per run), lets it measure
/// alone for its baseline, then tells the coordinator this process is ready to attack.
pub fn prepare(
    cli: &Cli,
    args: &ProbeArgs,
    url: &str,
    part: Part,
    coord: &mut Coord,
) -> Result<Option<ProbeHandle>, RunError> {
    let c = &cli.common;
    if !args.probe && (c.max_p99_ms.is_some() || c.max_error_rate.is_some()) {
        return Err(RunError::Usage(
            "--max-p99-ms and --max-error-rate judge the probe here: add --probe".into(),
        ));
    }
    let handle = if args.probe && part.index == 0 {
        let handle = probe::start(cli, args, url)?;
        handle.wait_settled(Duration::from_secs_f64(cli.common.handshake_timeout_secs));
        std::thread::sleep(Duration::from_secs_f64(args.probe_baseline_secs));
        Some(handle)
    } else {
        None
    };
    coord.ready(0);
    Ok(handle)
}

/// Stops the probe and puts its figures beside the attackers'.
pub fn conclude(
    attackers: Attackers,
    probe: Option<ProbeHandle>,
    mut coord: Coord,
    measure_ns: u64,
) -> Result<Finished, RunError> {
    let mut outcome = attackers.into_outcome();
    outcome.measure_ns = measure_ns;
    if let Some(probe) = probe {
        outcome.merge(&probe.stop()?);
    }
    let mem = coord.finish();
    Ok(Finished { outcome, mem })
}
