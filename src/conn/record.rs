//! Our own TLS record layer for a connection past its handshake: what an
//! idle `wss://` connection keeps instead of rustls's connection.
//!
//! rustls keeps ~3.3 KiB per connection after the handshake (its boxed
//! connection struct, both directions' expanded AES-GCM key schedules at
//! 560 bytes each, its state machine, empty queues with capacity; measured
//! in `docs/CONNECTION.md`, "TLS"). Once the handshake is done and the
//! server's session ticket is out, `conn::tls` hands the traffic secrets over
//! (`dangerous_into_kernel_connection`) and keeps only this: per direction
//! the raw AEAD key, the IV and a sequence number. The key schedule is
//! expanded on the stack once per read or write call, not kept. It is also
//! the shape kernel TLS offload takes later (the same secrets go to
//! `setsockopt(SOL_TLS)`).
//!
//! What rustls did that this module now does (RFC 8446 §5, RFC 5246 §6.2):
//! - records: TLS 1.3 (inner content type, padding stripped) and TLS 1.2
//!   (AES-GCM with its 8-byte explicit nonce, ChaCha20-Poly1305 without);
//!   a record longer than the RFC allows is `record_overflow`;
//! - alerts: close_notify in both directions, user_canceled ignored, any
//!   other alert from the peer ends the connection;
//! - TLS 1.3 KeyUpdate from the client: the receive key is updated, and when
//!   the client asks, ours too after a KeyUpdate of our own (rustls's
//!   `KernelConnection` keeps the traffic secrets and derives the next ones;
//!   it is kept for TLS 1.3 only). Our own sending key is updated the same
//!   way before it reaches the suite's confidentiality limit;
//! - TLS 1.2 renegotiation (a handshake message after the handshake) is
//!   refused with a fatal `no_renegotiation` alert (rustls answers it with a
//!   warning and goes on; we close: counted as a protocol error).
//!
//! This module does no I/O: bytes in, bytes out.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};

/// Largest plaintext in one record (RFC 8446 §5.1).
pub const MAX_FRAGMENT_BYTES: usize = 1 << 14;
/// Record header: type, version, length.
const HEADER_BYTES: usize = 5;
/// Longest TLS 1.3 ciphertext the peer may send (RFC 8446 §5.2).
const MAX_CIPHERTEXT_13: usize = MAX_FRAGMENT_BYTES + 256;
/// Longest TLS 1.2 ciphertext the peer may send (RFC 5246 §6.2.3).
const MAX_CIPHERTEXT_12: usize = MAX_FRAGMENT_BYTES + 2048;
const TAG_BYTES: usize = 16;
/// TLS 1.2 AES-GCM's explicit nonce (RFC 5288 §3).
const EXPLICIT_NONCE_BYTES: usize = 8;

const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
const KEY_UPDATE: u8 = 24;

/// Alert descriptions we send or act on (RFC 8446 §6).
const CLOSE_NOTIFY: u8 = 0;
const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const DECODE_ERROR: u8 = 50;
const USER_CANCELED: u8 = 90;
const NO_RENEGOTIATION: u8 = 100;

/// Why the record layer stopped; each carries the alert we send (if any).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// A record failed authentication (garbage or tampering): close after
    /// a `bad_record_mac` alert.
    #[error("record failed authentication")]
    BadRecordMac,
    /// A record longer than the protocol allows: close (`record_overflow`).
    #[error("record too long")]
    Overflow,
    /// A record or message of a type not allowed now, or malformed: close
    /// (`unexpected_message` / `decode_error`).
    #[error("unexpected or malformed message: {0}")]
    Unexpected(&'static str),
    /// A TLS 1.2 client tried to renegotiate: close (`no_renegotiation`).
    #[error("renegotiation refused")]
    Renegotiation,
    /// The peer sent a fatal alert (its description); close without one.
    #[error("peer sent alert {0}")]
    PeerAlert(u8),
    /// A key could not be updated or the sequence space ran out: close.
    #[error("traffic keys exhausted or not updatable: {0}")]
    Keys(String),
}

