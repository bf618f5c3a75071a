//! Owns the `broadcast` scenario: N subscribers and P publishers join one room, where every
//! message reaches every member, sender included. Publishers send on a fixed schedule (open loop)
//! messages carrying their publisher number, a sequence number and the scheduled send time;
//! every member checks per publisher that sequence numbers come in order without gaps, and records
//! publish-to-deliver latency (the clock is `CLOCK_MONOTONIC`, shared by all worker processes).
//!
//! With `--centrifuge` the same run speaks the Centrifuge client protocol instead: every member
//! connects and subscribes to one channel (it counts as open once subscribed), publishers send
//! the same message as the data of a `publish` command, and members read it from publication
//! pushes, so the figures compare with a `/room` run of the same flags.

use crate::centrifuge::{self, Join, Joiner, Line, PublishFrame};
use crate::cli::{BroadcastArgs, Cli};
use crate::clock::secs_to_ns;
use crate::coord::Coord;
use crate::engine::{Closed, Driver, Net};
use crate::net::Reason;
use crate::payload;
use crate::scenario::{
    drive, engine_for, Finished, GapRecord, Lifecycle, Pacer, Part, Plan, RunError, Stage, Staged, MAX_GAP_RECORDS,
};
use crate::stats::Latency;

/// A publisher stops taking new messages while this many bytes wait for its socket.
const PUBLISH_QUEUE_BYTES: usize = 256 * 1024;
/// With several processes, the drain ends after this long without a delivery.
const QUIET_NS: u64 = 500_000_000;

/// One member of the room, indexed by connection id.
#[derive(Debug, Default)]
struct Member {
    /// Global member number (publishers first, then subscribers, per worker).
    global: u64,
    /// Local publisher slot, for publishers.
    publisher: Option<u64>,
    /// Next sequence number expected from each publisher (by global publisher number).
    expected: Vec<u64>,
    gaps: u64,
    reordered: u64,
    active: bool,
}

struct Broadcast {
    life: Lifecycle,
    members: Vec<Member>,
    /// Connection id of each local publisher slot (`None` if it failed).
    publishers: Vec<Option<usize>>,
    /// Next sequence number of each local publisher.
    next_seq: Vec<u64>,
    first_publisher: u64,
    total_publishers: u64,
    subscriber_base: u64,
    size: usize,
    text: bool,
    rate: f64,
    settle_ns: u64,
    schedule: Option<Pacer>,
    due: u64,
    single_process: bool,
    delivery: Latency,
    /// `--centrifuge`: the protocol side of the run.
    cf: Option<Cf>,
}

/// What a `--centrifuge` run adds: the joins under way, the channel, and the join latency.
struct Cf {
    joiner: Joiner,
    channel: String,
    join: Latency,
}

/// Runs `broadcast` in this process.
pub fn run(cli: &Cli, args: &BroadcastArgs, part: Part, coord: Coord) -> Result<Finished, RunError> {
    if args.publishers == 0 {
        return Err(RunError::Usage("broadcast needs at least one publisher".into()));
    }
    let c = &args.centrifuge;
    if c.centrifuge && args.binary {
        return Err(RunError::Usage(
            "--centrifuge publishes JSON text: --binary does not apply".into(),
        ));
    }
    let cf = c.centrifuge.then(|| Cf {
        joiner: Joiner::new(
            c.channel(),
            c.token.as_deref(),
            secs_to_ns(cli.common.handshake_timeout_secs),
        ),
        channel: c.channel().to_string(),
        join: Latency::new(),
    });
    let mut engine = engine_for(cli, &args.url)?;
    let local_pubs = part.share(args.publishers);
    let local_subs = part.share(args.subscribers);
    let settle_ns = args.settle_ms * 1_000_000;
    let plan = Plan {
        connections: local_pubs + local_subs,
        connect_rate: part.rate(args.connect_rate),
        run_ns: settle_ns + secs_to_ns(args.duration_secs),
        drain_ns: secs_to_ns(args.drain_secs),
        close_ns: secs_to_ns(cli.common.close_timeout_secs),
    };
    let mut b = Broadcast {
        life: Lifecycle::new(plan, coord, crate::clock::now_ns()),
        members: Vec::new(),
        publishers: vec![None; local_pubs as usize],
        next_seq: vec![0; local_pubs as usize],
        first_publisher: part.start(args.publishers),
        total_publishers: args.publishers,
        subscriber_base: args.publishers + part.start(args.subscribers),
        size: args.size as usize,
        text: !args.binary,
        rate: if local_pubs == 0 { 0.0 } else { part.rate(args.rate) },
        settle_ns,
        schedule: None,
        due: 0,
        single_process: part.of == 1,
        delivery: Latency::new(),
        cf,
    };
    drive(&mut engine, &mut b)?;
    Ok(b.finish())
}

