//! Who may upgrade: the process-wide connection cap and the optional
//! per-client-address limits, shared by every shard.
//!
//! Sockets of every phase are capped for the process too (`max_sockets`:
//! the upgrade cap plus a few per shard for polite refusals), so the
//! shards together never run the process out of file descriptors.
//!
//! `--max-connections` is one count for the whole process (the open-file
//! limit is per process, and `SO_REUSEPORT` spreads connections unevenly),
//! reserved with one atomic add at the upgrade and released when an upgraded
//! connection is removed. The per-address limits (`--max-connections-per-ip`,
//! `--max-handshakes-per-ip-per-sec`) are off by default; when on, a table of
//! addresses behind a mutex is touched once per completed request head and
//! once per close, never per message. Behind a trusted proxy
//! (`--trusted-proxy CIDR`) the client's address is the first untrusted one
//! of `X-Forwarded-For`, read from the right.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::net::cidr::Cidr;
use crate::ws::handshake::Refusal;

/// Addresses kept in the rate table before idle ones are swept out.
const SWEEP_AT_ENTRIES: usize = 65_536;

/// Per-address limits; zero turns one off.
#[derive(Debug, Clone, Default)]
pub struct PerIpLimits {
    pub max_connections: u32,
    /// Handshakes per second per address (token bucket, burst of the same size).
    pub handshakes_per_sec: u32,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Cidr>,
}

impl PerIpLimits {
    pub(crate) fn enabled(&self) -> bool {
        self.max_connections > 0 || self.handshakes_per_sec > 0
    }
}

/// One client address's state.
#[derive(Debug, Clone, Copy)]
struct Entry {
    open: u32,
    /// Sockets from the address still in their handshake.
    pending: u32,
    tokens: f64,
    refilled: Instant,
}

