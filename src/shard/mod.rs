//! A shard: one OS thread running one `mio::Poll` loop over its own
//! listener, its own slab of connections, buffer pool and timer wheel.
//!
//! A loop turn: poll (until the next tick at most), dispatch readiness,
//! accept (bounded), drive connections that still had input (bounded),
//! retry connections parked for a buffer, drain the inbox (bounded), expire
//! timers, publish counters once per tick. Readiness is edge-triggered and
//! registered once for reading and writing; interest is tracked here, so a
//! connection that stopped early (budget, no buffer) is remembered, never
//! left waiting for an event that will not come.
//!
//! The shard calls the hub (what a driven connection asked for, each inbox
//! message, the end of a turn) and lends it `Local`, its view of the
//! connections (`hub::Conns`); the hub never calls the shard back.

pub mod drain;
pub(crate) mod evict;
pub mod shed;
pub(crate) mod spin;
pub mod timer;
pub mod token;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll};
use slab::Slab;
use tracing::{debug, warn};

use crate::buf::MemKind;
use crate::bus::cluster::{redis_link_of, ShardRedis};
use crate::bus::inbox::{Budget, Inbox, Lane, ShardMsg};
use crate::bus::peers::Peers;
use crate::conn::drive::TLS_ERROR_LABEL;
use crate::conn::tls::TlsSession;
use crate::conn::{Conn, Ctx, Disconnect, Outgoing, Phase, Verdict};
use crate::hub::config::HubConfig;
use crate::hub::{ConnFacts, Conns, Hub};
use crate::limits::REFUSAL_HEADROOM;
use crate::metrics::shard::{HubFigures, ShardMetrics};
use crate::metrics::stats::{ShardStats, Shed};
use crate::net::io::accept_error_is_transient;
use crate::tick::{TICK, TICKS_PER_SEC};
use crate::ws::close;
use drain::Drain;
use spin::Spin;
use timer::TimerWheel;

/// Connections accepted per loop turn.
const ACCEPT_BUDGET: usize = 256;
/// Inbox messages handled per loop turn.
const INBOX_BUDGET: usize = 1024;

/// Everything a shard needs to start.
pub(crate) struct ShardSetup {
    pub id: usize,
    pub poll: Poll,
    pub listener: TcpListener,
    pub inbox: Inbox,
    pub ctx: Ctx,
    pub drain: Duration,
    /// Keep polling without blocking this long after the last event.
    pub busy_poll: Duration,
    /// Where the shard publishes its counters once per tick.
    pub published: Arc<Mutex<ShardStats>>,
    /// Every shard's inbox, indexed by shard id (this one's included).
    pub peers: Peers,
    pub hub_config: Arc<HubConfig>,
    /// Cluster mode: the Redis bridge.
    pub cluster: Option<crate::bus::cluster::ClusterLink>,
    /// Cluster mode: this shard's own connections for its publishes.
    pub direct: Option<Box<dyn ShardRedis>>,
    /// The application hooks' workers (`--proxy-*-url`).
    pub proxy: Option<crate::bus::proxy::ProxyLink>,
}

pub(crate) struct Shard {
    id: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    ctx: Ctx,
    hub: Hub,
    wheel: TimerWheel,
    inbox: Inbox,
    published: Arc<Mutex<ShardStats>>,
    started: Instant,
    next_generation: u32,
    /// Connections whose read budget ran out: drive again next turn.
    again: Vec<usize>,
    /// Connections with queued bytes, flushed once at the end of the turn.
    dirty: Vec<usize>,
    accept_pending: bool,
    /// Sockets in their handshake, oldest first: evicted when the process
    /// holds all the sockets it may.
    handshakes: evict::Handshakes,
    /// Tick before which a failed accept (out of file descriptors) is not
    /// retried, and when its warning was last logged.
    accept_retry_tick: u32,
    accept_warned_tick: u32,
    /// Upgrades refused for memory as of the last tick (see shed_memory).
    upgrade_refusals_seen: u64,
    drain: Duration,
    /// Set by a shutdown: the schedule of Close frames and the deadline.
    draining: Option<Drain>,
    /// Busy polling (`--busy-poll-us`), armed only while events keep coming
    /// (spin.rs).
    spin: Spin,
    /// This shard's metric handles, fed from `ctx.stats` once per tick.
    metrics: ShardMetrics,
}

