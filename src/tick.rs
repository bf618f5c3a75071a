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

/// `d` in ticks, rounded up, at least one.
pub fn ticks(d: Duration) -> u32 {
    d.as_millis().div_ceil(TICK.as_millis()).max(1) as u32
}
