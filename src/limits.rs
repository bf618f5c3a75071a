//! The open-file limit: raise the soft limit to the hard one at start, and
//! derive how many connections fit; the default memory budget.

use std::io;

/// File descriptors kept back for everything that is not a client: listeners,
/// epoll and waker fds per shard, the admin listener, logs, Redis later.
pub(crate) const RESERVED_FDS: u64 = 64;
/// Per shard: listener, epoll, waker, plus sockets held open to send 503s.
/// Connections beyond the upgrade cap that may sit in the handshake to be
/// told 503; past that, new sockets are closed at once.
pub(crate) const REFUSAL_HEADROOM: usize = 16;

const FDS_PER_SHARD: u64 = 3 + REFUSAL_HEADROOM as u64;

/// The soft and hard RLIMIT_NOFILE after trying to raise soft to hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard limit.
pub(crate) fn raise_nofile() -> io::Result<FileLimit> {
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
pub(crate) const BYTES_PER_IDLE_CONNECTION: u64 = 4608;

/// Connections 80% of the box's memory holds (`None` without /proc/meminfo).
pub(crate) fn connections_by_memory() -> Option<u64> {
    Some(physical_memory()? * 8 / 10 / BYTES_PER_IDLE_CONNECTION)
}

/// Kernel memory of one idle connection (socket, file, epoll entry), which a
/// cgroup is charged for but `--memory-limit` does not count.
pub(crate) const KERNEL_BYTES_PER_CONNECTION: u64 = 3584;
/// User-space memory of one connection slot (slab entry, timer entry).
pub(crate) const SLOT_BYTES_PER_CONNECTION: u64 = 128;
/// The process itself: code, thread stacks, allocator slack.
pub(crate) const PROCESS_BASE_BYTES: u64 = 64 << 20;
/// Share of physical memory the budget starts from outside a cgroup limit.
pub(crate) const PHYSICAL_MEMORY_PERCENT: u64 = 75;

/// The default `--memory-limit` and where it came from: the cgroup's limit
/// (or 75% of physical memory) less what the process needs besides what it
/// holds for clients: kernel socket memory and slots at `capacity`, the
/// buffer pools, the process itself. Never below a quarter of the start.
pub(crate) fn default_memory_limit(capacity: usize, pool_bytes: u64) -> (u64, &'static str) {
    let (base, source) = match cgroup_memory_max() {
        Some(max) => (max, "cgroup memory.max"),
        None => (
            physical_memory().unwrap_or(4 << 30) * PHYSICAL_MEMORY_PERCENT / 100,
            "75% of physical memory",
        ),
    };
    let reserve =
        capacity as u64 * (KERNEL_BYTES_PER_CONNECTION + SLOT_BYTES_PER_CONNECTION) + pool_bytes + PROCESS_BASE_BYTES;
    (base.saturating_sub(reserve).max(base / 4), source)
}

/// The memory limit of this process's cgroup (v2, then v1), if any.
pub(crate) fn cgroup_memory_max() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in own.lines() {
        // v2: "0::/path"; v1: "N:memory:/path".
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        } else {
            continue;
        };
        // Without a cgroup namespace the path is the host's view; the
        // container's own limit is then at the mount's root.
        let root = if controllers.is_empty() {
            "/sys/fs/cgroup/memory.max"
        } else {
            "/sys/fs/cgroup/memory/memory.limit_in_bytes"
        };
        let candidates = [file, root.to_string()];
        for f in candidates {
            if let Some(limit) = read_limit(&f) {
                return Some(limit);
            }
        }
    }
    None
}

fn read_limit(file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let limit: u64 = text.trim().parse().ok()?; // "max" means none
                                                // cgroup v1 writes a huge number for "no limit".
    (limit < 1 << 60).then_some(limit)
}

fn physical_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
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
pub(crate) fn connections_for(file_limit: u64, shards: usize) -> usize {
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
    fn the_default_budget_leaves_room_for_the_kernel_and_the_pools() {
        let (small, _) = default_memory_limit(0, 0);
        let (big, _) = default_memory_limit(100_000, 64 << 20);
        assert!(big < small, "capacity and pools come off the budget");
        assert!(big >= small / 4, "but never below a quarter");
    }

    #[test]
    fn raising_keeps_soft_within_hard() {
        let limit = raise_nofile().unwrap();
        assert!(limit.soft <= limit.hard && limit.soft > 0);
    }
}
