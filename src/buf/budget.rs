//! The process-wide memory budget (`--memory-limit`) and each shard's meter.
//!
//! Everything the server holds on a client's behalf is charged to one kind
//! (`MemKind`): partial input (pooled leases at their full 64 KiB, heap
//! buffers at their capacity), outgoing queues, retained history, TLS sessions. A shard
//! charges its `Meter`, which is plain `Cell`s; the meter folds its net change
//! into the shared atomics only when it has moved by `BATCH_BYTES` (and once
//! per tick), so the shared cache line is touched rarely. The shared total is
//! therefore exact to within `shards × BATCH_BYTES`, part of the documented
//! slack.
//!
//! The meter never refuses a charge by itself: callers ask `fits` before they
//! take memory they may do without (a new partial-input buffer, an upgrade)
//! and the shard sheds the largest holders when `over_limit` (see
//! `docs/CONNECTION.md`, "Memory budget").

use std::cell::Cell;

use bytes::Bytes;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Net change a shard keeps to itself before it updates the shared total.
pub(crate) const BATCH_BYTES: i64 = 256 * 1024;
/// Share of the limit above which new upgrades are refused (503).
pub(crate) const REFUSE_UPGRADES_PERCENT: u64 = 90;
/// Share of the limit a shed brings the total back down to.
pub(crate) const SHED_TARGET_PERCENT: u64 = 95;
/// Share of the limit partial-input holders are shed down to while upgrades
/// are being refused (below `REFUSE_UPGRADES_PERCENT`, so upgrades resume).
pub(crate) const UNBLOCK_TARGET_PERCENT: u64 = 85;

/// Frames at least this large carry their own charge: made with `frame`,
/// they are charged once when made and released when the last connection
/// holding them lets go, however many connections queue them. Smaller chunks
/// are charged per connection by the queue that holds them.
pub(crate) const SELF_CHARGED_BYTES: usize = 4096;

/// A frame that releases its charge when its last reference is dropped (on
/// whichever thread that happens: it updates the shared budget directly).
struct ChargedFrame {
    bytes: Vec<u8>,
    budget: Arc<MemoryBudget>,
}

impl AsRef<[u8]> for ChargedFrame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for ChargedFrame {
    fn drop(&mut self) {
        self.budget.add(MemKind::Outgoing, -(self.bytes.len() as i64));
    }
}

/// Shares an encoded frame for queueing: a large one is charged to
/// `budget` (`MemKind::Outgoing`) once, for as long as any copy of it lives.
pub fn frame(bytes: Vec<u8>, budget: &Arc<MemoryBudget>) -> Bytes {
    if bytes.len() < SELF_CHARGED_BYTES {
        return Bytes::from(bytes);
    }
    budget.add(MemKind::Outgoing, bytes.len() as i64);
    Bytes::from_owner(ChargedFrame {
        bytes,
        budget: Arc::clone(budget),
    })
}

/// True for a chunk that carries its own charge (see `frame`).
pub(crate) fn is_self_charged(chunk: &[u8]) -> bool {
    chunk.len() >= SELF_CHARGED_BYTES
}

/// What a charged byte is held for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MemKind {
    /// Partial request heads, frames and fragmented messages.
    PartialInput = 0,
    /// Bytes queued for connections that did not read them yet.
    Outgoing,
    /// Publications kept as channel history.
    History,
    /// TLS sessions (`wss://`): each session's state at a fixed estimate,
    /// plus a record or a write kept while partial.
    Tls,
    /// Cluster mode: commands held by the Redis bridge (its queue and the
    /// buffer of commands waiting for Redis).
    Cluster,
    /// Application hook calls in flight: the client data each carries
    /// (`--proxy-*-url`).
    Proxy,
    /// Events waiting for their sink (`--events-stream`, `--webhook-url`).
    Events,
}

impl MemKind {
    pub const ALL: [MemKind; 7] = [
        MemKind::PartialInput,
        MemKind::Outgoing,
        MemKind::History,
        MemKind::Tls,
        MemKind::Cluster,
        MemKind::Proxy,
        MemKind::Events,
    ];

    /// The `kind` label of `hubbub_memory_bytes`.
    pub fn label(self) -> &'static str {
        match self {
            MemKind::PartialInput => "partial_input",
            MemKind::Outgoing => "outgoing",
            MemKind::History => "history",
            MemKind::Tls => "tls",
            MemKind::Cluster => "cluster",
            MemKind::Proxy => "proxy",
            MemKind::Events => "events",
        }
    }
}

const KINDS: usize = MemKind::ALL.len();

