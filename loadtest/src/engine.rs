//! Owns the event loop every scenario runs on: one `mio::Poll`, a `Slab<Conn>`, no thread or task
//! per connection. It moves bytes, speaks the protocol (handshake, frames, ping/pong, close) and
//! tells the scenario what happened through [`Driver`]; the scenario decides what to send.
//!
//! Rules of the loop: sockets are registered once for read and write (edge-triggered); reads go
//! until `WouldBlock` or a per-event budget (the rest is finished next turn); sends only queue bytes
//! and mark the connection dirty, and every dirty connection is flushed once at the end of a turn,
//! so a pipeline of small messages leaves in one `write`.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::clock::now_ns;
use crate::codec::{self, Control, Data, MaskSource, OpCode};
use crate::conn::{Conn, Phase};
use crate::handshake::{self, HandshakeError};
use crate::net::{self, Io, Reason, SocketOpts};
use crate::stats::Latency;
use crate::target::{SourceIps, Target};
use crate::tls::TlsSettings;

/// Reads per readiness event before the connection yields to the others (the rest next turn).
const READS_PER_EVENT: usize = 16;
/// The shared receive buffer.
const SCRATCH_BYTES: usize = 256 * 1024;

/// How a connection ended, as told to [`Driver::on_closed`].
#[derive(Debug, Clone, Copy)]
pub struct Closed {
    /// Whether the upgrade had succeeded (otherwise this is a failed connection attempt).
    pub was_open: bool,
    /// `None`: a clean close we asked for. Otherwise what ended it.
    pub reason: Option<Reason>,
    /// When its connect started.
    pub started_ns: u64,
}

/// What a scenario does with the events of its connections. `id`s are slab slots: dense, and
/// reused only after `on_closed`.
pub trait Driver {
    /// TCP connected (before any upgrade): the queued request starts to leave.
    fn on_connected(&mut self, _net: &mut Net, _id: usize, _now: u64) {}
    /// The upgrade succeeded after `handshake_ns` (connect start to `101` parsed).
    fn on_open(&mut self, net: &mut Net, id: usize, now: u64, handshake_ns: u64);
    /// A complete text or binary message.
    fn on_message(&mut self, net: &mut Net, id: usize, now: u64, text: bool, payload: &[u8]);
    /// A pong (answer to [`Net::ping`]).
    fn on_pong(&mut self, _net: &mut Net, _id: usize, _now: u64, _payload: &[u8]) {}
    /// The socket took every queued byte after having refused some.
    fn on_writable(&mut self, _net: &mut Net, _id: usize, _now: u64) {}
    /// The connection is gone (failed, dropped, or closed as asked).
    fn on_closed(&mut self, net: &mut Net, id: usize, now: u64, closed: Closed);
    /// Called once per loop turn, after events and before the flush: send what is due.
    fn tick(&mut self, net: &mut Net, now: u64);
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub target: Target,
    pub sources: Option<SourceIps>,
    pub handshake_timeout_ns: u64,
    pub close_timeout_ns: u64,
    pub max_frame: u64,
    /// `wss://` targets: the shared client TLS settings.
    pub tls: Option<TlsSettings>,
}

/// The connections and the operations a scenario may do on them.
pub struct Net {
    registry: mio::Registry,
    conns: Slab<Conn>,
    cfg: EngineConfig,
    masks: MaskSource,
    serial: u64,
    dirty: Vec<usize>,
    to_read: Vec<usize>,
    handshake_deadlines: VecDeque<(u64, usize, u64)>,
    close_deadlines: VecDeque<(u64, usize, u64)>,
    /// `wss://`: connect start to TLS handshake done, per connection.
    tls_handshake: Latency,
}

impl Net {
    /// Starts a connection for client `user`. Fails at once when no socket can be had.
    pub fn connect(&mut self, user: u32, recv_buffer: Option<usize>, now: u64) -> Result<usize, Reason> {
        let id = self.open(user, recv_buffer, now)?;
        let conn = &mut self.conns[id];
        let key = conn.key;
        handshake::write_request(&mut conn.wbuf, &self.cfg.target.host, &self.cfg.target.path, &key);
        self.handshake_deadlines
            .push_back((now + self.cfg.handshake_timeout_ns, id, self.serial));
        Ok(id)
    }

