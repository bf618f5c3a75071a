//! Frame decoding for client frames and encoding for server frames.
//!
//! The decoder keeps 12 bytes of state per connection and works in place on
//! the caller's buffer, whose layout is:
//!
//! ```text
//! [0 .. assembled)  unmasked payload of the fragmented message in progress
//! [assembled .. )   raw bytes not yet decoded
//! ```
//!
//! A complete unfragmented frame is unmasked where it lies and handed out as a
//! range: no copy. Fragments are unmasked and moved down onto the assembled
//! region, so a fragmented message ends up contiguous in the same buffer.
//! A frame that is still arriving is unmasked and (for text) UTF-8 checked as
//! far as it has arrived, so invalid text fails fast (RFC 6455 §8.1).
//!
//! After [`Decoder::next`] returns `NeedMore`, the caller moves the undecoded
//! bytes `[pos..len)` down to `[assembled..)` before reading more.

use std::io::Cursor;
use std::ops::Range;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::close::{self, PeerClose};
use super::mask::apply_mask;
use super::utf8::Utf8State;
use super::Violation;

/// RFC 6455 §5.5: "All control frames MUST have a payload length of 125 bytes or less".
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The longest client frame header: 2 + 8 (length) + 4 (mask).
pub const MAX_CLIENT_HEADER: usize = 14;
/// The longest server frame header: 2 + 8 (length), no mask.
pub(crate) const MAX_SERVER_HEADER: usize = 10;

/// What one complete frame meant. Ranges index the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole message (all its fragments), unmasked, text already validated.
    Message { text: bool, payload: Range<usize> },
    /// A ping; RFC 6455 §5.5.2 wants a pong with the same payload.
    Ping { payload: Range<usize> },
    /// A pong: proof of life, nothing to answer.
    Pong,
    /// The peer's valid close frame; the caller echoes the code and closes.
    Close(PeerClose),
}

/// The result of one decoding step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A frame was decoded; `pos` moved past it.
    Event(Event),
    /// The next frame is incomplete. The buffer must be able to hold `need`
    /// bytes (from its start) for it to complete.
    NeedMore { need: usize },
}

/// The kind of the fragmented message in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Pending {
    #[default]
    None,
    Text,
    Binary,
}

/// Per-connection decoding state; plain data, 12 bytes.
///
/// Both counters stay below 2^31 (a message is at most `u32::MAX / 2` bytes,
/// which `Config` enforces, and every counted byte belongs to one message),
/// so their top bits carry the `Pending` kind: that keeps the decoder at 12
/// bytes and `Conn` at 64.
#[derive(Debug, Clone, Copy, Default)]
pub struct Decoder {
    /// Payload bytes of the fragmented message assembled at the buffer start;
    /// top bit (`IN_MESSAGE`): a fragmented message is in progress.
    assembled: u32,
    /// Payload bytes of the incomplete frame at `pos` already unmasked/checked;
    /// top bit (`TEXT`): the message in progress is text.
    checked: u32,
    utf8: Utf8State,
}

/// Top bit of `Decoder::assembled`.
const IN_MESSAGE: u32 = 1 << 31;
/// Top bit of `Decoder::checked`.
const TEXT: u32 = 1 << 31;
/// The counter bits below the flags.
const COUNT: u32 = !(1 << 31);

struct Parsed {
    header: FrameHeader,
    header_len: usize,
    payload_len: usize,
}

impl Decoder {
    /// Bytes at the start of the buffer that hold the message in progress; the
    /// caller keeps them when it compacts the buffer.
    pub fn assembled(&self) -> usize {
        (self.assembled & COUNT) as usize
    }

    fn checked(&self) -> usize {
        (self.checked & COUNT) as usize
    }

    fn set_checked(&mut self, n: usize) {
        debug_assert!(n <= COUNT as usize, "a frame is at most u32::MAX / 2 bytes");
        self.checked = (self.checked & TEXT) | (n as u32 & COUNT);
    }