impl RecordError {
    /// The alert description to send for this error, if any.
    pub fn alert(&self) -> Option<u8> {
        match self {
            RecordError::BadRecordMac => Some(BAD_RECORD_MAC),
            RecordError::Overflow => Some(RECORD_OVERFLOW),
            RecordError::Unexpected(_) => Some(UNEXPECTED_MESSAGE),
            RecordError::Renegotiation => Some(NO_RENEGOTIATION),
            RecordError::PeerAlert(_) => None,
            RecordError::Keys(_) => Some(DECODE_ERROR),
        }
    }
}

/// The AEAD a connection negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes128Gcm => &aead::AES_128_GCM,
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// One direction's protection: raw key, IV, next sequence number.
struct Keys {
    key: [u8; 32],
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new(secrets: &ConnectionTrafficSecrets, seq: u64) -> (Cipher, Keys) {
        let (cipher, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (Cipher::Chacha20Poly1305, key, iv),
            // `ConnectionTrafficSecrets` is non-exhaustive; our provider
            // (ring) offers only the three above, so this is never reached
            // with our config. Handled anyway: an empty key fails `expand`.
            _ => return (Cipher::Aes128Gcm, Keys::empty()),
        };
        let mut keys = Keys::empty();
        keys.key[..key.as_ref().len()].copy_from_slice(key.as_ref());
        keys.iv.copy_from_slice(iv.as_ref());
        keys.seq = seq;
        (cipher, keys)
    }

    fn empty() -> Keys {
        Keys {
            key: [0; 32],
            iv: [0; 12],
            seq: 0,
        }
    }

    /// The expanded key schedule, made on the stack for one call.
    fn expand(&self, cipher: Cipher) -> Result<LessSafeKey, RecordError> {
        let alg = cipher.algorithm();
        let key = UnboundKey::new(alg, &self.key[..alg.key_len()]).map_err(|_| RecordError::Keys("bad key".into()))?;
        Ok(LessSafeKey::new(key))
    }

