//! Memory shedding: when the process is over `--memory-limit`, each shard
//! closes its own largest holders until it has freed its share of the excess
//! (`Meter::shed_share`), largest first, so a few hoarders go before many
//! small, well-behaved connections. Backlogs get 1008 "slow consumer",
//! partial input 1013 "server short of memory"; each close is counted by
//! reason. Runs once per tick and only over the limit: the walk over the
//! slab costs nothing in normal operation.

use slab::Slab;

use crate::conn::Conn;

/// Holders smaller than this are never shed: closing them frees too little
/// to matter and would punish connections that merely have a message in
/// flight.
pub(crate) const MIN_SHED_BYTES: usize = 4096;

/// One connection to close, and what closing it frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Victim {
    pub key: usize,
    pub bytes: usize,
    /// Its backlog (else its partial input).
    pub backlog: bool,
}

/// The largest holders whose bytes add up to at least `share` (only those
/// holding partial input when `partial_only`).
pub fn pick(conns: &Slab<Conn>, share: u64, partial_only: bool) -> Vec<Victim> {
    let mut all: Vec<Victim> = conns
        .iter()
        .filter_map(|(key, c)| c.sheddable().map(|(bytes, backlog)| Victim { key, bytes, backlog }))
        .filter(|v| v.bytes >= MIN_SHED_BYTES && !(partial_only && v.backlog))
        .collect();
    choose(&mut all, share);
    all
}

/// Keeps the largest entries of `all` that together reach `share`.
fn choose(all: &mut Vec<Victim>, share: u64) {
    all.sort_unstable_by_key(|v| std::cmp::Reverse(v.bytes));
    let mut freed = 0u64;
    let mut keep = 0;
    for v in all.iter() {
        if freed >= share {
            break;
        }
        freed += v.bytes as u64;
        keep += 1;
    }
    all.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(key: usize, bytes: usize) -> Victim {
        Victim {
            key,
            bytes,
            backlog: true,
        }
    }

    #[test]
    fn the_largest_go_first_and_only_as_many_as_needed() {
        let mut all = vec![v(1, 10_000), v(2, 900_000), v(3, 50_000), v(4, 600_000)];
        choose(&mut all, 1_000_000);
        assert_eq!(all.iter().map(|v| v.key).collect::<Vec<_>>(), [2, 4]);
        let mut none = vec![v(1, 10_000)];
        choose(&mut none, 0);
        assert!(none.is_empty(), "nothing to free, nobody closed");
    }
}