/// The process-wide budget: the limit and what every shard has reported.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    total: AtomicI64,
    kinds: [AtomicI64; KINDS],
    /// Channel logs the node holds (`--max-channels`): retained hub state
    /// bounded by count beside the bytes above, shared by every shard.
    channels: AtomicI64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            total: AtomicI64::new(0),
            kinds: Default::default(),
            channels: AtomicI64::new(0),
        })
    }

    /// Channel logs held by the node.
    pub fn channels(&self) -> u64 {
        self.channels.load(Ordering::Relaxed).max(0) as u64
    }

    /// Counts `delta` channel logs made (positive) or dropped (negative).
    pub(crate) fn count_channels(&self, delta: i64) {
        self.channels.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged by all shards, as far as they have reported.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed).max(0) as u64
    }

    /// Bytes of one kind, as far as the shards have reported.
    pub fn bytes(&self, kind: MemKind) -> u64 {
        self.kinds[kind as usize].load(Ordering::Relaxed).max(0) as u64
    }

    /// Charges (or, negative, releases) `delta` bytes directly, for holders
    /// outside the shards (the cluster bridge).
    pub(crate) fn add(&self, kind: MemKind, delta: i64) {
        self.kinds[kind as usize].fetch_add(delta, Ordering::Relaxed);
        self.total.fetch_add(delta, Ordering::Relaxed);
    }
}

/// A shard's view of the budget: cheap to charge, single-threaded (`Rc`),
/// cloned into the buffers and queues that charge it so they release what
/// they hold when dropped.
#[derive(Clone)]
pub struct Meter {
    inner: Rc<MeterInner>,
}

struct MeterInner {
    budget: Arc<MemoryBudget>,
    /// What this shard holds now, per kind.
    held: [Cell<i64>; KINDS],
    /// Change not yet added to the shared budget, per kind.
    pending: [Cell<i64>; KINDS],
    pending_total: Cell<i64>,
}

impl Meter {
    pub fn new(budget: Arc<MemoryBudget>) -> Meter {
        Meter {
            inner: Rc::new(MeterInner {
                budget,
                held: Default::default(),
                pending: Default::default(),
                pending_total: Cell::new(0),
            }),
        }
    }

    /// A meter on a budget of its own, for code run outside a server.
    pub fn unlimited() -> Meter {
        Meter::new(MemoryBudget::new(u64::MAX))
    }

    pub(crate) fn charge(&self, kind: MemKind, bytes: usize) {
        self.change(kind, bytes as i64);
    }

    pub fn release(&self, kind: MemKind, bytes: usize) {
        self.change(kind, -(bytes as i64));
    }

    fn change(&self, kind: MemKind, delta: i64) {
        let inner = &*self.inner;
        let i = kind as usize;
        inner.held[i].set(inner.held[i].get() + delta);
        inner.pending[i].set(inner.pending[i].get() + delta);
        let pending = inner.pending_total.get() + delta;
        inner.pending_total.set(pending);
        if pending.abs() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Adds this shard's pending change to the shared budget (each tick).
    pub fn flush(&self) {
        let inner = &*self.inner;
        for kind in MemKind::ALL {
            let pending = inner.pending[kind as usize].replace(0);
            if pending != 0 {
                inner.budget.add(kind, pending);
            }
        }
        inner.pending_total.set(0);
    }

    /// The process-wide total including this shard's unreported change.
    pub fn total(&self) -> u64 {
        (self.inner.budget.total.load(Ordering::Relaxed) + self.inner.pending_total.get()).max(0) as u64
    }

    pub fn limit(&self) -> u64 {
        self.inner.budget.limit
    }

    /// The shared budget (for the process-wide gauges, and `frame`).
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.inner.budget
    }

    /// What this shard holds of `kind`.
    pub fn held(&self, kind: MemKind) -> u64 {
        self.inner.held[kind as usize].get().max(0) as u64
    }

    /// What this shard holds in all.
    pub(crate) fn held_total(&self) -> u64 {
        MemKind::ALL.iter().map(|&k| self.held(k)).sum()
    }

    /// The total less retained history, which the shards trim when they
    /// need the room: what connections may still take is judged on this.
    fn pressing(&self) -> u64 {
        let history =
            self.inner.budget.bytes(MemKind::History) as i64 + self.inner.pending[MemKind::History as usize].get();
        self.total().saturating_sub(history.max(0) as u64)
    }

    /// True when `bytes` more for a connection stay within the limit
    /// (history counts as room: it is trimmed at the next tick).
    pub(crate) fn fits(&self, bytes: usize) -> bool {
        self.pressing().saturating_add(bytes as u64) <= self.limit()
    }

