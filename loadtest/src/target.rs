//! Owns where connections go and where they come from: the `ws://host:port/path` target and the
//! `--source-ips` range that spreads connections over source addresses.
//!
//! `ws://` and `wss://` are spoken (TLS settings: `tls.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use thiserror::Error;

/// A command-line address that cannot be used. The user fixes the flag.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    /// Only `ws://` and `wss://` URLs are supported.
    #[error("only ws:// and wss:// URLs are supported, got {0:?}")]
    Scheme(String),
    /// The host did not resolve.
    #[error("cannot resolve {0:?}")]
    Resolve(String),
    /// The source address range is not `A.B.C.D` or `A.B.C.D-A.B.C.E` with the first not after the
    /// second.
    #[error("bad --source-ips {0:?}: expected 127.0.0.1 or 127.0.0.1-127.0.0.50")]
    SourceRange(String),
}

/// A resolved WebSocket endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The `Host` header value (`host:port`).
    pub host: String,
    /// The request path, query included; `/` when the URL has none.
    pub path: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// `wss://`: the host name the certificate is checked against.
    pub tls_name: Option<String>,
}

impl Target {
    /// Parses and resolves `ws://host[:port][/path]` (port 80 by default) or `wss://...` (443).
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(TargetError::Scheme(url.to_string())),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let addr = with_port
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| TargetError::Resolve(authority.to_string()))?;
        let tls_name = tls.then(|| {
            let host = match authority.rsplit_once(':') {
                Some((host, port)) if port.parse::<u16>().is_ok() => host,
                _ => authority,
            };
            host.trim_start_matches('[').trim_end_matches(']').to_string()
        });
        Ok(Target {
            host: authority.to_string(),
            path: path.to_string(),
            addr,
            tls_name,
        })
    }
}

/// A round-robin over a contiguous range of IPv4 source addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps {
    first: u32,
    count: u32,
    next: u32,
}

impl SourceIps {
    /// Parses `A.B.C.D` or `A.B.C.D-A.B.C.E`.
    pub fn parse(spec: &str) -> Result<SourceIps, TargetError> {
        let bad = || TargetError::SourceRange(spec.to_string());
        let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
        let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
        let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
        let (first, last) = (u32::from(a), u32::from(b));
        if last < first {
            return Err(bad());
        }
        Ok(SourceIps {
            first,
            count: last - first + 1,
            next: 0,
        })
    }

    /// The next source address, cycling through the range.
    pub fn next_ip(&mut self) -> IpAddr {
        let ip = Ipv4Addr::from(self.first + self.next);
        self.next = (self.next + 1) % self.count;
        IpAddr::V4(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_urls_with_and_without_path_and_port() {
        let t = Target::parse("ws://127.0.0.1:9001/room/a?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.path.as_str()), ("127.0.0.1:9001", "/room/a?x=1"));
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        let t = Target::parse("ws://127.0.0.1").unwrap();
        assert_eq!((t.path.as_str(), t.addr.port()), ("/", 80));
    }

    #[test]
    fn parses_wss_urls() {
        let t = Target::parse("wss://localhost:9443/echo").unwrap();
        assert_eq!((t.tls_name.as_deref(), t.addr.port()), (Some("localhost"), 9443));
        let t = Target::parse("wss://127.0.0.1").unwrap();
        assert_eq!((t.tls_name.as_deref(), t.addr.port()), (Some("127.0.0.1"), 443));
        assert_eq!(Target::parse("ws://127.0.0.1").unwrap().tls_name, None);
    }

    #[test]
    fn refuses_other_schemes() {
        assert!(matches!(
            Target::parse("http://127.0.0.1/"),
            Err(TargetError::Scheme(_))
        ));
    }

    #[test]
    fn source_range_cycles() {
        let mut ips = SourceIps::parse("127.0.0.1-127.0.0.3").unwrap();
        let seen: Vec<String> = (0..4).map(|_| ips.next_ip().to_string()).collect();
        assert_eq!(seen, ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]);
        assert_eq!(
            SourceIps::parse("127.0.0.9").unwrap().next_ip().to_string(),
            "127.0.0.9"
        );
        assert!(SourceIps::parse("127.0.0.9-127.0.0.1").is_err());
        assert!(SourceIps::parse("localhost").is_err());
    }
}
