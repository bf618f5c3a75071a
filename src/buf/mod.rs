//! Memory that connections lease instead of own.

pub mod pool;

pub use pool::{BufPool, Lease, BUF_SIZE};