impl Broadcast {
    fn finish(mut self) -> Finished {
        self.count_tail_gaps();
        let mut worst: Vec<GapRecord> = self
            .members
            .iter()
            .filter(|m| m.gaps + m.reordered > 0)
            .map(|m| GapRecord {
                subscriber: m.global,
                gaps: m.gaps,
                reordered: m.reordered,
            })
            .collect();
        worst.sort_by_key(|g| std::cmp::Reverse(g.gaps + g.reordered));
        worst.truncate(MAX_GAP_RECORDS);
        let settle_ns = self.settle_ns;
        let Broadcast {
            mut life, delivery, cf, ..
        } = self;
        life.out.worst_gaps = worst;
        // The measured window is the publishing window, not the settle pause before it.
        life.out.measure_ns = life.out.measure_ns.saturating_sub(settle_ns);
        let mut finished = life.finish();
        finished.outcome.latency.insert("delivery".into(), delivery);
        if let Some(cf) = cf {
            finished.outcome.latency.insert("join".into(), cf.join);
        }
        finished
    }

    /// Messages a member never got at the end of a local publisher's sequence are gaps too.
    fn count_tail_gaps(&mut self) {
        for m in self.members.iter_mut().filter(|m| !m.expected.is_empty()) {
            for (slot, &sent) in self.next_seq.iter().enumerate() {
                let global = self.first_publisher as usize + slot;
                let missing = sent.saturating_sub(m.expected[global]);
                m.gaps += missing;
                self.life.out.counters.gaps += missing;
            }
        }
    }

    fn member_of(&self, local: u64) -> (Option<u64>, u64) {
        let pubs = self.publishers.len() as u64;
        if local < pubs {
            (Some(local), self.first_publisher + local)
        } else {
            (None, self.subscriber_base + local - pubs)
        }
    }

    /// Sends publisher `slot`'s messages that are due: message `seq` of slot `s` is local message
    /// `seq * publishers + s`, scheduled at its pacer time.
    fn pump(&mut self, net: &mut Net, slot: usize) {
        let (Some(schedule), Some(id)) = (self.schedule, self.publishers[slot]) else {
            return;
        };
        let n = self.publishers.len() as u64;
        while self.life.stage == Stage::Run && net.is_open(id) && net.queued(id) < PUBLISH_QUEUE_BYTES {
            let seq = self.next_seq[slot];
            let k = seq * n + slot as u64;
            if k >= self.due {
                break;
            }
            let (publisher, ts) = ((self.first_publisher + slot as u64) as u32, schedule.at(k));
            let fill = |p: &mut [u8]| payload::write_broadcast(p, publisher, seq, ts);
            match &self.cf {
                None => net.send(id, self.text, self.size, fill),
                Some(cf) => {
                    let frame = PublishFrame::new(centrifuge::FIRST_PUBLISH_ID + seq, &cf.channel);
                    net.send(id, true, frame.len(self.size), |p| frame.write(p, fill));
                }
            }
            self.next_seq[slot] += 1;
            let c = &mut self.life.out.counters;
            c.published += 1;
            c.bytes_sent += self.size as u64;
        }
    }

    fn publish_tick(&mut self, net: &mut Net, now: u64) {
        let Some(schedule) = self.schedule else {
            return;
        };
        if self.life.stage != Stage::Run || now < schedule.at(0) {
            return;
        }
        let end = self.life.run_start() + self.life.plan_run_ns();
        self.due = schedule.due(now.min(end.saturating_sub(1)));
        for slot in 0..self.publishers.len() {
            self.pump(net, slot);
        }
    }

    fn outstanding(&self, now: u64) -> u64 {
        let c = &self.life.out.counters;
        if self.single_process {
            return (c.published * c.receivers).saturating_sub(c.received);
        }
        u64::from(now < self.life.last_rx_ns + QUIET_NS)
    }

    /// Makes `id` a member of the room (on its upgrade; with `--centrifuge`, once subscribed).
    fn admit(&mut self, net: &mut Net, id: usize, handshake_ns: u64) {
        self.life.on_open(handshake_ns);
        let local = u64::from(net.user(id).unwrap_or(0));
        let (publisher, global) = self.member_of(local);
        if self.members.len() <= id {
            self.members.resize_with(id + 1, Member::default);
        }
        let expected = vec![0; self.total_publishers as usize];
        self.members[id] = Member {
            global,
            publisher,
            expected,
            active: true,
            ..Member::default()
        };
        if let Some(slot) = publisher {
            self.publishers[slot as usize] = Some(id);
        }
    }

