//! Encode-once fan-out: one message to 10,000 connections' outgoing queues.
//!
//! What it measures, per delivery (time / 10,000), for 32 B and 1 KiB text
//! messages:
//! - `fanout/shared`: what hubbub does when sockets refuse bytes: frame the
//!   message once (`encode_frame`), then push a reference-counted `Bytes` of
//!   it onto each receiver's `OutQ`, then release it (as a flush would);
//! - `fanout/copied`: what a per-connection write buffer does (tungstenite's
//!   `WebSocket`, one per receiver): append the framed bytes to each
//!   receiver's own `Vec`, then clear it.
//!
//! Cost model: `shared` costs one atomic increment and one queue slot per
//! receiver, independent of message size; `copied` costs a memcpy of the
//! frame per receiver, so it grows with the message. The queues are allocated
//! before timing and reach steady capacity after the first round, as they do
//! in a running server; the 10,000 queues (and, for `copied`, buffers) exceed
//! L1/L2, so the figure includes a cache miss or two per receiver. Direct
//! writes to sockets, which hubbub tries first, are measured end to end by
//! `benches/compare.py`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hubbub::conn::outq::OutQ;
use hubbub::ws::codec::{encode_frame, Kind};

mod common;

const RECEIVERS: usize = 10_000;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(RECEIVERS as u64));
    for (size, label) in [(32usize, "32B"), (1024, "1KiB")] {
        let payload = vec![b'x'; size];
        let meter = hubbub::buf::Meter::unlimited();
        let mut queues: Vec<OutQ> = (0..RECEIVERS).map(|_| OutQ::new(meter.clone())).collect();
        group.bench_function(BenchmarkId::new("shared", label), |b| {
            b.iter(|| fan_out_shared(black_box(&payload), &mut queues))
        });
        let mut buffers: Vec<Vec<u8>> = (0..RECEIVERS).map(|_| Vec::new()).collect();
        group.bench_function(BenchmarkId::new("copied", label), |b| {
            b.iter(|| fan_out_copied(black_box(&payload), &mut buffers))
        });
    }
    group.finish();
}

/// Encodes once, shares the bytes with every queue, then releases them.
fn fan_out_shared(payload: &[u8], queues: &mut [OutQ]) -> usize {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    encode_frame(&mut frame, Kind::Text, payload);
    let frame = Bytes::from(frame);
    let mut queued = 0;
    for queue in queues.iter_mut() {
        queue.push(frame.clone());
        queued += queue.bytes();
    }
    for queue in queues.iter_mut() {
        queue.discard_unstarted();
    }
    queued
}

/// Encodes once, copies the bytes into every receiver's buffer, then clears them.
fn fan_out_copied(payload: &[u8], buffers: &mut [Vec<u8>]) -> usize {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    encode_frame(&mut frame, Kind::Text, payload);
    let mut queued = 0;
    for buffer in buffers.iter_mut() {
        buffer.extend_from_slice(&frame);
        queued += buffer.len();
    }
    for buffer in buffers.iter_mut() {
        buffer.clear();
    }
    queued
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = bench
}
criterion_main!(benches);
