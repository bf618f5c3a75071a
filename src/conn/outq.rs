//! The outgoing queue: the only code that writes to a connection's socket
//! (STYLE habit 8), so handshake responses, pongs, close frames and messages
//! never interleave.
//!
//! Writes go straight to the socket when nothing is queued; only what the
//! socket refused is kept, as reference-counted chunks (a broadcast's bytes are
//! shared, never copied per receiver). Queued bytes are flushed with `writev`.
//!
//! Queued bytes count in the memory budget (`MemKind::Outgoing`): a large
//! frame carries its own charge, made once however many connections queue it
//! (`budget::frame`); smaller chunks are charged to the shard's meter per
//! connection while queued.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;
use mio::net::TcpStream;

use crate::buf::budget::{self, is_self_charged};
use crate::buf::{MemKind, Meter};
use crate::net::io::{self, IoOutcome};

/// Most chunks handed to one `writev` call.
const MAX_IOVECS: usize = 64;

/// Bytes the socket refused, oldest first.
pub struct OutQ {
    meter: Meter,
    chunks: VecDeque<Bytes>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Queued bytes not yet written.
    bytes: usize,
    /// Of those, what this queue charged the meter (chunks under
    /// `SELF_CHARGED_BYTES`).
    charged: usize,
}

/// What a write attempt left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything is on the wire.
    All,
    /// Some bytes wait for the next writable event.
    Pending,
    /// The connection is broken.
    Failed,
}

impl OutQ {
    pub fn new(meter: Meter) -> OutQ {
        OutQ {
            meter,
            chunks: VecDeque::new(),
            offset: 0,
            bytes: 0,
            charged: 0,
        }
    }

    fn charge(&mut self, chunk: &[u8], bytes: usize) {
        if !is_self_charged(chunk) {
            self.charged += bytes;
            self.meter.charge(MemKind::Outgoing, bytes);
        }
    }

    fn release(&mut self, chunk_len: usize, bytes: usize) {
        if chunk_len < budget::SELF_CHARGED_BYTES {
            self.charged -= bytes;
            self.meter.release(MemKind::Outgoing, bytes);
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.bytes += chunk.len();
            self.charge(&chunk, chunk.len());
            self.chunks.push_back(chunk);
        }
    }

    /// Queues what is left of `chunk` after its first `written` bytes went
    /// out directly: the chunk counts as started, so a slow consumer's
    /// discard keeps it and the stream keeps its framing. Only for an empty
    /// queue (the caller wrote directly because nothing was queued).
    fn push_started(&mut self, chunk: Bytes, written: usize) {
        debug_assert!(self.chunks.is_empty() && written < chunk.len());
        let left = chunk.len() - written;
        self.bytes += left;
        self.charge(&chunk, left);
        self.chunks.push_back(chunk);
        self.offset = written;
    }

    /// Drops every chunk not yet started (a slow consumer's backlog); the
    /// chunk in progress stays so the stream keeps its framing.
    pub fn discard_unstarted(&mut self) {
        let keep = usize::from(self.offset > 0);
        while self.chunks.len() > keep {
            if let Some(chunk) = self.chunks.pop_back() {
                self.bytes -= chunk.len();
                self.release(chunk.len(), chunk.len());
            }
        }
    }

    /// Writes queued chunks until done or the socket refuses.
    pub fn flush(&mut self, stream: &mut TcpStream) -> (Flushed, usize) {
        let mut written = 0;
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
                let start = if i == 0 { self.offset } else { 0 };
                slices[i] = IoSlice::new(&chunk[start..]);
                count += 1;
            }
            match io::write_vectored(stream, &slices[..count]) {
                IoOutcome::Progress(n) => {
                    written += n;
                    self.consume(n);
                }
                IoOutcome::WouldBlock => return (Flushed::Pending, written),
                IoOutcome::Closed | IoOutcome::Failed(_) => return (Flushed::Failed, written),
            }
        }
        (Flushed::All, written)
    }

    /// Copies up to `max` queued bytes, oldest first, into `out` and takes
    /// them off the queue (TLS encrypts them next: `conn/transport.rs`).
    pub fn take_front(&mut self, max: usize, out: &mut Vec<u8>) {
        let mut taken = 0;
        for (i, chunk) in self.chunks.iter().enumerate() {
            let start = if i == 0 { self.offset } else { 0 };
            let take = (chunk.len() - start).min(max - taken);
            out.extend_from_slice(&chunk[start..start + take]);
            taken += take;
            if taken == max {
                break;
            }
        }
        self.consume(taken);
    }

    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let front_len = self.chunks[0].len();
            let front_left = front_len - self.offset;
            if n < front_left {
                self.release(front_len, n);
                self.offset += n;
                return;
            }
            self.release(front_len, front_left);
            n -= front_left;
            self.offset = 0;
            self.chunks.pop_front();
        }
    }
}

