//! Incremental UTF-8 validation of text messages (`hubbub::ws::utf8::Utf8State`).
//!
//! What it measures: bytes/s of `Utf8State::feed` over 64 KiB of text in three
//! mixes, fed three ways:
//! - `whole`: one `feed` call (the common case: a frame arrives in one read);
//! - `split`: pieces of 1,021 bytes (a prime, so the cuts fall inside 2-, 3-
//!   and 4-byte sequences at shifting positions), the way a large frame
//!   arrives over several reads;
//! - `std`: `std::str::from_utf8` on the whole text, the reference
//!   `feed` is built on.
//!
//! Mixes: `ascii` (English text), `mixed` (Latin accents, Greek, CJK, one
//! emoji per sentence: a chat message in many languages) and `4byte` (almost
//! all emoji and other 4-byte code points).
//!
//! Cost model: `feed` is `from_utf8` plus a fixed cost per call (finishing a
//! code point cut by the previous piece: at most 3 bytes copied and checked).
//! `whole` should equal `std`; `split` should lose only that per-call cost,
//! about 1 ns per ~1 KiB piece. ASCII runs fastest (std validates it word by
//! word); multi-byte text is validated byte by byte.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hubbub::ws::utf8::Utf8State;

mod common;

const TEXT_BYTES: usize = 64 * 1024;
/// Prime piece size: cuts land inside multi-byte sequences.
const PIECE: usize = 1021;

const ASCII: &str = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. ";
const MIXED: &str = "Grüße, señor! Καλημέρα κόσμε. こんにちは世界 🙂 Zürich → Köln, 北京欢迎你. ";
const FOUR_BYTE: &str = "😀🚀𝄞🎉🐍𝕏🙂🤖🦀🌍a";

/// `unit` repeated to at least `TEXT_BYTES`, cut on a character boundary.
fn text(unit: &str) -> Vec<u8> {
    let mut out = unit.repeat(TEXT_BYTES / unit.len() + 1);
    let mut cut = TEXT_BYTES;
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    out.truncate(cut);
    out.into_bytes()
}

fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for (name, unit) in [("ascii", ASCII), ("mixed", MIXED), ("4byte", FOUR_BYTE)] {
        let bytes = text(unit);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("whole", name), |b| {
            b.iter(|| {
                let mut state = Utf8State::default();
                state.feed(black_box(&bytes)).expect("valid text");
                state.is_complete()
            })
        });
        group.bench_function(BenchmarkId::new("split", name), |b| {
            b.iter(|| {
                let mut state = Utf8State::default();
                for piece in black_box(&bytes).chunks(PIECE) {
                    state.feed(piece).expect("valid text");
                }
                state.is_complete()
            })
        });
        group.bench_function(BenchmarkId::new("std", name), |b| {
            b.iter(|| std::str::from_utf8(black_box(&bytes)).is_ok())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = validate
}
criterion_main!(benches);
