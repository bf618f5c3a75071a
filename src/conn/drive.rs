//! Driving one connection: read, decode, answer, write, time out.
//!
//! Reads land in the shard's scratch buffer; every complete frame in a read is
//! handled and the answers are gathered in `ctx.reply` and written with one
//! call. Only leftover partial input is copied into a leased buffer.

use std::mem;
use std::net::Shutdown;

use bytes::Bytes;

use super::inbuf::{InBuf, Source};
use super::outq::{Flushed, OutQ};
use super::tls::TlsFailure;
use super::{Conn, Ctx, Disconnect, Flags, Outgoing, Phase, Transport};
use crate::metrics::stats::Shed;
use crate::net::io::{self, IoOutcome};
use crate::route::{Endpoint, Route};
use crate::ws::close::{self, PeerClose};
use crate::ws::codec::{self, Event, Kind, Step, MAX_CLIENT_HEADER};
use crate::ws::handshake::{self, AuthPolicy, Outcome, Policy, Refusal, Upgrade, MAX_REQUEST_BYTES};
use crate::ws::Violation;

/// Reads per connection per loop turn, so one fast sender cannot starve the
/// others (STYLE habit 6).
const READS_PER_TURN: usize = 8;
/// Reply bytes gathered before they are written mid-batch.
const REPLY_FLUSH_BYTES: usize = 64 * 1024;

/// What the shard should do with a connection after driving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// The read budget ran out with input still pending: drive it again next
    /// turn (edge-triggered readiness will not report it again).
    Again,
    /// Remove the connection.
    Drop,
}

impl Conn {
    /// Reads until the socket is drained or the budget is spent.
    ///
    /// `edge` is true when called for a readiness event that did not report
    /// the peer's FIN. Then a read that returns less than the room offered
    /// has drained the socket: on Linux every later arrival raises a new
    /// edge, so the extra read that would only return `WouldBlock` is
    /// skipped (one syscall less per message batch; tokio does the same).
    /// Without an event (budget or buffer retries) we read to `WouldBlock`.
    pub fn on_readable(&mut self, ctx: &mut Ctx, edge: bool) -> Verdict {
        for _ in 0..READS_PER_TURN {
            // `raw`: bytes read from the socket; `outcome`: what they gave
            // the decoder (the same for plain TCP, the plaintext over TLS).
            let tls = matches!(self.transport, Transport::Tls(_));
            let (outcome, raw, offered) = match self.inbuf.as_mut() {
                _ if tls => match self.read_tls(ctx) {
                    Ok(read) => read,
                    Err(verdict) => return verdict,
                },
                Some(buf) => {
                    let (len, cap) = (buf.len(), buf.capacity());
                    let outcome = io::read(&mut self.stream, &mut buf.bytes_mut()[len..cap]);
                    (outcome, progress(outcome), cap - len)
                }
                None => {
                    let outcome = io::read(&mut self.stream, &mut ctx.scratch);
                    (outcome, progress(outcome), ctx.scratch.len())
                }
            };
            match outcome {
                IoOutcome::Progress(n) => {
                    if n > 0 {
                        self.on_bytes(n, ctx);
                    }
                    if self.is_broken() {
                        return Verdict::Drop;
                    }
                    if edge && raw < offered {
                        return Verdict::Keep;
                    }
                }
                IoOutcome::WouldBlock => return Verdict::Keep,
                IoOutcome::Closed | IoOutcome::Failed(_) => return self.on_eof(ctx),
            }
        }
        ctx.stats.read_budget_hits += 1;
        Verdict::Again
    }

    /// Writes what the socket refused earlier.
    pub fn on_writable(&mut self, ctx: &mut Ctx) -> Verdict {
        if self.outq.is_none() && self.transport.pending_bytes() == 0 {
            return Verdict::Keep;
        }
        let (flushed, written) = self.transport.flush(&mut self.stream, &mut self.outq, &mut ctx.tls);
        ctx.stats.bytes_out += written as u64;
        if written > 0 {
            self.last_write = ctx.tick;
        }
        match flushed {
            Flushed::Failed => Verdict::Drop,
            Flushed::Pending => Verdict::Keep,
            Flushed::All => {
                self.after_flush();
                Verdict::Keep
            }
        }
    }