    /// IV XOR sequence number (RFC 8446 §5.3), then advances the sequence.
    fn next_nonce(&mut self) -> Result<[u8; 12], RecordError> {
        let seq = self.seq;
        self.seq = seq
            .checked_add(1)
            .ok_or_else(|| RecordError::Keys("sequence number exhausted".into()))?;
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= s;
        }
        Ok(nonce)
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // Best effort: keys do not outlive the connection in our memory.
        for byte in self.key.iter_mut().chain(self.iv.iter_mut()) {
            // SAFETY: a valid, aligned, exclusive reference.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

/// What decrypting a buffer of records did.
#[derive(Debug, Default)]
pub struct Opened {
    /// Bytes of the input consumed (the rest is an incomplete record).
    pub used: usize,
    /// The peer sent close_notify.
    pub peer_closed: bool,
    /// The sink refused plaintext (no memory).
    pub sink_full: bool,
}

/// A connection's record layer after the handshake.
pub struct Records {
    cipher: Cipher,
    tls13: bool,
    /// Records one key may protect before it must change (the suite's
    /// confidentiality limit).
    limit: u64,
    tx: Keys,
    rx: Keys,
    /// TLS 1.3 only: derives the next traffic secrets on a KeyUpdate.
    kernel: Option<Box<KernelConnection<ServerConnectionData>>>,
}

impl Records {
    /// Takes over from rustls with the secrets it extracted.
    pub fn new(secrets: ExtractedSecrets, kernel: KernelConnection<ServerConnectionData>) -> Records {
        let tls13 = kernel.protocol_version() == ProtocolVersion::TLSv1_3;
        let limit = match kernel.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls12(suite) => suite.common.confidentiality_limit,
            SupportedCipherSuite::Tls13(suite) => suite.common.confidentiality_limit,
        };
        let (cipher, tx) = Keys::new(&secrets.tx.1, secrets.tx.0);
        let (_, rx) = Keys::new(&secrets.rx.1, secrets.rx.0);
        Records {
            cipher,
            tls13,
            limit,
            tx,
            rx,
            kernel: tls13.then(|| Box::new(kernel)),
        }
    }

    /// Heap bytes this record layer keeps besides itself (the TLS 1.3
    /// secret holder: measured 560 + 224 bytes).
    pub fn heap_bytes(&self) -> usize {
        if self.kernel.is_some() {
            KERNEL_HEAP_BYTES
        } else {
            0
        }
    }

    /// Decrypts every whole record in `buf`, handing application data to
    /// `sink` (false: no memory) and answering a KeyUpdate into `out`.
    pub fn open(
        &mut self,
        buf: &mut [u8],
        out: &mut Vec<u8>,
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<Opened, RecordError> {
        let mut opened = Opened::default();
        let mut key = None;
        // The client's requests for a KeyUpdate of ours are answered once
        // per call, after its records: one answer covers any number of
        // requests before our next application data (§4.6.3), so a flood of
        // requests cannot make us write more than one record per read.
        let mut update_due = false;
        while let Some((typ, len)) = header(&buf[opened.used..]) {
            let max = if self.tls13 {
                MAX_CIPHERTEXT_13
            } else {
                MAX_CIPHERTEXT_12
            };
            if len > max {
                return Err(RecordError::Overflow);
            }
            let end = opened.used + HEADER_BYTES + len;
            if end > buf.len() {
                break;
            }
            let record = &mut buf[opened.used..end];
            opened.used = end;
            let opener = match &key {
                Some(k) => k,
                None => key.insert(self.rx.expand(self.cipher)?),
            };
            let (typ, plain) = self.open_record(opener, typ, record)?;
            match typ {
                APPLICATION_DATA if plain.is_empty() => {}
                APPLICATION_DATA => {
                    if !sink(plain) {
                        opened.sink_full = true;
                        return Ok(opened);
                    }
                }
                ALERT => match plain {
                    [_, CLOSE_NOTIFY] => {
                        opened.peer_closed = true;
                        return Ok(opened);
                    }
                    [_, USER_CANCELED] => {}
                    [_, description] => return Err(RecordError::PeerAlert(*description)),
                    _ => return Err(RecordError::Unexpected("malformed alert")),
                },
                HANDSHAKE if !self.tls13 => return Err(RecordError::Renegotiation),
                HANDSHAKE => {
                    update_due |= parse_key_update(plain)?;
                    self.key_update_received()?;
                    key = None; // the next record uses the new key
                }
                _ => return Err(RecordError::Unexpected("record type not allowed after the handshake")),
            }
        }
        if update_due {
            self.update_tx(out)?;
        }
        Ok(opened)
    }

    /// Decrypts one record in place; returns its content type and plaintext.
    fn open_record<'a>(
        &mut self,
        key: &LessSafeKey,
        typ: u8,
        record: &'a mut [u8],
    ) -> Result<(u8, &'a [u8]), RecordError> {
        let (head, body) = record.split_at_mut(HEADER_BYTES);
        if self.tls13 {
            if typ != APPLICATION_DATA {
                // Only a compatibility change_cipher_spec may be plain, and
                // only during the handshake.
                return Err(RecordError::Unexpected("unencrypted record after the handshake"));
            }
            let nonce = Nonce::assume_unique_for_key(self.rx.next_nonce()?);
            let aad = Aad::from([head[0], head[1], head[2], head[3], head[4]]);
            let plain = key
                .open_in_place(nonce, aad, body)
                .map_err(|_| RecordError::BadRecordMac)?;
            // Inner plaintext: content, type byte, zero padding (§5.4).
            let Some(at) = plain.iter().rposition(|&b| b != 0) else {
                return Err(RecordError::Unexpected("record without a content type"));
            };
            if at > MAX_FRAGMENT_BYTES {
                return Err(RecordError::Overflow);
            }
            return Ok((plain[at], &plain[..at]));
        }
        let explicit = if self.cipher == Cipher::Chacha20Poly1305 {
            0
        } else {
            EXPLICIT_NONCE_BYTES
        };
        if body.len() < explicit + TAG_BYTES {
            return Err(RecordError::BadRecordMac);
        }
        let seq = self.rx.seq;
        let mut nonce = self.rx.next_nonce()?;
        if explicit > 0 {
            nonce[4..].copy_from_slice(&body[..EXPLICIT_NONCE_BYTES]);
        }
        let plain_len = body.len() - explicit - TAG_BYTES;
        let aad = Aad::from(tls12_aad(seq, typ, plain_len));
        let plain = key
            .open_within(Nonce::assume_unique_for_key(nonce), aad, body, explicit..)
            .map_err(|_| RecordError::BadRecordMac)?;
        if plain.len() > MAX_FRAGMENT_BYTES {
            return Err(RecordError::Overflow);
        }
        if typ == CHANGE_CIPHER_SPEC {
            return Err(RecordError::Unexpected("change_cipher_spec after the handshake"));
        }
        Ok((typ, plain))
    }

    /// The client updated its sending key: ours for reading follows.
    fn key_update_received(&mut self) -> Result<(), RecordError> {
        let kernel = self.kernel.as_mut().ok_or(RecordError::Renegotiation)?;
        let (seq, secrets) = kernel
            .update_rx_secret()
            .map_err(|e| RecordError::Keys(e.to_string()))?;
        self.rx = Keys::new(&secrets, seq).1;
        Ok(())
    }

    /// Sends KeyUpdate(update_not_requested) under the old key, then
    /// switches to the next sending key.
    fn update_tx(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let kernel = self
            .kernel
            .as_mut()
            .ok_or_else(|| RecordError::Keys("TLS 1.2 keys cannot be updated".into()))?;
        let key = self.tx.expand(self.cipher)?;
        seal_record(
            &mut self.tx,
            &key,
            self.tls13,
            self.cipher,
            HANDSHAKE,
            &[KEY_UPDATE, 0, 0, 1, 0],
            out,
        )?;
        let (seq, secrets) = kernel
            .update_tx_secret()
            .map_err(|e| RecordError::Keys(e.to_string()))?;
        self.tx = Keys::new(&secrets, seq).1;
        Ok(())
    }

    /// Encrypts `data` as application data records appended to `out`.
    pub fn seal(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.seal_typed(APPLICATION_DATA, data, out)
    }

    /// Appends an encrypted close_notify alert to `out`.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.seal_typed(ALERT, &[1, CLOSE_NOTIFY], out)
    }