impl Shard {
    pub fn new(setup: ShardSetup) -> io::Result<Shard> {
        let ShardSetup {
            id,
            poll,
            mut listener,
            inbox,
            ctx,
            drain,
            busy_poll,
            published,
            peers,
            hub_config,
            cluster,
            direct,
            proxy,
        } = setup;
        poll.registry()
            .register(&mut listener, token::LISTENER, Interest::READABLE)?;
        let meter = ctx.meter.clone();
        let mut shard = Shard {
            id,
            poll,
            listener: Some(listener),
            // Reserved up front: untouched pages cost no memory, and the slab
            // never reallocates (a copy of every connection) as it fills.
            conns: Slab::with_capacity(ctx.limits.max_open + REFUSAL_HEADROOM),
            ctx,
            hub: Hub::new(id, peers, hub_config, cluster, meter),
            wheel: TimerWheel::new(1),
            inbox,
            published,
            started: Instant::now(),
            next_generation: 0,
            again: Vec::new(),
            dirty: Vec::new(),
            accept_pending: true,
            handshakes: evict::Handshakes::default(),
            accept_retry_tick: 0,
            accept_warned_tick: 0,
            upgrade_refusals_seen: 0,
            drain,
            draining: None,
            spin: Spin::new(busy_poll, Instant::now()),
            metrics: ShardMetrics::register(id),
        };
        shard.hub.set_proxy(proxy);
        shard.hub.set_direct(direct);
        shard.ctx.tick = 1;
        shard.ctx.now_unix = unix_now();
        Ok(shard)
    }

