//! Owns the client side of RFC 6455 framing: masking every outgoing frame and parsing the server's
//! unmasked frames, on tungstenite's public `FrameHeader::{parse, format}` and `OpCode`.
//!
//! It does no I/O and reads no clock: bytes in, frames out. It never allocates: encoding appends
//! to a caller's buffer and parsing borrows the payload from the caller's bytes.

use std::io::Cursor;

use thiserror::Error;
pub use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The longest control frame payload RFC 6455 section 5.5 allows.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// What is wrong with the bytes a server sent. Each is a protocol violation by the server: the
/// caller should count it and drop the connection (RFC 6455 section 7.1.7, "Fail the WebSocket
/// Connection").
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    /// The header could not be parsed (a reserved opcode, for example).
    #[error("malformed frame header: {0}")]
    Header(String),
    /// "A server MUST NOT mask any frames that it sends to the client" (RFC 6455 section 5.1).
    #[error("server sent a masked frame")]
    Masked,
    /// No extension was negotiated, so RSV1-3 must be zero (section 5.2).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// "All control frames MUST have a payload length of 125 bytes or less and MUST NOT be
    /// fragmented" (section 5.5).
    #[error("control frame too long or fragmented")]
    BadControl,
    /// The payload is larger than the caller's limit; the caller should raise `--max-frame`.
    #[error("frame of {0} bytes exceeds the limit")]
    TooBig(u64),
}

/// One complete frame borrowed from the input.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// FIN bit: the last frame of a message.
    pub fin: bool,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The (unmasked) payload.
    pub payload: &'a [u8],
    /// Bytes of input the frame occupies, header included.
    pub len: usize,
}

/// Parses one server frame from the front of `buf`. `Ok(None)` means more bytes are needed.
pub fn parse(buf: &[u8], max_payload: u64) -> Result<Option<Parsed<'_>>, CodecError> {
    let mut cursor = Cursor::new(buf);
    let (header, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(None),
        Err(e) => return Err(CodecError::Header(e.to_string())),
    };
    check_header(&header, len, max_payload)?;
    let start = cursor.position() as usize;
    // `len <= max_payload`, which the caller keeps well below usize::MAX.
    let end = start + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Parsed {
        fin: header.is_final,
        opcode: header.opcode,
        payload: &buf[start..end],
        len: end,
    }))
}

fn check_header(header: &FrameHeader, len: u64, max_payload: u64) -> Result<(), CodecError> {
    if header.mask.is_some() {
        return Err(CodecError::Masked);
    }
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(CodecError::ReservedBits);
    }
    if let OpCode::Control(_) = header.opcode {
        if !header.is_final || len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(CodecError::BadControl);
        }
    }
    if len > max_payload {
        return Err(CodecError::TooBig(len));
    }
    Ok(())
}

/// Appends one masked, final frame of `len` payload bytes to `out`; `fill` writes the payload in
/// place (so no message is ever built in a temporary buffer), then it is masked in place.
pub fn encode(out: &mut Vec<u8>, opcode: OpCode, len: usize, mask: [u8; 4], fill: impl FnOnce(&mut [u8])) {
    encode_header(out, true, opcode, len as u64, mask);
    let start = out.len();
    out.resize(start + len, 0);
    let payload = &mut out[start..];
    fill(payload);
    apply_mask(payload, mask);
}

/// Appends the header (mask included) of a masked frame of `len` payload bytes; the caller
/// appends the payload, masked. Returns the header's length. Lets the hostile scenarios write
/// non-final frames and frames they never finish.
pub fn encode_header(out: &mut Vec<u8>, fin: bool, opcode: OpCode, len: u64, mask: [u8; 4]) -> usize {
    let header = FrameHeader {
        is_final: fin,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: Some(mask),
    };
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = header.format(len, out);
    out.len() - start
}

/// Appends a masked close frame with `code` and a short `reason`.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str, mask: [u8; 4]) {
    let reason = &reason.as_bytes()[..reason.len().min(MAX_CONTROL_PAYLOAD - 2)];
    encode(out, OpCode::Control(Control::Close), 2 + reason.len(), mask, |p| {
        p[..2].copy_from_slice(&code.to_be_bytes());
        p[2..].copy_from_slice(reason);
    });
}

