//! A coarse timer wheel: every connection deadline (handshake, ping, idle,
//! close) of a shard, at `TICK` resolution.
//!
//! Entries are slab indexes. A connection has one live entry (its `timer_at`
//! tick); entries whose tick no longer matches are stale and skipped, so
//! nothing is ever searched for or removed. Deadlines that move later (a read
//! postpones the idle timeout) are not rescheduled: when the old entry fires
//! the connection computes its real deadline and is scheduled again. Work per
//! tick is proportional to what expires, not to the number of connections.

/// Slots in the wheel: deadlines further away are parked in the last slot
/// and rescheduled when it fires (128 s horizon).
const SLOTS: u32 = 512;

pub struct TimerWheel {
    slots: Vec<Vec<u32>>,
    /// The last tick processed.
    current: u32,
}

impl TimerWheel {
    pub fn new(now: u32) -> Self {
        TimerWheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            current: now,
        }
    }

    /// Schedules `key` at tick `at` (clamped to the wheel's range); returns
    /// the tick actually used, which the caller records as the live entry.
    pub fn schedule(&mut self, at: u32, key: u32) -> u32 {
        let at = at.clamp(self.current + 1, self.current + SLOTS - 1);
        self.slots[(at % SLOTS) as usize].push(key);
        at
    }

    /// Moves to `now`, appending `(tick, key)` of every entry that came due.
    pub fn advance(&mut self, now: u32, due: &mut Vec<(u32, u32)>) {
        while self.current < now {
            self.current += 1;
            let tick = self.current;
            due.extend(self.slots[(tick % SLOTS) as usize].drain(..).map(|key| (tick, key)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fire_at_their_tick_and_far_ones_are_clamped() {
        let mut wheel = TimerWheel::new(10);
        assert_eq!(wheel.schedule(12, 1), 12);
        assert_eq!(wheel.schedule(5, 2), 11, "past deadlines fire next tick");
        let far = wheel.schedule(10_000, 3);
        assert_eq!(far, 10 + SLOTS - 1);
        let mut due = Vec::new();
        wheel.advance(11, &mut due);
        assert_eq!(due, vec![(11, 2)]);
        due.clear();
        wheel.advance(far, &mut due);
        assert_eq!(due, vec![(12, 1), (far, 3)]);
    }
}