    /// Queues a frame shared with other receivers (a broadcast). Returns true
    /// when the connection must be added to the shard's dirty list, to be
    /// flushed once at the end of the loop turn.
    pub(crate) fn queue_shared(&mut self, frame: Bytes, ctx: &mut Ctx) -> bool {
        if self.phase != Phase::Open {
            return false;
        }
        let frame_len = frame.len();
        let queued_before = self.queued_bytes();
        let meter = &ctx.meter;
        self.outq
            .get_or_insert_with(|| Box::new(OutQ::new(meter.clone())))
            .push(frame);
        ctx.stats.messages_out += 1;
        if over_backlog_cap(queued_before, ctx) {
            // Over the cap with this turn's batch: offer it to the socket
            // before judging, so a reader that keeps up is never taken for a
            // slow one; only what the socket refused counts.
            if self.on_writable(ctx) == Verdict::Drop {
                self.flags.set(Flags::BROKEN, true);
            }
            self.check_backlog(self.queued_bytes().saturating_sub(frame_len), ctx);
        }
        self.mark_dirty()
    }

    /// Memory shedding: what this connection holds that a shed would free,
    /// and whether that is its backlog (else its partial input).
    pub(crate) fn sheddable(&self) -> Option<(usize, bool)> {
        if self.ending.is_some() && self.phase != Phase::Open {
            return None; // already on its way out
        }
        let queued = self.queued_bytes();
        let input = self.inbuf.as_ref().map_or(0, |b| b.capacity());
        match queued.max(input) {
            0 => None,
            n => Some((n, queued >= input)),
        }
    }

    /// Memory shedding: closes this connection for what it holds, its
    /// backlog (1008 "slow consumer") or its partial input (1013).
    pub fn shed(&mut self, backlog: bool, ctx: &mut Ctx) -> Verdict {
        if backlog {
            ctx.stats.shed(Shed::Outgoing);
            self.close_slow_consumer(Disconnect::MemoryShed, ctx);
            return self.on_writable(ctx);
        }
        self.no_memory_for_input(ctx);
        self.send_reply(ctx);
        if self.is_broken() {
            Verdict::Drop
        } else {
            Verdict::Keep
        }
    }

    /// Flushes what `queue_shared` queued (the end-of-turn pass).
    pub fn flush_dirty(&mut self, ctx: &mut Ctx) -> Verdict {
        self.flags.set(Flags::DIRTY, false);
        if self.is_broken() {
            return Verdict::Drop;
        }
        self.on_writable(ctx)
    }

    /// The tick at which `on_timer` has something to do.
    pub fn deadline(&self, ctx: &Ctx) -> u32 {
        let limits = &ctx.limits;
        match self.phase {
            Phase::Handshake => self.phase_since + limits.handshake_ticks,
            Phase::Open => {
                let quiet = if self.flags.has(Flags::PINGED) {
                    self.last_read + limits.idle_ticks
                } else {
                    self.last_read + limits.ping_ticks
                };
                match &self.inbuf {
                    Some(buf) => quiet.min(buf.since + limits.message_ticks),
                    None => quiet,
                }
            }
            Phase::CloseSent | Phase::Lingering => self.phase_since + limits.close_ticks,
        }
    }

