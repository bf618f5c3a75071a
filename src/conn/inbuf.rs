//! A connection's input buffer, held only while it has partial input.
//!
//! Usually a 64 KiB lease from the shard pool. A frame or fragmented message
//! larger than that (up to `--max-message-size`) moves to a heap buffer sized
//! for it; the lease goes back at once. Either way the buffer is released when
//! the connection has no partial input left.

use crate::buf::{BufPool, Lease, BUF_SIZE};

enum Storage {
    Pooled(Lease),
    Heap(Box<[u8]>),
}

/// Bytes `[0..len)` are meaningful: the decoder's assembled message, then
/// undecoded input.
pub struct InBuf {
    storage: Storage,
    len: u32,
}

impl InBuf {
    /// A buffer holding `parts` (concatenated) with room for `need` bytes, or
    /// `None` when that needs a lease and the pool has none.
    pub fn holding(parts: [&[u8]; 2], need: usize, pool: &BufPool) -> Option<InBuf> {
        let len = parts[0].len() + parts[1].len();
        let want = need.max(len);
        let storage = if want <= BUF_SIZE {
            Storage::Pooled(pool.lease()?)
        } else {
            Storage::Heap(vec![0u8; want].into_boxed_slice())
        };
        let mut buf = InBuf {
            storage,
            len: len as u32,
        };
        let bytes = buf.bytes_mut();
        bytes[..parts[0].len()].copy_from_slice(parts[0]);
        bytes[parts[0].len()..len].copy_from_slice(parts[1]);
        Some(buf)
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        self.len = len as u32;
    }

    pub fn capacity(&self) -> usize {
        match &self.storage {
            Storage::Pooled(_) => BUF_SIZE,
            Storage::Heap(b) => b.len(),
        }
    }

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
    pub fn reserve(&mut self, need: usize, limit: usize) {
        let cap = self.capacity();
        if need <= cap {
            return;
        }
        let new_cap = need.max(cap.saturating_mul(2).min(limit));
        let mut bigger = vec![0u8; new_cap].into_boxed_slice();
        let len = self.len();
        bigger[..len].copy_from_slice(&self.bytes_mut()[..len]);
        self.storage = Storage::Heap(bigger);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_input_leases_and_large_input_moves_to_the_heap() {
        let pool = BufPool::new(1);
        let mut buf = InBuf::holding([b"ab", b"cd"], 10, &pool).unwrap();
        assert_eq!(pool.available(), 0);
        let len = buf.len();
        assert_eq!(&buf.bytes_mut()[..len], b"abcd");
        assert!(InBuf::holding([b"", b"x"], 1, &pool).is_none(), "no lease left");
        buf.reserve(BUF_SIZE + 1, 1 << 20);
        assert!(buf.is_heap());
        assert_eq!(pool.available(), 1, "the lease went back when the data moved");
        assert_eq!(&buf.bytes_mut()[..4], b"abcd");
        assert_eq!(buf.capacity(), 2 * BUF_SIZE);
    }
}