impl Drop for OutQ {
    fn drop(&mut self) {
        self.meter.release(MemKind::Outgoing, self.charged);
    }
}

/// Sends `data` on `stream`: directly when nothing is queued, queueing
/// (copied once) what the socket refused. Returns bytes written now.
pub fn send(stream: &mut TcpStream, outq: &mut Option<Box<OutQ>>, data: &[u8], meter: &Meter) -> (Flushed, usize) {
    if data.is_empty() {
        return (Flushed::All, 0);
    }
    if let Some(queue) = outq {
        if !queue.is_empty() {
            queue.push(budget::frame(data.to_vec(), meter.budget()));
            return (Flushed::Pending, 0);
        }
    }
    match io::write(stream, data) {
        IoOutcome::Progress(n) if n == data.len() => (Flushed::All, n),
        IoOutcome::Progress(n) => {
            // The queue is empty here (checked above): what is left of a
            // frame already begun on the wire must never be discarded.
            outq.get_or_insert_with(|| Box::new(OutQ::new(meter.clone())))
                .push_started(budget::frame(data.to_vec(), meter.budget()), n);
            (Flushed::Pending, n)
        }
        IoOutcome::WouldBlock => {
            outq.get_or_insert_with(|| Box::new(OutQ::new(meter.clone())))
                .push(budget::frame(data.to_vec(), meter.budget()));
            (Flushed::Pending, 0)
        }
        IoOutcome::Closed | IoOutcome::Failed(_) => (Flushed::Failed, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_of_a_partly_written_reply_is_never_discarded() {
        let meter = Meter::unlimited();
        let mut q = OutQ::new(meter.clone());
        q.push_started(Bytes::from_static(b"frame-one"), 4);
        q.push(Bytes::from_static(b"frame-two"));
        assert_eq!(q.bytes(), 5 + 9);
        q.discard_unstarted();
        assert_eq!(q.bytes(), 5, "the begun frame stays, whole");
        assert_eq!(meter.held(MemKind::Outgoing), 5);
        q.consume(5);
        assert!(q.is_empty());
    }

    #[test]
    fn take_front_copies_across_chunks_and_releases() {
        let meter = Meter::unlimited();
        let mut q = OutQ::new(meter.clone());
        q.push_started(Bytes::from_static(b"xxabc"), 2);
        q.push(Bytes::from_static(b"defg"));
        let mut out = Vec::new();
        q.take_front(5, &mut out);
        assert_eq!(out, b"abcde");
        assert_eq!((q.bytes(), meter.held(MemKind::Outgoing)), (2, 2));
        out.clear();
        q.take_front(100, &mut out);
        assert_eq!(out, b"fg");
        assert!(q.is_empty());
        assert_eq!(meter.held(MemKind::Outgoing), 0);
    }

    #[test]
    fn consume_walks_across_chunks() {
        let meter = Meter::unlimited();
        let mut q = OutQ::new(meter.clone());
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"defg"));
        q.consume(4);
        assert_eq!((q.bytes(), q.offset, q.chunks.len()), (3, 1, 1));
        q.push(Bytes::from_static(b"hi"));
        q.discard_unstarted();
        assert_eq!(q.bytes(), 3, "the started chunk stays, the unstarted one goes");
        assert_eq!(
            meter.held(MemKind::Outgoing),
            3,
            "what was written or dropped is released"
        );
        q.consume(3);
        assert!(q.is_empty());
        q.push(Bytes::from_static(b"xy"));
        drop(q);
        assert_eq!(meter.held(MemKind::Outgoing), 0);
    }
}
