//! The server frames the hub sends: a reply, a push or a publication, each
//! written once into one buffer and shared by reference with every receiver
//! (`buf::budget::frame` charges a large one to the memory budget once).
//!
//! A publication is the hot one: its JSON push is written straight into the
//! frame's buffer after room left for the longest header, and the header is
//! filled in last, just before the payload, once its length is known. No
//! intermediate `String`, no second copy of the client's `data`.

use std::sync::Arc;

use bytes::{Buf, Bytes};

use crate::buf::MemoryBudget;
use crate::ws::codec::{self, Kind, MAX_SERVER_HEADER};

/// A text frame of `json`, encoded once, charged to `budget` once if large.
pub(crate) fn text_frame(json: &[u8], budget: &Arc<MemoryBudget>) -> Bytes {
    let mut head = [0u8; MAX_SERVER_HEADER];
    let n = codec::encode_header(Kind::Text, json.len(), &mut head);
    let mut frame = Vec::with_capacity(n + json.len());
    frame.extend_from_slice(&head[..n]);
    frame.extend_from_slice(json);
    crate::buf::budget::frame(frame, budget)
}

/// `{"push":"pub","channel":C,"offset":N,"data":D}` as one text frame: the
/// only copy of `data` made here is the one into the frame.
pub fn publication(channel: &str, offset: u64, data: &str, budget: &Arc<MemoryBudget>) -> Bytes {
    const HEAD: &[u8] = br#"{"push":"pub","channel":"#;
    const OFFSET: &[u8] = br#","offset":"#;
    const DATA: &[u8] = br#","data":"#;
    // Channel names are plain ASCII (auth::pattern), so `channel.len() + 2`
    // is its JSON string; an escape only costs a reallocation, never a fault.
    let hint = HEAD.len() + channel.len() + 2 + OFFSET.len() + 20 + DATA.len() + data.len() + 1;
    let mut frame = FrameBuf::with_capacity(hint);
    frame.push(HEAD);
    // Writing into a Vec cannot fail; a `str` always serialises.
    let _ = serde_json::to_writer(&mut frame.buf, channel);
    frame.push(OFFSET);
    frame.push(itoa(offset, &mut [0u8; 20]));
    frame.push(DATA);
    frame.push(data.as_bytes());
    frame.push(b"}");
    frame.finish(budget)
}

/// A text frame written in place: room for the longest header, the payload
/// appended after it, the header filled in by `finish`.
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    /// A frame for about `payload` bytes (more only costs a reallocation).
    pub fn with_capacity(payload: usize) -> FrameBuf {
        let mut buf = Vec::with_capacity(MAX_SERVER_HEADER + payload);
        buf.resize(MAX_SERVER_HEADER, 0);
        FrameBuf { buf }
    }

    /// Appends payload bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Writes the header just before the payload and shares the frame; the
    /// unused front of the header room (at most 8 bytes) is skipped, not
    /// copied away.
    pub fn finish(self, budget: &Arc<MemoryBudget>) -> Bytes {
        let mut buf = self.buf;
        let len = buf.len() - MAX_SERVER_HEADER;
        let mut head = [0u8; MAX_SERVER_HEADER];
        let n = codec::encode_header(Kind::Text, len, &mut head);
        let start = MAX_SERVER_HEADER - n;
        buf[start..MAX_SERVER_HEADER].copy_from_slice(&head[..n]);
        let mut frame = crate::buf::budget::frame(buf, budget);
        frame.advance(start);
        frame
    }
}

/// `n` in decimal, written into `out`.
fn itoa(mut n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut at = out.len();
    loop {
        at -= 1;
        out[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::protocol::push_publication;

    fn unframed(frame: &[u8]) -> Vec<u8> {
        let len = frame.len();
        // The payload is what follows a header of 2, 4 or 10 bytes.
        let head = match frame[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        assert_eq!(frame[0], 0x81, "a final text frame");
        frame[head..len].to_vec()
    }

    #[test]
    fn a_publication_is_the_push_framed_once() {
        let budget = MemoryBudget::new(0);
        for size in [0usize, 10, 100, 65_000, 70_000] {
            let data = format!("\"{}\"", "x".repeat(size));
            for offset in [0u64, 7, 10, 12_345, u64::MAX] {
                let frame = publication("news/a\"b", offset, &data, &budget);
                let mut whole = Vec::new();
                codec::encode_frame(&mut whole, Kind::Text, &push_publication("news/a\"b", offset, &data));
                assert_eq!(&frame[..], &whole[..], "data of {size} bytes at offset {offset}");
                let push: serde_json::Value = serde_json::from_slice(&unframed(&frame)).unwrap();
                assert_eq!(push["offset"], offset);
            }
        }
    }

    #[test]
    fn a_large_frame_is_charged_once_and_released_with_its_last_holder() {
        let budget = MemoryBudget::new(0);
        let data = format!("\"{}\"", "x".repeat(10_000));
        let frame = publication("c", 1, &data, &budget);
        let held = budget.bytes(crate::buf::MemKind::Outgoing);
        assert!(held >= frame.len() as u64 && held <= (frame.len() + MAX_SERVER_HEADER) as u64);
        let copy = frame.clone();
        drop(frame);
        assert_eq!(budget.bytes(crate::buf::MemKind::Outgoing), held, "a holder is left");
        drop(copy);
        assert_eq!(budget.bytes(crate::buf::MemKind::Outgoing), 0);
    }

    #[test]
    fn a_text_frame_has_no_spare_capacity() {
        let budget = MemoryBudget::new(0);
        for len in [0usize, 125, 126, 4095, 65_536] {
            let json = vec![b'1'; len];
            let frame = text_frame(&json, &budget);
            let mut whole = Vec::new();
            codec::encode_frame(&mut whole, Kind::Text, &json);
            assert_eq!(&frame[..], &whole[..]);
        }
    }
}