    /// Checks and counts one delivered message.
    fn deliver(&mut self, id: usize, now: u64, text: bool, data: &[u8]) {
        let c = &mut self.life.out.counters;
        c.received += 1;
        self.life.last_rx_ns = now;
        let parsed = payload::read_broadcast(data).filter(|_| text == self.text && data.len() == self.size);
        let Some((publisher, seq, ts)) = parsed.filter(|(p, _, _)| u64::from(*p) < self.total_publishers) else {
            c.verify_errors += 1;
            return;
        };
        self.delivery.record(now.saturating_sub(ts));
        let m = &mut self.members[id];
        let expected = &mut m.expected[publisher as usize];
        if seq < *expected {
            m.reordered += 1;
            c.reordered += 1;
            return;
        }
        m.gaps += seq - *expected;
        c.gaps += seq - *expected;
        *expected = seq + 1;
    }

    /// The lines of a `--centrifuge` message: join replies, publications, the server's ping.
    fn on_centrifuge(&mut self, net: &mut Net, id: usize, now: u64, data: &[u8]) {
        self.life.out.counters.bytes_received += data.len() as u64;
        for line in centrifuge::lines(data) {
            match centrifuge::parse_line(line) {
                Line::Reply { id: reply, error } if reply < centrifuge::FIRST_PUBLISH_ID => {
                    if !self.on_join_reply(net, id, now, reply, error) {
                        return; // refused and closed
                    }
                }
                Line::Reply { error: Some(code), .. } => {
                    let label = format!("publish_{}", Reason::Centrifuge(code).label());
                    *self.life.out.failures.entry(label).or_default() += 1;
                }
                Line::Reply { .. } | Line::OtherPush => {}
                Line::Publication { channel, data } => {
                    let ours = self.cf.as_ref().is_some_and(|cf| cf.channel == channel);
                    if ours && self.members.get(id).is_some_and(|m| m.active) {
                        self.deliver(id, now, true, data.as_bytes());
                    } else {
                        self.life.out.counters.verify_errors += 1;
                    }
                }
                Line::Ping => net.send(id, true, centrifuge::PONG.len(), |p| {
                    p.copy_from_slice(centrifuge::PONG)
                }),
                Line::Invalid => self.life.out.counters.verify_errors += 1,
            }
        }
    }

    /// A reply to `id`'s connect or subscribe; `false` when it was refused (and closed).
    fn on_join_reply(&mut self, net: &mut Net, id: usize, now: u64, reply: u64, error: Option<u32>) -> bool {
        let Some(cf) = self.cf.as_mut() else {
            return true;
        };
        match cf.joiner.on_reply(net, id, now, reply, error) {
            Join::Waiting => true,
            Join::Joined { handshake_ns, join_ns } => {
                cf.join.record(join_ns);
                self.admit(net, id, handshake_ns);
                true
            }
            Join::Refused(code) => {
                self.life.join_failed(Reason::Centrifuge(code));
                false
            }
        }
    }
}

impl Staged for Broadcast {
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

impl Driver for Broadcast {
    fn on_open(&mut self, net: &mut Net, id: usize, now: u64, handshake_ns: u64) {
        match &mut self.cf {
            Some(cf) => cf.joiner.start(net, id, now, handshake_ns),
            None => self.admit(net, id, handshake_ns),
        }
    }

    fn on_message(&mut self, net: &mut Net, id: usize, now: u64, text: bool, data: &[u8]) {
        if self.cf.is_some() {
            return self.on_centrifuge(net, id, now, data);
        }
        let c = &mut self.life.out.counters;
        c.bytes_received += data.len() as u64;
        self.deliver(id, now, text, data);
    }

    fn on_writable(&mut self, net: &mut Net, id: usize, _now: u64) {
        if let Some(slot) = self.members.get(id).and_then(|m| m.publisher) {
            self.pump(net, slot as usize);
        }
    }

    fn on_closed(&mut self, _net: &mut Net, id: usize, _now: u64, closed: Closed) {
        if self.cf.as_mut().is_some_and(|cf| cf.joiner.forget(id)) {
            // Upgraded but never subscribed: a failed attempt, not a lost member.
            self.life.join_failed(closed.reason.unwrap_or(Reason::Other));
            return;
        }
        if closed.was_open {
            self.members[id].active = false;
        }
        self.life.on_closed(&closed);
    }

    fn tick(&mut self, net: &mut Net, now: u64) {
        while self.cf.as_mut().and_then(|cf| cf.joiner.expired(net, now)).is_some() {
            self.life.join_failed(Reason::Timeout);
        }
        self.publish_tick(net, now);
        let outstanding = self.outstanding(now);
        if let Some(Stage::Run) = self.life.advance(net, now, outstanding, |i| (i as u32, None)) {
            self.life.out.counters.receivers = self.members.iter().filter(|m| m.active).count() as u64;
            self.schedule = Some(Pacer::new(now + self.settle_ns, self.rate));
        }
    }
}
