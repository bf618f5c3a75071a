//! The one seam between a connection's WebSocket bytes and its socket:
//! plain TCP, or TLS (`conn/tls.rs`). Everything above it (the decoder, the
//! hub, the outgoing queue's backlog rules) sees plaintext only; a later
//! kernel TLS offload would be one more variant here.
//!
//! Writes: plain bytes go straight to the socket (`outq::send`). Over TLS
//! they are encrypted and written at once; plaintext that must wait (the
//! socket refused earlier ciphertext) waits as plaintext in the `OutQ`, so a
//! broadcast stays shared until it is encrypted for this receiver, and a
//! slow consumer's unstarted backlog can still be dropped whole.

use mio::net::TcpStream;

use super::outq::{self, Flushed, OutQ};
use super::tls::{TlsScratch, TlsSession};
use crate::buf::budget;
use crate::buf::Meter;

/// Plaintext taken from the queue per encryption while flushing.
const TLS_FLUSH_BYTES: usize = 64 * 1024;

/// How a connection's bytes reach its socket.
pub enum Transport {
    Plain,
    /// Boxed: a plain connection pays 8 bytes for the variant.
    Tls(Box<TlsSession>),
}

impl Transport {
    /// Ciphertext refused by the socket (0 for plain).
    pub fn pending_bytes(&self) -> usize {
        match self {
            Transport::Plain => 0,
            Transport::Tls(session) => session.pending_bytes(),
        }
    }

    /// Still in the TLS handshake (false for plain).
    pub fn is_tls_handshaking(&self) -> bool {
        matches!(self, Transport::Tls(s) if s.is_handshaking())
    }

    /// Sends `data`: directly when nothing waits, else queued behind what
    /// does. Returns bytes written to the socket now.
    pub fn send(
        &mut self,
        stream: &mut TcpStream,
        outq: &mut Option<Box<OutQ>>,
        data: &[u8],
        meter: &Meter,
        scratch: &mut TlsScratch,
    ) -> (Flushed, usize) {
        let session = match self {
            Transport::Plain => return outq::send(stream, outq, data, meter),
            Transport::Tls(session) => session,
        };
        if data.is_empty() {
            return (Flushed::All, 0);
        }
        let queued = outq.as_ref().is_some_and(|q| !q.is_empty());
        if queued || session.pending_bytes() > 0 {
            outq.get_or_insert_with(|| Box::new(OutQ::new(meter.clone())))
                .push(budget::frame(data.to_vec(), meter.budget()));
            return (Flushed::Pending, 0);
        }
        scratch.outgoing.clear();
        if session.encrypt(data, &mut scratch.outgoing).is_err() {
            return (Flushed::Failed, 0);
        }
        let out = std::mem::take(&mut scratch.outgoing);
        let result = session.write_cipher(stream, &out);
        scratch.outgoing = out;
        result
    }

    /// Writes what waits: pending ciphertext, then the queue (encrypted a
    /// slice at a time). Returns bytes written.
    pub fn flush(
        &mut self,
        stream: &mut TcpStream,
        outq: &mut Option<Box<OutQ>>,
        scratch: &mut TlsScratch,
    ) -> (Flushed, usize) {
        let session = match self {
            Transport::Plain => return outq.as_mut().map_or((Flushed::All, 0), |q| q.flush(stream)),
            Transport::Tls(session) => session,
        };
        let mut written = 0;
        loop {
            let (flushed, n) = session.flush_pending(stream);
            written += n;
            if flushed != Flushed::All {
                return (flushed, written);
            }
            let Some(queue) = outq.as_mut().filter(|q| !q.is_empty()) else {
                return (Flushed::All, written);
            };
            scratch.plain.clear();
            queue.take_front(TLS_FLUSH_BYTES, &mut scratch.plain);
            scratch.outgoing.clear();
            if session.encrypt(&scratch.plain, &mut scratch.outgoing).is_err() {
                return (Flushed::Failed, written);
            }
            let out = std::mem::take(&mut scratch.outgoing);
            let (flushed, n) = session.write_cipher(stream, &out);
            scratch.outgoing = out;
            written += n;
            if flushed != Flushed::All {
                return (flushed, written);
            }
        }
    }

    /// Before the write side is shut down: TLS says goodbye (close_notify).
    pub fn closing(&mut self, stream: &mut TcpStream) {
        if let Transport::Tls(session) = self {
            session.close_notify(stream);
        }
    }
}
