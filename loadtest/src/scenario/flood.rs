//! Owns the `flood` scenario: N attackers upgrade and send data messages of `-s` bytes as fast as
//! their sockets take them, to an echo endpoint or a room (where every member gets every message,
//! so the server's outgoing traffic grows with the square of N). They read what comes back, or
//! with `--no-read` never read while flooding, so the server's backlog for them grows until it
//! gives up on them.
//!
//! A `--no-read` attacker cannot see the server's close frame while the backlog in front of it is
//! unread: after `--duration` the attackers read again for `--drain-secs` to find it. What they
//! find then is counted as `ended_late`; its lifetime is when the client saw it, an upper bound of
//! when the server decided. An attacker whose TCP connection the server ends (FIN or reset) is seen
//! at once, reading or not.

use crate::cli::{Cli, FloodArgs};
use crate::clock::secs_to_ns;
use crate::coord::Coord;
use crate::engine::{Closed, Driver, Net};
use crate::payload;
use crate::scenario::attack::{self, Attackers};
use crate::scenario::probe::ProbeHandle;
use crate::scenario::trickle::check_expectation;
use crate::scenario::{drive, engine_for, Finished, Part, RunError, Staged};

/// An attacker keeps at most this many bytes queued for its socket (then it waits for the
/// socket, so the flood is as fast as the socket allows and no faster).
const FLOOD_QUEUE_BYTES: usize = 64 * 1024;
/// The largest message `flood` sends.
const MAX_SIZE: u64 = 64 << 20;
/// The most unsent message bytes one process may hold over its attackers (each holds up to a
/// queue's worth plus one message).
const MAX_HELD_BYTES: u64 = 2 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Baseline,
    Attack,
    /// `--no-read` attackers read again until this time.
    Drain(u64),
    Done,
}

struct Flood {
    attackers: Attackers,
    coord: Coord,
    probe: Option<ProbeHandle>,
    stage: Stage,
    size: usize,
    text: bool,
    no_read: bool,
    recv_buffer: Option<usize>,
    drain_ns: u64,
    seq: u64,
    started_ns: u64,
    stopped_ns: u64,
}

/// Runs `flood` in this process.
pub fn run(cli: &Cli, args: &FloodArgs, part: Part, mut coord: Coord) -> Result<Finished, RunError> {
    if !(1..=MAX_SIZE).contains(&args.size) {
        return Err(RunError::Usage(format!("-s must be between 1 and {MAX_SIZE} bytes")));
    }
    check_expectation(args.expect_closed_within, args.duration_secs)?;
    let held = part
        .share(args.connections)
        .saturating_mul(args.size + FLOOD_QUEUE_BYTES as u64);
    if held > MAX_HELD_BYTES {
        return Err(RunError::Usage(format!(
            "-c x -s would hold up to {held} bytes of unsent messages in this process (at most \
             {MAX_HELD_BYTES}): lower -c or -s, or add --procs"
        )));
    }
    let recv_buffer = args
        .recv_buffer
        .map(|b| usize::try_from(b).map_err(|_| RunError::Usage("--recv-buffer is too large".into())))
        .transpose()?;
    let mut engine = engine_for(cli, &args.url)?;
    let probe = attack::prepare(cli, &args.probe, &args.url, part, &mut coord)?;
    let mut flood = Flood {
        attackers: Attackers::new(
            part.share(args.connections),
            part.start(args.connections) as u32,
            part.rate(args.connect_rate),
            secs_to_ns(args.duration_secs),
        ),
        coord,
        probe,
        stage: Stage::Baseline,
        size: args.size as usize,
        text: !args.binary,
        no_read: args.no_read,
        recv_buffer,
        drain_ns: secs_to_ns(args.drain_secs),
        seq: 0,
        started_ns: 0,
        stopped_ns: 0,
    };
    drive(&mut engine, &mut flood)?;
    let measure_ns = flood.stopped_ns.max(flood.started_ns) - flood.started_ns;
    let Flood {
        attackers,
        probe,
        coord,
        ..
    } = flood;
    attack::conclude(attackers, probe, coord, measure_ns)
}

impl Flood {
    /// Queues messages on `id` while its socket keeps up.
    fn pump(&mut self, net: &mut Net, id: usize) {
        while self.stage == Stage::Attack && net.is_open(id) && net.queued(id) < FLOOD_QUEUE_BYTES {
            let seq = self.seq;
            self.seq += 1;
            net.send(id, self.text, self.size, |p| payload::fill(p, seq));
            let c = &mut self.attackers.out.counters;
            c.sent += 1;
            c.bytes_sent += self.size as u64;
        }
    }

    /// Tops up every attacker whose socket took all it had: such a socket raises no writable
    /// event, so the loop turn does it.
    fn pump_all(&mut self, net: &mut Net) {
        for id in 0..self.attackers.capacity() {
            if self.attackers.is_attacking(id, None) && net.queued(id) == 0 {
                self.pump(net, id);
            }
        }
    }

    fn end_attack(&mut self, net: &mut Net, now: u64) {
        self.stopped_ns = now;
        if !self.no_read {
            return self.finish(net, now);
        }
        for id in self.attackers.attacking_ids() {
            net.set_reading(id, true);
        }
        self.stage = Stage::Drain(now + self.drain_ns);
    }

    fn finish(&mut self, net: &mut Net, now: u64) {
        self.attackers.finish(net, now);
        self.stage = Stage::Done;
    }

    fn stage_name(&self) -> &'static str {
        match self.stage {
            Stage::Baseline => "baseline",
            Stage::Attack => "flood",
            Stage::Drain(_) => "drain",
            Stage::Done => "done",
        }
    }
}

impl Staged for Flood {
    fn done(&self) -> bool {
        self.stage == Stage::Done
    }
}

impl Driver for Flood {
    fn on_open(&mut self, net: &mut Net, id: usize, now: u64, _handshake_ns: u64) {
        self.attackers.began(net, id, now);
        if self.no_read {
            net.set_reading(id, false);
        }
        self.pump(net, id);
    }

    fn on_message(&mut self, _net: &mut Net, _id: usize, _now: u64, _text: bool, payload: &[u8]) {
        let c = &mut self.attackers.out.counters;
        c.received += 1;
        c.bytes_received += payload.len() as u64;
    }

    fn on_writable(&mut self, net: &mut Net, id: usize, _now: u64) {
        if self.attackers.is_attacking(id, None) {
            self.pump(net, id);
        }
    }

    fn on_closed(&mut self, _net: &mut Net, id: usize, now: u64, closed: Closed) {
        let late = matches!(self.stage, Stage::Drain(_));
        self.attackers.on_closed(id, now, &closed, late);
    }

    fn tick(&mut self, net: &mut Net, now: u64) {
        self.coord
            .progress(now, self.stage_name(), &self.attackers.out.counters);
        match self.stage {
            Stage::Baseline if self.coord.go() => {
                self.attackers.start(now);
                self.started_ns = now;
                self.stage = Stage::Attack;
                if let Some(probe) = &self.probe {
                    probe.mark_attack(now);
                }
            }
            Stage::Attack if now >= self.attackers.end_ns => self.end_attack(net, now),
            Stage::Attack => {
                let recv_buffer = self.recv_buffer;
                self.attackers
                    .start_due(net, now, |net, user| net.connect(user, recv_buffer, now));
                self.pump_all(net);
            }
            Stage::Drain(until) if now >= until || self.attackers.attacking() == 0 => self.finish(net, now),
            _ => {}
        }
    }
}
