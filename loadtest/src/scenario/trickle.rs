//! Owns the `trickle` scenario: N attackers each hold partial input on the server and add to it at
//! `--rate` bytes per second, never finishing:
//! - `head`: the start of an upgrade request, then endless header lines (the head never ends);
//! - `frame`: upgrades, sends a frame's header and first payload bytes (8 bytes of a 10-byte-payload
//!   frame), then the rest of the frame and the frames after it at the rate, so the server always
//!   holds a partial frame;
//! - `message`: upgrades, sends a `--fragment-bytes` non-final fragment as fast as the socket
//!   takes it, then keeps the message open with keep-alive frames (pings, or one-byte non-final
//!   continuations) paid for by the rate.
//!
//! Attackers start at `--connect-rate` within `--duration`; at its end every attacker is accounted
//! for (see `attack`): ended by the server (close code, HTTP status, EOF, reset; after how long),
//! failed to begin, or still alive.

use std::collections::VecDeque;

use crate::cli::{Cli, TrickleArgs, TrickleMode};
use crate::clock::{now_ns, secs_to_ns};
use crate::codec::MaskSource;
use crate::coord::Coord;
use crate::engine::{Closed, Driver, Net};
use crate::hostile::{self, FrameStream, HeadStream, Keepalive};
use crate::scenario::attack::{self, Attackers};
use crate::scenario::probe::ProbeHandle;
use crate::scenario::{drive, engine_for, Finished, Part, RunError, Staged};
use crate::target::Target;

/// Default payload of each frame in `frame` mode.
pub const DEFAULT_FRAME_PAYLOAD: u64 = 10;
/// Default size of the first fragment in `message` mode.
pub const DEFAULT_FRAGMENT_BYTES: u64 = 900 * 1024;
/// The shortest wait between two trickles of one attacker (higher rates send more per trickle).
const MIN_INTERVAL_NS: u64 = 10_000_000;
/// An attacker keeps at most this many bytes queued for its socket (a `message` attacker's
/// fragment, or a rate faster than the socket).
const FILL_QUEUE_BYTES: usize = 64 * 1024;

/// What one attacker sends next, by connection id.
#[derive(Debug, Clone)]
struct Slot {
    head: HeadStream,
    frames: FrameStream,
    /// `message`: fragment bytes not yet queued.
    fragment_left: u64,
    /// When the paced part began, and the bytes it has sent since.
    paced_from: u64,
    paced_sent: u64,
}

struct Trickle {
    mode: TrickleMode,
    attackers: Attackers,
    coord: Coord,
    probe: Option<ProbeHandle>,
    rate: f64,
    interval_ns: u64,
    head_opening: Vec<u8>,
    /// Payload of each frame (`message`: of the one fragment).
    frame_payload: u64,
    keepalive: Keepalive,
    slots: Vec<Option<Slot>>,
    /// Trickles due, in time order (every attacker waits the same interval): (time, id, user).
    due: VecDeque<(u64, usize, u32)>,
    /// `message`: attackers still sending their fragment.
    filling: Vec<usize>,
    masks: MaskSource,
    started_ns: u64,
    done: bool,
}

/// Runs `trickle` in this process.
pub fn run(cli: &Cli, args: &TrickleArgs, part: Part, mut coord: Coord) -> Result<Finished, RunError> {
    check(args)?;
    let mut engine = engine_for(cli, &args.url)?;
    let target = Target::parse(&args.url)?;
    let probe = attack::prepare(cli, &args.probe, &args.url, part, &mut coord)?;
    let frame_payload = args.frame_payload.unwrap_or(DEFAULT_FRAME_PAYLOAD);
    let fragment_bytes = args.fragment_bytes.unwrap_or(DEFAULT_FRAGMENT_BYTES);
    let mut trickle = Trickle {
        mode: args.mode,
        attackers: Attackers::new(
            part.share(args.connections),
            part.start(args.connections) as u32,
            part.rate(args.connect_rate),
            secs_to_ns(args.duration_secs),
        ),
        coord,
        probe,
        rate: args.rate,
        interval_ns: if args.rate > 0.0 {
            ((1e9 / args.rate) as u64).max(MIN_INTERVAL_NS)
        } else {
            u64::MAX
        },
        head_opening: hostile::head_opening(&target.host, &target.path),
        frame_payload: if args.mode == TrickleMode::Message {
            fragment_bytes
        } else {
            frame_payload
        },
        keepalive: args.keepalive.unwrap_or(Keepalive::Ping),
        slots: Vec::new(),
        due: VecDeque::new(),
        filling: Vec::new(),
        masks: MaskSource::new(),
        started_ns: 0,
        done: false,
    };
    drive(&mut engine, &mut trickle)?;
    let measure_ns = now_ns().saturating_sub(trickle.started_ns);
    let Trickle {
        attackers,
        probe,
        coord,
        ..
    } = trickle;
    attack::conclude(attackers, probe, coord, measure_ns)
}

