//! Client frame decoding: header parse plus in-place payload unmask.
//!
//! What it measures, for masked binary client frames of 2 B, 125 B, 16 KiB
//! and 1 MiB:
//! - `unmask/apply_mask`: `hubbub::ws::mask::apply_mask` over the payload,
//!   against `unmask/memcpy`, a plain copy of the same number of bytes (the
//!   cheapest thing that touches every byte once);
//! - `decode`: `Decoder::next` on one whole frame already in the buffer:
//!   header parse (tungstenite's `FrameHeader::parse`), RFC checks, unmask in
//!   place, and the `Message` event. The frame is restored from a pristine
//!   copy before each call, outside the timed section.
//!
//! Cost model: a fixed cost per frame (header parse and rule checks, tens of
//! ns) plus a cost per payload byte (the unmask XOR, 8 bytes per step). Small
//! frames are dominated by the first, large ones by the second; unmasking
//! should run within a small factor of memcpy. Throughput is payload bytes/s.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use hubbub::ws::codec::{client_frame, Decoder, Event, Step};
use hubbub::ws::mask::apply_mask;

mod common;

const SIZES: [(usize, &str); 4] = [(2, "2B"), (125, "125B"), (16 * 1024, "16KiB"), (1024 * 1024, "1MiB")];
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const OP_BINARY: u8 = 0x2;

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for (size, label) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let source = vec![0x5au8; size];
        let mut buf = vec![0u8; size];
        group.bench_function(BenchmarkId::new("apply_mask", label), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(MASK), 0))
        });
        group.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter(|| black_box(&mut buf).copy_from_slice(black_box(&source)))
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (size, label) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let wire = client_frame(OP_BINARY, true, &payload, MASK);
        let batch = if size >= 16 * 1024 {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        };
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_batched_ref(|| wire.clone(), |buf| decode_one(buf, size), batch)
        });
    }
    group.finish();
}

/// Decodes the single frame in `buf` and returns the payload length.
fn decode_one(buf: &mut [u8], max_message: usize) -> usize {
    let mut decoder = Decoder::default();
    let mut pos = 0;
    let len = buf.len();
    match decoder.next(buf, &mut pos, len, max_message) {
        Ok(Step::Event(Event::Message { payload, .. })) => black_box(payload.len()),
        other => panic!("bench frame must decode to a message, got {other:?}"),
    }
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = unmask, decode
}
criterion_main!(benches);
