//! The frame decoder driven as a connection drives it (src/conn/drive.rs):
//! input arrives in chunks, undecoded bytes `[pos..len)` are compacted down
//! to `assembled` after each `NeedMore`, and the buffer grows to `need`.
//!
//! Input layout: byte 0 picks the maximum message size, byte 1 how many
//! chunk sizes follow (at most 15), then those sizes (cycled), then the wire.
//!
//! Asserts: no panic; every event's range lies inside the decoded bytes;
//! text messages are UTF-8; `NeedMore` only when the kept bytes are short
//! of `need`; `need` never exceeds `max_message + 14 + 125` (a ping may
//! arrive between fragments); a protocol error ends the stream.
#![no_main]

use hubbub::ws::codec::{Decoder, Event, Step, MAX_CLIENT_HEADER, MAX_CONTROL_PAYLOAD};
use libfuzzer_sys::fuzz_target;

/// A connection's first read lands in a buffer of about this size.
const INITIAL_BUFFER: usize = 64;
/// The largest limit below (1 MiB), its header, and a ping that may arrive
/// between fragments after a message of nearly 1 MiB was assembled.
const MAX_BUFFER: usize = (1 << 20) + MAX_CLIENT_HEADER + MAX_CONTROL_PAYLOAD;

fuzz_target!(|data: &[u8]| {
    let Some((&size_pick, rest)) = data.split_first() else {
        return;
    };
    let Some((&n_chunks, rest)) = rest.split_first() else {
        return;
    };
    let n_chunks = (n_chunks & 0x0F) as usize;
    if rest.len() < n_chunks {
        return;
    }
    let (chunk_sizes, wire) = rest.split_at(n_chunks);
    // 0..=255 bytes for small picks (so 1009 paths run), else up to 1 MiB.
    let max_message = if size_pick < 128 {
        size_pick as usize * 2
    } else {
        1usize << (size_pick as usize % 21)
    };
    run(wire, chunk_sizes, max_message);
});

fn run(wire: &[u8], chunk_sizes: &[u8], max_message: usize) {
    let mut dec = Decoder::default();
    let mut buf = vec![0u8; INITIAL_BUFFER];
    let mut len = 0;
    let mut fed = 0;
    let mut turn = 0;
    while fed < wire.len() {
        let want = chunk_sizes
            .get(turn % chunk_sizes.len().max(1))
            .map_or(wire.len(), |&s| s as usize + 1);
        turn += 1;
        let room = buf.len() - len;
        let take = want.min(room).min(wire.len() - fed);
        assert!(take > 0, "decoder asked for no room: len {len} buf {}", buf.len());
        buf[len..len + take].copy_from_slice(&wire[fed..fed + take]);
        len += take;
        fed += take;
        let mut pos = dec.assembled();
        let need = loop {
            match dec.next(&mut buf, &mut pos, len, max_message) {
                Ok(Step::NeedMore { need }) => break need,
                Ok(Step::Event(event)) => check_event(&event, &buf, pos),
                Err(_violation) => return,
            }
        };
        assert!(pos <= len, "pos {pos} past len {len}");
        let keep = dec.assembled();
        assert!(keep <= pos, "assembled {keep} overlaps undecoded bytes at {pos}");
        assert!(
            keep + (len - pos) < need,
            "NeedMore {need} with {len} bytes kept, frame complete"
        );
        // A control frame may carry 125 bytes whatever the message limit, and
        // may arrive between the fragments of a message already assembled.
        let cap = max_message + MAX_CLIENT_HEADER + MAX_CONTROL_PAYLOAD;
        assert!(need <= cap, "need {need} over {cap} for max_message {max_message}");
        buf.copy_within(pos..len, keep);
        len = keep + (len - pos);
        let grow_to = need.max(len + 1).min(MAX_BUFFER);
        if grow_to > buf.len() {
            buf.resize(grow_to, 0);
        }
        if len == buf.len() {
            // A full buffer that may not grow: the connection would be stuck.
            panic!("buffer full at {len} bytes with need {need}");
        }
    }
}

fn check_event(event: &Event, buf: &[u8], pos: usize) {
    match event {
        Event::Message { text, payload } => {
            assert!(payload.start <= payload.end && payload.end <= pos);
            if *text {
                assert!(
                    std::str::from_utf8(&buf[payload.clone()]).is_ok(),
                    "text message is not UTF-8"
                );
            }
        }
        Event::Ping { payload } => {
            assert!(payload.start <= payload.end && payload.end <= pos);
            assert!(payload.len() <= 125);
        }
        Event::Pong | Event::Close(_) => {}
    }
}
