//! Owns the `echo` scenario: C connections send messages of S bytes to an echo endpoint and check
//! every echo byte for byte, in order.
//!
//! Closed loop keeps `--pipeline` messages in flight per connection. Open loop (`--rate`) sends on a
//! fixed schedule over all connections; a message's timestamp is its *scheduled* time, and a
//! message the socket cannot take yet is sent late with that same time, so a slow server shows
//! up as latency instead of as a lower send rate (no coordinated omission).

use std::collections::VecDeque;

use crate::cli::{Cli, EchoArgs};
use crate::clock::secs_to_ns;
use crate::coord::Coord;
use crate::engine::{Closed, Driver, Net};
use crate::payload;
use crate::scenario::{
    drive, engine_for, Finished, Lifecycle, Pacer, Part, Plan, RunError, Stage, Staged,
};
use crate::stats::Latency;

/// An open-loop connection stops taking new messages while this many bytes wait for its socket.
const OPEN_LOOP_QUEUE_BYTES: usize = 256 * 1024;

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
    rtt: Latency,
}

/// Runs `echo` in this process.
pub fn run(cli: &Cli, args: &EchoArgs, part: Part, coord: Coord) -> Result<Finished, RunError> {
    let mut engine = engine_for(cli, &args.url)?;
    let now = crate::clock::now_ns();
    let plan = Plan {
        connections: part.share(args.connections),
        connect_rate: part.rate(args.connect_rate),
        run_ns: secs_to_ns(args.duration_secs),
        drain_ns: secs_to_ns(args.drain_secs),
        close_ns: secs_to_ns(cli.common.close_timeout_secs),
    };
    let mut echo = Echo {
        life: Lifecycle::new(plan, coord, now),
        clients: Vec::new(),
        ids: Vec::new(),
        size: args.size as usize,
        text: !args.binary,
        pipeline: args.pipeline,
        rate: args.rate.map(|r| part.rate(r)),
        schedule: None,
        due: 0,
        next_k: 0,
        max_messages: args.messages.map_or(u64::MAX, |m| part.share(m)),
        outstanding: 0,
        rtt: Latency::new(),
    };
    drive(&mut engine, &mut echo)?;
    let Echo { life, rtt, .. } = echo;
    let mut finished = life.finish();
    finished.outcome.latency.insert("rtt".into(), rtt);
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
        net.send(id, self.text, self.size, |p| {
            payload::write_echo(p, seq, ts)
        });
        let c = &mut self.life.out.counters;
        c.sent += 1;
        c.bytes_sent += self.size as u64;
        self.outstanding += 1;
    }

    fn start_run(&mut self, net: &mut Net, now: u64) {
        self.ids = net.open_ids();
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
        self.pump(net, id);
    }

    fn on_closed(&mut self, _net: &mut Net, id: usize, _now: u64, closed: Closed) {
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
        if self.life.stage == Stage::Run && self.life.out.counters.sent >= self.max_messages {
            self.life.stop_running(now);
        }
        let outstanding = self.outstanding;
        match self
            .life
            .advance(net, now, outstanding, |i| (i as u32, None))
        {
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