/// The shared admission state.
#[derive(Debug)]
pub struct Admission {
    max_open: usize,
    open: AtomicUsize,
    max_sockets: usize,
    sockets: AtomicUsize,
    /// Table size at which idle addresses are next swept out.
    sweep_at: AtomicUsize,
    per_ip: PerIpLimits,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl Admission {
    /// `max_sockets` bounds sockets of every phase (at least `max_open`).
    pub fn new(max_open: usize, max_sockets: usize, per_ip: PerIpLimits) -> Admission {
        Admission {
            max_open,
            open: AtomicUsize::new(0),
            max_sockets: max_sockets.max(max_open),
            sockets: AtomicUsize::new(0),
            sweep_at: AtomicUsize::new(SWEEP_AT_ENTRIES),
            per_ip,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Upgraded connections the process holds now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn max_open(&self) -> usize {
        self.max_open
    }

    /// Reserves a socket of any phase for the process; false at the cap.
    pub(crate) fn take_socket(&self) -> bool {
        if self.sockets.fetch_add(1, Ordering::Relaxed) >= self.max_sockets {
            self.sockets.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub(crate) fn release_socket(&self) {
        self.sockets.fetch_sub(1, Ordering::Relaxed);
    }

    /// With `--max-connections-per-ip`, sockets in their handshake from one
    /// address are held to the same number (so one address cannot fill the
    /// process with idle sockets); false over it. `end_handshake` gives the
    /// place back.
    pub(crate) fn begin_handshake(&self, ip: IpAddr, now: Instant) -> bool {
        let limit = self.per_ip.max_connections;
        if limit == 0 {
            return true;
        }
        let rate = f64::from(self.per_ip.handshakes_per_sec);
        let mut table = self.lock_table(rate, now);
        let entry = table.entry(key_of(ip)).or_insert_with(|| Entry::new(rate, now));
        if entry.pending >= limit {
            return false;
        }
        entry.pending += 1;
        true
    }

    pub(crate) fn end_handshake(&self, ip: IpAddr) {
        let mut table = self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = table.get_mut(&key_of(ip)) {
            entry.pending = entry.pending.saturating_sub(1);
        }
    }

    /// The table, swept of idle addresses first when it has grown past the
    /// sweep mark (which then moves to twice what is left, so a table of
    /// busy addresses is not swept on every call).
    fn lock_table(&self, rate: f64, now: Instant) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        let mut table = self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if table.len() >= self.sweep_at.load(Ordering::Relaxed) {
            sweep(&mut table, rate, now);
            let next = (2 * table.len()).max(SWEEP_AT_ENTRIES);
            self.sweep_at.store(next, Ordering::Relaxed);
        }
        table
    }

    /// True when the per-address limits are on (the caller then finds the
    /// client's address and passes it to `admit`).
    pub(crate) fn per_ip_enabled(&self) -> bool {
        self.per_ip.enabled()
    }

    /// True when `ip` is a trusted proxy (its `X-Forwarded-For` is read).
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.per_ip.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// The address the per-address limits count: the peer, or for a trusted
    /// proxy the first untrusted address of `X-Forwarded-For` from the right
    /// (`forwarded` in header order), or the last one if all are trusted.
    pub(crate) fn client_ip(&self, peer: IpAddr, forwarded: &[IpAddr]) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for ip in forwarded.iter().rev() {
            client = *ip;
            if !self.trusts(*ip) {
                break;
            }
        }
        client
    }

    /// Reserves a place for one upgraded connection from `ip` (`None` when
    /// the per-address limits are off), or says why not. On success the
    /// caller must `release` the same address when the connection ends.
    pub(crate) fn admit(&self, ip: Option<IpAddr>, now: Instant) -> Result<(), Refusal> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max_open {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::OVER_CAPACITY);
        }
        let Some(ip) = ip.filter(|_| self.per_ip.enabled()) else {
            return Ok(());
        };
        let verdict = self.admit_ip(ip, now);
        if verdict.is_err() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        verdict
    }

    fn admit_ip(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let limits = &self.per_ip;
        let rate = f64::from(limits.handshakes_per_sec);
        let mut table = self.lock_table(rate, now);
        let entry = table.entry(key_of(ip)).or_insert_with(|| Entry::new(rate, now));
        if rate > 0.0 {
            let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * rate).min(rate);
            entry.refilled = now;
            if entry.tokens < 1.0 {
                return Err(Refusal::HANDSHAKE_RATE);
            }
            entry.tokens -= 1.0;
        }
        if limits.max_connections > 0 && entry.open >= limits.max_connections {
            return Err(Refusal::TOO_MANY_FROM_ADDRESS);
        }
        entry.open += 1;
        Ok(())
    }

    /// Gives back the place `admit` reserved.
    pub fn release(&self, ip: Option<IpAddr>) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        let Some(ip) = ip.filter(|_| self.per_ip.enabled()) else {
            return;
        };
        let mut table = self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = table.get_mut(&key_of(ip)) {
            entry.open = entry.open.saturating_sub(1);
        }
    }
}

impl Entry {
    fn new(rate: f64, now: Instant) -> Entry {
        Entry {
            open: 0,
            pending: 0,
            tokens: rate,
            refilled: now,
        }
    }
}

