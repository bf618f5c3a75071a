//! Each user's connections, oldest first, with O(1) amortized work per
//! connect and per disconnect however many connections one user holds (a
//! reconnect storm of one user with thousands of sockets stays linear).
//!
//! Used twice: the hub's local connections of each user (keys into the
//! shard's slab) and the owner's list of each user's connections on every
//! shard (for `--max-connections-per-user`, which closes the oldest).
//!
//! How: a map from connection to its sequence number says who is live; a
//! queue of (sequence, connection) keeps the opening order. A disconnect
//! only leaves the map (its queue entry turns stale); stale entries are
//! skipped when the oldest is taken and swept out once they outnumber the
//! live ones, so each entry is looked at a bounded number of times. The
//! work is counted ([`Users::work`]) so a test can show it is linear
//! without timing anything.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

/// Stale queue entries tolerated beyond the live ones before a sweep.
const SLACK: usize = 32;

/// One user's connections in the order they opened.
#[derive(Debug)]
pub(crate) struct ConnSet<K> {
    /// Opening order; entries whose sequence is no longer `live` are stale.
    /// Connections by when they began (upgrade time), oldest first, with
    /// stale entries left by removals (skipped, swept when too many).
    order: VecDeque<(u64, Instant, K)>,
    /// Live connections and their sequence number.
    live: HashMap<K, u64>,
    next: u64,
}

impl<K: Copy + Eq + Hash> ConnSet<K> {
    fn new() -> Self {
        ConnSet {
            order: VecDeque::new(),
            live: HashMap::new(),
            next: 0,
        }
    }

    /// Adds `conn` as the newest (an existing entry moves to newest).
    /// Adds `conn`, which began `at`. Announcements from other shards may
    /// arrive a little out of order, so it goes after the last entry that
    /// began no later: "oldest" means oldest by upgrade time, not by arrival
    /// (a few steps from the back at most, as arrivals are nearly in order).
    fn insert(&mut self, conn: K, at: Instant, work: &mut u64) {
        *work += 1;
        let seq = self.next;
        self.next += 1;
        self.live.insert(conn, seq);
        let mut index = self.order.len();
        while index > 0 && self.order[index - 1].1 > at {
            index -= 1;
            *work += 1;
        }
        self.order.insert(index, (seq, at, conn));
        self.sweep(work);
    }

    /// Removes `conn`; false when it was not here.
    fn remove(&mut self, conn: &K, work: &mut u64) -> bool {
        *work += 1;
        let removed = self.live.remove(conn).is_some();
        self.sweep(work);
        removed
    }

    /// Removes and returns the oldest live connection.
    fn pop_oldest(&mut self, work: &mut u64) -> Option<K> {
        while let Some((seq, _, conn)) = self.order.pop_front() {
            *work += 1;
            if self.live.get(&conn) == Some(&seq) {
                self.live.remove(&conn);
                return Some(conn);
            }
        }
        None
    }

    /// Drops stale entries once they outnumber the live ones (plus slack):
    /// a sweep looks at `order.len()` entries, at most twice the removals
    /// since the last one, so it is O(1) amortized per removal.
    fn sweep(&mut self, work: &mut u64) {
        if self.order.len() <= 2 * self.live.len() + SLACK {
            return;
        }
        *work += self.order.len() as u64;
        let live = &self.live;
        self.order.retain(|(seq, _, conn)| live.get(conn) == Some(seq));
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The live connections, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &K> + '_ {
        self.order
            .iter()
            .filter(|(seq, _, conn)| self.live.get(conn) == Some(seq))
            .map(|(_, _, conn)| conn)
    }
}

/// The connections of every user, by user name.
#[derive(Debug)]
pub(crate) struct Users<K> {
    by_user: HashMap<Arc<str>, ConnSet<K>>,
    /// Entries inserted, removed and looked at, since the start.
    work: u64,
}

impl<K: Copy + Eq + Hash> Default for Users<K> {
    fn default() -> Self {
        Users {
            by_user: HashMap::new(),
            work: 0,
        }
    }
}

impl<K: Copy + Eq + Hash> Users<K> {
    /// `conn` of `user` opened; returns how many `user` has now.
    pub fn add(&mut self, user: &Arc<str>, conn: K) -> usize {
        self.add_at(user, conn, Instant::now())
    }

    /// Adds a connection of `user` that began `at`; returns how many it has.
    pub fn add_at(&mut self, user: &Arc<str>, conn: K, at: Instant) -> usize {
        let set = self.by_user.entry(Arc::clone(user)).or_insert_with(ConnSet::new);
        set.insert(conn, at, &mut self.work);
        set.len()
    }

