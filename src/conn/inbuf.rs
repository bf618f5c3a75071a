//! A connection's input buffer, held only while it has partial input.
//!
//! Small partial input (a request head, a frame header, a short frame: up to
//! `SMALL_INPUT_BYTES`) is copied into a heap buffer of its own size, so a
//! socket holding a few bytes never pins one of the shard's 64 KiB pool
//! buffers. Larger partial input leases a pool buffer, or takes a heap buffer
//! when the pool is empty: a short pool slows nobody down. A frame or
//! fragmented message larger than a pool buffer (up to `--max-message-size`)
//! moves to a heap buffer sized for it; the lease goes back at once. Every
//! byte of it is charged to the shard's memory meter while held, and the
//! buffer is released when the connection has no partial input left.
//!
//! `since` is the tick the partial input in it began: the message deadline
//! (`--message-timeout-secs`) runs from there.

use crate::buf::{BufPool, Lease, MemKind, Meter, BUF_SIZE};

/// Partial input up to this size is kept in a heap buffer of its own size.
pub(crate) const SMALL_INPUT_BYTES: usize = 4096;

enum Storage {
    Pooled(Lease),
    Heap(Box<[u8]>),
}

/// Bytes `[0..len)` are meaningful: the decoder's assembled message, then
/// undecoded input.
pub(crate) struct InBuf {
    storage: Storage,
    len: u32,
    /// Tick at which the partial input held here began.
    pub since: u32,
    meter: Meter,
}

/// Where an input buffer may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Heap only (request heads: at most 8 KiB, never a pool buffer).
    Heap,
    /// A pool buffer for input over `SMALL_INPUT_BYTES`, else the heap.
    PoolOrHeap,
}

impl InBuf {
    /// A buffer holding `parts` (concatenated) with room for `need` bytes, or
    /// `None` when the memory budget cannot take it.
    pub fn holding(parts: [&[u8]; 2], need: usize, source: Source, pool: &BufPool, meter: &Meter) -> Option<InBuf> {
        let len = parts[0].len() + parts[1].len();
        let want = need.max(len);
        let lease = match source {
            Source::PoolOrHeap if want > SMALL_INPUT_BYTES && want <= BUF_SIZE => pool.lease(),
            _ => None,
        };
        let size = if lease.is_some() { BUF_SIZE } else { want };
        if !meter.fits(size) {
            return None;
        }
        let storage = match lease {
            Some(lease) => Storage::Pooled(lease),
            None => Storage::Heap(vec![0u8; want].into_boxed_slice()),
        };
        meter.charge(MemKind::PartialInput, size);
        let mut buf = InBuf {
            storage,
            len: len as u32,
            since: 0,
            meter: meter.clone(),
        };
        let bytes = buf.bytes_mut();
        bytes[..parts[0].len()].copy_from_slice(parts[0]);
        bytes[parts[0].len()..len].copy_from_slice(parts[1]);
        Some(buf)
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        self.len = len as u32;
    }

    /// Bytes this buffer holds of memory (what it is charged).
    pub fn capacity(&self) -> usize {
        match &self.storage {
            Storage::Pooled(_) => BUF_SIZE,
            Storage::Heap(b) => b.len(),
        }
    }

    #[cfg(test)]
    pub fn is_heap(&self) -> bool {
        matches!(self.storage, Storage::Heap(_))
    }

    /// The whole buffer, meaningful bytes and free space.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.storage {
            Storage::Pooled(lease) => lease.bytes_mut(),
            Storage::Heap(b) => b,
        }
    }

    /// Makes room for `need` bytes in all. Grows geometrically up to `limit`
    /// so a message arriving in many frames is not copied once per frame.
    /// Returns false, keeping the buffer as it was, when the memory budget
    /// cannot take the larger buffer.
    pub(crate) fn reserve(&mut self, need: usize, limit: usize) -> bool {
        let cap = self.capacity();
        if need <= cap {
            return true;
        }
        let new_cap = need.max(cap.saturating_mul(2).min(limit));
        if !self.meter.fits(new_cap - cap) {
            return false;
        }
        let mut bigger = vec![0u8; new_cap].into_boxed_slice();
        let len = self.len();
        bigger[..len].copy_from_slice(&self.bytes_mut()[..len]);
        self.meter.charge(MemKind::PartialInput, new_cap);
        self.meter.release(MemKind::PartialInput, cap);
        self.storage = Storage::Heap(bigger);
        true
    }
}

impl Drop for InBuf {
    fn drop(&mut self) {
        self.meter.release(MemKind::PartialInput, self.capacity());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::MemoryBudget;

    #[test]
    fn small_input_stays_off_the_pool_and_large_input_moves_to_the_heap() {
        let pool = BufPool::new(1);
        let meter = Meter::unlimited();
        let small = InBuf::holding([b"ab", b"cd"], 10, Source::PoolOrHeap, &pool, &meter).unwrap();
        assert_eq!(
            (pool.available(), small.capacity()),
            (1, 10),
            "a few bytes take no pool buffer"
        );
        let mut buf = InBuf::holding([b"ab", b"cd"], 10_000, Source::PoolOrHeap, &pool, &meter).unwrap();
        assert_eq!(pool.available(), 0);
        let len = buf.len();
        assert_eq!(&buf.bytes_mut()[..len], b"abcd");
        let spare = InBuf::holding([b"", b"x"], 10_000, Source::PoolOrHeap, &pool, &meter).unwrap();
        assert!(spare.is_heap(), "an empty pool falls back to the heap");
        assert_eq!(meter.held(MemKind::PartialInput), (10 + BUF_SIZE + 10_000) as u64);
        assert!(buf.reserve(BUF_SIZE + 1, 1 << 20));
        assert!(buf.is_heap());
        assert_eq!(pool.available(), 1, "the lease went back when the data moved");
        assert_eq!(&buf.bytes_mut()[..4], b"abcd");
        assert_eq!(buf.capacity(), 2 * BUF_SIZE);
        drop((small, buf, spare));
        assert_eq!(meter.held(MemKind::PartialInput), 0, "everything is released on drop");
    }

    #[test]
    fn the_budget_refuses_buffers_it_cannot_take() {
        let pool = BufPool::new(4);
        let meter = Meter::new(MemoryBudget::new(BUF_SIZE as u64 + 2000));
        let heads = InBuf::holding([b"GET", b""], 1024, Source::Heap, &pool, &meter).unwrap();
        assert_eq!(pool.available(), 4, "request heads never lease");
        let mut frame = InBuf::holding([b"", b"x"], 5000, Source::PoolOrHeap, &pool, &meter).unwrap();
        assert!(InBuf::holding([b"", b"x"], 5000, Source::PoolOrHeap, &pool, &meter).is_none());
        assert!(
            !frame.reserve(BUF_SIZE + 1, 1 << 20),
            "growth past the budget is refused"
        );
        assert_eq!(frame.capacity(), BUF_SIZE, "and the buffer stays as it was");
        drop((heads, frame));
        assert_eq!(meter.total(), 0);
    }
}