/// Refuses flags that belong to another mode.
fn check(args: &TrickleArgs) -> Result<(), RunError> {
    let wrong = |flag: &str, mode: &str| {
        Err(RunError::Usage(format!(
            "{flag} applies to --mode {mode} only, not --mode {}",
            mode_name(args.mode)
        )))
    };
    if args.frame_payload.is_some() && args.mode != TrickleMode::Frame {
        return wrong("--frame-payload", "frame");
    }
    if (args.fragment_bytes.is_some() || args.keepalive.is_some()) && args.mode != TrickleMode::Message {
        return wrong("--fragment-bytes and --keepalive", "message");
    }
    if args.frame_payload == Some(0) || args.fragment_bytes == Some(0) {
        return Err(RunError::Usage("a frame or fragment of 0 bytes holds nothing".into()));
    }
    check_expectation(args.expect_closed_within, args.duration_secs)
}

/// `--expect-closed-within` can only be judged within a longer run.
pub fn check_expectation(within: Option<f64>, duration_secs: f64) -> Result<(), RunError> {
    match within {
        Some(secs) if secs >= duration_secs => Err(RunError::Usage(format!(
            "--expect-closed-within {secs} must be less than --duration {duration_secs}: \
             attackers alive at the end could not be judged"
        ))),
        _ => Ok(()),
    }
}

/// The name of a mode as the flag spells it.
pub fn mode_name(mode: TrickleMode) -> &'static str {
    match mode {
        TrickleMode::Head => "head",
        TrickleMode::Frame => "frame",
        TrickleMode::Message => "message",
    }
}

impl Trickle {
    fn start_due(&mut self, net: &mut Net, now: u64) {
        let Trickle {
            attackers,
            mode,
            head_opening,
            ..
        } = self;
        attackers.start_due(net, now, |net, user| match mode {
            TrickleMode::Head => net.connect_raw(user, now, head_opening),
            TrickleMode::Frame | TrickleMode::Message => net.connect(user, None, now),
        });
    }

    /// Attacker `id` begins: its opening bytes, then the paced part.
    fn begin(&mut self, net: &mut Net, id: usize, now: u64) {
        self.attackers.began(net, id, now);
        if self.slots.len() <= id {
            self.slots.resize(id + 1, None);
        }
        let fin = self.mode != TrickleMode::Message;
        let mut slot = Slot {
            head: HeadStream::default(),
            frames: FrameStream::new(self.frame_payload, fin),
            fragment_left: 0,
            paced_from: now,
            paced_sent: 0,
        };
        match self.mode {
            TrickleMode::Head => self.attackers.out.counters.bytes_sent += self.head_opening.len() as u64,
            TrickleMode::Frame => {
                let masks = &mut self.masks;
                let opening = slot.frames.opening() as u64;
                net.append(id, |out| slot.frames.take(opening, out, masks));
                self.attackers.out.counters.bytes_sent += opening;
            }
            TrickleMode::Message => {
                slot.fragment_left = slot.frames.frame_len();
                self.slots[id] = Some(slot);
                self.filling.push(id);
                return self.fill(net, id, now);
            }
        }
        self.slots[id] = Some(slot);
        self.schedule(net, id, now);
    }

    fn schedule(&mut self, net: &Net, id: usize, now: u64) {
        if self.rate > 0.0 {
            let user = net.user(id).unwrap_or(0);
            self.due.push_back((now.saturating_add(self.interval_ns), id, user));
        }
    }

    /// `message`: queues more of the fragment while the socket keeps up; once all of it is
    /// queued, the keep-alives begin.
    fn fill(&mut self, net: &mut Net, id: usize, now: u64) {
        let Some(slot) = self.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        while slot.fragment_left > 0 && net.queued(id) < FILL_QUEUE_BYTES && net.is_open(id) {
            let k = slot.fragment_left.min(FILL_QUEUE_BYTES as u64);
            let masks = &mut self.masks;
            net.append(id, |out| slot.frames.take(k, out, masks));
            slot.fragment_left -= k;
            self.attackers.out.counters.bytes_sent += k;
        }
        if slot.fragment_left == 0 {
            slot.paced_from = now;
            self.filling.retain(|&f| f != id);
            self.schedule(net, id, now);
        }
    }

