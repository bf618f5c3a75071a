//! Owns the well-behaved client of the hostile scenarios (`--probe`): one echo connection on a
//! thread and event loop of its own, so the attackers' loop cannot delay it, sending one message
//! at a time on a fixed schedule (`--probe-interval-ms`) while the attack runs.
//!
//! A message's round trip is measured from its *scheduled* time: while an answer is late the next
//! messages wait, and are then sent at once with their own scheduled times, so a stall of the
//! server shows in full (no coordinated omission). Messages due while the probe had no connection
//! are never sent and count as failed, as do unanswered and wrong ones: `probe_failed` is
//! `probe_due - probe_received`. A lost connection is re-made every [`RECONNECT_NS`].
//!
//! Round trips are split at the start of the attack: `probe_before` (the baseline, the probe
//! alone) and `probe` (during the attack).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cli::{Cli, ProbeArgs};
use crate::clock::{now_ns, secs_to_ns};
use crate::engine::{Closed, Driver, Engine, EngineConfig, Net};
use crate::payload;
use crate::scenario::{drive, Outcome, Pacer, RunError, Staged};
use crate::stats::Latency;
use crate::target::Target;

/// Prefix of the probe's failure labels (`probe_refused`, `probe_dropped_close_1001`).
pub const PROBE_PREFIX: &str = "probe_";
/// Wait between connection attempts after a failure or a loss.
pub const RECONNECT_NS: u64 = 100_000_000;
/// How long a stopping probe waits for the answer to its last message.
const LAST_ANSWER_NS: u64 = 1_000_000_000;

/// What the scenario's thread and the probe's thread share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// When the attack started (0: not yet).
    attack_start: AtomicU64,
    /// The first connection attempt has resolved (opened or failed).
    settled: AtomicBool,
}

/// A running probe.
pub struct ProbeHandle {
    shared: Arc<Shared>,
    thread: JoinHandle<Result<Outcome, RunError>>,
}

/// The probe's URL: `--probe-url`, else `/echo` on the target's host and port.
pub fn probe_url(args: &ProbeArgs, target_url: &str) -> Result<String, RunError> {
    if let Some(url) = &args.probe_url {
        return Ok(url.clone());
    }
    let target = Target::parse(target_url)?;
    let scheme = if target.tls_name.is_some() { "wss" } else { "ws" };
    Ok(format!("{scheme}://{}/echo", target.host))
}

/// Starts the probe on a thread of its own (from the default source address, never from
/// `--source-ips`: with per-address limits it is a different client from the attackers).
pub fn start(cli: &Cli, args: &ProbeArgs, target_url: &str) -> Result<ProbeHandle, RunError> {
    let c = &cli.common;
    let target = Target::parse(&probe_url(args, target_url)?)?;
    let cfg = EngineConfig {
        tls: crate::scenario::tls_for(cli, &target)?,
        target,
        sources: None,
        handshake_timeout_ns: secs_to_ns(c.handshake_timeout_secs),
        close_timeout_ns: secs_to_ns(c.close_timeout_secs),
        max_frame: c.max_frame,
    };
    let mut engine = Engine::new(cfg)?;
    let shared = Arc::new(Shared::default());
    let interval_ns = (args.probe_interval_ms * 1e6).max(1.0) as u64;
    let mut prober = Prober::new(shared.clone(), interval_ns, args.probe_size as usize, now_ns());
    let thread = std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            drive(&mut engine, &mut prober)?;
            Ok(prober.into_outcome())
        })
        .map_err(RunError::Io)?;
    Ok(ProbeHandle { shared, thread })
}

impl ProbeHandle {
    /// Waits until the first connection attempt resolved, at most `timeout`.
    pub fn wait_settled(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        while !self.shared.settled.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The attack starts now: later round trips count as `probe`, not `probe_before`.
    pub fn mark_attack(&self, now: u64) {
        self.shared.attack_start.store(now.max(1), Ordering::Release);
    }

    /// Stops the probe and returns what it measured.
    pub fn stop(self) -> Result<Outcome, RunError> {
        self.shared.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| RunError::Worker("the probe thread panicked".into()))?
    }
}

struct Prober {
    shared: Arc<Shared>,
    pacer: Pacer,
    size: usize,
    /// The current connection (connecting or open).
    id: Option<usize>,
    open: bool,
    /// The first slot of the schedule not yet sent or given up.
    next_slot: u64,
    /// The message in flight: its sequence number and scheduled time.
    waiting: Option<(u64, u64)>,
    seq: u64,
    reconnect_at: u64,
    /// Set when told to stop: slots due by then, and the last wait for an answer.
    stopped: Option<(u64, u64)>,
    done: bool,
    out: Outcome,
    before: Latency,
    during: Latency,
}