    /// Starts a connection that sends `first` instead of an upgrade request, and has no handshake
    /// deadline: a hostile client holding a partial request head. Whatever the server answers is
    /// parsed as a handshake response (an HTTP status ends it as `Reason::Http`); the caller
    /// bounds its life and ends it with [`Net::abort`].
    pub fn connect_raw(&mut self, user: u32, now: u64, first: &[u8]) -> Result<usize, Reason> {
        let id = self.open(user, None, now)?;
        self.conns[id].wbuf.extend_from_slice(first);
        Ok(id)
    }

    /// Appends raw bytes (written in place by `write`) to what `id` sends: the hostile
    /// scenarios' partial heads, partial frames and fragments, which the codec never writes.
    pub fn append(&mut self, id: usize, write: impl FnOnce(&mut Vec<u8>)) {
        self.queue(id, |conn, _| write(&mut conn.wbuf));
    }

    /// Ends `id` at once without telling the driver (no close handshake, no `on_closed`): for
    /// connections the scenario accounts for itself at the end of a run.
    pub fn abort(&mut self, id: usize) -> bool {
        self.remove(id).is_some()
    }

    /// Ids of every connection in any phase (allocates; for once-per-run use).
    pub fn all_ids(&self) -> Vec<usize> {
        self.conns.iter().map(|(id, _)| id).collect()
    }

    fn open(&mut self, user: u32, recv_buffer: Option<usize>, now: u64) -> Result<usize, Reason> {
        let source = self.cfg.sources.as_mut().map(SourceIps::next_ip);
        let mut stream = net::connect(self.cfg.target.addr, SocketOpts { source, recv_buffer })?;
        let entry = self.conns.vacant_entry();
        let id = entry.key();
        self.registry
            .register(&mut stream, Token(id), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| Reason::of(&e))?;
        self.serial += 1;
        let key = handshake::new_key(self.masks.next_u64(), self.masks.next_u64());
        let mut conn = Conn::new(stream, key, now, self.serial, user);
        if let Some(tls) = &self.cfg.tls {
            conn.tls = Some(Box::new(tls.session()?));
        }
        entry.insert(conn);
        Ok(id)
    }

    /// Queues a data message of `len` bytes written in place by `fill`.
    pub fn send(&mut self, id: usize, text: bool, len: usize, fill: impl FnOnce(&mut [u8])) {
        let opcode = OpCode::Data(if text { Data::Text } else { Data::Binary });
        self.queue(id, |conn, mask| codec::encode(&mut conn.wbuf, opcode, len, mask, fill));
    }

    /// Queues a ping with `payload` (at most 125 bytes).
    pub fn ping(&mut self, id: usize, payload: &[u8]) {
        let payload = &payload[..payload.len().min(codec::MAX_CONTROL_PAYLOAD)];
        let op = OpCode::Control(Control::Ping);
        self.queue(id, |conn, mask| {
            codec::encode(&mut conn.wbuf, op, payload.len(), mask, |p| p.copy_from_slice(payload))
        });
    }