    /// `conn` of `user` closed; false when it was not known.
    pub fn remove(&mut self, user: &str, conn: &K) -> bool {
        let Some(set) = self.by_user.get_mut(user) else {
            return false;
        };
        let removed = set.remove(conn, &mut self.work);
        if set.is_empty() {
            self.by_user.remove(user);
        }
        removed
    }

    /// Removes and returns `user`'s oldest connection.
    pub fn pop_oldest(&mut self, user: &str) -> Option<K> {
        let set = self.by_user.get_mut(user)?;
        let oldest = set.pop_oldest(&mut self.work);
        if set.is_empty() {
            self.by_user.remove(user);
        }
        oldest
    }

    /// `user`'s connections, if any.
    pub fn get(&self, user: &str) -> Option<&ConnSet<K>> {
        self.by_user.get(user)
    }

    /// Users with at least one connection.
    pub fn len(&self) -> usize {
        self.by_user.len()
    }

    /// Entries inserted, removed and looked at so far: linear in the
    /// connects and disconnects, whatever their order.
    #[cfg(test)]
    pub fn work(&self) -> u64 {
        self.work
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: u64 = 5_000;

    fn storm(order: impl Iterator<Item = u64>) -> Users<u64> {
        let user: Arc<str> = "storm".into();
        let mut users = Users::default();
        for conn in 0..N {
            assert_eq!(users.add(&user, conn), conn as usize + 1);
        }
        for conn in order {
            assert!(users.remove(&user, &conn));
        }
        assert_eq!(users.len(), 0, "the user is forgotten with the last connection");
        users
    }

    /// 5,000 connections of one user, closed newest first, oldest first
    /// and interleaved: the work is linear (a `retain` per disconnect would
    /// look at ~12.5 million entries).
    #[test]
    fn a_storm_of_one_user_is_linear_in_any_order() {
        let orders: [Box<dyn Iterator<Item = u64>>; 3] = [
            Box::new((0..N).rev()),
            Box::new(0..N),
            Box::new((0..N).step_by(2).chain((1..N).step_by(2))),
        ];
        for order in orders {
            let work = storm(order).work();
            assert!(
                work < 20 * N,
                "{work} entries looked at for {N} connects and disconnects"
            );
        }
    }

    #[test]
    fn the_oldest_live_connection_goes_first_and_stale_entries_are_skipped() {
        let user: Arc<str> = "u".into();
        let mut users = Users::default();
        for conn in 0..5u32 {
            users.add(&user, conn);
        }
        users.remove(&user, &0);
        users.remove(&user, &2);
        users.add(&user, 1); // again: now the newest
        assert_eq!(
            users.get("u").unwrap().iter().copied().collect::<Vec<_>>(),
            vec![3, 4, 1]
        );
        assert_eq!(users.pop_oldest("u"), Some(3));
        assert_eq!(users.pop_oldest("u"), Some(4));
        assert!(!users.remove("u", &4), "popped already");
        assert_eq!(users.pop_oldest("u"), Some(1));
        assert_eq!((users.pop_oldest("u"), users.len()), (None, 0));
    }

    /// Kicking the oldest over a cap of 10 while 5,000 connect and then
    /// all disconnect: still linear.
    #[test]
    fn a_capped_storm_is_linear_too() {
        let user: Arc<str> = "u".into();
        let mut users = Users::default();
        for conn in 0..N {
            if users.add(&user, conn) > 10 {
                users.pop_oldest("u");
            }
        }
        for conn in 0..N {
            users.remove("u", &conn);
        }
        assert_eq!(users.len(), 0);
        assert!(users.work() < 20 * N, "{}", users.work());
    }

    #[test]
    fn the_oldest_is_the_first_to_begin_whatever_the_order_of_arrival() {
        let mut users: Users<u32> = Users::default();
        let user: Arc<str> = "u".into();
        let start = Instant::now();
        let at = |ms| start + std::time::Duration::from_millis(ms);
        // Announced 2, 3, 1 (1's shard was slow to tell the owner).
        users.add_at(&user, 2, at(20));
        users.add_at(&user, 3, at(30));
        users.add_at(&user, 1, at(10));
        assert_eq!(users.pop_oldest("u"), Some(1));
        assert_eq!(users.pop_oldest("u"), Some(2));
        assert_eq!(users.pop_oldest("u"), Some(3));
    }
}