    fn set_assembled(&mut self, n: usize) {
        debug_assert!(n <= COUNT as usize, "a message is at most u32::MAX / 2 bytes");
        self.assembled = (self.assembled & IN_MESSAGE) | (n as u32 & COUNT);
    }

    fn pending(&self) -> Pending {
        match (self.assembled & IN_MESSAGE != 0, self.checked & TEXT != 0) {
            (false, _) => Pending::None,
            (true, true) => Pending::Text,
            (true, false) => Pending::Binary,
        }
    }

    fn set_pending(&mut self, pending: Pending) {
        let (in_message, text) = match pending {
            Pending::None => (0, 0),
            Pending::Text => (IN_MESSAGE, TEXT),
            Pending::Binary => (IN_MESSAGE, 0),
        };
        self.assembled = (self.assembled & COUNT) | in_message;
        self.checked = (self.checked & COUNT) | text;
    }

    /// True when the decoder holds no partial message or frame state, so the
    /// connection's buffer may be released once its undecoded bytes are gone.
    pub(crate) fn is_idle(&self) -> bool {
        self.assembled == 0 && self.checked == 0
    }

    /// True inside a fragmented data message (between its first and final
    /// frame); control frames there do not end it.
    pub(crate) fn in_message(&self) -> bool {
        self.pending() != Pending::None
    }

    /// Decodes frames from `buf[*pos..len]` until one completes a message or a
    /// control frame, or until the next frame is incomplete.
    pub fn next(&mut self, buf: &mut [u8], pos: &mut usize, len: usize, max_message: usize) -> Result<Step, Violation> {
        loop {
            match self.next_frame(buf, pos, len, max_message)? {
                Ok(Some(event)) => return Ok(Step::Event(event)),
                Ok(None) => continue,
                Err(need) => return Ok(Step::NeedMore { need }),
            }
        }
    }

    /// One frame: `Ok(Some)` an event, `Ok(None)` a fragment absorbed,
    /// `Err(need)` incomplete.
    #[allow(clippy::type_complexity)]
    fn next_frame(
        &mut self,
        buf: &mut [u8],
        pos: &mut usize,
        len: usize,
        max_message: usize,
    ) -> Result<Result<Option<Event>, usize>, Violation> {
        let start = *pos;
        let Some(frame) = parse_header(&buf[start..len])? else {
            return Ok(Err(self.assembled() + MAX_CLIENT_HEADER));
        };
        self.check_rules(&frame, max_message)?;
        let payload_start = start + frame.header_len;
        let total = frame.header_len + frame.payload_len;
        let available = (len - payload_start).min(frame.payload_len);
        if let OpCode::Data(_) = frame.header.opcode {
            self.unmask_and_check(&mut buf[payload_start..payload_start + available], &frame)?;
        }
        if available < frame.payload_len {
            return Ok(Err(self.assembled() + total));
        }
        self.set_checked(0);
        *pos = start + total;
        let payload = payload_start..payload_start + frame.payload_len;
        match frame.header.opcode {
            OpCode::Control(control) => {
                // check_rules refused unmasked frames.
                let mask = frame.header.mask.unwrap_or_default();
                apply_mask(&mut buf[payload.clone()], mask, 0);
                control_event(control, &buf[payload.clone()], payload).map(Ok)
            }
            OpCode::Data(data) => self.data_event(buf, data, frame.header.is_final, payload).map(Ok),
        }
    }

