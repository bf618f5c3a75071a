//! Owns the memory figures read from outside the tool: the server's resident set (from
//! `/proc/PID/status` or its Prometheus `/metrics`) and the kernel's memory for connections,
//! before and after connections are opened.
//!
//! The kernel figure is read the way `tuning/check.sh` budgets it: the socket, file and epoll
//! structures of a connection (the slab caches in [`SOCKET_SLABS`], from `/proc/slabinfo`, about
//! 3.5 KiB) plus its socket buffers (the `mem` pages of `/proc/net/sockstat`, near zero while
//! idle). `/proc/slabinfo` is readable by root only; without it the kernel figure is left out
//! rather than reported as the buffers alone. Both are box-wide: on loopback the tool's own
//! sockets count too, so a connection costs both ends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::Serialize;

/// The slab caches that hold a TCP connection's kernel structures: the socket (`TCP`, `TCPv6`),
/// its inode, its open file and dentry, and its epoll registration.
pub const SOCKET_SLABS: &[&str] = &[
    "TCP",
    "TCPv6",
    "sock_inode_cache",
    "filp",
    "dentry",
    "eventpoll_epi",
    "eventpoll_pwq",
];

/// What `tuning/check.sh` budgets per connection: kernel structures, minimum buffers (mostly
/// unallocated while idle) and hubbub's own state.
pub const CHECK_SH_BUDGET_BYTES: u64 = 4608;

/// One reading.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Snapshot {
    /// Server resident set in bytes, when a PID or metrics URL was given and readable.
    pub server_rss_bytes: Option<u64>,
    /// Kernel TCP socket buffer memory in bytes (`mem` pages of the `TCP:` line times the page
    /// size).
    pub tcp_mem_bytes: Option<u64>,
    /// Bytes in the [`SOCKET_SLABS`] caches (active objects times object size), when
    /// `/proc/slabinfo` is readable.
    pub socket_slab_bytes: Option<u64>,
    /// TCP sockets in use on the box.
    pub tcp_inuse: Option<u64>,
}

/// Memory per connection: the deltas between two snapshots divided by the connections opened.
#[derive(Debug, Clone, Serialize)]
pub struct MemReport {
    pub before: Snapshot,
    pub after: Snapshot,
    pub connections: u64,
    pub server_rss_per_conn_bytes: Option<f64>,
    /// Kernel memory per connection: structures plus socket buffers (box-wide). `None` when the
    /// structures could not be read.
    pub kernel_per_conn_bytes: Option<f64>,
    /// Of which socket, file and epoll structures.
    pub kernel_structs_per_conn_bytes: Option<f64>,
    /// Of which socket buffers.
    pub socket_buffers_per_conn_bytes: Option<f64>,
}

/// Where to read the server's memory from.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub server_pid: Option<u32>,
    pub metrics_url: Option<String>,
}

impl Probe {
    /// Reads every figure available now.
    pub fn snapshot(&self) -> Snapshot {
        let server_rss_bytes = match (self.server_pid, &self.metrics_url) {
            (Some(pid), _) => rss_of_pid(pid),
            (None, Some(url)) => rss_from_metrics(url),
            (None, None) => None,
        };
        let (tcp_inuse, tcp_mem_bytes) = tcp_sockstat().unzip();
        Snapshot {
            server_rss_bytes,
            tcp_mem_bytes,
            socket_slab_bytes: socket_slab_bytes(),
            tcp_inuse,
        }
    }
}

impl MemReport {
    /// Per-connection deltas between `before` and `after`.
    pub fn new(before: Snapshot, after: Snapshot, connections: u64) -> MemReport {
        let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if connections > 0 => Some((b as f64 - a as f64) / connections as f64),
            _ => None,
        };
        let structs = per(before.socket_slab_bytes, after.socket_slab_bytes);
        let buffers = per(before.tcp_mem_bytes, after.tcp_mem_bytes);
        MemReport {
            server_rss_per_conn_bytes: per(before.server_rss_bytes, after.server_rss_bytes),
            kernel_per_conn_bytes: structs.map(|s| s + buffers.unwrap_or(0.0)),
            kernel_structs_per_conn_bytes: structs,
            socket_buffers_per_conn_bytes: buffers,
            before,
            after,
            connections,
        }
    }
}

/// CPU seconds (user + system) used by this process and its waited-for children (the workers of
/// `--procs`): how the tool shows that it was not the bottleneck.
pub fn own_cpu_secs() -> f64 {
    let secs = |who| {
        // SAFETY: an all-zero rusage is valid, and getrusage only writes to it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid `who` constant and pointer.
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            return 0.0;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(usage.ru_utime) + tv(usage.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}

/// `VmRSS` of a process, in bytes.
pub fn rss_of_pid(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_rss(&status)
}

fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `(inuse, mem bytes)` of the `TCP:` line of `/proc/net/sockstat`.
pub fn tcp_sockstat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    parse_sockstat(&text, page)
}

fn parse_sockstat(text: &str, page: u64) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1)?.parse::<u64>().ok())
    };
    Some((field("inuse")?, field("mem")? * page))
}

