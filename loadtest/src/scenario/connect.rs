//! Owns the `connect` scenario: open N connections at up to R handshakes/s, hold them for T
//! seconds (optionally pinging every K seconds to find the ones the server dropped), close them.
//!
//! The memory figures (server RSS and kernel socket memory per connection) are taken by the
//! coordinator when every connection is up; see `coord` and `sysmem`.

use crate::cli::{Cli, ConnectArgs};
use crate::clock::secs_to_ns;
use crate::coord::Coord;
use crate::engine::{Closed, Driver, Net};
use crate::scenario::{
    add_tls_handshakes, drive, engine_for, Finished, Lifecycle, Part, Plan, RunError, Stage, Staged,
};
use crate::stats::Latency;

struct Connect {
    life: Lifecycle,
    ping_every_ns: Option<u64>,
    next_ping: u64,
    ping_rtt: Latency,
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
    };
    drive(&mut engine, &mut connect)?;
    let Connect { life, ping_rtt, .. } = connect;
    let mut finished = life.finish();
    finished.outcome.latency.insert("ping".into(), ping_rtt);
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
}

impl Staged for Connect {
    fn done(&self) -> bool {
        self.life.stage == Stage::Done
    }
}

impl Driver for Connect {
    fn on_open(&mut self, _net: &mut Net, _id: usize, _now: u64, handshake_ns: u64) {
        self.life.on_open(handshake_ns);
    }

    fn on_message(&mut self, _net: &mut Net, _id: usize, _now: u64, _text: bool, data: &[u8]) {
        self.life.out.counters.received += 1;
        self.life.out.counters.bytes_received += data.len() as u64;
    }

    fn on_pong(&mut self, _net: &mut Net, _id: usize, now: u64, payload: &[u8]) {
        self.life.out.counters.pongs += 1;
        if let Ok(stamp) = <[u8; 8]>::try_from(payload) {
            self.ping_rtt.record(now.saturating_sub(u64::from_be_bytes(stamp)));
        }
    }

    fn on_closed(&mut self, _net: &mut Net, _id: usize, _now: u64, closed: Closed) {
        self.life.on_closed(&closed);
    }

    fn tick(&mut self, net: &mut Net, now: u64) {
        if self.life.stage == Stage::Run && now >= self.next_ping {
            self.ping_all(net, now);
            self.next_ping = now + self.ping_every_ns.unwrap_or(u64::MAX / 2);
        }
        if let Some(Stage::Run) = self.life.advance(net, now, 0, |i| (i as u32, None)) {
            self.next_ping = self.ping_every_ns.map_or(u64::MAX, |every| now + every);
        }
    }
}