    /// Handles the connection's deadline: handshake timeout, message
    /// timeout, ping, idle timeout, or the end of a close that took too long.
    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx) -> Verdict {
        if ctx.tick < self.deadline(ctx) {
            return Verdict::Keep;
        }
        let message_late = self
            .inbuf
            .as_ref()
            .is_some_and(|buf| ctx.tick >= buf.since + ctx.limits.message_ticks);
        match self.phase {
            Phase::Open if message_late => {
                self.abort(
                    close::POLICY_VIOLATION,
                    MESSAGE_TIMEOUT_REASON,
                    Disconnect::MessageTimeout,
                    ctx,
                );
                self.send_reply(ctx);
            }
            Phase::Handshake => {
                // A TLS handshake that stalls is told apart from a slow request.
                let label = if self.transport.is_tls_handshaking() {
                    TLS_TIMEOUT_LABEL
                } else {
                    Refusal::TIMEOUT.label()
                };
                ctx.stats.handshake_failed(label);
                return Verdict::Drop;
            }
            Phase::Open if self.flags.has(Flags::PINGED) => {
                self.start_close(close::GOING_AWAY, "idle timeout", Disconnect::IdleTimeout, ctx)
            }
            Phase::Open => {
                self.flags.set(Flags::PINGED, true);
                codec::encode_frame(&mut ctx.reply, Kind::Ping, b"");
                self.send_reply(ctx);
            }
            Phase::CloseSent | Phase::Lingering => return Verdict::Drop,
        }
        if self.is_broken() {
            Verdict::Drop
        } else {
            Verdict::Keep
        }
    }

    /// Server-initiated close (idle timeout, shutdown, a kick): send Close
    /// and wait for the client's answer up to the close timeout. A `/ws`
    /// client first gets a `disconnect` push with the same code and reason,
    /// and whether reconnecting makes sense (not after 1008 or 4001).
    pub(crate) fn start_close(&mut self, code: u16, reason: &str, why: Disconnect, ctx: &mut Ctx) {
        if self.phase != Phase::Open {
            return;
        }
        self.ending = Some(why);
        let (code, reason) = match self.route {
            Some(Route::Centrifuge) => crate::ws::centrifuge::close_for(code, reason, why),
            _ => (code, reason),
        };
        if self.route == Some(Route::Ws) {
            let reconnect = code != close::POLICY_VIOLATION && code != close::REPLACED;
            let push = format!(
                "{{\"push\":\"disconnect\",\"code\":{code},\"reason\":{},\"reconnect\":{reconnect}}}",
                serde_json::to_string(reason).unwrap_or_else(|_| "\"\"".into())
            );
            codec::encode_frame(&mut ctx.reply, Kind::Text, push.as_bytes());
        }
        codec::encode_close(&mut ctx.reply, code, reason);
        self.enter(Phase::CloseSent, ctx.tick);
        self.send_reply(ctx);
    }

    /// One TLS read: ciphertext in, plaintext appended to the connection's
    /// buffer (grown to fit what arrived) or to the shard's scratch. `Err`
    /// when the connection is done (a TLS failure or close_notify).
    fn read_tls(&mut self, ctx: &mut Ctx) -> Result<(IoOutcome, usize, usize), Verdict> {
        let limit = self.buffer_limit(ctx);
        let Transport::Tls(session) = &mut self.transport else {
            return Err(Verdict::Drop);
        };
        let inbuf = &mut self.inbuf;
        let base = inbuf.as_ref().map_or(0, |b| b.len());
        let scratch = &mut ctx.scratch;
        let mut at = base;
        let mut sink = |bytes: &[u8]| -> bool {
            let end = at + bytes.len();
            match inbuf.as_mut() {
                Some(buf) => {
                    if end > buf.capacity() && !buf.reserve(end, limit) {
                        return false;
                    }
                    buf.bytes_mut()[at..end].copy_from_slice(bytes);
                    // Counted as held while more records come, so a growth
                    // copies them too; put back to `base` below.
                    buf.set_len(end);
                }
                None if end > scratch.len() => return false,
                None => scratch[at..end].copy_from_slice(bytes),
            }
            at = end;
            true
        };
        let read = session.read(&mut self.stream, &mut ctx.tls, &mut sink);
        if let Some(buf) = self.inbuf.as_mut() {
            buf.set_len(base);
        }
        let raw = progress(read.io);
        if raw > 0 {
            self.last_read = ctx.tick;
        }
        if let Some(resumed) = read.handshake_done {
            ctx.stats.tls_handshake(resumed);
        }
        if read.write_failed {
            self.flags.set(Flags::BROKEN, true);
        }
        let outcome = match read.io {
            IoOutcome::Progress(_) => IoOutcome::Progress(read.plain),
            other => other,
        };
        match read.failure {
            None if read.peer_closed => {
                if read.plain > 0 {
                    self.on_bytes(read.plain, ctx);
                }
                Err(self.on_eof(ctx))
            }
            None => Ok((outcome, raw, read.offered)),
            Some(TlsFailure::NoMemory) => {
                self.no_memory_for_input(ctx);
                self.send_reply(ctx);
                Err(if self.is_broken() { Verdict::Drop } else { Verdict::Keep })
            }
            Some(failure) => {
                tracing::debug!(error = %failure, "closing a TLS connection");
                match self.phase {
                    Phase::Handshake => ctx.stats.handshake_failed(TLS_ERROR_LABEL),
                    Phase::Open => self.ending = Some(Disconnect::ProtocolError),
                    Phase::CloseSent | Phase::Lingering => {}
                }
                Err(Verdict::Drop)
            }
        }
    }

    fn on_eof(&mut self, ctx: &mut Ctx) -> Verdict {
        match self.phase {
            Phase::Handshake => ctx.stats.handshake_failed("abandoned"),
            Phase::Open => self.ending = Some(Disconnect::ClientGone),
            Phase::CloseSent | Phase::Lingering => {}
        }
        Verdict::Drop
    }

    /// `n` new bytes sit in the connection's buffer or the shard's scratch.
    fn on_bytes(&mut self, n: usize, ctx: &mut Ctx) {
        self.last_read = ctx.tick;
        self.flags.set(Flags::PINGED, false);
        ctx.stats.bytes_in += n as u64;
        match self.inbuf.take() {
            Some(buf) => self.process_leased(buf, n, ctx),
            None => self.process_scratch(n, ctx),
        }
        self.send_reply(ctx);
        // The client's Close answered ours (or the connection failed while
        // closing) with nothing left to write: shut down our side now, the
        // server closes TCP first (RFC 6455 §7.1.1).
        if self.phase == Phase::Lingering && self.outq.is_none() && !self.is_broken() {
            self.after_flush();
        }
    }

    fn process_leased(&mut self, mut buf: Box<InBuf>, n: usize, ctx: &mut Ctx) {
        let len = buf.len() + n;
        let start = self.decoder.assembled();
        ctx.boundary = false;
        let (pos, need) = self.process(buf.bytes_mut(), start, len, ctx);
        let keep = self.decoder.assembled();
        buf.bytes_mut().copy_within(pos..len, keep);
        let left = keep + (len - pos);
        buf.set_len(left);
        if left == 0 && self.decoder.is_idle() {
            return; // the buffer (and its lease) goes back now
        }
        if ctx.boundary {
            // What is left began in this read: its deadline starts now.
            buf.since = ctx.tick;
        }
        if !buf.reserve(room_for(need, left), self.buffer_limit(ctx)) {
            self.no_memory_for_input(ctx);
            return;
        }
        self.inbuf = Some(buf);
    }

    fn process_scratch(&mut self, n: usize, ctx: &mut Ctx) {
        let mut scratch = mem::take(&mut ctx.scratch);
        let (pos, need) = self.process(&mut scratch, 0, n, ctx);
        let keep = self.decoder.assembled();
        if pos < n || keep > 0 || !self.decoder.is_idle() {
            let parts = [&scratch[..keep], &scratch[pos..n]];
            let room = room_for(need, keep + (n - pos));
            let source = if self.phase == Phase::Handshake {
                Source::Heap
            } else {
                Source::PoolOrHeap
            };
            match InBuf::holding(parts, room, source, &ctx.pool, &ctx.meter) {
                Some(mut buf) => {
                    buf.since = ctx.tick;
                    self.inbuf = Some(Box::new(buf));
                }
                None => self.no_memory_for_input(ctx),
            }
        }
        ctx.scratch = scratch;
    }

    /// The memory budget cannot hold this connection's partial input: a
    /// handshake is refused (503), an open connection closed (1013); no other
    /// connection waits for memory.
    fn no_memory_for_input(&mut self, ctx: &mut Ctx) {
        ctx.stats.shed(Shed::PartialInput);
        match self.phase {
            Phase::Handshake => {
                self.refuse(Refusal::SHORT_OF_MEMORY, 0, ctx);
            }
            _ => self.abort(close::TRY_AGAIN_LATER, MEMORY_REASON, Disconnect::MemoryShed, ctx),
        }
        self.decoder = crate::ws::codec::Decoder::default();
    }

    /// The most an input buffer may grow to: a request head's cap (one byte
    /// over it is how a head too large is seen), or the largest message.
    fn buffer_limit(&self, ctx: &Ctx) -> usize {
        match self.phase {
            Phase::Handshake => MAX_REQUEST_BYTES + 1,
            _ => ctx.limits.max_message_bytes + MAX_CLIENT_HEADER,
        }
    }

    /// Handles `buf[pos..len)` by phase; returns where undecoded bytes start
    /// and the buffer size the next frame needs.
    fn process(&mut self, buf: &mut [u8], mut pos: usize, len: usize, ctx: &mut Ctx) -> (usize, usize) {
        if self.phase == Phase::Handshake {
            let auth = AuthPolicy {
                secret: ctx.limits.jwt_secret.as_deref(),
                require_exp: ctx.limits.jwt_require_exp,
                allow_anonymous: ctx.limits.allow_anonymous,
                anonymous_ws: ctx.limits.connect_proxy,
                now_unix: ctx.now_unix,
            };
            let policy = Policy {
                origins: &ctx.limits.origins,
                subprotocols: &ctx.limits.subprotocols,
                auth,
            };
            match handshake::parse_request(&buf[pos..len], &policy) {
                Outcome::Partial => return (pos, head_room(len - pos)),
                Outcome::Refuse(refusal) => return self.refuse(refusal, len, ctx),
                Outcome::Upgrade(up) => {
                    if let Err(refusal) = self.admit(&buf[pos..pos + up.consumed], ctx) {
                        return self.refuse(refusal, len, ctx);
                    }
                    // A Centrifuge client's token comes in its `connect`: the
                    // hub keeps these until then, and asks only if needed.
                    let hooked = matches!(up.endpoint, Endpoint::Ws | Endpoint::Centrifuge);
                    let connect = (ctx.limits.connect_proxy && hooked && up.claims.is_none())
                        .then(|| handshake::headers_named(&buf[pos..pos + up.consumed], &ctx.limits.proxy_headers));
                    pos += self.upgrade(up, ctx);
                    if let Some(headers) = connect {
                        let key = ctx.current;
                        ctx.outbox.push(Outgoing::Connecting { key, headers });
                    }
                }
            }
        }
        match self.phase {
            Phase::Open | Phase::CloseSent => self.decode_frames(buf, pos, len, ctx),
            // After the close handshake input is read and dropped.
            Phase::Handshake | Phase::Lingering => (len, 0),
        }
    }

    fn refuse(&mut self, refusal: Refusal, len: usize, ctx: &mut Ctx) -> (usize, usize) {
        ctx.stats.handshake_failed(refusal.label());
        handshake::write_refusal(&mut ctx.reply, &refusal);
        self.enter(Phase::Lingering, ctx.tick);
        (len, 0)
    }

    /// Reserves this connection's place: refused while draining, near the
    /// memory limit, at the process's connection cap, or over a per-address
    /// limit. The client's address is looked up only when those limits are on.
    fn admit(&mut self, request: &[u8], ctx: &mut Ctx) -> Result<(), Refusal> {
        if ctx.draining {
            return Err(Refusal::OVER_CAPACITY);
        }
        if ctx.meter.refuses_upgrades() {
            ctx.stats.shed(Shed::UpgradeRefused);
            return Err(Refusal::SHORT_OF_MEMORY);
        }
        let admission = &ctx.admission;
        if let Some(peer) = ctx.pending_ips.remove(&ctx.current) {
            // Out of the handshake count, into the connection count.
            admission.end_handshake(peer);
        }
        // Checked first: peer_addr is a getpeername(2) per handshake.
        let peer = if admission.per_ip_enabled() {
            self.stream.peer_addr().ok()
        } else {
            None
        };
        let ip = peer.map(|peer| {
            let forwarded = if admission.trusts(peer.ip()) {
                handshake::forwarded_for(request)
            } else {
                Vec::new()
            };
            admission.client_ip(peer.ip(), &forwarded)
        });
        admission.admit(ip, std::time::Instant::now())?;
        if let Some(ip) = ip {
            ctx.ips.insert(ctx.current, ip);
        }
        Ok(())
    }

    fn upgrade(&mut self, up: Upgrade, ctx: &mut Ctx) -> usize {
        handshake::write_accept(&mut ctx.reply, &up.accept_key, up.subprotocol.as_deref());
        // Until the hub places it (right after this drive), a room
        // connection's room is unknown; its messages wait in the outbox.
        self.route = Some(match up.endpoint {
            Endpoint::Echo => Route::Echo,
            Endpoint::Room(_) => Route::Room,
            Endpoint::Ws => Route::Ws,
            Endpoint::Centrifuge => Route::Centrifuge,
        });
        if up.endpoint != Endpoint::Echo || up.claims.is_some() {
            let (endpoint, claims) = (up.endpoint, up.claims.map(Box::new));
            ctx.outbox.push(Outgoing::Upgraded {
                key: ctx.current,
                endpoint,
                claims,
            });
        }
        self.enter(Phase::Open, ctx.tick);
        ctx.open += 1;
        ctx.stats.upgraded += 1;
        up.consumed
    }

    fn decode_frames(&mut self, buf: &mut [u8], mut pos: usize, len: usize, ctx: &mut Ctx) -> (usize, usize) {
        loop {
            match self.decoder.next(buf, &mut pos, len, ctx.limits.max_message_bytes) {
                Ok(Step::NeedMore { need }) => return (pos, need),
                Ok(Step::Event(event)) => self.on_event(event, buf, ctx),
                Err(violation) => {
                    self.fail(violation, ctx);
                    return (len, 0);
                }
            }
            if self.phase == Phase::Lingering {
                return (len, 0);
            }
            if ctx.reply.len() >= REPLY_FLUSH_BYTES {
                self.send_reply(ctx);
            }
        }
    }

    fn on_event(&mut self, event: Event, buf: &[u8], ctx: &mut Ctx) {
        if !self.decoder.in_message() {
            // A message, or a control frame outside one, is complete: any
            // partial input after it is a new message with a new deadline.
            ctx.boundary = true;
        }
        let open = self.phase == Phase::Open;
        match event {
            Event::Message { text, payload } if open => {
                ctx.stats.messages_in += 1;
                self.deliver(text, &buf[payload], ctx);
            }
            Event::Ping { payload } if open => codec::encode_frame(&mut ctx.reply, Kind::Pong, &buf[payload]),
            Event::Close(peer) => self.on_peer_close(peer, ctx),
            // Messages after our Close, and pongs, need no answer.
            _ => {}
        }
    }

    /// Routes a message from this connection.
    fn deliver(&mut self, text: bool, payload: &[u8], ctx: &mut Ctx) {
        match self.route {
            Some(Route::Echo) => {
                let kind = if text { Kind::Text } else { Kind::Binary };
                codec::encode_frame(&mut ctx.reply, kind, payload);
                ctx.stats.messages_out += 1;
            }
            Some(Route::Ws | Route::Centrifuge) => {
                ctx.outbox.push(Outgoing::Command {
                    key: ctx.current,
                    text: payload.to_vec(),
                });
            }
            Some(Route::Room) => {
                let kind = if text { Kind::Text } else { Kind::Binary };
                let mut frame = Vec::with_capacity(payload.len() + codec::MAX_SERVER_HEADER);
                codec::encode_frame(&mut frame, kind, payload);
                ctx.outbox.push(Outgoing::RoomMessage {
                    key: ctx.current,
                    frame: crate::buf::budget::frame(frame, ctx.meter.budget()),
                });
            }
            None => {}
        }
    }

    /// RFC 6455 §5.5.1: answer a Close with a Close (echoing the code), then
    /// close TCP. If we sent Close first, theirs completes the handshake.
    fn on_peer_close(&mut self, peer: PeerClose, ctx: &mut Ctx) {
        if self.phase == Phase::Open {
            match peer.code {
                Some(code) => codec::encode_close(&mut ctx.reply, code, ""),
                None => codec::encode_frame(&mut ctx.reply, Kind::Close, b""),
            }
            self.ending = Some(Disconnect::ClientClose);
        }
        self.enter(Phase::Lingering, ctx.tick);
    }

    /// _Fail the WebSocket Connection_ (RFC 6455 §7.1.7): send Close with the
    /// violation's code and stop processing input.
    fn fail(&mut self, violation: Violation, ctx: &mut Ctx) {
        if self.phase == Phase::Open {
            ctx.stats.protocol_errors += 1;
        }
        self.abort(violation.code, violation.reason, Disconnect::ProtocolError, ctx);
    }

    /// Sends Close with `code` (if the WebSocket is still open), stops
    /// processing input and releases what partial input the connection held.
    fn abort(&mut self, code: u16, reason: &str, why: Disconnect, ctx: &mut Ctx) {
        if self.phase == Phase::Open {
            codec::encode_close(&mut ctx.reply, code, reason);
            self.ending = Some(why);
        }
        self.decoder = crate::ws::codec::Decoder::default();
        self.inbuf = None;
        self.enter(Phase::Lingering, ctx.tick);
    }

    /// Writes the gathered reply: directly if nothing is queued.
    fn send_reply(&mut self, ctx: &mut Ctx) {
        if ctx.reply.is_empty() {
            return;
        }
        let queued_before = self.queued_bytes();
        let (flushed, written) =
            self.transport
                .send(&mut self.stream, &mut self.outq, &ctx.reply, &ctx.meter, &mut ctx.tls);
        ctx.stats.bytes_out += written as u64;
        if written > 0 {
            self.last_write = ctx.tick;
        }
        ctx.reply.clear();
        match flushed {
            Flushed::Failed => self.flags.set(Flags::BROKEN, true),
            Flushed::All => self.after_flush(),
            Flushed::Pending => self.check_backlog(queued_before, ctx),
        }
    }

    /// Everything is written: release the queue, and finish a close by
    /// shutting down our side.
    fn after_flush(&mut self) {
        self.outq = None;
        if self.phase == Phase::Lingering && !self.flags.has(Flags::WRITE_SHUT) {
            self.flags.set(Flags::WRITE_SHUT, true);
            // An error means the peer is gone already; EOF or the close
            // timer removes the connection either way.
            self.transport.closing(&mut self.stream);
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }

    /// A client whose backlog was already over `--max-backlog-bytes` when
    /// more bytes came for it is a slow consumer: its backlog is dropped and it
    /// gets Close 1008 "slow consumer" (if it ever reads again). Judging the
    /// backlog before the new bytes lets one message larger than the cap (up
    /// to `--max-message-size`) through to a client that does read, and bounds
    /// a stalled client's memory at the cap plus one message.
    ///
    /// Over the memory limit the cap is `SHED_BACKLOG_BYTES` instead, and the
    /// close counts as shed (`Disconnect::MemoryShed`, `Shed::Outgoing`).
    fn check_backlog(&mut self, queued_before: usize, ctx: &mut Ctx) {
        if !over_backlog_cap(queued_before, ctx) || self.ending.is_some() || self.outq.is_none() {
            return;
        }
        if queued_before > ctx.limits.max_backlog_bytes {
            self.close_slow_consumer(Disconnect::SlowConsumer, ctx);
        } else {
            ctx.stats.shed(Shed::Outgoing);
            self.close_slow_consumer(Disconnect::MemoryShed, ctx);
        }
    }

    /// Drops the unstarted backlog and queues Close 1008 "slow consumer".
    fn close_slow_consumer(&mut self, why: Disconnect, ctx: &mut Ctx) {
        let Some(queue) = self.outq.as_mut() else {
            return;
        };
        queue.discard_unstarted();
        let mut frame = Vec::with_capacity(32);
        codec::encode_close(&mut frame, close::POLICY_VIOLATION, "slow consumer");
        queue.push(Bytes::from(frame));
        self.ending = Some(why);
        ctx.stats.slow_consumers += 1;
        let next = if self.phase == Phase::Open {
            Phase::CloseSent
        } else {
            Phase::Lingering
        };
        self.enter(next, ctx.tick);
    }
}

