//! A shard's pool of 64 KiB buffers.
//!
//! The pool is one allocation made at start (`--buffer-pool N` buffers). Its
//! pages cost no resident memory until a buffer is first used. A connection
//! leases a buffer only while it holds a partial handshake, a partial frame or
//! message; the `Lease` returns the buffer on `Drop`. An idle connection owns
//! none. When every buffer is leased, `lease` returns `None` and the shard
//! applies backpressure (it stops reading sockets that would need one); the
//! pool never grows and never panics.
//!
//! Single-threaded by construction (`Rc`): a pool belongs to one shard.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::rc::Rc;

/// Size of one buffer: room for a whole 64 KiB read plus nothing else.
pub(crate) const BUF_SIZE: usize = 64 * 1024;

/// A cheap handle to the shard's pool.
#[derive(Clone)]
pub struct BufPool {
    inner: Rc<Inner>,
}

struct Inner {
    /// `capacity * BUF_SIZE` bytes; buffer `i` is `[i*BUF_SIZE, (i+1)*BUF_SIZE)`.
    region: Box<[UnsafeCell<u8>]>,
    /// Indexes of buffers not leased. Each index is in here or in exactly one
    /// `Lease`, never both: that is what makes the `unsafe` below sound.
    free: RefCell<Vec<u32>>,
    capacity: usize,
    /// Leases refused because the pool was empty, for metrics.
    refused: Cell<u64>,
}

/// One leased buffer; returns itself to the pool when dropped.
pub struct Lease {
    pool: Rc<Inner>,
    index: u32,
}

impl BufPool {
    /// Reserves `capacity` buffers (address space; memory is touched on use).
    pub fn new(capacity: usize) -> Self {
        // vec! of zeros allocates zeroed pages without writing them, so the
        // pool costs address space, not resident memory, until used.
        let bytes: Box<[u8]> = vec![0u8; capacity * BUF_SIZE].into_boxed_slice();
        // SAFETY: UnsafeCell<u8> is repr(transparent) over u8; the cast keeps
        // the length, and the box is rebuilt from the pointer it gave up.
        let region = unsafe { Box::from_raw(Box::into_raw(bytes) as *mut [UnsafeCell<u8>]) };
        let free = (0..capacity as u32).rev().collect();
        BufPool {
            inner: Rc::new(Inner {
                region,
                free: RefCell::new(free),
                capacity,
                refused: Cell::new(0),
            }),
        }
    }

    /// A free buffer, or `None` when all are leased.
    pub fn lease(&self) -> Option<Lease> {
        match self.inner.free.borrow_mut().pop() {
            Some(index) => Some(Lease {
                pool: Rc::clone(&self.inner),
                index,
            }),
            None => {
                self.inner.refused.set(self.inner.refused.get() + 1);
                None
            }
        }
    }

    pub fn available(&self) -> usize {
        self.inner.free.borrow().len()
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    pub fn leased(&self) -> usize {
        self.capacity() - self.available()
    }

    /// How many leases were refused since start.
    pub fn refused(&self) -> u64 {
        self.inner.refused.get()
    }
}

impl Lease {
    pub fn bytes(&self) -> &[u8] {
        let start = self.index as usize * BUF_SIZE;
        let cells = &self.pool.region[start..start + BUF_SIZE];
        // SAFETY: this lease is the only holder of `index` (see `Inner::free`),
        // so no other reference to these bytes exists; UnsafeCell<u8> has the
        // layout of u8.
        unsafe { std::slice::from_raw_parts(cells.as_ptr() as *const u8, BUF_SIZE) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let start = self.index as usize * BUF_SIZE;
        let cells = &self.pool.region[start..start + BUF_SIZE];
        // SAFETY: as in `bytes`, and `&mut self` makes this the only live view.
        unsafe { std::slice::from_raw_parts_mut(UnsafeCell::raw_get(cells.as_ptr()), BUF_SIZE) }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.free.borrow_mut().push(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_and_return_on_drop() {
        let pool = BufPool::new(2);
        let mut a = pool.lease().unwrap();
        let mut b = pool.lease().unwrap();
        assert!(pool.lease().is_none(), "exhausted pool refuses");
        assert_eq!(pool.refused(), 1);
        a.bytes_mut()[0] = 1;
        b.bytes_mut()[0] = 2;
        assert_eq!((a.bytes()[0], b.bytes()[0]), (1, 2));
        assert_eq!(a.bytes().len(), BUF_SIZE);
        drop(a);
        assert_eq!(pool.available(), 1);
        let c = pool.lease().unwrap();
        assert_eq!(pool.leased(), 2);
        drop((b, c));
        assert_eq!(pool.available(), 2);
    }
}