    /// Past the share of the limit at which new upgrades are refused
    /// (history counts as room, as for `fits`).
    pub(crate) fn refuses_upgrades(&self) -> bool {
        self.pressing() >= percent(self.limit(), REFUSE_UPGRADES_PERCENT)
    }

    /// Bytes this shard should free, from its connections, so that what
    /// connections hold (history aside) falls back to `UNBLOCK_TARGET_PERCENT`
    /// and upgrades are admitted again; in proportion to its share.
    pub(crate) fn unblock_share(&self) -> u64 {
        let pressing = self.pressing();
        let excess = pressing.saturating_sub(percent(self.limit(), UNBLOCK_TARGET_PERCENT));
        if pressing == 0 {
            return 0;
        }
        let mine = self.held(MemKind::PartialInput) + self.held(MemKind::Outgoing);
        (excess as u128 * mine as u128 / pressing as u128) as u64
    }

    /// At or past the limit: the shard must shed (at exactly the limit no
    /// new buffer fits, so waiting for "past" would refuse everyone).
    pub(crate) fn over_limit(&self) -> bool {
        self.total() >= self.limit()
    }

    /// Bytes this shard should free to bring the total back to the shed
    /// target, in proportion to its share of the total (every shard sheds its
    /// part, so together they free the excess once, not once per shard).
    pub(crate) fn shed_share(&self) -> u64 {
        let total = self.total();
        let excess = total.saturating_sub(percent(self.limit(), SHED_TARGET_PERCENT));
        if total == 0 {
            return 0;
        }
        (excess as u128 * self.held_total() as u128 / total as u128) as u64
    }
}

fn percent(of: u64, pct: u64) -> u64 {
    (of as u128 * pct as u128 / 100) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_report_in_batches_and_the_total_counts_unreported_change() {
        let budget = MemoryBudget::new(1 << 30);
        let a = Meter::new(Arc::clone(&budget));
        let b = Meter::new(Arc::clone(&budget));
        a.charge(MemKind::PartialInput, 1000);
        assert_eq!(budget.total(), 0, "small changes stay local");
        assert_eq!(a.total(), 1000, "but the shard sees its own");
        b.charge(MemKind::Outgoing, BATCH_BYTES as usize);
        assert_eq!(
            budget.bytes(MemKind::Outgoing),
            BATCH_BYTES as u64,
            "a batch is reported at once"
        );
        a.flush();
        assert_eq!(budget.total(), 1000 + BATCH_BYTES as u64);
        a.release(MemKind::PartialInput, 1000);
        b.release(MemKind::Outgoing, BATCH_BYTES as usize);
        a.flush();
        assert_eq!(budget.total(), 0);
        assert_eq!(a.held_total() + b.held_total(), 0);
    }

    #[test]
    fn a_large_frame_is_charged_once_however_many_hold_it() {
        let budget = MemoryBudget::new(1 << 30);
        let big = frame(vec![0u8; 10_000], &budget);
        let copies: Vec<Bytes> = (0..100).map(|_| big.clone()).collect();
        assert_eq!(budget.bytes(MemKind::Outgoing), 10_000);
        drop(big);
        drop(copies);
        assert_eq!(budget.bytes(MemKind::Outgoing), 0, "released with the last copy");
        let small = frame(vec![0u8; 100], &budget);
        assert!(
            !is_self_charged(&small) && budget.total() == 0,
            "small frames are charged by their queue"
        );
    }

    #[test]
    fn thresholds_and_shed_share() {
        let budget = MemoryBudget::new(1000);
        let a = Meter::new(Arc::clone(&budget));
        let b = Meter::new(Arc::clone(&budget));
        a.charge(MemKind::Outgoing, 800);
        assert!(a.fits(200) && !a.fits(201));
        assert!(!a.refuses_upgrades() && !a.over_limit());
        a.charge(MemKind::PartialInput, 100);
        assert!(a.refuses_upgrades() && !a.over_limit());
        let c = Meter::new(MemoryBudget::new(1000));
        c.charge(MemKind::History, 950);
        assert!(c.fits(500) && !c.refuses_upgrades(), "history is room for connections");
        a.flush();
        b.charge(MemKind::Outgoing, 300);
        b.flush();
        // 1200 held, target 950: 250 to free, 3/4 of it by `a`.
        assert!(a.over_limit() && b.over_limit());
        assert_eq!(a.shed_share(), 187);
        assert_eq!(b.shed_share(), 62);
    }
}