    /// Runs the loop until a shutdown completes.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut due = Vec::new();
        // Every series exists from the start, not from the first tick.
        self.publish();
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.spin.polled(!events.is_empty(), Instant::now());
            let tick = self.current_tick();
            let ticked = tick != self.ctx.tick;
            self.ctx.tick = tick;
            if ticked {
                self.ctx.now_unix = unix_now();
            }
            for event in events.iter() {
                self.on_event(event);
            }
            self.accept();
            self.drive_again();
            self.drain_inbox();
            let (hub, mut local) = self.hub_and_conns();
            hub.end_turn(ticked, &mut local);
            self.flush_dirty();
            if ticked {
                self.shed_memory();
                self.expire_timers(&mut due);
                self.drain_step();
                self.publish();
            }
            if !events.is_empty() {
                // Only turns that handled events: idle spins would drown them.
                self.ctx.stats.loop_turns.record(self.spin.last_event().elapsed());
            }
            if self.finished() {
                self.publish();
                return Ok(());
            }
        }
    }

    fn current_tick(&self) -> u32 {
        1 + (self.started.elapsed().as_millis() / TICK.as_millis()) as u32
    }

    fn poll_timeout(&self) -> Duration {
        // A non-empty inbox counts too: senders wake the shard only when the
        // inbox goes from empty to non-empty, so messages left over when the
        // inbox budget ran out would otherwise wait for the next tick.
        let busy = !self.again.is_empty()
            || (self.accept_pending && self.can_accept())
            || !self.inbox.is_empty()
            || self.hub.redis_busy();
        if busy || self.spin.keep_polling(Instant::now()) {
            return Duration::ZERO;
        }
        let next_tick = TICK * self.ctx.tick;
        next_tick
            .saturating_sub(self.started.elapsed())
            .max(Duration::from_millis(1))
    }

    fn on_event(&mut self, event: &Event) {
        match event.token() {
            token::LISTENER => self.accept_pending = true,
            token::WAKER => {} // the inbox is drained every turn
            t if redis_link_of(t).is_some() => {
                let (hub, mut local) = self.hub_and_conns();
                hub.redis_ready(t, &mut local);
            }
            t => {
                let (key, generation) = token::decode(t);
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                if conn.generation != generation {
                    return; // stale: the slot was reused
                }
                self.ctx.current = key;
                let mut verdict = Verdict::Keep;
                if event.is_writable() {
                    verdict = conn.on_writable(&mut self.ctx);
                }
                if verdict == Verdict::Keep && (event.is_readable() || event.is_read_closed() || event.is_error()) {
                    let edge = !event.is_read_closed() && !event.is_error();
                    verdict = conn.on_readable(&mut self.ctx, edge);
                }
                self.apply(key, verdict);
            }
        }
    }

    fn apply(&mut self, key: usize, verdict: Verdict) {
        // First what the connection asked of the hub, while `key` still
        // names it (a removal below frees the slot for reuse).
        if !self.ctx.outbox.is_empty() {
            self.handle_outbox();
        }
        match verdict {
            Verdict::Keep => self.reschedule(key),
            Verdict::Again => {
                self.again.push(key);
                self.reschedule(key);
            }
            Verdict::Drop => self.remove(key),
        }
    }

    /// Hands the hub what the connection just driven asked of it, in the
    /// order it asked (an upgrade before the messages that followed it).
    fn handle_outbox(&mut self) {
        let mut outbox = std::mem::take(&mut self.ctx.outbox);
        let (hub, mut local) = self.hub_and_conns();
        for item in outbox.drain(..) {
            match item {
                Outgoing::Upgraded { key, endpoint, claims } => hub.upgraded(key, endpoint, claims, &mut local),
                Outgoing::RoomMessage { key, frame } => hub.room_message(key, frame, &mut local),
                Outgoing::Command { key, text } => hub.command(key, &text, &mut local),
                Outgoing::Connecting { key, headers } => hub.connecting(key, headers, &mut local),
            }
        }
        // Keep the list's capacity for the next connection.
        self.ctx.outbox = outbox;
    }

    /// The hub, and this shard's connections as the hub sees them.
    fn hub_and_conns(&mut self) -> (&mut Hub, Local<'_>) {
        let local = Local {
            conns: &mut self.conns,
            ctx: &mut self.ctx,
            dirty: &mut self.dirty,
        };
        (&mut self.hub, local)
    }

    /// Brings the connection's timer entry forward if its deadline moved
    /// earlier (a later deadline is found when the old entry fires).
    fn reschedule(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let deadline = conn.deadline(&self.ctx);
        if conn.timer_at == 0 || deadline < conn.timer_at {
            conn.timer_at = self.wheel.schedule(deadline, key as u32);
        }
    }

    fn remove(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        if conn.is_upgraded() {
            self.hub
                .disconnected(key, conn.ending.unwrap_or(Disconnect::ClientGone));
        }
        let (hub, mut local) = self.hub_and_conns();
        hub.leave(key, &mut local);
        self.ctx.admission.release_socket();
        if let Some(ip) = self.ctx.pending_ips.remove(&key) {
            self.ctx.admission.end_handshake(ip);
        }
        if conn.is_upgraded() {
            self.ctx.open -= 1;
            let ip = self.ctx.ips.remove(&key);
            self.ctx.admission.release(ip);
            self.ctx
                .stats
                .disconnected(conn.ending.unwrap_or(Disconnect::ClientGone));
        }
        // Dropping the stream closes the socket, which also removes it from
        // the epoll set; the lease and queue return with it.
    }

    fn can_accept(&self) -> bool {
        self.listener.is_some()
    }

    fn accept(&mut self) {
        if !self.accept_pending || !self.can_accept() || self.ctx.tick < self.accept_retry_tick {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            // can_accept() checked the listener is present.
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer.ip()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_pending = false;
                    return;
                }
                Err(e) if accept_error_is_transient(&e) => {
                    // Out of descriptors or memory: retry next tick, not in
                    // a spin, and say so at most once a second.
                    self.accept_retry_tick = self.ctx.tick + 1;
                    if self.ctx.tick >= self.accept_warned_tick + TICKS_PER_SEC {
                        self.accept_warned_tick = self.ctx.tick;
                        warn!(shard = self.id, error = %e, "accept failed; retrying next tick");
                    }
                    return;
                }
                Err(e) => {
                    warn!(shard = self.id, error = %e, "accept failed");
                    self.accept_pending = false;
                    return;
                }
            }
        }
        self.ctx.stats.accept_budget_hits += 1;
    }

    fn admit(&mut self, mut stream: mio::net::TcpStream, peer: std::net::IpAddr) {
        self.ctx.stats.accepted += 1;
        if !self.make_room() {
            // Full even for polite refusals: closing at once keeps the fd budget.
            self.ctx.stats.accept_overflow += 1;
            return;
        }
        let tracks_ip = self.ctx.admission.per_ip_enabled();
        if tracks_ip && !self.ctx.admission.begin_handshake(peer, Instant::now()) {
            self.ctx.admission.release_socket();
            self.ctx.stats.handshake_failed("per_ip_connections");
            return;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.next_generation = self.next_generation.wrapping_add(1) & 0x7FFF_FFFF;
        let generation = self.next_generation;
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token::encode(key, generation), interest)
        {
            warn!(shard = self.id, error = %e, "could not register a connection");
            self.ctx.admission.release_socket();
            if tracks_ip {
                self.ctx.admission.end_handshake(peer);
            }
            return;
        }
        if tracks_ip {
            self.ctx.pending_ips.insert(key, peer);
        }
        let mut conn = Conn::new(stream, generation, self.ctx.tick);
        if let Some(acceptor) = &self.ctx.tls_acceptor {
            // The handshake timeout (from this tick) covers the TLS handshake.
            match TlsSession::new(acceptor.config(), &self.ctx.meter) {
                Ok(session) => conn.use_tls(session),
                Err(e) => {
                    warn!(shard = self.id, error = %e, "could not start a TLS session");
                    self.ctx.stats.handshake_failed(TLS_ERROR_LABEL);
                    self.ctx.admission.release_socket();
                    if tracks_ip {
                        self.ctx.pending_ips.remove(&key);
                        self.ctx.admission.end_handshake(peer);
                    }
                    return;
                }
            }
        }
        conn.timer_at = self.wheel.schedule(conn.deadline(&self.ctx), key as u32);
        entry.insert(conn);
        self.handshakes.push(key, generation, &self.conns);
        // The listener defers accepts until the request has arrived
        // (net/listener.rs), so read it now and answer in this turn instead
        // of a turn later through the registration's readiness event. The
        // socket is registered already, so a short read has drained it and
        // anything later raises an edge: no read to `WouldBlock` is needed.
        self.drive_read(key, true);
    }

    /// Reserves a socket for a newcomer under the process-wide cap, evicting
    /// this shard's oldest socket still in its handshake when the cap is
    /// reached (evict.rs); false when there is none to evict.
    fn make_room(&mut self) -> bool {
        if self.ctx.admission.take_socket() {
            return true;
        }
        let Some(key) = self.handshakes.oldest(&self.conns) else {
            return false;
        };
        self.ctx.stats.handshake_failed("evicted");
        self.remove(key);
        self.ctx.admission.take_socket()
    }

    fn drive_again(&mut self) {
        for key in std::mem::take(&mut self.again) {
            self.drive_read(key, false);
        }
    }

    /// Reads without a readiness event. `edge` as in `Conn::on_readable`:
    /// true only when the socket was registered before this read.
    fn drive_read(&mut self, key: usize, edge: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        self.ctx.current = key;
        let verdict = conn.on_readable(&mut self.ctx, edge);
        self.apply(key, verdict);
    }

    /// Writes what broadcasts queued this turn: one `writev` per connection
    /// however many messages it got.
    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let Some(conn) = self.conns.get_mut(key) else { continue };
            self.ctx.current = key;
            let verdict = conn.flush_dirty(&mut self.ctx);
            self.apply(key, verdict);
        }
        // Keep the list's capacity for the next turn.
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Handles inbox messages, control first: a flood of deliveries never
    /// delays a subscribe's answer or a shutdown, and no delivery overtakes
    /// a control message sent before it (`Inbox::next`).
    fn drain_inbox(&mut self) {
        self.inbox.begin_drain();
        let mut budget = Budget {
            control: INBOX_BUDGET,
            data: INBOX_BUDGET,
        };
        while let Some((lane, msg)) = self.inbox.next(&mut budget) {
            match lane {
                Lane::Control => self.ctx.stats.inbox_control += 1,
                Lane::Data => self.ctx.stats.inbox_data += 1,
            }
            match msg {
                ShardMsg::Shutdown => self.begin_shutdown(),
                ShardMsg::Hub(msg) => {
                    let (hub, mut local) = self.hub_and_conns();
                    hub.on_message(msg, &mut local);
                }
            }
        }
    }

    /// Starts a drain: stops accepting (taking what the kernel already
    /// queued, so no client in the backlog is reset) and schedules Close 1001
    /// for every connection over the drain window (`drain_step`).
    fn begin_shutdown(&mut self) {
        if self.draining.is_some() {
            return;
        }
        debug!(shard = self.id, connections = self.conns.len(), "draining");
        let seed = (self.id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.started.elapsed().as_nanos() as u64;
        self.draining = Some(Drain::new(Instant::now(), self.drain, seed));
        for _ in 0..64 {
            self.accept_pending = true;
            self.accept();
            if !self.accept_pending {
                break;
            }
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.drain_step();
    }

    /// Sends Close 1001 "server restarting; reconnect in N s" to this tick's
    /// share of the open connections, picked at random. Connections still in
    /// their handshake may finish it and are closed by a later step; once
    /// the spread is over, new upgrades are refused (503).
    fn drain_step(&mut self) {
        // Taken out while connections are closed (they borrow the shard).
        let Some(mut drain) = self.draining.take() else {
            return;
        };
        let now = Instant::now();
        let mut open: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase() == Phase::Open)
            .map(|(k, _)| k)
            .collect();
        let quota = drain.quota(open.len(), now);
        if drain.spread_over(now) {
            self.ctx.draining = true;
        }
        drain.shuffle(&mut open);
        let mut reason = String::new();
        for &key in &open[..quota] {
            drain.reason(&mut reason);
            let conn = &mut self.conns[key];
            conn.start_close(close::GOING_AWAY, &reason, Disconnect::Shutdown, &mut self.ctx);
            let verdict = if conn.is_broken() { Verdict::Drop } else { Verdict::Keep };
            self.apply(key, verdict);
        }
        self.draining = Some(drain);
    }

    fn finished(&self) -> bool {
        match &self.draining {
            Some(drain) => self.conns.is_empty() || Instant::now() >= drain.deadline,
            None => false,
        }
    }

    fn expire_timers(&mut self, due: &mut Vec<(u32, u32)>) {
        self.wheel.advance(self.ctx.tick, due);
        for (tick, key) in due.drain(..) {
            let key = key as usize;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.timer_at != tick {
                continue; // stale entry
            }
            conn.timer_at = 0;
            self.ctx.current = key;
            let verdict = conn.on_timer(&mut self.ctx);
            self.apply(key, verdict);
        }
    }

    /// At `--memory-limit`: frees this shard's share of the excess, first
    /// from the history it owns (oldest first: new upgrades and buffers
    /// already counted history as room), then by closing its largest
    /// holders (shed.rs).
    fn shed_memory(&mut self) {
        self.ctx.meter.flush();
        let refusals = self.ctx.stats.shed_for(Shed::UpgradeRefused);
        let refused_lately = refusals > self.upgrade_refusals_seen;
        self.upgrade_refusals_seen = refusals;
        if !self.ctx.meter.over_limit() {
            if refused_lately && self.ctx.meter.refuses_upgrades() {
                // Between 90% and the limit nothing is shed, yet upgrades are
                // refused: partial-input holders (the ones that can sit there
                // until their message deadline) make room, largest first.
                let share = self.ctx.meter.unblock_share();
                self.shed_victims(shed::pick(&self.conns, share, true));
            }
            return;
        }
        let share = self.ctx.meter.shed_share();
        let history = self.ctx.meter.held(MemKind::History);
        if history > 0 {
            let dropped = self.hub.trim_history(share.min(history));
            self.ctx.stats.memory_shed[Shed::History as usize] += dropped as u64;
            self.ctx.meter.flush();
        }
        let left = share.saturating_sub(history);
        if left == 0 || !self.ctx.meter.over_limit() {
            return;
        }
        self.shed_victims(shed::pick(&self.conns, left, false));
    }

    fn shed_victims(&mut self, victims: Vec<shed::Victim>) {
        for victim in victims {
            let conn = &mut self.conns[victim.key];
            self.ctx.current = victim.key;
            let verdict = conn.shed(victim.backlog, &mut self.ctx);
            self.apply(victim.key, verdict);
        }
    }

    fn publish(&mut self) {
        if self.ctx.tick.is_multiple_of(4) {
            // Once a second: a walk over the slab, cheap next to a tick's work.
            self.ctx.stats.queued_bytes = self
                .conns
                .iter()
                .filter_map(|(_, c)| c.outq.as_ref().map(|q| q.bytes() as u64))
                .sum();
        }
        let stats = &mut self.ctx.stats;
        stats.open = self.ctx.open as u64;
        stats.buffers_leased = self.ctx.pool.leased() as u64;
        stats.buffers_capacity = self.ctx.pool.capacity() as u64;
        stats.buffers_refused = self.ctx.pool.refused();
        if let Ok(mut published) = self.published.lock() {
            published.clone_from(stats);
        }
        let hub = HubFigures {
            inbox_depth: self.inbox.len() as u64,
            inbox_drops: stats.inbox_drops,
            channels: stats.channels,
            subscriptions: stats.subscriptions,
            users: stats.users,
        };
        self.metrics.flush(stats, hub, &self.ctx.meter);
    }
}

