//! Owns the `echo` scenario: C connections send messages of S bytes to an echo endpoint and check
//! every echo byte for byte, in order.
//!
//! Closed loop keeps `--pipeline` messages in flight per connection. Open loop (`--rate`) sends on a
//! fixed schedule over all connections; a message's timestamp is its *scheduled* time, and a
//! message the socket cannot take yet is sent late with that same time, so a slow server shows
//! up as latency instead of as a lower send rate (no coordinated omission).
//!
//! The `slow` scenario runs on this driver too: its first clients stop reading and flood the
//! server instead ([`Stopped`]), and are expected to be cut off by the server.

use std::collections::VecDeque;

use crate::cli::{Cli, EchoArgs};
use crate::clock::secs_to_ns;
use crate::coord::Coord;
use crate::engine::{Closed, Driver, Net};
use crate::net::Reason;
use crate::payload;
use crate::scenario::{
    add_tls_handshakes, drive, engine_for, Finished, Lifecycle, Pacer, Part, Plan, RunError, Stage, Staged,
};
use crate::stats::Latency;

/// An open-loop connection stops taking new messages while this many bytes wait for its socket.
const OPEN_LOOP_QUEUE_BYTES: usize = 256 * 1024;

/// A flooding client keeps at most this many bytes queued for its socket.
const FLOOD_QUEUE_BYTES: usize = 64 * 1024;

/// Clients that stop reading (the `slow` scenario): local clients numbered below `count`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stopped {
    pub count: u64,
    pub recv_buffer: usize,
    pub expect_code: u16,
    /// Bytes each stopped client sends at most.
    pub send_bytes: u64,
}

/// What an echo run does, in this process.
#[derive(Debug, Clone, Copy)]
pub struct EchoPlan {
    pub plan: Plan,
    pub size: usize,
    pub text: bool,
    pub pipeline: u32,
    pub rate: Option<f64>,
    pub max_messages: u64,
    pub stopped: Stopped,
}

/// Per-connection echo state, indexed by connection id.
#[derive(Debug, Default)]
struct Client {
    /// Position in the open-loop round robin.
    slot: u64,
    /// Sequence number of the next message to send.
    next_send: u64,
    /// Sequence number the next echo must carry.
    next_recv: u64,
    /// Timestamps of the messages in flight, oldest first.
    in_flight: VecDeque<u64>,
    active: bool,
    /// Stopped reading: floods and expects to be cut off.
    stopped: bool,
}

struct Echo {
    life: Lifecycle,
    clients: Vec<Client>,
    ids: Vec<usize>,
    size: usize,
    text: bool,
    pipeline: u32,
    rate: Option<f64>,
    schedule: Option<Pacer>,
    /// Open loop: messages due so far over all connections.
    due: u64,
    /// Open loop: first message index not yet handed to `pump`.
    next_k: u64,
    max_messages: u64,
    outstanding: u64,
    stopped: Stopped,
    /// Ids of the clients that stopped reading.
    stopped_ids: Vec<usize>,
    rtt: Latency,
}

/// Runs `echo` in this process.
pub fn run(cli: &Cli, args: &EchoArgs, part: Part, coord: Coord) -> Result<Finished, RunError> {
    let plan = EchoPlan {
        plan: Plan {
            connections: part.share(args.connections),
            connect_rate: part.rate(args.connect_rate),
            run_ns: secs_to_ns(args.duration_secs),
            drain_ns: secs_to_ns(args.drain_secs),
            close_ns: secs_to_ns(cli.common.close_timeout_secs),
        },
        size: args.size as usize,
        text: !args.binary,
        pipeline: args.pipeline,
        rate: args.rate.map(|r| part.rate(r)),
        max_messages: args.messages.map_or(u64::MAX, |m| part.share(m)),
        stopped: Stopped::default(),
    };
    run_plan(cli, &args.url, plan, coord)
}

