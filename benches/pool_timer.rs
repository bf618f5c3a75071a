//! The shard's bookkeeping: buffer pool leases and timer wheel entries.
//!
//! What it measures (ns per operation):
//! - `pool/lease_return`: `BufPool::lease` then dropping the `Lease` (the
//!   buffer goes back on `Drop`), with the pool half leased as in a busy shard;
//! - `pool/lease_touch_return`: the same, writing one byte of the buffer (the
//!   first touch of a page is not included: the pool is warmed first);
//! - `timer/schedule_expire`: `TimerWheel::schedule` of 10,000 keys spread
//!   over the next 30 s (ping and idle deadlines), then `advance` through all
//!   of them; per key.
//!
//! Cost model: a lease is a `Vec` pop and an `Rc` clone, a return is a push and
//! an `Rc` drop: a few ns, no allocation. A timer entry is a `Vec` push into
//! its slot and, when its tick comes, a move into the `due` list: a few ns per
//! entry, with work per tick proportional to what expires, not to how many
//! connections exist. The slot vectors keep their capacity between rounds.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hubbub::buf::BufPool;
use hubbub::shard::timer::TimerWheel;
use hubbub::tick::TICKS_PER_SEC;

mod common;

const POOL_BUFFERS: usize = 64;
const TIMER_KEYS: u32 = 10_000;
const SPREAD_TICKS: u32 = 30 * TICKS_PER_SEC;

fn pool(c: &mut Criterion) {
    let pool = BufPool::new(POOL_BUFFERS);
    let held: Vec<_> = (0..POOL_BUFFERS / 2).filter_map(|_| pool.lease()).collect();
    for _ in 0..POOL_BUFFERS {
        if let Some(mut lease) = pool.lease() {
            lease.bytes_mut()[0] = 1;
        }
    }
    let mut group = c.benchmark_group("pool");
    group.throughput(Throughput::Elements(1));
    group.bench_function("lease_return", |b| b.iter(|| black_box(pool.lease()).is_some()));
    group.bench_function("lease_touch_return", |b| {
        b.iter(|| {
            let mut lease = pool.lease().expect("the pool is half free");
            lease.bytes_mut()[black_box(7)] = 1;
        })
    });
    group.finish();
    drop(held);
}

fn timer(c: &mut Criterion) {
    let mut wheel = TimerWheel::new(0);
    let mut now = 0u32;
    let mut due = Vec::with_capacity(TIMER_KEYS as usize);
    let mut group = c.benchmark_group("timer");
    group.throughput(Throughput::Elements(u64::from(TIMER_KEYS)));
    group.bench_function("schedule_expire", |b| {
        b.iter(|| {
            for key in 0..TIMER_KEYS {
                wheel.schedule(now + 1 + key % SPREAD_TICKS, key);
            }
            now += SPREAD_TICKS;
            due.clear();
            wheel.advance(now, &mut due);
            assert_eq!(due.len(), TIMER_KEYS as usize);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = pool, timer
}
criterion_main!(benches);
