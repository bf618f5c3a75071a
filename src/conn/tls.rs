//! One `wss://` connection's TLS state, driven through rustls's unbuffered
//! API so that the shard owns every buffer.
//!
//! Ciphertext is read into the shard's `TlsScratch::incoming`; every whole
//! record in it is decrypted and handed to a sink (the shard's scratch buffer,
//! or the connection's partial-input buffer when it has one). Only a record
//! cut by the read is kept, copied into a buffer of its own size (`partial`).
//! Writes are encrypted into `TlsScratch::outgoing` and written at once; only
//! what the socket refused is kept (`pending`).
//!
//! Two stages. During the handshake rustls's `UnbufferedServerConnection`
//! does everything. As soon as the handshake is done and rustls has nothing
//! left to send (the session ticket went out), its traffic secrets move to
//! our own record layer (`conn/record.rs`) and the rustls connection is
//! dropped: an idle connection then holds raw keys, IVs and sequence numbers
//! (plus, for TLS 1.3, rustls's small secret holder for KeyUpdate) and no
//! buffer. Everything held is charged to the memory budget as `MemKind::Tls`:
//! each stage at a fixed measured estimate, the buffers at their capacity.
//!
//! Ordering: ciphertext leaves in the order it was made. `pending` is the tail
//! of that stream; new ciphertext (handshake records, key updates, encrypted
//! replies) is written directly only when `pending` is empty, and plaintext
//! that must wait stays plaintext in the connection's `OutQ` until `pending`
//! drains (see `conn/transport.rs`).
//!
//! This module must never block, panic on input, or hold a buffer past the
//! read or write that needed it.

use std::mem;

use mio::net::TcpStream;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{HandshakeKind, ServerConfig};

use super::record::{RecordError, Records};
use crate::buf::{MemKind, Meter, BUF_SIZE};
use crate::conn::outq::Flushed;
use crate::net::io::{self, IoOutcome};
use std::sync::Arc;

/// What a session past its handshake is charged besides its buffers: this
/// struct in its box and, for TLS 1.3, rustls's secret holder (784 bytes);
/// measured, see `docs/CONNECTION.md`, "TLS".
pub const SESSION_CHARGE_BYTES: usize = 1024;
/// What a session in its handshake is charged: rustls's connection and
/// state (3.9 KiB live once the handshake completes, measured).
pub const HANDSHAKE_CHARGE_BYTES: usize = 4096;
/// First guess for an encoding buffer; rustls says when it needs more.
const ENCODE_GUESS_BYTES: usize = 4096;
/// Per-record room for the header, content type, padding and tag.
const RECORD_OVERHEAD_BYTES: usize = 64;
use super::record::MAX_FRAGMENT_BYTES;
/// Ciphertext the socket refused past which a KeyUpdate answer closes the
/// connection (see `read`).
const MAX_UNREAD_ANSWER_BYTES: usize = 256 * 1024;
/// Rounds of handshake output handled before encrypting (a key update and
/// tickets at most); more means rustls is looping.
const PUMP_ROUNDS: usize = 8;

/// The shard's TLS buffers, lent to one connection at a time; allocated
/// on first use, so a plain-only server never makes them.
#[derive(Default)]
pub struct TlsScratch {
    /// Ciphertext being processed: the kept partial record, then a read.
    incoming: Vec<u8>,
    /// Ciphertext made this call (handshake records, encrypted replies).
    pub(crate) outgoing: Vec<u8>,
    /// Plaintext taken from an `OutQ` to be encrypted.
    pub(crate) plain: Vec<u8>,
}

/// Ciphertext bytes kept for a connection while a record or a write is
/// partial; charged to the meter at their capacity.
struct Held {
    bytes: Vec<u8>,
    /// Of `bytes`, how many were written already (`pending` only).
    offset: usize,
}