/// Splits a close frame's payload into its status code (1005 "no status" when absent) and reason.
pub fn close_code(payload: &[u8]) -> (u16, &[u8]) {
    match payload {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => (1005, &[]),
    }
}

/// XORs `buf` with the 4-byte `mask`, eight bytes at a time.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A fast source of masking keys (xorshift64*). RFC 6455 asks for unpredictable keys to protect
/// intermediaries from cache poisoning; a load tester on loopback needs them only to be non-zero
/// and varied, and must not pay for a CSPRNG per frame.
pub struct MaskSource(u64);

impl MaskSource {
    /// Seeds from the clock and the process id, so workers differ.
    pub fn new() -> Self {
        let seed = crate::clock::now_ns() ^ (u64::from(std::process::id()) << 32) | 1;
        MaskSource(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The next masking key.
    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

impl Default for MaskSource {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmask_client_frame(frame: &[u8]) -> (u8, Vec<u8>) {
        // Client frames are masked; decode the simple (<126 byte) and 16-bit length forms by hand.
        let op = frame[0];
        assert_eq!(frame[1] & 0x80, 0x80, "client frames must be masked");
        let (len, at) = match frame[1] & 0x7f {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            n => (n as usize, 2),
        };
        let mask = [frame[at], frame[at + 1], frame[at + 2], frame[at + 3]];
        let mut payload = frame[at + 4..at + 4 + len].to_vec();
        apply_mask(&mut payload, mask);
        (op, payload)
    }

    #[test]
    fn encode_masks_and_round_trips() {
        let mut out = Vec::new();
        encode(&mut out, OpCode::Data(Data::Binary), 300, [1, 2, 3, 4], |p| {
            p.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8)
        });
        let (op, payload) = unmask_client_frame(&out);
        assert_eq!(op, 0x82);
        assert_eq!(payload, (0..300).map(|i| i as u8).collect::<Vec<_>>());
    }

    #[test]
    fn close_frame_carries_code_and_reason() {
        let mut out = Vec::new();
        encode_close(&mut out, 1000, "bye", [9, 9, 9, 9]);
        let (op, payload) = unmask_client_frame(&out);
        assert_eq!(op, 0x88);
        assert_eq!(close_code(&payload), (1000, &b"bye"[..]));
        assert_eq!(close_code(&[]), (1005, &b""[..]));
    }

    #[test]
    fn parses_unmasked_server_frames_incrementally() {
        let frame = [0x81, 5, b'h', b'e', b'l', b'l', b'o', 0x8a, 0];
        assert_eq!(parse(&frame[..1], 1 << 20), Ok(None));
        assert_eq!(parse(&frame[..6], 1 << 20), Ok(None));
        let first = parse(&frame, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (first.fin, first.opcode, first.payload, first.len),
            (true, OpCode::Data(Data::Text), &b"hello"[..], 7)
        );
        let second = parse(&frame[7..], 1 << 20).unwrap().unwrap();
        assert_eq!(second.opcode, OpCode::Control(Control::Pong));
    }

    #[test]
    fn rejects_what_a_server_must_not_send() {
        assert_eq!(parse(&[0x81, 0x81, 0, 0, 0, 0, 0], 100), Err(CodecError::Masked));
        assert_eq!(parse(&[0xc1, 0], 100), Err(CodecError::ReservedBits));
        assert_eq!(parse(&[0x09, 0], 100), Err(CodecError::BadControl));
        assert_eq!(parse(&[0x82, 126, 0x10, 0], 100), Err(CodecError::TooBig(4096)));
        assert!(matches!(parse(&[0x83, 0], 100), Err(CodecError::Header(_))));
    }

    #[test]
    fn mask_is_an_involution_on_odd_lengths() {
        let mut data: Vec<u8> = (0..37).collect();
        apply_mask(&mut data, [0xde, 0xad, 0xbe, 0xef]);
        assert_ne!(data, (0..37).collect::<Vec<u8>>());
        apply_mask(&mut data, [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(data, (0..37).collect::<Vec<u8>>());
    }
}
