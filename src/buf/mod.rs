//! Memory that connections lease instead of own, and the budget that bounds
//! everything the server holds for clients.

pub mod budget;
pub mod pool;

pub use budget::Meter;
pub use budget::{MemKind, MemoryBudget};
pub(crate) use pool::BUF_SIZE;
pub use pool::{BufPool, Lease};