    /// RFC 6455 §5.2-§5.5 rules that a header alone can break.
    fn check_rules(&self, frame: &Parsed, max_message: usize) -> Result<(), Violation> {
        let header = &frame.header;
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(Violation::protocol("reserved bits set without an extension"));
        }
        if header.mask.is_none() {
            return Err(Violation::protocol("client frames must be masked"));
        }
        match header.opcode {
            OpCode::Control(_) => {
                if frame.payload_len > MAX_CONTROL_PAYLOAD {
                    return Err(Violation::protocol("control frame longer than 125 bytes"));
                }
                if !header.is_final {
                    return Err(Violation::protocol("fragmented control frame"));
                }
            }
            OpCode::Data(Data::Continue) if self.pending() == Pending::None => {
                return Err(Violation::protocol("continuation frame without a message"));
            }
            OpCode::Data(Data::Text | Data::Binary) if self.pending() != Pending::None => {
                return Err(Violation::protocol("new message inside a fragmented message"));
            }
            OpCode::Data(_) => {
                if self.assembled() + frame.payload_len > max_message {
                    return Err(Violation::too_big("message exceeds the size limit"));
                }
            }
        }
        Ok(())
    }

    /// Unmasks the newly arrived part of a data frame's payload (`arrived` is
    /// everything of it that is in the buffer) and validates it if it is text.
    fn unmask_and_check(&mut self, arrived: &mut [u8], frame: &Parsed) -> Result<(), Violation> {
        let done = self.checked();
        self.set_checked(arrived.len());
        let fresh = &mut arrived[done..];
        let mask = frame.header.mask.unwrap_or_default();
        apply_mask(fresh, mask, done);
        let text = match frame.header.opcode {
            OpCode::Data(Data::Text) => true,
            OpCode::Data(Data::Continue) => self.pending() == Pending::Text,
            _ => false,
        };
        if text && self.utf8.feed(fresh).is_err() {
            return Err(Violation::invalid_payload("text is not valid UTF-8"));
        }
        Ok(())
    }

    /// A complete data frame, already unmasked and checked. Returns `None`
    /// for a fragment that does not finish its message.
    fn data_event(
        &mut self,
        buf: &mut [u8],
        opcode: Data,
        fin: bool,
        payload: Range<usize>,
    ) -> Result<Option<Event>, Violation> {
        if self.pending() == Pending::None {
            let text = opcode == Data::Text;
            if fin {
                // The common case: a whole message in one frame, handed out in place.
                self.finish_text(text)?;
                return Ok(Some(Event::Message { text, payload }));
            }
            self.set_pending(if text { Pending::Text } else { Pending::Binary });
        }
        let at = self.assembled();
        buf.copy_within(payload.clone(), at);
        self.set_assembled(at + payload.len());
        if !fin {
            return Ok(None);
        }
        let text = self.pending() == Pending::Text;
        self.finish_text(text)?;
        let whole = 0..self.assembled();
        self.set_pending(Pending::None);
        self.set_assembled(0);
        Ok(Some(Event::Message { text, payload: whole }))
    }

    fn finish_text(&mut self, text: bool) -> Result<(), Violation> {
        if text && !self.utf8.is_complete() {
            return Err(Violation::invalid_payload("text ends inside a code point"));
        }
        self.utf8 = Utf8State::default();
        Ok(())
    }
}

/// Parses a frame header with tungstenite's parser; `None` until all of it
/// has arrived. Reserved opcodes (RFC 6455 §5.2) fail here.
fn parse_header(bytes: &[u8]) -> Result<Option<Parsed>, Violation> {
    let mut cursor = Cursor::new(bytes);
    let parsed = FrameHeader::parse(&mut cursor).map_err(|_| Violation::protocol("reserved opcode"))?;
    let Some((header, length)) = parsed else {
        return Ok(None);
    };
    // RFC 6455 §5.2: "the most significant bit MUST be 0" of a 64-bit length.
    if length > i64::MAX as u64 {
        return Err(Violation::protocol("payload length with the top bit set"));
    }
    let payload_len = usize::try_from(length).map_err(|_| Violation::too_big("payload length exceeds memory"))?;
    Ok(Some(Parsed {
        header,
        header_len: cursor.position() as usize,
        payload_len,
    }))
}

fn control_event(control: Control, payload_bytes: &[u8], payload: Range<usize>) -> Result<Option<Event>, Violation> {
    let event = match control {
        Control::Ping => Event::Ping { payload },
        Control::Pong => Event::Pong,
        Control::Close => Event::Close(close::parse_close_payload(payload_bytes)?),
        // Reserved control opcodes were refused by parse_header.
        Control::Reserved(_) => return Err(Violation::protocol("reserved opcode")),
    };
    Ok(Some(event))
}

