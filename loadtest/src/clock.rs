//! Owns the one clock every figure is measured with: `CLOCK_MONOTONIC` in nanoseconds.
//!
//! The same clock is read by every process on the box, so a timestamp written into a message by a
//! publisher in one worker process can be compared with the receive time in another. Never use the
//! wall clock for latency: it jumps.

/// Nanoseconds since an unspecified, box-wide, monotonic epoch (the boot, on Linux).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0, "CLOCK_MONOTONIC is always available");
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Converts seconds (as given on the command line) to nanoseconds.
pub fn secs_to_ns(secs: f64) -> u64 {
    (secs.max(0.0) * 1e9) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_moves() {
        let a = now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = now_ns();
        assert!(b > a + 1_000_000, "2 ms sleep must show as at least 1 ms: {a} -> {b}");
    }

    #[test]
    fn unit_conversions() {
        assert_eq!(secs_to_ns(1.5), 1_500_000_000);
        assert_eq!(secs_to_ns(-1.0), 0);
    }
}
