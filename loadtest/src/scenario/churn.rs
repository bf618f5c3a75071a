//! Owns the `churn` scenario: start connections at a fixed rate for T seconds, each one upgrading,
//! staying `--hold-ms`, then closing with a full close handshake (a reconnect storm). Reports the
//! share that made it through, handshake and close latency, and failures by reason.

use std::collections::VecDeque;

use crate::cli::{ChurnArgs, Cli};
use crate::clock::secs_to_ns;
use crate::coord::Coord;
use crate::engine::{Closed, Driver, Net};
use crate::scenario::{add_tls_handshakes, drive, engine_for, Finished, Outcome, Pacer, Part, RunError, Staged};
use crate::stats::{count_failure, Latency};

struct Churn {
    out: Outcome,
    coord: Coord,
    handshake: Latency,
    close: Latency,
    cycle: Latency,
    rate: f64,
    run_ns: u64,
    hold_ns: u64,
    max_concurrent: usize,
    pacer: Option<Pacer>,
    issued: u64,
    end: u64,
    give_up: u64,
    finished: bool,
    /// Open connections waiting for their hold to end: (close time, id, client number).
    holding: VecDeque<(u64, usize, u32)>,
    /// When each connection (by id) sent its close frame.
    close_sent: Vec<u64>,
}

/// Runs `churn` in this process.
pub fn run(cli: &Cli, args: &ChurnArgs, part: Part, coord: Coord) -> Result<Finished, RunError> {
    let mut engine = engine_for(cli, &args.url)?;
    let hold_ns = args.hold_ms * 1_000_000;
    let mut churn = Churn {
        out: Outcome::default(),
        coord,
        handshake: Latency::new(),
        close: Latency::new(),
        cycle: Latency::new(),
        rate: part.rate(args.rate),
        run_ns: secs_to_ns(args.duration_secs),
        hold_ns,
        max_concurrent: part.share(args.max_concurrent).max(1) as usize,
        pacer: None,
        issued: 0,
        end: u64::MAX,
        give_up: secs_to_ns(cli.common.handshake_timeout_secs + cli.common.close_timeout_secs + 1.0) + hold_ns,
        finished: false,
        holding: VecDeque::new(),
        close_sent: Vec::new(),
    };
    churn.coord.ready(0);
    drive(&mut engine, &mut churn)?;
    let Churn {
        mut out,
        mut coord,
        handshake,
        close,
        cycle,
        ..
    } = churn;
    out.latency.insert("handshake".into(), handshake);
    out.latency.insert("close".into(), close);
    out.latency.insert("cycle".into(), cycle);
    add_tls_handshakes(&mut engine, &mut out);
    let mem = coord.finish();
    Ok(Finished { outcome: out, mem })
}

impl Churn {
    fn start_due(&mut self, net: &mut Net, now: u64) {
        let Some(pacer) = self.pacer else { return };
        if now >= self.end {
            return;
        }
        let due = pacer.due(now);
        while self.issued < due {
            self.issued += 1;
            let c = &mut self.out.counters;
            if net.len() >= self.max_concurrent {
                c.skipped += 1;
                continue;
            }
            c.attempts += 1;
            if let Err(reason) = net.connect(self.issued as u32, None, now) {
                c.failed += 1;
                count_failure(&mut self.out.failures, reason);
            }
        }
    }

    fn close(&mut self, net: &mut Net, id: usize, now: u64) {
        if self.close_sent.len() <= id {
            self.close_sent.resize(id + 1, 0);
        }
        self.close_sent[id] = now;
        net.close(id, 1000, now);
    }

    fn close_held(&mut self, net: &mut Net, now: u64) {
        while let Some(&(at, id, user)) = self.holding.front() {
            if at > now {
                break;
            }
            self.holding.pop_front();
            if net.is_open(id) && net.user(id) == Some(user) {
                self.close(net, id, now);
            }
        }
    }
}

impl Staged for Churn {
    fn done(&self) -> bool {
        self.finished
    }
}

impl Driver for Churn {
    fn on_open(&mut self, net: &mut Net, id: usize, now: u64, handshake_ns: u64) {
        self.out.counters.opened += 1;
        self.handshake.record(handshake_ns);
        if self.hold_ns == 0 {
            return self.close(net, id, now);
        }
        let user = net.user(id).unwrap_or(0);
        self.holding.push_back((now + self.hold_ns, id, user));
    }

    fn on_message(&mut self, _net: &mut Net, _id: usize, _now: u64, _text: bool, data: &[u8]) {
        self.out.counters.received += 1;
        self.out.counters.bytes_received += data.len() as u64;
    }

    fn on_closed(&mut self, _net: &mut Net, id: usize, now: u64, closed: Closed) {
        let c = &mut self.out.counters;
        match (closed.was_open, closed.reason) {
            (false, reason) => {
                c.failed += 1;
                count_failure(&mut self.out.failures, reason.unwrap_or(crate::net::Reason::Other));
            }
            (true, None) => {
                c.closed += 1;
                self.close.record(now.saturating_sub(self.close_sent[id]));
                self.cycle.record(now.saturating_sub(closed.started_ns));
            }
            (true, Some(reason)) => {
                c.dropped += 1;
                *self
                    .out
                    .failures
                    .entry(format!("dropped_{}", reason.label()))
                    .or_default() += 1;
            }
        }
    }

    fn tick(&mut self, net: &mut Net, now: u64) {
        let stage = if now < self.end { "churn" } else { "finish" };
        self.coord.progress(now, stage, &self.out.counters);
        if self.pacer.is_none() && self.coord.go() {
            self.pacer = Some(Pacer::new(now, self.rate));
            self.end = now + self.run_ns;
            self.out.measure_ns = self.run_ns;
        }
        self.start_due(net, now);
        self.close_held(net, now);
        let over = now >= self.end && (net.len() == 0 || now >= self.end + self.give_up);
        self.finished = over || self.finished;
    }
}
