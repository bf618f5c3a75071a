//! Who may upgrade: the process-wide connection cap and the optional
//! per-client-address limits, shared by every shard.
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
    pub fn enabled(&self) -> bool {
        self.max_connections > 0 || self.handshakes_per_sec > 0
    }
}

/// One client address's state.
#[derive(Debug, Clone, Copy)]
struct Entry {
    open: u32,
    tokens: f64,
    refilled: Instant,
}

/// The shared admission state.
#[derive(Debug)]
pub struct Admission {
    max_open: usize,
    open: AtomicUsize,
    per_ip: PerIpLimits,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl Admission {
    pub fn new(max_open: usize, per_ip: PerIpLimits) -> Admission {
        Admission {
            max_open,
            open: AtomicUsize::new(0),
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

    /// True when the per-address limits are on (the caller then finds the
    /// client's address and passes it to `admit`).
    pub fn per_ip_enabled(&self) -> bool {
        self.per_ip.enabled()
    }

    /// True when `ip` is a trusted proxy (its `X-Forwarded-For` is read).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.per_ip.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// The address the per-address limits count: the peer, or for a trusted
    /// proxy the first untrusted address of `X-Forwarded-For` from the right
    /// (`forwarded` in header order), or the last one if all are trusted.
    pub fn client_ip(&self, peer: IpAddr, forwarded: &[IpAddr]) -> IpAddr {
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
    pub fn admit(&self, ip: Option<IpAddr>, now: Instant) -> Result<(), Refusal> {
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
        let mut table = self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if table.len() >= SWEEP_AT_ENTRIES {
            sweep(&mut table, rate, now);
        }
        let entry = table.entry(ip).or_insert(Entry {
            open: 0,
            tokens: rate,
            refilled: now,
        });
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
        if let Some(entry) = table.get_mut(&ip) {
            entry.open = entry.open.saturating_sub(1);
        }
    }
}

/// Drops addresses with no connection whose bucket is full again: they are
/// indistinguishable from addresses never seen.
fn sweep(table: &mut HashMap<IpAddr, Entry>, rate: f64, now: Instant) {
    table.retain(|_, e| {
        let refill = now.saturating_duration_since(e.refilled).as_secs_f64() * rate;
        e.open > 0 || e.tokens + refill < rate
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
        let adm = Admission::new(2, PerIpLimits::default());
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
        let adm = Admission::new(100, limits);
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
    fn forwarded_for_is_read_from_the_right_past_trusted_proxies() {
        let limits = PerIpLimits {
            max_connections: 1,
            handshakes_per_sec: 0,
            trusted_proxies: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        };
        let adm = Admission::new(100, limits);
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