/// Bytes in the [`SOCKET_SLABS`] caches, or `None` when `/proc/slabinfo` cannot be read.
pub fn socket_slab_bytes() -> Option<u64> {
    parse_slabinfo(&std::fs::read_to_string("/proc/slabinfo").ok()?)
}

/// Sums `active_objs * objsize` over the [`SOCKET_SLABS`] lines (slabinfo 2.x: name,
/// active_objs, num_objs, objsize, ...). Caches the kernel merged away are simply absent.
fn parse_slabinfo(text: &str) -> Option<u64> {
    let mut total = 0;
    let mut seen = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(name) = words.next().filter(|n| SOCKET_SLABS.contains(n)) else {
            continue;
        };
        let active: u64 = words.next()?.parse().ok()?;
        let _num: u64 = words.next()?.parse().ok()?;
        let size: u64 = words.next()?.parse().ok()?;
        total += active * size;
        seen |= name.starts_with("TCP");
    }
    seen.then_some(total)
}

/// `process_resident_memory_bytes` from a Prometheus endpoint (`http://host:port/path`).
pub fn rss_from_metrics(url: &str) -> Option<u64> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority).ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.take(16 << 20).read_to_string(&mut body).ok()?;
    parse_metrics_rss(&body)
}

fn parse_metrics_rss(body: &str) -> Option<u64> {
    let line = body.lines().find(|l| l.starts_with("process_resident_memory_bytes"))?;
    let value: f64 = line.split_whitespace().last()?.parse().ok()?;
    Some(value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_of_this_process() {
        let rss = rss_of_pid(std::process::id()).unwrap();
        assert!(
            rss > 100_000,
            "a running test binary has more than 100 KB resident: {rss}"
        );
        assert_eq!(
            parse_status_rss("Name:\tx\nVmRSS:\t   2048 kB\n"),
            Some(2 * 1024 * 1024)
        );
    }

    #[test]
    fn parses_sockstat_and_metrics() {
        let text = "sockets: used 300\nTCP: inuse 12 orphan 0 tw 3 alloc 20 mem 5\nUDP: inuse 1 mem 0\n";
        assert_eq!(parse_sockstat(text, 4096), Some((12, 5 * 4096)));
        assert!(tcp_sockstat().is_some());
        let body =
            "HTTP/1.0 200 OK\r\n\r\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 1.2e7\n";
        assert_eq!(parse_metrics_rss(body), Some(12_000_000));
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        // Spin until 20 ms of CPU show, or 5 s of wall time pass: on a busy box 50 ms of wall
        // time can be far less CPU time, but 5 s without 20 ms counted means it is not counted.
        let before = own_cpu_secs();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while own_cpu_secs() - before < 0.02 && start.elapsed() < std::time::Duration::from_secs(5) {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        assert!(own_cpu_secs() - before >= 0.02, "spinning must show as CPU time");
    }

    #[test]
    fn per_connection_deltas() {
        let before = Snapshot {
            server_rss_bytes: Some(1000),
            tcp_mem_bytes: Some(0),
            socket_slab_bytes: Some(10_000),
            tcp_inuse: None,
        };
        let after = Snapshot {
            server_rss_bytes: Some(3000),
            tcp_mem_bytes: Some(4096),
            socket_slab_bytes: Some(50_000),
            tcp_inuse: None,
        };
        let r = MemReport::new(before, after, 10);
        assert_eq!(r.server_rss_per_conn_bytes, Some(200.0));
        assert_eq!(r.socket_buffers_per_conn_bytes, Some(409.6));
        assert_eq!(r.kernel_structs_per_conn_bytes, Some(4000.0));
        assert_eq!(r.kernel_per_conn_bytes, Some(4409.6));
        let unreadable = Snapshot {
            socket_slab_bytes: None,
            ..after
        };
        let r = MemReport::new(before, unreadable, 10);
        assert_eq!(r.kernel_per_conn_bytes, None, "buffers alone are not the kernel's cost");
    }

    #[test]
    fn slabinfo_sums_the_socket_caches() {
        let text = "slabinfo - version: 2.1\n\
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables\n\
TCP                   26     26   2368   13    8 : tunables    0    0    0 : slabdata      2      2      0\n\
eventpoll_epi        224    224    128   32    1 : tunables    0    0    0 : slabdata      7      7      0\n\
sock_inode_cache      76     76    832   19    4 : tunables    0    0    0 : slabdata      4      4      0\n\
kmalloc-64          9999   9999     64   64    1 : tunables    0    0    0 : slabdata      1      1      0\n";
        assert_eq!(parse_slabinfo(text), Some(26 * 2368 + 224 * 128 + 76 * 832));
        assert_eq!(
            parse_slabinfo("slabinfo - version: 2.1\n"),
            None,
            "no TCP cache: not read"
        );
    }
}