/// Why a TLS session cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum TlsFailure {
    /// The peer broke TLS (garbage, a bad record, a failed handshake): the
    /// connection is closed after the alert rustls queued.
    #[error("tls: {0}")]
    Protocol(#[from] rustls::Error),
    /// The handshake did not fit the shard's scratch buffer: a hostile
    /// ClientHello; close.
    #[error("tls: handshake message larger than {BUF_SIZE} bytes")]
    TooLarge,
    /// Plaintext was asked to be sent before the handshake finished (a bug
    /// in the caller); close.
    #[error("tls: not ready to send application data")]
    NotReady,
    /// The sink had no memory for the decrypted input; close as shed.
    #[error("tls: no memory for decrypted input")]
    NoMemory,
    /// Our record layer refused a record (after the handshake): close after
    /// the alert it names.
    #[error("tls: {0}")]
    Record(#[from] RecordError),
}

/// What one `read` did.
#[derive(Debug)]
pub struct TlsRead {
    /// The socket read (ciphertext bytes on progress).
    pub io: IoOutcome,
    /// Bytes asked of the socket.
    pub offered: usize,
    /// Plaintext bytes handed to the sink.
    pub plain: usize,
    /// The handshake finished in this read: `Some(true)` when it resumed a
    /// session.
    pub handshake_done: Option<bool>,
    /// The peer sent close_notify: no more input will come.
    pub peer_closed: bool,
    /// The handshake output or an alert could not be written: the socket
    /// is broken.
    pub write_failed: bool,
    pub failure: Option<TlsFailure>,
}

/// A connection's TLS state (boxed in `Transport::Tls`).
pub struct TlsSession {
    stage: Stage,
    partial: Option<Held>,
    pending: Option<Held>,
    meter: Meter,
    /// The stage's fixed charge (`HANDSHAKE_CHARGE_BYTES` or `SESSION_CHARGE_BYTES`).
    charged: usize,
}

/// Who protects the records now.
enum Stage {
    /// rustls, through the handshake (boxed: it is 1 KiB inline).
    Handshake(Box<UnbufferedServerConnection>),
    /// Our record layer, from the end of the handshake on.
    Records(Records),
    /// The hand-over failed; the connection is being closed.
    Failed,
}

impl TlsSession {
    /// A session for a newly accepted socket, charged to `meter`.
    pub fn new(config: Arc<ServerConfig>, meter: &Meter) -> Result<TlsSession, rustls::Error> {
        let conn = UnbufferedServerConnection::new(config)?;
        meter.charge(MemKind::Tls, HANDSHAKE_CHARGE_BYTES);
        Ok(TlsSession {
            stage: Stage::Handshake(Box::new(conn)),
            partial: None,
            pending: None,
            meter: meter.clone(),
            charged: HANDSHAKE_CHARGE_BYTES,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        matches!(&self.stage, Stage::Handshake(conn) if conn.is_handshaking())
    }

    /// Ciphertext refused by the socket and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.bytes.len() - p.offset)
    }

    /// Bytes of buffers this session holds now (partial record, pending write).
    pub fn held_bytes(&self) -> usize {
        let cap = |h: &Option<Held>| h.as_ref().map_or(0, |h| h.bytes.capacity());
        cap(&self.partial) + cap(&self.pending)
    }

    /// Reads ciphertext once, decrypts every whole record into `sink` (which
    /// returns false when it has no memory for the bytes) and writes what the
    /// handshake answers.
    pub fn read(
        &mut self,
        stream: &mut TcpStream,
        scratch: &mut TlsScratch,
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> TlsRead {
        let mut result = TlsRead {
            io: IoOutcome::WouldBlock,
            offered: 0,
            plain: 0,
            handshake_done: None,
            peer_closed: false,
            write_failed: false,
            failure: None,
        };
        if scratch.incoming.len() < BUF_SIZE {
            scratch.incoming.resize(BUF_SIZE, 0);
        }
        let have = self.partial.as_ref().map_or(0, |p| p.bytes.len());
        if have >= scratch.incoming.len() {
            result.io = IoOutcome::Progress(0);
            result.failure = Some(TlsFailure::TooLarge);
            return result;
        }
        if let Some(partial) = &self.partial {
            scratch.incoming[..have].copy_from_slice(&partial.bytes);
        }
        result.offered = scratch.incoming.len() - have;
        result.io = io::read(stream, &mut scratch.incoming[have..]);
        let IoOutcome::Progress(n) = result.io else {
            return result; // the partial record stays where it was
        };
        self.set_held(Slot::Partial, None);
        let was_handshaking = self.is_handshaking();
        scratch.outgoing.clear();
        let mut incoming = mem::take(&mut scratch.incoming);
        let out = &mut scratch.outgoing;
        let processed = match &mut self.stage {
            Stage::Handshake(conn) => process(conn, &mut incoming[..have + n], out, sink, &mut result),
            Stage::Records(records) => open(records, &mut incoming[..have + n], out, sink, &mut result),
            Stage::Failed => Err(TlsFailure::NotReady),
        };
        match processed {
            Ok(used) if used < have + n => {
                let rest = incoming[used..have + n].to_vec();
                self.set_held(Slot::Partial, Some(rest));
            }
            Ok(_) => {}
            Err(failure) => {
                self.alert(&failure, out);
                result.failure = Some(failure);
            }
        }
        scratch.incoming = incoming;
        if let (true, Stage::Handshake(conn)) = (was_handshaking, &self.stage) {
            if !conn.is_handshaking() {
                result.handshake_done = Some(conn.handshake_kind() == Some(HandshakeKind::Resumed));
            }
        }
        if result.failure.is_none() && !result.peer_closed {
            if let Err(failure) = self.hand_over(&mut scratch.outgoing) {
                result.failure = Some(failure);
            }
        }
        let answered = !scratch.outgoing.is_empty() && matches!(self.stage, Stage::Records(_));
        if !scratch.outgoing.is_empty() {
            let out = mem::take(&mut scratch.outgoing);
            if self.write_cipher(stream, &out).0 == Flushed::Failed {
                result.write_failed = true;
            }
            scratch.outgoing = out;
        }
        // A KeyUpdate answer is never refused for backlog elsewhere (it is
        // not a message); a client that asks for them and does not read is
        // closed here, before its unread answers grow without bound.
        if answered && result.failure.is_none() && self.pending_bytes() > MAX_UNREAD_ANSWER_BYTES {
            result.failure = Some(TlsFailure::Record(RecordError::Keys(
                "key updates requested by a peer that does not read".into(),
            )));
        }
        result
    }

    /// Once the handshake is done and rustls has nothing left to send (the
    /// session ticket is in `out`), moves the traffic secrets to our record
    /// layer and drops the rustls connection. A no-op in any other state.
    fn hand_over(&mut self, out: &mut Vec<u8>) -> Result<(), TlsFailure> {
        let Stage::Handshake(conn) = &mut self.stage else {
            return Ok(());
        };
        if conn.is_handshaking() {
            return Ok(());
        }
        let mut ready = false;
        for _ in 0..PUMP_ROUNDS {
            match conn.process_tls_records(&mut []).state? {
                ConnectionState::EncodeTlsData(mut data) => encode_into(out, |b| data.encode(b))?,
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::WriteTraffic(_) => {
                    ready = true;
                    break;
                }
                _ => return Err(TlsFailure::NotReady),
            }
        }
        if !ready {
            return Err(TlsFailure::NotReady);
        }
        let Stage::Handshake(conn) = mem::replace(&mut self.stage, Stage::Failed) else {
            return Ok(());
        };
        let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
        self.stage = Stage::Records(Records::new(secrets, kernel));
        self.meter.release(MemKind::Tls, self.charged);
        self.charged = SESSION_CHARGE_BYTES;
        self.meter.charge(MemKind::Tls, self.charged);
        Ok(())
    }

    /// After a failure, the alert that goes out before the close (best
    /// effort): rustls's queued one, or ours.
    fn alert(&mut self, failure: &TlsFailure, out: &mut Vec<u8>) {
        match &mut self.stage {
            Stage::Handshake(conn) => pump_alert(conn, out),
            Stage::Records(records) => {
                if let TlsFailure::Record(error) = failure {
                    if let Some(description) = error.alert() {
                        records.fatal_alert(description, out);
                    }
                }
            }
            Stage::Failed => {}
        }
    }

    /// Encrypts `data` (appending to `out`): by our record layer after the
    /// handshake, by rustls before it (after any output it has queued).
    pub fn encrypt(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TlsFailure> {
        let conn = match &mut self.stage {
            Stage::Records(records) => return Ok(records.seal(data, out)?),
            Stage::Handshake(conn) => conn,
            Stage::Failed => return Err(TlsFailure::NotReady),
        };
        for _ in 0..PUMP_ROUNDS {
            let status = conn.process_tls_records(&mut []);
            match status.state? {
                ConnectionState::EncodeTlsData(mut encode) => encode_into(out, |b| encode.encode(b))?,
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::WriteTraffic(mut traffic) => {
                    return encrypt_into(out, data.len(), |b| traffic.encrypt(data, b));
                }
                _ => return Err(TlsFailure::NotReady),
            }
        }
        Err(TlsFailure::NotReady)
    }

    /// Writes a close_notify alert if nothing is pending (best effort: the
    /// socket is about to be shut down).
    pub fn close_notify(&mut self, stream: &mut TcpStream) {
        if self.pending.is_some() {
            return;
        }
        let mut alert = Vec::new();
        match &mut self.stage {
            Stage::Records(records) => {
                if records.close_notify(&mut alert).is_err() {
                    return;
                }
            }
            Stage::Handshake(conn) if !conn.is_handshaking() => {
                let status = conn.process_tls_records(&mut []);
                let Ok(ConnectionState::WriteTraffic(mut traffic)) = status.state else {
                    return;
                };
                alert.resize(128, 0);
                let Ok(n) = traffic.queue_close_notify(&mut alert) else {
                    return;
                };
                alert.truncate(n);
            }
            Stage::Handshake(_) | Stage::Failed => return,
        }
        let _ = io::write(stream, &alert);
    }

    /// Writes ciphertext after whatever is pending; keeps what the socket
    /// refuses. Returns bytes written now.
    pub fn write_cipher(&mut self, stream: &mut TcpStream, data: &[u8]) -> (Flushed, usize) {
        if let Some(pending) = &mut self.pending {
            let before = pending.bytes.capacity();
            pending.bytes.extend_from_slice(data);
            let grown = pending.bytes.capacity() - before;
            self.meter.charge(MemKind::Tls, grown);
            return self.flush_pending(stream);
        }
        match io::write(stream, data) {
            IoOutcome::Progress(n) if n == data.len() => (Flushed::All, n),
            IoOutcome::Progress(n) => {
                self.set_held(Slot::Pending, Some(data[n..].to_vec()));
                (Flushed::Pending, n)
            }
            IoOutcome::WouldBlock => {
                self.set_held(Slot::Pending, Some(data.to_vec()));
                (Flushed::Pending, 0)
            }
            IoOutcome::Closed | IoOutcome::Failed(_) => (Flushed::Failed, 0),
        }
    }

    /// Writes pending ciphertext until done or refused.
    pub fn flush_pending(&mut self, stream: &mut TcpStream) -> (Flushed, usize) {
        let mut written = 0;
        loop {
            let Some(pending) = &mut self.pending else {
                return (Flushed::All, written);
            };
            match io::write(stream, &pending.bytes[pending.offset..]) {
                IoOutcome::Progress(n) => {
                    written += n;
                    pending.offset += n;
                    if pending.offset == pending.bytes.len() {
                        self.set_held(Slot::Pending, None);
                    }
                }
                IoOutcome::WouldBlock => return (Flushed::Pending, written),
                IoOutcome::Closed | IoOutcome::Failed(_) => return (Flushed::Failed, written),
            }
        }
    }

    /// Replaces a held buffer, moving its charge.
    fn set_held(&mut self, slot: Slot, bytes: Option<Vec<u8>>) {
        let place = match slot {
            Slot::Partial => &mut self.partial,
            Slot::Pending => &mut self.pending,
        };
        if let Some(old) = place.take() {
            self.meter.release(MemKind::Tls, old.bytes.capacity());
        }
        if let Some(bytes) = bytes {
            self.meter.charge(MemKind::Tls, bytes.capacity());
            *place = Some(Held { bytes, offset: 0 });
        }
    }
}

impl Drop for TlsSession {
    fn drop(&mut self) {
        self.meter.release(MemKind::Tls, self.charged + self.held_bytes());
    }
}

/// Handles the records in `buf` through rustls (the handshake stage);
/// returns how many bytes were consumed (the rest is an incomplete record).
fn process(
    conn: &mut UnbufferedServerConnection,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    sink: &mut dyn FnMut(&[u8]) -> bool,
    result: &mut TlsRead,
) -> Result<usize, TlsFailure> {
    let mut pos = 0;
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut buf[pos..]);
        let done = match state? {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record?;
                    discard += record.discard;
                    if !sink(record.payload) {
                        return Err(TlsFailure::NoMemory);
                    }
                    result.plain += record.payload.len();
                }
                false
            }
            ConnectionState::EncodeTlsData(mut data) => {
                encode_into(out, |b| data.encode(b))?;
                false
            }
            // The records are in `out`, written right after this call.
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                false
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                result.peer_closed = true;
                true
            }
            // Early data is off (max_early_data_size 0): never offered.
            ConnectionState::ReadEarlyData(_) => {
                return Err(TlsFailure::Protocol(rustls::Error::General("early data".into())))
            }
            // Both mean: nothing more until more ciphertext arrives.
            ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => true,
            _ => true,
        };
        pos += discard;
        if done {
            return Ok(pos);
        }
    }
}

