//! The `/ws` publish path, from the command's text to the shared frame every
//! subscriber gets: what the owner's shard does per publication, before the
//! fan-out (`fanout.rs` measures that).
//!
//! - `publish/in_place`: what hubbub does: parse with `data` borrowed from
//!   the text, one copy of `data` into the history entry (`Arc<str>`), one
//!   into the frame (`hub::frame::publication` writes the push straight into
//!   the frame's buffer and fills in the header last);
//! - `publish/copied`: the path before it (hubbub up to the hub split): a
//!   boxed copy of `data` at parse, the history copy, the push built in a
//!   `String` (`format!`), then copied again into the frame.
//!
//! Cost model: both copy the command text out of the read buffer and parse
//! it alike; `copied` adds two full copies of `data` (and two allocations),
//! so the gap grows with the publication's size.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hubbub::buf::MemoryBudget;
use hubbub::hub::protocol::{parse_command, push_publication, Call};
use hubbub::ws::codec::{encode_frame, Kind};

mod common;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    let budget = MemoryBudget::new(u64::MAX);
    for (size, label) in [
        (64usize, "64B"),
        (1024, "1KiB"),
        (64 * 1024, "64KiB"),
        (1 << 20, "1MiB"),
    ] {
        let command = format!(
            r#"{{"id":1,"method":"publish","params":{{"channel":"news","data":"{}"}}}}"#,
            "x".repeat(size)
        );
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("in_place", label), |b| {
            b.iter(|| in_place(black_box(command.as_bytes()), &budget))
        });
        group.bench_function(BenchmarkId::new("copied", label), |b| {
            b.iter(|| copied(black_box(command.as_bytes()), &budget))
        });
    }
    group.finish();
}

/// Today's path: returns the history entry and the frame.
fn in_place(payload: &[u8], budget: &Arc<MemoryBudget>) -> (Arc<str>, Bytes) {
    let text = payload.to_vec();
    let Ok(command) = parse_command(&text) else {
        unreachable!()
    };
    let Call::Publish { channel, data } = command.call else {
        unreachable!()
    };
    let kept: Arc<str> = data.get().into();
    let frame = hubbub::hub::frame::publication(&channel, 1, &kept, budget);
    (kept, frame)
}

/// The path before: a boxed copy of `data`, a `String`, a second frame copy.
fn copied(payload: &[u8], budget: &Arc<MemoryBudget>) -> (Arc<str>, Bytes) {
    let text = payload.to_vec();
    let Ok(command) = parse_command(&text) else {
        unreachable!()
    };
    let Call::Publish { channel, data } = command.call else {
        unreachable!()
    };
    let boxed = data.to_owned();
    let kept: Arc<str> = boxed.get().into();
    let json = push_publication(&channel, 1, &kept);
    let mut frame = Vec::with_capacity(json.len() + 10);
    encode_frame(&mut frame, Kind::Text, &json);
    (kept, hubbub::buf::budget::frame(frame, budget))
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = bench
}
criterion_main!(benches);