    /// Starts the close handshake; `on_closed` follows with `reason: None` when the server answers.
    pub fn close(&mut self, id: usize, code: u16, now: u64) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        conn.phase = Phase::Closing;
        let serial = conn.serial;
        self.queue(id, |conn, mask| codec::encode_close(&mut conn.wbuf, code, "", mask));
        self.close_deadlines
            .push_back((now + self.cfg.close_timeout_ns, id, serial));
    }

    /// Stops or resumes reading (a stopped client lets the server's data pile up).
    pub fn set_reading(&mut self, id: usize, reading: bool) {
        if let Some(conn) = self.conns.get_mut(id) {
            conn.reading = reading;
            if reading {
                self.to_read.push(id);
            }
        }
    }

    /// Bytes queued on `id` that the socket has not taken yet (0 for unknown ids).
    pub fn queued(&self, id: usize) -> usize {
        self.conns.get(id).map_or(0, Conn::queued)
    }

    /// Whether `id` is upgraded and not closing.
    pub fn is_open(&self, id: usize) -> bool {
        self.conns.get(id).is_some_and(|c| c.phase == Phase::Open)
    }

    /// The scenario's number for `id`.
    pub fn user(&self, id: usize) -> Option<u32> {
        self.conns.get(id).map(|c| c.user)
    }

    /// Connections in any phase.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Ids of every open connection (allocates; for once-per-phase use, not per message).
    pub fn open_ids(&self) -> Vec<usize> {
        self.conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open)
            .map(|(id, _)| id)
            .collect()
    }

    fn queue(&mut self, id: usize, write: impl FnOnce(&mut Conn, [u8; 4])) {
        let mask = self.masks.mask();
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        write(conn, mask);
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(id);
        }
    }

    fn remove(&mut self, id: usize) -> Option<Conn> {
        let mut conn = self.conns.try_remove(id)?;
        let _ = self.registry.deregister(&mut conn.stream);
        Some(conn)
    }
}

/// Ends connection `id` and tells the driver.
fn finish(net: &mut Net, driver: &mut impl Driver, id: usize, reason: Option<Reason>) {
    let Some(conn) = net.remove(id) else { return };
    let was_open = matches!(conn.phase, Phase::Open | Phase::Closing);
    let closed = Closed {
        was_open,
        reason,
        started_ns: conn.started_ns,
    };
    drop(conn);
    driver.on_closed(net, id, now_ns(), closed);
}

/// The event loop.
pub struct Engine {
    poll: Poll,
    events: Events,
    scratch: Vec<u8>,
    /// The connections; scenarios act on them between turns too.
    pub net: Net,
}

impl Engine {
    /// A loop with no connections yet.
    pub fn new(cfg: EngineConfig) -> io::Result<Engine> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let net = Net {
            registry,
            conns: Slab::new(),
            cfg,
            masks: MaskSource::new(),
            serial: 0,
            dirty: Vec::new(),
            to_read: Vec::new(),
            handshake_deadlines: VecDeque::new(),
            close_deadlines: VecDeque::new(),
            tls_handshake: Latency::new(),
        };
        Ok(Engine {
            poll,
            events: Events::with_capacity(4096),
            scratch: vec![0; SCRATCH_BYTES],
            net,
        })
    }

    /// `wss://` runs: the TLS handshake times (connect start to handshake done), to report as
    /// `tls_handshake`; `None` for `ws://`.
    pub fn take_tls_handshakes(&mut self) -> Option<Latency> {
        self.net.cfg.tls.as_ref()?;
        Some(std::mem::take(&mut self.net.tls_handshake))
    }

    /// One turn: wait up to `timeout` for readiness, handle it, expire deadlines, let the driver
    /// send, then flush everything queued.
    pub fn turn(&mut self, driver: &mut impl Driver, timeout: Duration) -> io::Result<()> {
        let Engine {
            poll,
            events,
            scratch,
            net,
        } = self;
        match poll.poll(events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        for event in events.iter() {
            let id = event.token().0;
            if event.is_writable() || event.is_error() {
                on_writable(net, driver, id);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                on_readable(net, driver, scratch, id, event.is_read_closed() || event.is_error());
            }
        }
        for id in std::mem::take(&mut net.to_read) {
            on_readable(net, driver, scratch, id, false);
        }
        let now = now_ns();
        expire(net, driver, now);
        driver.tick(net, now);
        flush_dirty(net, driver);
        Ok(())
    }
}

fn on_writable(net: &mut Net, driver: &mut impl Driver, id: usize) {
    let Some(conn) = net.conns.get_mut(id) else {
        return;
    };
    if conn.phase == Phase::Connecting {
        match net::connect_result(&conn.stream) {
            Ok(false) => return,
            Ok(true) => conn.phase = Phase::Handshaking,
            Err(reason) => return finish(net, driver, id, Some(reason)),
        }
        driver.on_connected(net, id, now_ns());
    }
    let Some(conn) = net.conns.get_mut(id) else {
        return;
    };
    let was_blocked = std::mem::take(&mut conn.blocked);
    if let Err(reason) = conn.flush() {
        return finish(net, driver, id, Some(reason));
    }
    if was_blocked && conn.queued() == 0 && conn.phase == Phase::Open {
        driver.on_writable(net, id, now_ns());
    }
}