/// Over the memory limit, a backlog above this is closed as a slow consumer
/// as soon as more comes for it, whatever `--max-backlog-bytes` says.
pub(crate) const SHED_BACKLOG_BYTES: usize = 64 * 1024;

/// Whether a backlog of `queued` bytes is over the cap that applies now.
/// The memory budget's shared total is read only for a backlog above the
/// smaller cap: a fan-out queues to many short backlogs per message.
fn over_backlog_cap(queued: usize, ctx: &Ctx) -> bool {
    let limits = &ctx.limits;
    if queued <= limits.max_backlog_bytes.min(SHED_BACKLOG_BYTES) {
        return false;
    }
    queued > limits.max_backlog_bytes || ctx.meter.over_limit()
}

/// Handshake-failure reason of a TLS handshake that failed (garbage, no
/// shared cipher or version, a bad record).
pub const TLS_ERROR_LABEL: &str = "tls_error";
/// Handshake-failure reason of a TLS handshake not finished within
/// `--handshake-timeout-secs` of the accept (a stalled ClientHello).
pub const TLS_TIMEOUT_LABEL: &str = "tls_timeout";

/// Bytes an I/O outcome moved (0 unless progress).
fn progress(outcome: IoOutcome) -> usize {
    match outcome {
        IoOutcome::Progress(n) => n,
        _ => 0,
    }
}

