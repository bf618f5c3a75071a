//! Owns the bytes the hostile scenarios send, which no well-behaved client would: a request head
//! that never ends, an endless stream of masked frames sent so slowly that the server always holds
//! a partial one, a large non-final fragment, and the keep-alive frames that hold its message open.
//!
//! No I/O and no clock: each stream appends its next bytes to a buffer when asked. Payloads are
//! zero bytes, so a masked payload is the masking key repeated: a 900 KiB fragment costs no more to
//! produce than a copy, and nothing is built ahead of the socket.

use crate::codec::{self, Control, Data, MaskSource, OpCode};

/// One header line of the endless request head (64 bytes). It is never followed by the blank line
/// that would end the head.
const HEAD_LINE: &[u8; 64] = b"X-Trickle: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";

/// Payload bytes of a frame sent together with its header, so the server holds a frame whose header
/// it has parsed and whose payload it waits for (8 bytes of a 10-byte-payload frame).
const FRAME_OPENING_PAYLOAD: u64 = 2;

/// The start of an upgrade request, `GET {path} HTTP/1.1\r\nHost: {host}\r\n`, sent at once; the
/// caller then trickles [`HeadStream`] bytes after it.
pub fn head_opening(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes()
}

/// The endless header lines that follow [`head_opening`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadStream {
    at: u64,
}

impl HeadStream {
    /// Appends the next `n` bytes.
    pub fn take(&mut self, n: usize, out: &mut Vec<u8>) {
        let mut left = n;
        while left > 0 {
            let off = (self.at % HEAD_LINE.len() as u64) as usize;
            let k = left.min(HEAD_LINE.len() - off);
            out.extend_from_slice(&HEAD_LINE[off..off + k]);
            self.at += k as u64;
            left -= k;
        }
    }
}

/// Masked binary frames of `payload` zero bytes each, one after another: final frames (an endless
/// stream of small messages) or a single non-final one (the first fragment of a message that the
/// keep-alives then hold open).
#[derive(Debug, Clone)]
pub struct FrameStream {
    payload: u64,
    fin: bool,
    /// The current frame's header (mask included) and its length.
    header: [u8; 14],
    header_len: usize,
    mask: [u8; 4],
    /// Position in the current frame (header included); 0: the next byte starts a new frame.
    at: u64,
}

impl FrameStream {
    /// Frames of `payload` bytes; `fin: false` makes them non-final binary fragments.
    pub fn new(payload: u64, fin: bool) -> FrameStream {
        FrameStream {
            payload,
            fin,
            header: [0; 14],
            header_len: 0,
            mask: [0; 4],
            at: 0,
        }
    }

    /// Length of one frame on the wire.
    pub fn frame_len(&self) -> u64 {
        header_len(self.payload) as u64 + self.payload
    }

    /// Bytes that open the attack: a frame's header and its first payload bytes.
    pub fn opening(&self) -> usize {
        header_len(self.payload) + self.payload.min(FRAME_OPENING_PAYLOAD) as usize
    }

    /// Appends the next `n` bytes, starting new frames (each with a fresh mask) as needed.
    pub fn take(&mut self, n: u64, out: &mut Vec<u8>, masks: &mut MaskSource) {
        let mut left = n;
        while left > 0 {
            if self.at == 0 {
                self.start_frame(masks);
            }
            let k = if self.at < self.header_len as u64 {
                let from = self.at as usize;
                let k = left.min((self.header_len - from) as u64) as usize;
                out.extend_from_slice(&self.header[from..from + k]);
                k as u64
            } else {
                let j = self.at - self.header_len as u64;
                let k = left.min(self.payload - j);
                let mask = self.mask;
                out.extend((j..j + k).map(|i| mask[(i % 4) as usize]));
                k
            };
            self.at += k;
            left -= k;
            if self.at == self.frame_len() {
                self.at = 0;
            }
        }
    }

    fn start_frame(&mut self, masks: &mut MaskSource) {
        self.mask = masks.mask();
        let mut header = Vec::with_capacity(14);
        let op = OpCode::Data(Data::Binary);
        self.header_len = codec::encode_header(&mut header, self.fin, op, self.payload, self.mask);
        self.header[..self.header_len].copy_from_slice(&header);
    }
}

/// The length of a masked frame header for `payload` bytes (RFC 6455 section 5.2).
fn header_len(payload: u64) -> usize {
    match payload {
        0..=125 => 6,
        126..=65535 => 8,
        _ => 14,
    }
}

