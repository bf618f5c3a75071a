//! The server's clock: every deadline (handshake, ping, idle, close, message,
//! history age, rate windows) is counted in ticks of [`TICK`]. One small module
//! at the bottom so the hub, the cluster bridge and the shards agree on it
//! without importing each other.

use std::time::Duration;

/// Timer resolution.
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// Ticks per second, for converting configured seconds.
pub const TICKS_PER_SEC: u32 = 4;
/// How long a closing connection may take to finish: the client's Close
/// answer, our final flush, the client's FIN.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// `secs` in ticks, saturating.
pub(crate) fn secs_to_ticks(secs: u64) -> u32 {
    secs.saturating_mul(TICKS_PER_SEC as u64).min(u32::MAX as u64) as u32
}

/// A connection timeout of `d` in ticks: rounded up, plus one. A deadline
/// counts from the tick now under way, which began up to a tick ago, so
/// without the extra one a 1 s timeout could fire after 0.75 s; with it, a
/// timeout is never early and at most one tick late.
pub fn ticks(d: Duration) -> u32 {
    (d.as_millis().div_ceil(TICK.as_millis()) as u32).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_counted_from_a_tick_already_under_way_is_never_early() {
        for millis in [1u64, 249, 250, 251, 1000, 30_000] {
            let n = ticks(Duration::from_millis(millis)) as u64;
            // The worst case: the connection arrived just before the next
            // tick, so only the ticks after it count in full.
            let shortest = (n - 1) * TICK.as_millis() as u64;
            assert!(shortest >= millis, "{millis} ms as {n} ticks fires after {shortest} ms");
            assert!(
                shortest < millis + TICK.as_millis() as u64,
                "{millis} ms: more than a tick late"
            );
        }
    }
}