/// Close reason for a partial message held past `--message-timeout-secs`.
pub(crate) const MESSAGE_TIMEOUT_REASON: &str = "message not completed in time";
/// Close reason when the memory budget cannot hold a connection's input.
pub(crate) const MEMORY_REASON: &str = "server short of memory";

/// Room for a partial request head of `have` bytes: twice what came, at
/// least 1 KiB, at most the 8 KiB a head may take.
fn head_room(have: usize) -> usize {
    (2 * have).clamp(1024, MAX_REQUEST_BYTES)
}

/// Least room made for partial input: a bare frame header costs this much.
const MIN_INPUT_ROOM: usize = 1024;

/// Buffer room to make for input that needs `need` bytes in all when `have`
/// have arrived: grow with what has actually arrived (double it, at least
/// 1 KiB), never all at once on the word of a frame header, so a 14-byte
/// header announcing a megabyte costs a kilobyte until the megabyte comes.
/// Always leaves room for at least one more byte.
fn room_for(need: usize, have: usize) -> usize {
    need.min((2 * have).max(MIN_INPUT_ROOM)).max(have + 1)
}

#[cfg(test)]
mod tests {
    use super::room_for;
    use crate::buf::BUF_SIZE;

    #[test]
    fn buffers_grow_with_the_data_not_with_the_header() {
        assert_eq!(room_for(1 << 20, 14), 1024, "a bare header gets a kilobyte");
        assert_eq!(room_for(1 << 20, BUF_SIZE), 2 * BUF_SIZE);
        assert_eq!(room_for(1 << 20, 3000), 6000);
        assert_eq!(room_for(100, 50), 100, "small needs are met at once");
        assert_eq!(room_for(0, 10), 11, "always room for one more byte");
        assert_eq!(room_for(5, 10), 11);
    }
}
