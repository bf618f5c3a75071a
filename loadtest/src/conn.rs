//! Owns one client connection's state: its socket, its phase, the partial bytes it is waiting to
//! complete, and the bytes the socket has not yet taken.
//!
//! A connection holds no buffer until it needs one: the engine reads into a shared scratch buffer
//! and only a partial frame is copied here. Buffers keep their capacity once grown, so the steady
//! state allocates nothing per message.

use mio::net::TcpStream;
use rustls::ClientConnection;

use crate::codec::OpCode;
use crate::net::{self, Io, Reason};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect in flight; the upgrade request waits in the write buffer.
    Connecting,
    /// The request is (being) sent; waiting for `101 Switching Protocols`.
    Handshaking,
    /// Upgraded: frames flow.
    Open,
    /// We sent a close frame and wait for the server's (or for TCP to close).
    Closing,
}

/// One client connection.
pub struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) phase: Phase,
    pub(crate) key: [u8; 24],
    /// Monotonic time the connect started.
    pub(crate) started_ns: u64,
    /// Distinguishes this connection from a later one reusing its slab slot (deadline queues).
    pub(crate) serial: u64,
    /// The scenario's own number for this client (subscriber index, publisher index, ...).
    pub(crate) user: u32,
    /// Bytes of a partial handshake response or frame, kept between reads.
    pub(crate) rbuf: Vec<u8>,
    /// The opcode and collected payload of a fragmented message.
    pub(crate) frag_op: Option<OpCode>,
    pub(crate) frag: Vec<u8>,
    /// Frames not yet taken by the socket, from `woff` on.
    pub(crate) wbuf: Vec<u8>,
    pub(crate) woff: usize,
    /// The last write hit `WouldBlock`: tell the scenario when the socket drains.
    pub(crate) blocked: bool,
    /// Queued for the end-of-turn flush.
    pub(crate) dirty: bool,
    /// `false` for a client that has stopped reading (the `slow` scenario).
    pub(crate) reading: bool,
    /// `wss://`: the TLS session every byte goes through.
    pub(crate) tls: Option<Box<ClientConnection>>,
    /// Set by a read that finished the TLS handshake (the engine records its time).
    pub(crate) handshook: bool,
}

impl Conn {
    /// A connection whose connect was just started.
    pub fn new(stream: TcpStream, key: [u8; 24], started_ns: u64, serial: u64, user: u32) -> Conn {
        Conn {
            stream,
            phase: Phase::Connecting,
            key,
            started_ns,
            serial,
            user,
            rbuf: Vec::new(),
            frag_op: None,
            frag: Vec::new(),
            wbuf: Vec::new(),
            woff: 0,
            blocked: false,
            dirty: false,
            reading: true,
            tls: None,
            handshook: false,
        }
    }

    /// Reads plaintext into `buf` (through TLS for `wss://`).
    pub fn read(&mut self, buf: &mut [u8]) -> Io {
        match self.tls.as_mut() {
            Some(tls) => crate::tls::read(tls, &mut self.stream, buf, &mut self.handshook),
            None => net::read(&mut self.stream, buf),
        }
    }

    /// Bytes queued but not yet written.
    pub fn queued(&self) -> usize {
        self.wbuf.len() - self.woff
    }

    /// Writes queued bytes until done or `WouldBlock`. Does nothing while TCP is still connecting.
    pub fn flush(&mut self) -> Result<(), Reason> {
        if self.phase == Phase::Connecting {
            return Ok(());
        }
        if self.tls.is_some() {
            return self.flush_tls();
        }
        while self.woff < self.wbuf.len() {
            match net::write(&mut self.stream, &self.wbuf[self.woff..]) {
                Io::Done(n) => self.woff += n,
                Io::WouldBlock => {
                    self.blocked = true;
                    return Ok(());
                }
                Io::Eof => return Err(Reason::Reset),
                Io::Failed(reason) => return Err(reason),
            }
        }
        self.wbuf.clear();
        self.woff = 0;
        Ok(())
    }

    /// `flush` over TLS: the session's own bytes first (handshake), then the queue once the
    /// handshake is done.
    fn flush_tls(&mut self) -> Result<(), Reason> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        loop {
            match crate::tls::write(tls, &mut self.stream, &self.wbuf[self.woff..]) {
                Io::Done(0) => break,
                Io::Done(n) => self.woff += n,
                Io::WouldBlock => {
                    self.blocked = true;
                    return Ok(());
                }
                Io::Eof => return Err(Reason::Reset),
                Io::Failed(reason) => return Err(reason),
            }
        }
        if self.woff == self.wbuf.len() {
            self.wbuf.clear();
            self.woff = 0;
        }
        Ok(())
    }
}
