//! Owns the memory figures read from outside the tool: the server's resident set (from
//! `/proc/PID/status` or its Prometheus `/metrics`) and the kernel's TCP socket memory
//! (`/proc/net/sockstat`), before and after connections are opened.
//!
//! Socket memory is box-wide: on loopback it includes the client's sockets too.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::Serialize;

/// One reading.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Snapshot {
    /// Server resident set in bytes, when a PID or metrics URL was given and readable.
    pub server_rss_bytes: Option<u64>,
    /// Kernel TCP socket memory in bytes (`mem` pages of the `TCP:` line times the page size).
    pub tcp_mem_bytes: Option<u64>,
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
    pub tcp_mem_per_conn_bytes: Option<f64>,
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
        MemReport {
            server_rss_per_conn_bytes: per(before.server_rss_bytes, after.server_rss_bytes),
            tcp_mem_per_conn_bytes: per(before.tcp_mem_bytes, after.tcp_mem_bytes),
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
        let before = own_cpu_secs();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(own_cpu_secs() - before >= 0.02, "50 ms of spinning must show");
    }

    #[test]
    fn per_connection_deltas() {
        let before = Snapshot {
            server_rss_bytes: Some(1000),
            tcp_mem_bytes: Some(0),
            tcp_inuse: None,
        };
        let after = Snapshot {
            server_rss_bytes: Some(3000),
            tcp_mem_bytes: Some(4096),
            tcp_inuse: None,
        };
        let r = MemReport::new(before, after, 10);
        assert_eq!(r.server_rss_per_conn_bytes, Some(200.0));
        assert_eq!(r.tcp_mem_per_conn_bytes, Some(409.6));
    }
}
