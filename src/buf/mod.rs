//! Memory that connections lease instead of own, and the budget that bounds
//! everything the server holds for clients.

pub mod budget;
pub mod pool;

pub use budget::{MemKind, MemoryBudget, Meter};
pub use pool::{BufPool, Lease, BUF_SIZE};