fn on_readable(net: &mut Net, driver: &mut impl Driver, scratch: &mut [u8], id: usize, peer_closed: bool) {
    for _ in 0..READS_PER_EVENT {
        let Some(conn) = net.conns.get_mut(id) else {
            return;
        };
        if conn.phase == Phase::Connecting {
            return;
        }
        if !conn.reading {
            // A client that stopped reading still learns that the server gave up on it: then it
            // drains what is left to find the close frame.
            if !peer_closed {
                return;
            }
            conn.reading = true;
        }
        let got = conn.read(scratch);
        if std::mem::take(&mut conn.handshook) {
            net.tls_handshake.record(now_ns().saturating_sub(conn.started_ns));
            // The upgrade request waited for the handshake; the client's Finished goes too.
            if let Err(reason) = conn.flush() {
                return finish(net, driver, id, Some(reason));
            }
        }
        let Some(conn) = net.conns.get_mut(id) else {
            return;
        };
        match got {
            Io::Done(n) => deliver(net, driver, id, &scratch[..n]),
            Io::WouldBlock => return,
            Io::Eof => {
                let reason = match conn.phase {
                    Phase::Closing => None,
                    _ if !conn.rbuf.is_empty() => Some(Reason::EofMidFrame),
                    _ => Some(Reason::Eof),
                };
                return finish(net, driver, id, reason);
            }
            Io::Failed(reason) => return finish(net, driver, id, Some(reason)),
        }
    }
    net.to_read.push(id);
}

/// Hands newly read bytes to the protocol, keeping any partial frame on the connection.
fn deliver(net: &mut Net, driver: &mut impl Driver, id: usize, data: &[u8]) {
    let Some(conn) = net.conns.get_mut(id) else {
        return;
    };
    if conn.rbuf.is_empty() {
        let used = process(net, driver, id, data);
        if let Some(conn) = net.conns.get_mut(id) {
            conn.rbuf.extend_from_slice(&data[used..]);
        }
        return;
    }
    let mut buf = std::mem::take(&mut conn.rbuf);
    buf.extend_from_slice(data);
    let used = process(net, driver, id, &buf);
    buf.drain(..used);
    if let Some(conn) = net.conns.get_mut(id) {
        conn.rbuf = buf;
    }
}

/// Consumes complete handshake responses and frames from `data`; returns the bytes used.
fn process(net: &mut Net, driver: &mut impl Driver, id: usize, data: &[u8]) -> usize {
    let now = now_ns();
    let mut at = 0;
    loop {
        let Some(conn) = net.conns.get_mut(id) else {
            return data.len();
        };
        if conn.phase == Phase::Handshaking {
            match handshake::read_response(&data[at..], &conn.key) {
                Ok(None) => return at,
                Ok(Some(n)) => {
                    at += n;
                    conn.phase = Phase::Open;
                    let started = conn.started_ns;
                    driver.on_open(net, id, now, now.saturating_sub(started));
                }
                Err(HandshakeError::Status(code)) => {
                    finish(net, driver, id, Some(Reason::Http(code)));
                    return data.len();
                }
                Err(_) => {
                    finish(net, driver, id, Some(Reason::BadHandshake));
                    return data.len();
                }
            }
            continue;
        }
        let max_frame = net.cfg.max_frame;
        match codec::parse(&data[at..], max_frame) {
            Ok(None) => return at,
            Ok(Some(frame)) => {
                at += frame.len;
                on_frame(net, driver, id, now, frame);
            }
            Err(_) => {
                finish(net, driver, id, Some(Reason::Protocol));
                return data.len();
            }
        }
    }
}

