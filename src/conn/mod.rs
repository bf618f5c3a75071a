//! One client connection: a small concrete struct kept in the shard's slab.
//!
//! An idle connection is its socket, its phase, 12 bytes of decoder state and
//! a few tick counters: no buffer, no timer object, no `String`. Buffers are
//! attached only while there is partial input (`inbuf`) or refused output
//! (`outq`). A `wss://` connection adds one boxed TLS session (`tls`), reached
//! only through `transport`. The life of a connection is described in `docs/CONNECTION.md`.

pub(crate) mod admission;
pub(crate) mod ctx;
pub mod drive;
pub(crate) mod inbuf;
pub mod outq;
pub mod record;
pub mod tls;
pub mod transport;

use mio::net::TcpStream;

use crate::route::Route;
use crate::ws::codec::Decoder;

pub use ctx::{Ctx, Limits, Outgoing};
pub use drive::Verdict;
use inbuf::InBuf;
use outq::OutQ;
pub use transport::Transport;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the HTTP upgrade request.
    Handshake,
    /// Exchanging messages.
    Open,
    /// We sent a Close frame first and wait for the client's.
    CloseSent,
    /// The WebSocket (or the refused handshake) is finished: our last bytes
    /// drain, then we shut down writing and wait for the client's FIN, so an
    /// early RST cannot destroy our final frame or response.
    Lingering,
}

pub use crate::metrics::disconnect::Disconnect;

/// Small yes/no facts about a connection, one bit each, so they cost one
/// byte of `Conn` rather than one byte each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flags(u8);

impl Flags {
    /// A ping was sent since the last byte read.
    pub(crate) const PINGED: u8 = 1;
    /// The write side is shut down (Lingering only).
    pub(crate) const WRITE_SHUT: u8 = 2;
    /// The socket failed; the shard removes the connection.
    pub(crate) const BROKEN: u8 = 4;
    /// Listed in the shard's dirty list: has queued bytes to flush this turn.
    pub(crate) const DIRTY: u8 = 8;

    pub fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }

    pub fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.0 |= flag;
        } else {
            self.0 &= !flag;
        }
    }
}

/// A connection. Fields are plain data so that the state of an idle
/// connection could be written out and read back (live upgrade, later).
pub struct Conn {
    pub(crate) stream: TcpStream,
    /// Plain or TLS: the only way bytes reach `stream` (transport.rs).
    pub(crate) transport: Transport,
    /// Bumped per slab slot reuse; part of the mio token (see shard/token.rs).
    pub(crate) generation: u32,
    pub(crate) phase: Phase,
    /// Set at the upgrade; `None` while (or if never) upgraded.
    pub(crate) route: Option<Route>,
    /// Set once the connection upgraded: why it will end.
    pub(crate) ending: Option<Disconnect>,
    /// Yes/no facts packed in one byte (see `Flags`).
    pub(crate) flags: Flags,
    pub(crate) decoder: Decoder,
    /// Boxed: an idle connection pays 8 bytes for it, not 32; the box is
    /// made only when partial input has to be kept.
    pub(crate) inbuf: Option<Box<InBuf>>,
    pub(crate) outq: Option<Box<OutQ>>,
    /// Tick of the last byte read.
    pub(crate) last_read: u32,
    /// Tick of the last byte written.
    pub(crate) last_write: u32,
    /// Tick the current phase began.
    pub(crate) phase_since: u32,
    /// Tick of this connection's entry in the timer wheel.
    pub(crate) timer_at: u32,
}

impl Conn {
    pub fn new(stream: TcpStream, generation: u32, tick: u32) -> Conn {
        Conn {
            stream,
            transport: Transport::Plain,
            generation,
            phase: Phase::Handshake,
            route: None,
            ending: None,
            flags: Flags::default(),
            decoder: Decoder::default(),
            inbuf: None,
            outq: None,
            last_read: tick,
            last_write: tick,
            phase_since: tick,
            timer_at: 0,
        }
    }

    pub fn route(&self) -> Option<Route> {
        self.route
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub(crate) fn is_upgraded(&self) -> bool {
        self.route.is_some()
    }

    /// Bytes queued for this connection and not yet written (over TLS,
    /// with the ciphertext the socket refused).
    pub fn queued_bytes(&self) -> usize {
        self.outq.as_ref().map_or(0, |q| q.bytes()) + self.transport.pending_bytes()
    }

    /// Speaks TLS from its first byte (`wss://`).
    pub fn use_tls(&mut self, session: tls::TlsSession) {
        self.transport = Transport::Tls(Box::new(session));
    }

    /// The socket failed; the shard must remove the connection.
    pub(crate) fn is_broken(&self) -> bool {
        self.flags.has(Flags::BROKEN)
    }

    /// Marks the connection for the end-of-turn flush; true when it was
    /// not marked yet (the caller then lists it).
    pub(crate) fn mark_dirty(&mut self) -> bool {
        let newly = !self.flags.has(Flags::DIRTY);
        self.flags.set(Flags::DIRTY, true);
        newly
    }

    pub(crate) fn enter(&mut self, phase: Phase, tick: u32) {
        self.phase = phase;
        self.phase_since = tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_is_small() {
        // The per-connection budget is 128 bytes of user space in all (aim:
        // under 100); the struct must leave room for the slab and timer entries.
        // mio adds a selector id to each stream in debug builds only.
        let debug_only = std::mem::size_of::<TcpStream>() - std::mem::size_of::<std::os::fd::RawFd>();
        let size = std::mem::size_of::<Conn>() - debug_only;
        // 56 bytes of fields, the 12-byte decoder (its `Pending` kind packed
        // into its counters' top bits) and the 8-byte `transport` seam (plain
        // or a boxed TLS session): 64, one cache line.
        assert!(size <= 64, "Conn is {size} bytes in a release build");
    }
}