/// Runs an echo plan against `url` (shared with `slow`).
pub fn run_plan(cli: &Cli, url: &str, p: EchoPlan, coord: Coord) -> Result<Finished, RunError> {
    let mut engine = engine_for(cli, url)?;
    let mut echo = Echo {
        life: Lifecycle::new(p.plan, coord, crate::clock::now_ns()),
        clients: Vec::new(),
        ids: Vec::new(),
        size: p.size,
        text: p.text,
        pipeline: p.pipeline,
        rate: p.rate,
        schedule: None,
        due: 0,
        next_k: 0,
        max_messages: p.max_messages,
        outstanding: 0,
        stopped: p.stopped,
        stopped_ids: Vec::new(),
        rtt: Latency::new(),
    };
    drive(&mut engine, &mut echo)?;
    let Echo { life, rtt, .. } = echo;
    let mut finished = life.finish();
    finished.outcome.latency.insert("rtt".into(), rtt);
    add_tls_handshakes(&mut engine, &mut finished.outcome);
    Ok(finished)
}

impl Echo {
    fn may_send(&self) -> bool {
        self.life.stage == Stage::Run && self.life.out.counters.sent < self.max_messages
    }

    fn send(&mut self, net: &mut Net, id: usize, ts: u64) {
        let client = &mut self.clients[id];
        let seq = client.next_send;
        client.next_send += 1;
        client.in_flight.push_back(ts);
        net.send(id, self.text, self.size, |p| payload::write_echo(p, seq, ts));
        let c = &mut self.life.out.counters;
        c.sent += 1;
        c.bytes_sent += self.size as u64;
        self.outstanding += 1;
    }

    fn start_run(&mut self, net: &mut Net, now: u64) {
        self.ids = net.open_ids();
        for id in self.ids.clone() {
            if u64::from(net.user(id).unwrap_or(0)) < self.stopped.count {
                self.clients[id].stopped = true;
                self.life.out.counters.slow_clients += 1;
                net.set_reading(id, false);
                self.flood(net, id);
            }
        }
        let clients = &self.clients;
        self.stopped_ids = self.ids.iter().copied().filter(|&id| clients[id].stopped).collect();
        self.ids.retain(|&id| !clients[id].stopped);
        for (slot, &id) in self.ids.iter().enumerate() {
            self.clients[id].slot = slot as u64;
        }
        match self.rate {
            Some(rate) => self.schedule = Some(Pacer::new(now, rate)),
            None => {
                for i in 0..self.ids.len() {
                    for _ in 0..self.pipeline {
                        if self.may_send() {
                            self.send(net, self.ids[i], now);
                        }
                    }
                }
            }
        }
    }

    /// A stopped client sends (unchecked) messages as fast as its socket takes them.
    fn flood(&mut self, net: &mut Net, id: usize) {
        let cap = self.stopped.send_bytes / self.size as u64;
        while self.life.stage == Stage::Run && net.is_open(id) && net.queued(id) < FLOOD_QUEUE_BYTES {
            let seq = self.clients[id].next_send;
            if seq >= cap {
                return;
            }
            self.clients[id].next_send += 1;
            net.send(id, self.text, self.size, |p| payload::write_echo(p, seq, 0));
            self.life.out.counters.bytes_sent += self.size as u64;
        }
    }

    /// A stopped client ended: cut off by the server (as hoped) or closed by us at the end.
    fn stopped_closed(&mut self, closed: &Closed) {
        let c = &mut self.life.out.counters;
        match closed.reason {
            Some(Reason::Closed(code)) if code == self.stopped.expect_code => c.slow_closed_code += 1,
            Some(Reason::Closed(code)) => {
                c.slow_closed_other += 1;
                *self.life.out.failures.entry(format!("slow_close_{code}")).or_default() += 1;
            }
            Some(Reason::Eof | Reason::EofMidFrame | Reason::Reset) => c.slow_closed_tcp += 1,
            Some(_) | None => c.slow_not_closed += 1,
        }
    }

    /// After the measured stage stopped clients read again, to find the close frame the server
    /// queued behind the backlog it gave up on (a real slow consumer reads, slowly).
    fn resume_stopped(&mut self, net: &mut Net) {
        for id in net.open_ids() {
            if self.clients.get(id).is_some_and(|c| c.stopped) {
                net.set_reading(id, true);
            }
        }
    }

    /// Work the drain waits for: echoes in flight and stopped clients not yet cut off.
    fn pending(&self) -> u64 {
        let c = &self.life.out.counters;
        let stopped_ended = c.slow_closed_code + c.slow_closed_other + c.slow_closed_tcp + c.slow_not_closed;
        self.outstanding + c.slow_clients.saturating_sub(stopped_ended)
    }