/// The shard's connections as the hub sees them (`hub::Conns`): what the
/// hub queues or closes is listed as dirty and flushed at the end of the turn.
struct Local<'a> {
    conns: &'a mut Slab<Conn>,
    ctx: &'a mut Ctx,
    dirty: &'a mut Vec<usize>,
}

impl Conns for Local<'_> {
    fn queue(&mut self, key: usize, frame: bytes::Bytes) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.queue_shared(frame, self.ctx) {
            self.dirty.push(key);
        }
    }

    fn close(&mut self, key: usize, code: u16, reason: &str, why: Disconnect) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        // A `/ws` client gets its disconnect push from start_close.
        conn.start_close(code, reason, why, self.ctx);
        if conn.mark_dirty() {
            self.dirty.push(key);
        }
    }

    fn generation(&self, key: usize) -> Option<u32> {
        self.conns.get(key).map(|c| c.generation)
    }

    fn is_open(&self, key: usize) -> bool {
        self.conns.get(key).is_some_and(|c| c.phase() == Phase::Open)
    }

    fn facts(&self, key: usize) -> Option<ConnFacts> {
        self.conns.get(key).map(|c| ConnFacts {
            route: c.route(),
            phase_since: c.phase_since,
            last_read: c.last_read,
            last_write: c.last_write,
            queued_bytes: c.queued_bytes(),
        })
    }

    fn tick(&self) -> u32 {
        self.ctx.tick
    }

    fn now_unix(&self) -> u64 {
        self.ctx.now_unix
    }

    fn stats(&mut self) -> &mut ShardStats {
        &mut self.ctx.stats
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