/// What holds a fragmented message open once its first fragment is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Keepalive {
    /// An empty ping (6 bytes): activity on the connection, no progress of the message.
    Ping,
    /// A non-final continuation frame with one byte (7 bytes): the message grows by a byte.
    Continuation,
}

impl Keepalive {
    /// Bytes of one keep-alive frame on the wire.
    pub fn len(self) -> usize {
        match self {
            Keepalive::Ping => 6,
            Keepalive::Continuation => 7,
        }
    }

    /// Appends one keep-alive frame.
    pub fn write(self, out: &mut Vec<u8>, mask: [u8; 4]) {
        match self {
            Keepalive::Ping => codec::encode(out, OpCode::Control(Control::Ping), 0, mask, |_| {}),
            Keepalive::Continuation => {
                codec::encode_header(out, false, OpCode::Data(Data::Continue), 1, mask);
                out.push(mask[0]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::FrameHeader;

    /// Parses one client frame (masked) and returns (fin, opcode, unmasked payload, length).
    fn parse_client_frame(bytes: &[u8]) -> Option<(bool, OpCode, Vec<u8>, usize)> {
        let mut cursor = std::io::Cursor::new(bytes);
        let (header, len) = FrameHeader::parse(&mut cursor).ok()??;
        let start = cursor.position() as usize;
        let end = start + len as usize;
        if bytes.len() < end {
            return None;
        }
        let mut payload = bytes[start..end].to_vec();
        codec::apply_mask(&mut payload, header.mask?);
        Some((header.is_final, header.opcode, payload, end))
    }

    #[test]
    fn the_head_never_ends() {
        let mut out = head_opening("127.0.0.1:9", "/echo");
        assert_eq!(out, b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:9\r\n");
        let mut head = HeadStream::default();
        for n in [1, 7, 64, 300, 1000] {
            head.take(n, &mut out);
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.len(), 39 + 1372);
        assert!(!text.contains("\r\n\r\n"), "the blank line would complete the head");
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let parsed = httparse::Request::new(&mut headers).parse(text.as_bytes());
        assert!(matches!(parsed, Ok(httparse::Status::Partial)), "{parsed:?}");
    }

    #[test]
    fn a_trickled_frame_stream_is_valid_frames_in_any_slices() {
        let mut masks = MaskSource::new();
        let mut stream = FrameStream::new(10, true);
        assert_eq!((stream.opening(), stream.frame_len()), (8, 16));
        let mut out = Vec::new();
        stream.take(8, &mut out, &mut masks);
        assert!(parse_client_frame(&out).is_none(), "8 of 16 bytes is a partial frame");
        for _ in 0..40 {
            stream.take(1, &mut out, &mut masks);
        }
        // 48 bytes: three whole frames.
        let mut at = 0;
        for _ in 0..3 {
            let (fin, op, payload, len) = parse_client_frame(&out[at..]).unwrap();
            assert!(fin);
            assert_eq!(op, OpCode::Data(Data::Binary));
            assert_eq!(payload, vec![0; 10]);
            at += len;
        }
        assert_eq!(at, out.len());
    }

    #[test]
    fn a_large_fragment_is_one_non_final_frame() {
        let mut masks = MaskSource::new();
        let mut stream = FrameStream::new(900 * 1024, false);
        assert_eq!(stream.frame_len(), 14 + 900 * 1024);
        let mut out = Vec::new();
        stream.take(100_000, &mut out, &mut masks);
        stream.take(stream.frame_len() - 100_000, &mut out, &mut masks);
        let (fin, op, payload, len) = parse_client_frame(&out).unwrap();
        assert!(!fin, "the message stays open");
        assert_eq!(op, OpCode::Data(Data::Binary));
        assert!(payload.iter().all(|&b| b == 0) && payload.len() == 900 * 1024);
        assert_eq!(len, out.len());
        let medium = FrameStream::new(1000, false);
        assert_eq!((medium.frame_len(), medium.opening()), (1008, 10));
    }

    #[test]
    fn keepalives_are_a_ping_or_a_one_byte_continuation() {
        for (kind, op, fin) in [
            (Keepalive::Ping, OpCode::Control(Control::Ping), true),
            (Keepalive::Continuation, OpCode::Data(Data::Continue), false),
        ] {
            let mut out = Vec::new();
            kind.write(&mut out, [1, 2, 3, 4]);
            assert_eq!(out.len(), kind.len());
            let (f, o, payload, _) = parse_client_frame(&out).unwrap();
            assert_eq!((f, o), (fin, op));
            assert!(payload.iter().all(|&b| b == 0));
        }
    }
}