    /// Appends an encrypted fatal alert to `out` (best effort, before closing).
    pub fn fatal_alert(&mut self, description: u8, out: &mut Vec<u8>) {
        let _ = self.seal_typed(ALERT, &[2, description], out);
    }

    fn seal_typed(&mut self, typ: u8, data: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        let mut key = self.tx.expand(self.cipher)?;
        let mut chunks = data.chunks(MAX_FRAGMENT_BYTES);
        let first: &[u8] = &[];
        for chunk in chunks.by_ref().chain(data.is_empty().then_some(first)) {
            if self.tx.seq >= self.limit {
                self.update_tx(out)?;
                key = self.tx.expand(self.cipher)?;
            }
            seal_record(&mut self.tx, &key, self.tls13, self.cipher, typ, chunk, out)?;
        }
        Ok(())
    }
}

/// Heap bytes of the TLS 1.3 `KernelConnection` box and its state (measured
/// with a counting allocator, rustls 0.23.46: 560 + 224).
const KERNEL_HEAP_BYTES: usize = 784;

/// Encrypts one record of `typ` holding `chunk` (at most one fragment).
fn seal_record(
    keys: &mut Keys,
    key: &LessSafeKey,
    tls13: bool,
    cipher: Cipher,
    typ: u8,
    chunk: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    let seq = keys.seq;
    let nonce = keys.next_nonce()?;
    let start = out.len();
    if tls13 {
        let len = chunk.len() + 1 + TAG_BYTES;
        let head = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        out.extend_from_slice(&head);
        out.extend_from_slice(chunk);
        out.push(typ);
        let body = &mut out[start + HEADER_BYTES..];
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(head), body)
            .map_err(|_| RecordError::Keys("seal failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        return Ok(());
    }
    let explicit = if cipher == Cipher::Chacha20Poly1305 {
        0
    } else {
        EXPLICIT_NONCE_BYTES
    };
    let len = explicit + chunk.len() + TAG_BYTES;
    out.extend_from_slice(&[typ, 3, 3, (len >> 8) as u8, len as u8]);
    if explicit > 0 {
        out.extend_from_slice(&nonce[4..]);
    }
    out.extend_from_slice(chunk);
    let body = &mut out[start + HEADER_BYTES + explicit..];
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(tls12_aad(seq, typ, chunk.len())),
            body,
        )
        .map_err(|_| RecordError::Keys("seal failed".into()))?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// A record's type and body length, once its header is in `buf`.
fn header(buf: &[u8]) -> Option<(u8, usize)> {
    match buf {
        [typ, _, _, hi, lo, ..] => Some((*typ, usize::from(*hi) << 8 | usize::from(*lo))),
        _ => None,
    }
}

/// TLS 1.2's additional data: sequence, type, version, plaintext length.
fn tls12_aad(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8..].copy_from_slice(&[typ, 3, 3, (len >> 8) as u8, len as u8]);
    aad
}