/// After a failure, collects the alert rustls queued (best effort).
fn pump_alert(conn: &mut UnbufferedServerConnection, out: &mut Vec<u8>) {
    for _ in 0..PUMP_ROUNDS {
        let status = conn.process_tls_records(&mut []);
        match status.state {
            Ok(ConnectionState::EncodeTlsData(mut data)) => {
                if encode_into(out, |b| data.encode(b)).is_err() {
                    return;
                }
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
            _ => return,
        }
    }
}

/// Handles the records in `buf` through our record layer (after the
/// handshake); returns how many bytes were consumed.
fn open(
    records: &mut Records,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    sink: &mut dyn FnMut(&[u8]) -> bool,
    result: &mut TlsRead,
) -> Result<usize, TlsFailure> {
    let mut plain = 0;
    let mut counting = |bytes: &[u8]| {
        plain += bytes.len();
        sink(bytes)
    };
    let opened = records.open(buf, out, &mut counting)?;
    result.plain += plain;
    if opened.sink_full {
        return Err(TlsFailure::NoMemory);
    }
    result.peer_closed = opened.peer_closed;
    Ok(opened.used)
}

#[derive(Clone, Copy)]
enum Slot {
    Partial,
    Pending,
}

/// Runs an encoder that says how much room it needs, appending to `out`.
fn encode_into(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), TlsFailure> {
    let start = out.len();
    let mut room = ENCODE_GUESS_BYTES;
    for _ in 0..2 {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(e)) => room = e.required_size,
            Err(EncodeError::AlreadyEncoded) => break,
        }
    }
    out.truncate(start);
    Err(TlsFailure::NotReady)
}

/// Encrypts `len` bytes of plaintext, appending the records to `out`.
fn encrypt_into(
    out: &mut Vec<u8>,
    len: usize,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), TlsFailure> {
    let start = out.len();
    let mut room = len + (len / MAX_FRAGMENT_BYTES + 1) * RECORD_OVERHEAD_BYTES;
    for _ in 0..2 {
        out.resize(start + room, 0);
        match encrypt(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(e)) => room = e.required_size,
            Err(EncryptError::EncryptExhausted) => break,
        }
    }
    out.truncate(start);
    Err(TlsFailure::NotReady)
}