/// The key an address is counted under: IPv4 (an IPv4-mapped IPv6 address
/// too) as is, IPv6 by its /64, which is what one subscriber gets (counting
/// single addresses would give one host 2^64 quotas).
fn key_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Drops addresses with no connection whose bucket is full again: they are
/// indistinguishable from addresses never seen.
fn sweep(table: &mut HashMap<IpAddr, Entry>, rate: f64, now: Instant) {
    table.retain(|_, e| {
        let refill = now.saturating_duration_since(e.refilled).as_secs_f64() * rate;
        e.open > 0 || e.pending > 0 || e.tokens + refill < rate
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_cap_counts_every_caller_and_refusals_give_back() {
        let adm = Admission::new(2, 2, PerIpLimits::default());
        let now = Instant::now();
        assert!(adm.admit(None, now).is_ok());
        assert!(adm.admit(None, now).is_ok());
        assert_eq!(adm.admit(None, now), Err(Refusal::OVER_CAPACITY));
        assert_eq!(adm.open(), 2);
        adm.release(None);
        assert!(adm.admit(None, now).is_ok());
    }

    #[test]
    fn per_address_connections_and_handshake_rate() {
        let limits = PerIpLimits {
            max_connections: 2,
            handshakes_per_sec: 3,
            trusted_proxies: Vec::new(),
        };
        let adm = Admission::new(100, 116, limits);
        let t0 = Instant::now();
        let a = Some(ip("10.0.0.1"));
        assert!(adm.admit(a, t0).is_ok());
        assert!(adm.admit(a, t0).is_ok());
        assert_eq!(adm.admit(a, t0), Err(Refusal::TOO_MANY_FROM_ADDRESS));
        assert_eq!(
            adm.admit(a, t0),
            Err(Refusal::HANDSHAKE_RATE),
            "three handshakes spent the burst"
        );
        assert!(
            adm.admit(Some(ip("10.0.0.2")), t0).is_ok(),
            "other addresses are not affected"
        );
        adm.release(a);
        assert_eq!(adm.admit(a, t0), Err(Refusal::HANDSHAKE_RATE));
        assert!(
            adm.admit(a, t0 + Duration::from_millis(400)).is_ok(),
            "the bucket refills"
        );
        assert_eq!(adm.open(), 3);
    }

    #[test]
    fn sockets_are_capped_and_handshakes_per_address_too() {
        let limits = PerIpLimits {
            max_connections: 2,
            ..PerIpLimits::default()
        };
        let adm = Admission::new(1, 3, limits);
        assert!(adm.take_socket() && adm.take_socket() && adm.take_socket());
        assert!(!adm.take_socket(), "the process-wide socket cap");
        adm.release_socket();
        assert!(adm.take_socket());
        let now = Instant::now();
        let a = ip("10.0.0.1");
        assert!(adm.begin_handshake(a, now) && adm.begin_handshake(a, now));
        assert!(!adm.begin_handshake(a, now), "idle sockets from one address are capped");
        assert!(adm.begin_handshake(ip("10.0.0.2"), now));
        adm.end_handshake(a);
        assert!(adm.begin_handshake(a, now));
    }

    #[test]
    fn ipv6_is_counted_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(key_of(ip("2001:db8::1")), key_of(ip("2001:db8::ffff:1")));
        assert_ne!(key_of(ip("2001:db8::1")), key_of(ip("2001:db8:0:1::1")));
        assert_eq!(key_of(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn a_table_of_busy_addresses_is_not_swept_on_every_call() {
        let limits = PerIpLimits {
            max_connections: 10,
            ..PerIpLimits::default()
        };
        let adm = Admission::new(usize::MAX, usize::MAX, limits);
        let now = Instant::now();
        for i in 0..(SWEEP_AT_ENTRIES as u32 + 10) {
            assert!(adm.admit(Some(IpAddr::V4(i.into())), now).is_ok());
        }
        // Swept once at the mark, which then moved to twice the busy table.
        assert_eq!(adm.sweep_at.load(Ordering::Relaxed), 2 * SWEEP_AT_ENTRIES);
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_past_trusted_proxies() {
        let limits = PerIpLimits {
            max_connections: 1,
            handshakes_per_sec: 0,
            trusted_proxies: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        };
        let adm = Admission::new(100, 116, limits);
        let proxy = ip("10.1.2.3");
        let chain = [ip("1.1.1.1"), ip("2.2.2.2"), ip("10.9.9.9")];
        assert_eq!(
            adm.client_ip(proxy, &chain),
            ip("2.2.2.2"),
            "a spoofed left entry is ignored"
        );
        assert_eq!(
            adm.client_ip(ip("3.3.3.3"), &chain),
            ip("3.3.3.3"),
            "untrusted peers are taken as is"
        );
        assert_eq!(adm.client_ip(proxy, &[]), proxy);
    }
}