impl Prober {
    fn new(shared: Arc<Shared>, interval_ns: u64, size: usize, now: u64) -> Prober {
        Prober {
            shared,
            pacer: Pacer::new(now, 1e9 / interval_ns as f64),
            size,
            id: None,
            open: false,
            next_slot: 0,
            waiting: None,
            seq: 0,
            reconnect_at: now,
            stopped: None,
            done: false,
            out: Outcome::default(),
            before: Latency::new(),
            during: Latency::new(),
        }
    }

    fn into_outcome(mut self) -> Outcome {
        self.out.latency.insert("probe_before".into(), self.before);
        self.out.latency.insert("probe".into(), self.during);
        self.out
    }

    fn connect(&mut self, net: &mut Net, now: u64) {
        self.out.counters.probe_connects += 1;
        match net.connect(0, None, now) {
            Ok(id) => self.id = Some(id),
            Err(reason) => {
                *self
                    .out
                    .failures
                    .entry(format!("{PROBE_PREFIX}{}", reason.label()))
                    .or_default() += 1;
                self.reconnect_at = now + RECONNECT_NS;
                self.shared.settled.store(true, Ordering::Release);
            }
        }
    }

    fn send_due(&mut self, net: &mut Net, due: u64) {
        let Some(id) = self.id.filter(|_| self.open && self.waiting.is_none()) else {
            return;
        };
        if self.next_slot >= due {
            return;
        }
        let ts = self.pacer.at(self.next_slot);
        self.next_slot += 1;
        let seq = self.seq;
        self.seq += 1;
        net.send(id, true, self.size, |p| payload::write_echo(p, seq, ts));
        self.waiting = Some((seq, ts));
        self.out.counters.probe_sent += 1;
    }

    /// Stops scheduling; ends once the last answer is in or has waited long enough.
    fn stopping(&mut self, now: u64) -> Option<u64> {
        if self.stopped.is_none() && self.shared.stop.load(Ordering::Acquire) {
            self.stopped = Some((self.pacer.due(now), now + LAST_ANSWER_NS));
        }
        let (due, until) = self.stopped?;
        if self.waiting.is_none() || now >= until {
            let c = &mut self.out.counters;
            c.probe_due = due;
            c.probe_failed = due.saturating_sub(c.probe_received);
            self.done = true;
        }
        Some(due)
    }
}

impl Staged for Prober {
    fn done(&self) -> bool {
        self.done
    }

    fn next_due(&self) -> u64 {
        match (self.open, self.waiting) {
            (true, None) => self.pacer.at(self.next_slot),
            _ => u64::MAX,
        }
    }
}

impl Driver for Prober {
    fn on_open(&mut self, _net: &mut Net, _id: usize, now: u64, _handshake_ns: u64) {
        self.open = true;
        self.shared.settled.store(true, Ordering::Release);
        // Slots that fell due while there was no connection are lost, not sent late; the one
        // due last is sent now.
        self.next_slot = self.next_slot.max(self.pacer.due(now).saturating_sub(1));
    }

    fn on_message(&mut self, _net: &mut Net, _id: usize, now: u64, text: bool, data: &[u8]) {
        let Some((seq, ts)) = self.waiting.take() else {
            self.out.counters.verify_errors += 1;
            return;
        };
        if !text || !payload::is_echo(data, self.size, seq, ts) {
            self.out.counters.verify_errors += 1;
            return;
        }
        self.out.counters.probe_received += 1;
        let attack = self.shared.attack_start.load(Ordering::Acquire);
        let rtt = now.saturating_sub(ts);
        if attack == 0 || ts < attack {
            self.before.record(rtt);
        } else {
            self.during.record(rtt);
        }
    }

    fn on_closed(&mut self, _net: &mut Net, _id: usize, now: u64, closed: Closed) {
        let label = closed.reason.map_or_else(|| "closed".to_string(), |r| r.label());
        let key = if closed.was_open {
            format!("{PROBE_PREFIX}dropped_{label}")
        } else {
            format!("{PROBE_PREFIX}{label}")
        };
        *self.out.failures.entry(key).or_default() += 1;
        self.id = None;
        self.open = false;
        self.waiting = None;
        self.reconnect_at = now + RECONNECT_NS;
        self.shared.settled.store(true, Ordering::Release);
    }

    fn tick(&mut self, net: &mut Net, now: u64) {
        let due = match self.stopping(now) {
            Some(due) => due,
            None => self.pacer.due(now),
        };
        if self.done {
            return;
        }
        if self.id.is_none() && self.stopped.is_none() && now >= self.reconnect_at {
            self.connect(net, now);
        }
        self.send_due(net, due);
    }
}