/// A TLS 1.3 handshake record after the handshake may only be one whole
/// KeyUpdate (§4.6.3; it must end its record, §5.1). Returns whether the
/// client asked us to update our key too.
fn parse_key_update(plain: &[u8]) -> Result<bool, RecordError> {
    match plain {
        [KEY_UPDATE, 0, 0, 1, 0] => Ok(false),
        [KEY_UPDATE, 0, 0, 1, 1] => Ok(true),
        [KEY_UPDATE, ..] => Err(RecordError::Unexpected("malformed KeyUpdate")),
        _ => Err(RecordError::Unexpected("handshake message after the handshake")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_update_messages_parse_strictly() {
        assert_eq!(parse_key_update(&[KEY_UPDATE, 0, 0, 1, 0]), Ok(false));
        assert_eq!(parse_key_update(&[KEY_UPDATE, 0, 0, 1, 1]), Ok(true));
        assert!(parse_key_update(&[KEY_UPDATE, 0, 0, 1, 2]).is_err());
        // Two messages in one record, or a fragment, are refused.
        assert!(parse_key_update(&[KEY_UPDATE, 0, 0, 1, 0, KEY_UPDATE, 0, 0, 1, 0]).is_err());
        assert!(parse_key_update(&[KEY_UPDATE, 0, 0]).is_err());
        assert!(parse_key_update(&[4, 0, 0, 0]).is_err());
    }

    #[test]
    fn nonces_are_iv_xor_sequence_and_never_repeat() {
        let mut keys = Keys::empty();
        keys.iv = [1; 12];
        keys.seq = 0x0102;
        let nonce = keys.next_nonce().unwrap();
        assert_eq!(&nonce[..10], &[1; 10]);
        assert_eq!((nonce[10], nonce[11]), (1 ^ 1, 1 ^ 2));
        assert_eq!(keys.seq, 0x0103);
        keys.seq = u64::MAX;
        assert!(keys.next_nonce().is_err(), "the last sequence number is never used");
    }
}