/// Server frame kinds we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Binary,
    Ping,
    Pong,
    Close,
}

impl Kind {
    fn opcode(self) -> OpCode {
        match self {
            Kind::Text => OpCode::Data(Data::Text),
            Kind::Binary => OpCode::Data(Data::Binary),
            Kind::Ping => OpCode::Control(Control::Ping),
            Kind::Pong => OpCode::Control(Control::Pong),
            Kind::Close => OpCode::Control(Control::Close),
        }
    }
}

/// Appends an unmasked, final server frame carrying `payload` to `out`.
/// Server frames are the same bytes for every receiver, which is what lets a
/// broadcast be encoded once.
pub fn encode_frame(out: &mut Vec<u8>, kind: Kind, payload: &[u8]) {
    let header = FrameHeader {
        opcode: kind.opcode(),
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Writes the header of an unmasked, final server frame of `len` payload
/// bytes into `out`; returns how many bytes it took (2, 4 or 10). For a
/// caller that writes the payload first, into room left before it, and
/// frames it without copying it again.
pub(crate) fn encode_header(kind: Kind, len: usize, out: &mut [u8; MAX_SERVER_HEADER]) -> usize {
    let header = FrameHeader {
        opcode: kind.opcode(),
        ..FrameHeader::default()
    };
    let mut cursor: &mut [u8] = out;
    // Ten bytes hold the largest header of an unmasked frame.
    let _ = header.format(len as u64, &mut cursor);
    MAX_SERVER_HEADER - cursor.len()
}

/// Appends a close frame with `code` and `reason` (the reason is cut to fit
/// the 125-byte control frame limit on a character boundary).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    encode_frame(out, Kind::Close, &payload[..2 + cut]);
}

/// Test support: a masked client frame, as a browser would send it.
#[doc(hidden)]
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const MAX: usize = 1 << 20;

    #[test]
    fn the_decoder_is_twelve_bytes_and_its_packed_kind_round_trips() {
        assert_eq!(std::mem::size_of::<Decoder>(), 12);
        let mut d = Decoder::default();
        d.set_assembled(5);
        d.set_checked(7);
        for kind in [Pending::Text, Pending::Binary, Pending::None] {
            d.set_pending(kind);
            assert_eq!(d.pending(), kind);
            assert_eq!(
                (d.assembled(), d.checked()),
                (5, 7),
                "the kind never changes the counts"
            );
        }
        d.set_pending(Pending::Text);
        d.set_checked(0);
        d.set_assembled(COUNT as usize);
        assert_eq!(d.pending(), Pending::Text, "the counts never change the kind");
        assert_eq!(d.assembled(), COUNT as usize);
    }

    /// Feeds `wire` to a fresh decoder in chunks of `chunk` bytes, compacting
    /// as a connection would, and collects the events (payloads copied out).
    fn decode_chunked(wire: &[u8], chunk: usize) -> Result<Vec<(Event, Vec<u8>)>, Violation> {
        let mut dec = Decoder::default();
        let mut buf = vec![0u8; wire.len() + MAX_CLIENT_HEADER];
        let mut len = dec.assembled();
        let mut events = Vec::new();
        for piece in wire.chunks(chunk) {
            buf[len..len + piece.len()].copy_from_slice(piece);
            len += piece.len();
            let mut pos = dec.assembled();
            while let Step::Event(ev) = dec.next(&mut buf, &mut pos, len, MAX)? {
                let bytes = match &ev {
                    Event::Message { payload, .. } | Event::Ping { payload } => buf[payload.clone()].to_vec(),
                    _ => Vec::new(),
                };
                events.push((ev, bytes));
            }
            let keep = dec.assembled();
            buf.copy_within(pos..len, keep);
            len = keep + (len - pos);
        }
        Ok(events)
    }

    fn decode(wire: &[u8]) -> Result<Vec<(Event, Vec<u8>)>, Violation> {
        decode_chunked(wire, wire.len().max(1))
    }

    fn messages(events: &[(Event, Vec<u8>)]) -> Vec<Vec<u8>> {
        events
            .iter()
            .filter(|(e, _)| matches!(e, Event::Message { .. }))
            .map(|(_, b)| b.clone())
            .collect()
    }

    #[test]
    fn whole_frames_decode_at_every_chunking() {
        let mut wire = client_frame(0x1, true, b"hello", MASK);
        wire.extend(client_frame(0x2, true, &[7u8; 300], MASK));
        wire.extend(client_frame(0x2, true, &vec![9u8; 70_000], MASK));
        for chunk in [1, 2, 3, 7, 14, 100, 4096, wire.len()] {
            let got = messages(&decode_chunked(&wire, chunk).unwrap());
            assert_eq!(
                got,
                vec![b"hello".to_vec(), vec![7u8; 300], vec![9u8; 70_000]],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn fragments_with_interleaved_ping_assemble_in_order() {
        let mut wire = client_frame(0x1, false, "frag".as_bytes(), MASK);
        wire.extend(client_frame(0x9, true, b"ping!", MASK));
        wire.extend(client_frame(0x0, false, "men€".as_bytes(), MASK));
        wire.extend(client_frame(0x0, true, b"ts", MASK));
        for chunk in [1, 5, wire.len()] {
            let events = decode_chunked(&wire, chunk).unwrap();
            assert_eq!(events.len(), 2);
            assert!(matches!(events[0].0, Event::Ping { .. }));
            assert_eq!(events[0].1, b"ping!");
            assert!(matches!(events[1].0, Event::Message { text: true, .. }));
            assert_eq!(events[1].1, "fragmen€ts".as_bytes());
        }
    }

    #[test]
    fn unmasked_frame_is_a_protocol_error() {
        let wire = [0x81, 0x02, b'h', b'i'];
        assert_eq!(decode(&wire).unwrap_err().code, close::PROTOCOL_ERROR);
    }

    #[test]
    fn reserved_bits_and_opcodes_are_protocol_errors() {
        let mut rsv = client_frame(0x1, true, b"x", MASK);
        rsv[0] |= 0x40;
        assert_eq!(decode(&rsv).unwrap_err().code, close::PROTOCOL_ERROR);
        for op in [0x3, 0x7, 0xB, 0xF] {
            let wire = client_frame(op, true, b"", MASK);
            assert_eq!(decode(&wire).unwrap_err().code, close::PROTOCOL_ERROR, "opcode {op}");
        }
    }

    #[test]
    fn control_frame_rules() {
        let long_ping = client_frame(0x9, true, &[0u8; 126], MASK);
        assert_eq!(decode(&long_ping).unwrap_err().code, close::PROTOCOL_ERROR);
        let fragmented_ping = client_frame(0x9, false, b"x", MASK);
        assert_eq!(decode(&fragmented_ping).unwrap_err().code, close::PROTOCOL_ERROR);
    }

    #[test]
    fn continuation_rules() {
        let orphan = client_frame(0x0, true, b"x", MASK);
        assert_eq!(decode(&orphan).unwrap_err().code, close::PROTOCOL_ERROR);
        let mut nested = client_frame(0x1, false, b"a", MASK);
        nested.extend(client_frame(0x1, true, b"b", MASK));
        assert_eq!(decode(&nested).unwrap_err().code, close::PROTOCOL_ERROR);
    }

    #[test]
    fn invalid_utf8_fails_fast_inside_a_fragmented_message() {
        // The bad byte is in the first fragment: no further bytes are needed to fail.
        let wire = client_frame(0x1, false, b"ok \xC0\xAF", MASK);
        for chunk in [1, 3, wire.len()] {
            assert_eq!(decode_chunked(&wire, chunk).unwrap_err().code, close::INVALID_PAYLOAD);
        }
        // Invalid across the fragment boundary.
        let mut split = client_frame(0x1, false, b"\xE2\x82", MASK);
        split.extend(client_frame(0x0, true, b"A", MASK));
        assert_eq!(decode(&split).unwrap_err().code, close::INVALID_PAYLOAD);
        // A message may not end inside a code point.
        let cut = client_frame(0x1, true, b"\xE2\x82", MASK);
        assert_eq!(decode(&cut).unwrap_err().code, close::INVALID_PAYLOAD);
    }

    #[test]
    fn invalid_utf8_fails_before_a_large_frame_completes() {
        let mut payload = vec![b'a'; 10_000];
        payload[10] = 0xFF;
        let wire = client_frame(0x1, true, &payload, MASK);
        // Only the first 100 bytes arrive.
        let mut dec = Decoder::default();
        let mut buf = wire[..100].to_vec();
        let err = dec.next(&mut buf, &mut 0, 100, MAX).unwrap_err();
        assert_eq!(err.code, close::INVALID_PAYLOAD);
    }

    #[test]
    fn oversized_message_is_refused_from_its_header() {
        let mut dec = Decoder::default();
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(2u64 << 20).to_be_bytes());
        header.extend_from_slice(&MASK);
        let len = header.len();
        assert_eq!(
            dec.next(&mut header, &mut 0, len, MAX).unwrap_err().code,
            close::MESSAGE_TOO_BIG
        );
        // Across fragments: each fits, together they do not.
        let mut wire = client_frame(0x2, false, &vec![0u8; 600_000], MASK);
        wire.extend(client_frame(0x0, true, &vec![0u8; 600_000], MASK));
        assert_eq!(decode(&wire).unwrap_err().code, close::MESSAGE_TOO_BIG);
    }

    #[test]
    fn length_with_top_bit_set_is_a_protocol_error() {
        let mut wire = vec![0x82, 0x80 | 127];
        wire.extend_from_slice(&(1u64 << 63).to_be_bytes());
        wire.extend_from_slice(&MASK);
        assert_eq!(decode(&wire).unwrap_err().code, close::PROTOCOL_ERROR);
    }

    #[test]
    fn close_frames_are_validated() {
        let good = client_frame(0x8, true, b"\x03\xe8done", MASK);
        assert_eq!(
            decode(&good).unwrap()[0].0,
            Event::Close(PeerClose { code: Some(1000) })
        );
        let one_byte = client_frame(0x8, true, b"\x03", MASK);
        assert_eq!(decode(&one_byte).unwrap_err().code, close::PROTOCOL_ERROR);
        let bad_reason = client_frame(0x8, true, b"\x03\xe8\xff", MASK);
        assert_eq!(decode(&bad_reason).unwrap_err().code, close::INVALID_PAYLOAD);
    }

    #[test]
    fn need_more_reports_the_room_a_large_frame_needs() {
        let wire = client_frame(0x2, true, &vec![1u8; 100_000], MASK);
        let mut dec = Decoder::default();
        let mut buf = wire[..50].to_vec();
        let step = dec.next(&mut buf, &mut 0, 50, MAX).unwrap();
        assert_eq!(step, Step::NeedMore { need: wire.len() });
    }

    #[test]
    fn server_frames_encode_with_the_shortest_length() {
        let mut out = Vec::new();
        encode_frame(&mut out, Kind::Text, b"hi");
        assert_eq!(out, [0x81, 0x02, b'h', b'i']);
        out.clear();
        encode_frame(&mut out, Kind::Binary, &[0u8; 200]);
        assert_eq!(&out[..4], &[0x82, 126, 0, 200]);
        out.clear();
        encode_close(&mut out, 1001, &"é".repeat(100));
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    fn a_header_alone_is_the_header_of_the_whole_frame() {
        for len in [0usize, 125, 126, 65_535, 65_536, 1 << 20] {
            let payload = vec![b'x'; len];
            let mut whole = Vec::new();
            encode_frame(&mut whole, Kind::Text, &payload);
            let mut head = [0u8; MAX_SERVER_HEADER];
            let n = encode_header(Kind::Text, len, &mut head);
            assert_eq!(&head[..n], &whole[..whole.len() - len], "payload of {len} bytes");
        }
    }
}
