//! Which socket to give up when the process holds all the sockets it may:
//! the oldest one still in its handshake. A slowloris attacker's idle
//! sockets are the oldest by construction (a real client finishes its
//! handshake in a round trip or two), so newcomers push them out instead of
//! being refused behind them.

use std::collections::VecDeque;

use slab::Slab;

use crate::conn::{Conn, Phase};

/// Sockets in their handshake, oldest first, by (slab key, generation).
/// Entries whose connection upgraded or left are stale and skipped.
#[derive(Default)]
pub struct Handshakes {
    queue: VecDeque<(usize, u32)>,
}

impl Handshakes {
    pub fn push(&mut self, key: usize, generation: u32, conns: &Slab<Conn>) {
        self.queue.push_back((key, generation));
        // Stale entries are dropped once they outnumber the live sockets,
        // so the queue stays within twice the slab.
        if self.queue.len() > 2 * conns.len() + 64 {
            self.queue.retain(|&(k, g)| is_handshaking(conns, k, g));
        }
    }

    /// The oldest socket still in its handshake, taken off the queue.
    pub fn oldest(&mut self, conns: &Slab<Conn>) -> Option<usize> {
        while let Some((key, generation)) = self.queue.pop_front() {
            if is_handshaking(conns, key, generation) {
                return Some(key);
            }
        }
        None
    }
}

fn is_handshaking(conns: &Slab<Conn>, key: usize, generation: u32) -> bool {
    conns
        .get(key)
        .is_some_and(|c| c.generation == generation && c.phase() == Phase::Handshake)
}
