//! The open-file limit: raise the soft limit to the hard one at start, and
//! derive how many connections fit.

use std::io;

/// File descriptors kept back for everything that is not a client: listeners,
/// epoll and waker fds per shard, the admin listener, logs, Redis later.
pub const RESERVED_FDS: u64 = 64;
/// Per shard: listener, epoll, waker, plus sockets held open to send 503s.
const FDS_PER_SHARD: u64 = 3 + crate::shard::REFUSAL_HEADROOM as u64;

/// The soft and hard RLIMIT_NOFILE after trying to raise soft to hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard limit.
pub fn raise_nofile() -> io::Result<FileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Ok(FileLimit {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Kernel plus user-space memory of one idle connection, as `tuning/check.sh`
/// counts it: ~3.5 KiB of socket, file and epoll structures, ~100 B in
/// hubbub, and a margin.
pub const BYTES_PER_IDLE_CONNECTION: u64 = 4608;

/// Connections 80% of the box's memory holds (`None` without /proc/meminfo).
pub fn connections_by_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024 * 8 / 10 / BYTES_PER_IDLE_CONNECTION)
}

/// A kernel setting from /proc/sys, e.g. `net/core/somaxconn`.
pub fn sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Connections the file limit allows with `shards` shards.
pub fn connections_for(file_limit: u64, shards: usize) -> usize {
    file_limit.saturating_sub(RESERVED_FDS + FDS_PER_SHARD * shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_taken_off_the_file_limit() {
        assert_eq!(connections_for(20_000, 2), 20_000 - 64 - 2 * 19);
        assert_eq!(connections_for(10, 4), 0);
    }

    #[test]
    fn raising_keeps_soft_within_hard() {
        let limit = raise_nofile().unwrap();
        assert!(limit.soft <= limit.hard && limit.soft > 0);
    }
}