fn on_frame(net: &mut Net, driver: &mut impl Driver, id: usize, now: u64, frame: codec::Parsed<'_>) {
    let Some(conn) = net.conns.get_mut(id) else {
        return;
    };
    match frame.opcode {
        OpCode::Data(Data::Continue) => {
            let Some(op) = conn.frag_op else {
                return finish(net, driver, id, Some(Reason::Protocol));
            };
            conn.frag.extend_from_slice(frame.payload);
            if frame.fin {
                conn.frag_op = None;
                let whole = std::mem::take(&mut conn.frag);
                driver.on_message(net, id, now, op == OpCode::Data(Data::Text), &whole);
                if let Some(conn) = net.conns.get_mut(id) {
                    conn.frag = whole;
                    conn.frag.clear();
                }
            }
        }
        OpCode::Data(data) => {
            if conn.frag_op.is_some() {
                return finish(net, driver, id, Some(Reason::Protocol));
            }
            if frame.fin {
                return driver.on_message(net, id, now, data == Data::Text, frame.payload);
            }
            conn.frag_op = Some(frame.opcode);
            conn.frag.extend_from_slice(frame.payload);
        }
        OpCode::Control(Control::Ping) => net.queue(id, |c, mask| {
            codec::encode(
                &mut c.wbuf,
                OpCode::Control(Control::Pong),
                frame.payload.len(),
                mask,
                |p| p.copy_from_slice(frame.payload),
            )
        }),
        OpCode::Control(Control::Pong) => driver.on_pong(net, id, now, frame.payload),
        OpCode::Control(Control::Close) => on_close_frame(net, driver, id, frame.payload),
        OpCode::Control(Control::Reserved(_)) => finish(net, driver, id, Some(Reason::Protocol)),
    }
}

/// The server's close frame: the answer to ours (clean), or its own decision (echo it, then go).
fn on_close_frame(net: &mut Net, driver: &mut impl Driver, id: usize, payload: &[u8]) {
    let Some(conn) = net.conns.get_mut(id) else {
        return;
    };
    if conn.phase == Phase::Closing {
        return finish(net, driver, id, None);
    }
    let (code, _) = codec::close_code(payload);
    let reply = if code == 1005 { None } else { Some(code) };
    net.queue(id, |c, mask| match reply {
        Some(code) => codec::encode_close(&mut c.wbuf, code, "", mask),
        None => codec::encode(&mut c.wbuf, OpCode::Control(Control::Close), 0, mask, |_| {}),
    });
    if let Some(conn) = net.conns.get_mut(id) {
        let _ = conn.flush();
    }
    finish(net, driver, id, Some(Reason::Closed(code)));
}

fn expire(net: &mut Net, driver: &mut impl Driver, now: u64) {
    while let Some(&(deadline, id, serial)) = net.handshake_deadlines.front() {
        if deadline > now {
            break;
        }
        net.handshake_deadlines.pop_front();
        let waiting = net
            .conns
            .get(id)
            .is_some_and(|c| c.serial == serial && matches!(c.phase, Phase::Connecting | Phase::Handshaking));
        if waiting {
            finish(net, driver, id, Some(Reason::Timeout));
        }
    }
    while let Some(&(deadline, id, serial)) = net.close_deadlines.front() {
        if deadline > now {
            break;
        }
        net.close_deadlines.pop_front();
        if net
            .conns
            .get(id)
            .is_some_and(|c| c.serial == serial && c.phase == Phase::Closing)
        {
            finish(net, driver, id, Some(Reason::Timeout));
        }
    }
}

fn flush_dirty(net: &mut Net, driver: &mut impl Driver) {
    let mut dirty = std::mem::take(&mut net.dirty);
    for &id in &dirty {
        let Some(conn) = net.conns.get_mut(id) else {
            continue;
        };
        if !conn.dirty {
            continue;
        }
        conn.dirty = false;
        if let Err(reason) = conn.flush() {
            finish(net, driver, id, Some(reason));
        }
    }
    dirty.clear();
    // Keep the list's capacity: the next turn reuses it without allocating.
    if net.dirty.is_empty() {
        net.dirty = dirty;
    }
}
