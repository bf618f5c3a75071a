//! The bus: the one vocabulary every thread speaks, at the bottom of the
//! crate's upper half. Shards, the admin API and the Redis bridge reach each
//! other only through what is here:
//!
//! - [`inbox`]: a shard's two-lane inbox (control never dropped, data bounded)
//!   and the handle others send through;
//! - [`msg`]: the hub's messages between shards (and from the admin thread and
//!   the bridge);
//! - [`history`]: the history values those messages carry;
//! - [`cluster`]: what shards ask of the Redis bridge and the link they ask
//!   through;
//! - [`proxy`]: what shards ask of the application hooks' workers and the
//!   answers they get back;
//! - [`peers`]: every shard's handle, with the one place that counts what
//!   could not be delivered;
//! - [`owner_of`]: which shard owns a channel, room or user.
//!
//! Nothing here imports the hub, the shards or the bridge; they import this.

pub mod cluster;
pub mod history;
pub mod inbox;
pub mod msg;
pub(crate) mod peers;
pub mod proxy;
pub mod wanted;

use std::hash::{Hash, Hasher};

/// A stable hash of `name` onto `shards` (same answer on every shard).
pub fn owner_of(name: &str, shards: usize) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    name.hash(&mut hasher);
    (hasher.finish() % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_spread() {
        assert_eq!(owner_of("lobby", 4), owner_of("lobby", 4));
        let owners: std::collections::HashSet<usize> = (0..64).map(|i| owner_of(&format!("room{i}"), 4)).collect();
        assert_eq!(owners.len(), 4);
        assert_eq!(owner_of("anything", 1), 0);
    }
}
