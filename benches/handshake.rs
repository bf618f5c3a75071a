//! The opening handshake: parse a browser's upgrade request and write the 101.
//!
//! What it measures:
//! - `handshake/parse_request`: `hubbub::ws::handshake::parse_request` on a
//!   complete request as Chrome sends it (about 450 bytes, 10 headers):
//!   `httparse`, the RFC 6455 §4.2.1 checks, the route, the origin policy and
//!   the accept key (SHA-1 plus base64);
//! - `handshake/parse_and_accept`: the same plus `write_accept` into a reused
//!   buffer, which is all the user-space work of one upgrade;
//! - allocations per handshake, counted by a counting global allocator in this
//!   bench and printed before the timings (`allocations per handshake: N`).
//!
//! Cost model: one pass of `httparse` over the bytes (SIMD, ~1 ns/byte), a
//! few case-insensitive header comparisons, then one SHA-1 block pair for the
//! key; the accept key's `String` is the only allocation. The kernel's share
//! of a handshake (accept, reads, writes, epoll registration) is larger and is
//! measured by `benches/compare.py`, not here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hubbub::ws::handshake::{parse_request, write_accept, AuthPolicy, Outcome, Policy};

mod common;

/// Counts every allocation (and reallocation) the process makes.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A Chrome upgrade request, byte for byte in shape.
const REQUEST: &[u8] = b"GET /echo HTTP/1.1\r\n\
Host: 127.0.0.1:8080\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://127.0.0.1:8080\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

const POLICY: Policy<'static> = Policy {
    origins: &[],
    subprotocols: &[],
    auth: AuthPolicy {
        secret: None,
        require_exp: true,
        allow_anonymous: true,
        anonymous_ws: false,
        now_unix: 0,
    },
};

/// One upgrade's user-space work; returns the response length.
fn handshake(out: &mut Vec<u8>) -> usize {
    out.clear();
    let Outcome::Upgrade(upgrade) = parse_request(black_box(REQUEST), &POLICY) else {
        panic!("bench request must be accepted");
    };
    write_accept(out, &upgrade.accept_key, None);
    out.len()
}

/// Prints the allocations one handshake makes (the response buffer is reused,
/// as the server reuses its scratch buffer).
fn count_allocations() {
    const ROUNDS: usize = 10_000;
    let mut out = Vec::with_capacity(256);
    handshake(&mut out);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..ROUNDS {
        handshake(&mut out);
    }
    let per = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / ROUNDS as f64;
    println!("allocations per handshake: {per}");
}

fn bench(c: &mut Criterion) {
    count_allocations();
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_request", |b| {
        b.iter(|| parse_request(black_box(REQUEST), &POLICY))
    });
    let mut out = Vec::with_capacity(256);
    group.bench_function("parse_and_accept", |b| b.iter(|| handshake(&mut out)));
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = bench
}
criterion_main!(benches);
