//! Owns the `connect` scenario: open N connections at up to R handshakes/s, hold them for T
//! seconds (optionally pinging every K seconds to find the ones the server dropped), close them.
//!
//! The memory figures (server RSS and kernel socket memory per connection) are taken by the
//! coordinator when every connection is up; see `coord` and `sysmem`. With `--centrifuge`, "up"
//! means connected and subscribed over the Centrifuge client protocol, so the memory figure is
//! that of an idle subscriber; the server's pings are answered meanwhile.

use crate::centrifuge::{self, Join, Joiner, Line};
use crate::cli::{Cli, ConnectArgs};
use crate::clock::secs_to_ns;
use crate::coord::Coord;
use crate::engine::{Closed, Driver, Net};
use crate::net::Reason;
use crate::scenario::{
    add_tls_handshakes, drive, engine_for, Finished, Lifecycle, Part, Plan, RunError, Stage, Staged,
};
use crate::stats::Latency;

struct Connect {
    life: Lifecycle,
    ping_every_ns: Option<u64>,
    next_ping: u64,
    ping_rtt: Latency,
    /// `--centrifuge`: the joins under way.
    joiner: Option<Joiner>,
    join: Latency,
}

/// Runs `connect` in this process.
pub fn run(cli: &Cli, args: &ConnectArgs, part: Part, coord: Coord) -> Result<Finished, RunError> {
    let mut engine = engine_for(cli, &args.url)?;
    let now = crate::clock::now_ns();
    let plan = Plan {
        connections: part.share(args.connections),
        connect_rate: part.rate(args.rate),
        run_ns: secs_to_ns(args.hold_secs),
        drain_ns: 0,
        close_ns: secs_to_ns(cli.common.close_timeout_secs),
    };
    let mut connect = Connect {
        life: Lifecycle::new(plan, coord, now),
        ping_every_ns: args.ping_secs.filter(|s| *s > 0.0).map(secs_to_ns),
        next_ping: u64::MAX,
        ping_rtt: Latency::new(),
        joiner: args.centrifuge.centrifuge.then(|| {
            let c = &args.centrifuge;
            Joiner::new(
                c.channel(),
                c.token.as_deref(),
                secs_to_ns(cli.common.handshake_timeout_secs),
            )
        }),
        join: Latency::new(),
    };
    drive(&mut engine, &mut connect)?;
    let Connect {
        life,
        ping_rtt,
        joiner,
        join,
        ..
    } = connect;
    let mut finished = life.finish();
    finished.outcome.latency.insert("ping".into(), ping_rtt);
    if joiner.is_some() {
        finished.outcome.latency.insert("join".into(), join);
    }
    add_tls_handshakes(&mut engine, &mut finished.outcome);
    Ok(finished)
}

impl Connect {
    fn ping_all(&mut self, net: &mut Net, now: u64) {
        let stamp = now.to_be_bytes();
        for id in net.open_ids() {
            net.ping(id, &stamp);
            self.life.out.counters.pings += 1;
        }
    }

    /// The lines of a `--centrifuge` message: join replies and the server's ping.
    fn on_centrifuge(&mut self, net: &mut Net, id: usize, now: u64, data: &[u8]) {
        for line in centrifuge::lines(data) {
            let (reply, error) = match centrifuge::parse_line(line) {
                Line::Reply { id, error } => (id, error),
                Line::Ping => {
                    net.send(id, true, centrifuge::PONG.len(), |p| {
                        p.copy_from_slice(centrifuge::PONG)
                    });
                    continue;
                }
                // Not counted: a connection that never gets its replies fails as a timeout.
                Line::Publication { .. } | Line::OtherPush | Line::Invalid => continue,
            };
            let Some(joiner) = self.joiner.as_mut() else {
                return;
            };
            match joiner.on_reply(net, id, now, reply, error) {
                Join::Waiting => {}
                Join::Joined { handshake_ns, join_ns } => {
                    self.join.record(join_ns);
                    self.life.on_open(handshake_ns);
                }
                Join::Refused(code) => return self.life.join_failed(Reason::Centrifuge(code)),
            }
        }
    }
}

impl Staged for Connect {
    fn done(&self) -> bool {
        self.life.stage == Stage::Done
    }
}

impl Driver for Connect {
    fn on_open(&mut self, net: &mut Net, id: usize, now: u64, handshake_ns: u64) {
        match &mut self.joiner {
            Some(joiner) => joiner.start(net, id, now, handshake_ns),
            None => self.life.on_open(handshake_ns),
        }
    }

    fn on_message(&mut self, net: &mut Net, id: usize, now: u64, _text: bool, data: &[u8]) {
        self.life.out.counters.received += 1;
        self.life.out.counters.bytes_received += data.len() as u64;
        if self.joiner.is_some() {
            self.on_centrifuge(net, id, now, data);
        }
    }

    fn on_pong(&mut self, _net: &mut Net, _id: usize, now: u64, payload: &[u8]) {
        self.life.out.counters.pongs += 1;
        if let Ok(stamp) = <[u8; 8]>::try_from(payload) {
            self.ping_rtt.record(now.saturating_sub(u64::from_be_bytes(stamp)));
        }
    }

    fn on_closed(&mut self, _net: &mut Net, id: usize, _now: u64, closed: Closed) {
        if self.joiner.as_mut().is_some_and(|j| j.forget(id)) {
            // Upgraded but never subscribed: a failed attempt, not a dropped connection.
            self.life.join_failed(closed.reason.unwrap_or(Reason::Other));
            return;
        }
        self.life.on_closed(&closed);
    }

    fn tick(&mut self, net: &mut Net, now: u64) {
        while self.joiner.as_mut().and_then(|j| j.expired(net, now)).is_some() {
            self.life.join_failed(Reason::Timeout);
        }
        if self.life.stage == Stage::Run && now >= self.next_ping {
            self.ping_all(net, now);
            self.next_ping = now + self.ping_every_ns.unwrap_or(u64::MAX / 2);
        }
        if let Some(Stage::Run) = self.life.advance(net, now, 0, |i| (i as u32, None)) {
            self.next_ping = self.ping_every_ns.map_or(u64::MAX, |every| now + every);
        }
    }
}