    /// Sends what the rate has paid for since the paced part began.
    fn trickle(&mut self, net: &mut Net, id: usize, now: u64) {
        let Some(slot) = self.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let earned = (self.rate * now.saturating_sub(slot.paced_from) as f64 / 1e9) as u64;
        // A rate the socket cannot take waits for it instead of piling up in the tool.
        let room = FILL_QUEUE_BYTES.saturating_sub(net.queued(id)) as u64;
        let mut owed = earned.saturating_sub(slot.paced_sent).min(room);
        let masks = &mut self.masks;
        match self.mode {
            TrickleMode::Head => net.append(id, |out| slot.head.take(owed as usize, out)),
            TrickleMode::Frame => net.append(id, |out| slot.frames.take(owed, out, masks)),
            TrickleMode::Message => {
                let (kind, len) = (self.keepalive, self.keepalive.len() as u64);
                let mut sent = 0;
                while owed >= len {
                    let mask = masks.mask();
                    net.append(id, |out| kind.write(out, mask));
                    owed -= len;
                    sent += len;
                }
                slot.paced_sent += sent;
                self.attackers.out.counters.bytes_sent += sent;
                return;
            }
        }
        slot.paced_sent += owed;
        self.attackers.out.counters.bytes_sent += owed;
    }

    fn trickle_due(&mut self, net: &mut Net, now: u64) {
        while let Some(&(at, id, user)) = self.due.front() {
            if at > now {
                break;
            }
            self.due.pop_front();
            if !self.attackers.is_attacking(id, Some(user)) {
                continue;
            }
            self.trickle(net, id, now);
            self.due.push_back((now.saturating_add(self.interval_ns), id, user));
        }
    }

    fn fill_all(&mut self, net: &mut Net, now: u64) {
        for i in (0..self.filling.len()).rev() {
            let Some(&id) = self.filling.get(i) else { continue };
            if net.queued(id) == 0 {
                self.fill(net, id, now);
            }
        }
    }

    fn stage(&self) -> &'static str {
        if self.attackers.started() {
            "attack"
        } else {
            "baseline"
        }
    }
}

impl Staged for Trickle {
    fn done(&self) -> bool {
        self.done
    }
}

impl Driver for Trickle {
    fn on_connected(&mut self, net: &mut Net, id: usize, now: u64) {
        if self.mode == TrickleMode::Head {
            self.begin(net, id, now);
        }
    }

    fn on_open(&mut self, net: &mut Net, id: usize, now: u64, _handshake_ns: u64) {
        self.begin(net, id, now);
    }

    fn on_message(&mut self, _net: &mut Net, _id: usize, _now: u64, _text: bool, payload: &[u8]) {
        let c = &mut self.attackers.out.counters;
        c.received += 1;
        c.bytes_received += payload.len() as u64;
    }

    fn on_pong(&mut self, _net: &mut Net, _id: usize, _now: u64, _payload: &[u8]) {
        self.attackers.out.counters.pongs += 1;
    }

    fn on_writable(&mut self, net: &mut Net, id: usize, now: u64) {
        let filling = self
            .slots
            .get(id)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.fragment_left > 0);
        if filling {
            self.fill(net, id, now);
        }
    }

    fn on_closed(&mut self, _net: &mut Net, id: usize, now: u64, closed: Closed) {
        if let Some(slot) = self.slots.get_mut(id) {
            *slot = None;
        }
        self.filling.retain(|&f| f != id);
        self.attackers.on_closed(id, now, &closed, false);
    }

    fn tick(&mut self, net: &mut Net, now: u64) {
        self.coord.progress(now, self.stage(), &self.attackers.out.counters);
        if !self.attackers.started() {
            if self.coord.go() {
                self.attackers.start(now);
                self.started_ns = now;
                if let Some(probe) = &self.probe {
                    probe.mark_attack(now);
                }
            }
            return;
        }
        if now >= self.attackers.end_ns {
            self.attackers.finish(net, now);
            self.done = true;
            return;
        }
        self.start_due(net, now);
        self.fill_all(net, now);
        self.trickle_due(net, now);
    }
}