    /// Open loop: sends connection `id`'s messages that are due, oldest first, while its socket
    /// keeps up. Message `j` of the connection in slot `s` is global message `j * n + s`.
    fn pump(&mut self, net: &mut Net, id: usize) {
        let Some(schedule) = self.schedule else {
            return;
        };
        let n = self.ids.len() as u64;
        while self.clients[id].active && self.may_send() && net.queued(id) < OPEN_LOOP_QUEUE_BYTES {
            let k = self.clients[id].next_send * n + self.clients[id].slot;
            if k >= self.due {
                break;
            }
            self.send(net, id, schedule.at(k));
        }
    }

    fn open_loop_tick(&mut self, net: &mut Net, now: u64) {
        let Some(schedule) = self.schedule else {
            return;
        };
        if self.life.stage != Stage::Run || self.ids.is_empty() {
            return;
        }
        self.due = schedule.due(now).min(self.max_messages);
        let n = self.ids.len() as u64;
        // Each connection is pumped once per turn at most: a full lap covers all of them.
        let end = self.due.min(self.next_k + n);
        for k in self.next_k..end {
            self.pump(net, self.ids[(k % n) as usize]);
        }
        self.next_k = self.due;
    }
}

impl Staged for Echo {
    fn done(&self) -> bool {
        self.life.stage == Stage::Done
    }

    fn next_due(&self) -> u64 {
        match self.schedule {
            Some(schedule) if self.life.stage == Stage::Run => schedule.at(self.due),
            _ => u64::MAX,
        }
    }
}

impl Driver for Echo {
    fn on_open(&mut self, _net: &mut Net, id: usize, _now: u64, handshake_ns: u64) {
        self.life.on_open(handshake_ns);
        if self.clients.len() <= id {
            self.clients.resize_with(id + 1, Client::default);
        }
        self.clients[id] = Client {
            active: true,
            ..Client::default()
        };
    }

    fn on_message(&mut self, net: &mut Net, id: usize, now: u64, text: bool, data: &[u8]) {
        if self.clients[id].stopped {
            return; // draining what the server had sent before cutting it off
        }
        let c = &mut self.life.out.counters;
        c.received += 1;
        c.bytes_received += data.len() as u64;
        self.life.last_rx_ns = now;
        let client = &mut self.clients[id];
        let Some(ts) = client.in_flight.pop_front() else {
            self.life.out.counters.verify_errors += 1;
            return;
        };
        self.outstanding -= 1;
        let seq = client.next_recv;
        client.next_recv += 1;
        if text != self.text || !payload::is_echo(data, self.size, seq, ts) {
            self.life.out.counters.verify_errors += 1;
        }
        self.rtt.record(now.saturating_sub(ts));
        if self.schedule.is_none() && self.may_send() {
            self.send(net, id, now);
        }
    }

    fn on_writable(&mut self, net: &mut Net, id: usize, _now: u64) {
        if self.clients[id].stopped {
            self.flood(net, id);
        } else {
            self.pump(net, id);
        }
    }

    fn on_closed(&mut self, _net: &mut Net, id: usize, _now: u64, closed: Closed) {
        if closed.was_open && self.clients[id].stopped {
            self.clients[id].active = false;
            return self.stopped_closed(&closed);
        }
        if closed.was_open {
            let client = &mut self.clients[id];
            client.active = false;
            let lost = client.in_flight.len() as u64;
            client.in_flight.clear();
            self.outstanding -= lost;
            self.life.out.counters.unanswered += lost;
        }
        self.life.on_closed(&closed);
    }

    fn tick(&mut self, net: &mut Net, now: u64) {
        self.open_loop_tick(net, now);
        // A socket that took everything raises no writable event: top stopped clients up here.
        for i in 0..self.stopped_ids.len() {
            self.flood(net, self.stopped_ids[i]);
        }
        if self.life.stage == Stage::Run && self.life.out.counters.sent >= self.max_messages {
            self.life.stop_running(now);
        }
        let outstanding = self.pending();
        let stopped = self.stopped;
        let user_of = |i: u64| (i as u32, (i < stopped.count).then_some(stopped.recv_buffer));
        match self.life.advance(net, now, outstanding, user_of) {
            Some(Stage::Drain) => self.resume_stopped(net),
            Some(Stage::Run) => self.start_run(net, now),
            Some(Stage::Close) => {
                self.life.out.counters.unanswered += self.outstanding;
                self.outstanding = 0;
                self.clients.iter_mut().for_each(|c| c.in_flight.clear());
            }
            _ => {}
        }
    }
}
