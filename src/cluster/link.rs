//! Where the bridge's connections go: Redis as operators run it, through
//! the `redis` crate's synchronous client (no async runtime).
//!
//! - `--redis redis://[USER:PASSWORD@]HOST:PORT[/DB]`, or `rediss://` for
//!   TLS (system roots, or the PEM file of `--redis-ca-file`; a URL ending in
//!   `#insecure` skips the certificate check, for tests only).
//! - Sentinel: `--redis-sentinel HOST:PORT` (repeatable) with
//!   `--redis-master-name NAME`. Every connect asks the sentinels, in order,
//!   where the master is and checks with `ROLE` that it is one, so a
//!   failover is followed at the next reconnect without a restart. The
//!   scheme, credentials and database of `--redis` (if given) apply to the
//!   master; its host and port are not used.
//!
//! What it must never do: wait without a bound. Every connect, read and
//! write has the caller's timeout.

use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::time::Duration;

use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates};

use super::keys;
use super::reply::{encode, Value};
use super::resp;
use crate::bus::cluster::{ClusterConfig, LinkKind, RedisLink};

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// Redis (or a sentinel) refused or could not be reached: retry later.
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// No sentinel named a master that answers as one: retry later.
    #[error("no sentinel knows a reachable master named {0:?} ({1})")]
    NoMaster(String, String),
    /// The CA file of `--redis-ca-file` is unreadable: fix the flag.
    #[error("--redis-ca-file {0}: {1}")]
    CaFile(String, io::Error),
    /// A shard's own connection (`dial`) could not be opened or set up.
    #[error("a publishing connection to {0}: {1}")]
    Dial(String, String),
}

impl From<LinkError> for io::Error {
    fn from(e: LinkError) -> io::Error {
        io::Error::other(e.to_string())
    }
}

/// How to reach the Redis master.
#[derive(Clone)]
pub(crate) struct Target {
    /// The master's address and settings (Sentinel: settings only).
    master: ConnectionInfo,
    sentinels: Vec<ConnectionInfo>,
    master_name: Option<String>,
}

impl Target {
    pub fn new(config: &ClusterConfig) -> Result<Target, LinkError> {
        let url = match config.master_name {
            Some(_) => placeholder_host(&config.redis),
            None => config.redis.clone(),
        };
        let url = url.as_str();
        let master = match &config.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| LinkError::CaFile(path.display().to_string(), e))?;
                let certs = TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Client::build_with_tls(url, certs)?.get_connection_info().clone()
            }
            None => url.into_connection_info()?,
        };
        let sentinels = config
            .sentinels
            .iter()
            .map(|s| sentinel_url(s).into_connection_info())
            .collect::<Result<_, _>>()?;
        Ok(Target {
            master,
            sentinels,
            master_name: config.master_name.clone(),
        })
    }

    /// A connection to the master, with `timeout` on connect, reads and
    /// writes.
    pub fn connect(&self, timeout: Duration) -> Result<redis::Connection, LinkError> {
        let Some(name) = &self.master_name else {
            return Ok(open(self.master.clone(), timeout)?);
        };
        let mut why = String::from("no sentinel configured");
        for sentinel in &self.sentinels {
            match self.via_sentinel(sentinel, name, timeout) {
                Ok(conn) => return Ok(conn),
                Err(e) => why = format!("{}: {e}", sentinel.addr()),
            }
        }
        Err(LinkError::NoMaster(name.clone(), why))
    }

    fn via_sentinel(
        &self,
        sentinel: &ConnectionInfo,
        name: &str,
        timeout: Duration,
    ) -> Result<redis::Connection, LinkError> {
        let mut asker = open(sentinel.clone(), timeout)?;
        let (host, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(name)
            .query::<Option<(String, u16)>>(&mut asker)?
            .ok_or_else(|| LinkError::NoMaster(name.into(), "unknown to this sentinel".into()))?;
        let addr = match self.master.addr() {
            ConnectionAddr::TcpTls {
                insecure, tls_params, ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        let mut conn = open(self.master.clone().set_addr(addr), timeout)?;
        // A sentinel can name a master that was just demoted: ask it.
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn)?;
        match role.first() {
            Some(redis::Value::BulkString(r)) if r == b"master" => Ok(conn),
            Some(redis::Value::SimpleString(r)) if r == "master" => Ok(conn),
            _ => Err(LinkError::NoMaster(
                name.into(),
                "the named server is not a master".into(),
            )),
        }
    }
}

impl Target {
    /// Whether shards may publish on connections of their own
    /// (`cluster::direct`): the master is reached over plain TCP. A
    /// `rediss://` or Unix-socket master is published to by the command
    /// thread, through the crate.
    pub fn direct(&self) -> bool {
        matches!(self.master.addr(), ConnectionAddr::Tcp(..))
    }

    /// Where the master is for `dial`: asked of the sentinels when named
    /// (each one that does not answer costs `timeout`, so a round of dials
    /// asks once), else the URL's address.
    pub fn master_at(&self, timeout: Duration) -> Result<(String, u16), LinkError> {
        match (&self.master_name, self.master.addr()) {
            (Some(name), _) => self.ask_sentinels(name, timeout),
            (None, ConnectionAddr::Tcp(host, port)) => Ok((host.clone(), *port)),
            (None, other) => Err(LinkError::Dial(other.to_string(), "not a plain TCP server".into())),
        }
    }

    /// A plain TCP connection to the master at `(host, port)` (`master_at`)
    /// for a shard (`direct`): connected, `AUTH` and `SELECT` as the URL
    /// says, `ROLE` checked behind a sentinel; then for `Publish` the
    /// publish script loaded, for `Subscribe` subscribed to what a node
    /// listens to. Blocking, each step within `timeout`; the link comes back
    /// non-blocking.
    pub fn dial(
        &self,
        (host, port): &(String, u16),
        timeout: Duration,
        server: usize,
        kind: LinkKind,
    ) -> Result<RedisLink, LinkError> {
        let (host, port) = (host.as_str(), *port);
        let at = format!("{host}:{port}");
        let failed = |e: &dyn std::fmt::Display| LinkError::Dial(at.clone(), e.to_string());
        let stream = connect(host, port, timeout).map_err(|e| failed(&e))?;
        let settings = self.master.redis_settings();
        let mut commands: Vec<Vec<String>> = Vec::new();
        if let Some(password) = settings.password() {
            let mut auth = vec!["AUTH".to_string()];
            auth.extend(settings.username().map(str::to_string));
            auth.push(password.to_string());
            commands.push(auth);
        }
        if settings.db() != 0 {
            commands.push(vec!["SELECT".into(), settings.db().to_string()]);
        }
        if self.master_name.is_some() {
            commands.push(vec!["ROLE".into()]);
        }
        let command = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        match kind {
            LinkKind::Publish => commands.extend([
                command(&["INFO", "server"]),
                command(&["SCRIPT", "LOAD", keys::PUBLISH]),
            ]),
            LinkKind::Subscribe => commands.extend([
                command(&["SUBSCRIBE", keys::CONTROL]),
                // Channels are subscribed by name as logs are made
                // (`listen`); mailboxes and rooms by pattern.
                command(&["PSUBSCRIBE", keys::MAILBOX_PATTERN]),
                command(&["PSUBSCRIBE", keys::ROOM_PATTERN]),
            ]),
        }
        let (replies, leftover) = exchange(&stream, &commands, timeout).map_err(|e| failed(&e))?;
        for (command, reply) in commands.iter().zip(&replies) {
            match (command[0].as_str(), reply) {
                // An ACL may refuse `INFO` (`@dangerous`): then unchecked.
                ("INFO", Value::Error(_)) => {}
                ("INFO", info) => check_version(info.as_str().unwrap_or_default()).map_err(|e| failed(&e))?,
                (_, Value::Error(e)) => return Err(failed(&format_args!("{}: {e}", command[0]))),
                ("ROLE", Value::Array(items)) if items.first().and_then(Value::as_str) != Some("master") => {
                    return Err(failed(&"the named server is not a master"))
                }

                _ => {}
            }
        }
        let sha = match kind {
            LinkKind::Publish => replies.last().and_then(Value::as_str).unwrap_or_default().to_string(),
            LinkKind::Subscribe => String::new(),
        };
        stream.set_nonblocking(true).map_err(|e| failed(&e))?;
        Ok(RedisLink {
            server,
            kind,
            stream,
            sha,
            leftover,
        })
    }

    /// The master's address, from the first sentinel that knows it.
    fn ask_sentinels(&self, name: &str, timeout: Duration) -> Result<(String, u16), LinkError> {
        let mut why = String::from("no sentinel configured");
        for sentinel in &self.sentinels {
            let asked = open(sentinel.clone(), timeout).and_then(|mut asker| {
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(name)
                    .query::<Option<(String, u16)>>(&mut asker)
            });
            match asked {
                Ok(Some(addr)) => return Ok(addr),
                Ok(None) => why = format!("{}: unknown to this sentinel", sentinel.addr()),
                Err(e) => why = format!("{}: {e}", sentinel.addr()),
            }
        }
        Err(LinkError::NoMaster(name.into(), why))
    }
}

/// A TCP connection to the first address of `host` that takes one, with
/// Nagle off and `timeout` on every read and write.
fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<std::net::TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for addr in (host, port).to_socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Writes `commands` in one pipeline and reads one reply for each
/// (blocking, all of it within `timeout`: a server that trickles its
/// replies byte by byte holds the asking thread no longer); also what was
/// read past the last reply (a subscriber's first messages).
fn exchange(
    mut stream: &std::net::TcpStream,
    commands: &[Vec<String>],
    timeout: Duration,
) -> io::Result<(Vec<Value>, Vec<u8>)> {
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    for command in commands {
        encode(&mut out, command);
    }
    stream.write_all(&out)?;
    let (mut input, mut replies) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 4096];
    while replies.len() < commands.len() {
        match resp::parse(&input).map_err(io::Error::other)? {
            Some((reply, used)) => {
                input.drain(..used);
                replies.push(reply);
            }
            None => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no whole answer in time"));
                }
                stream.set_read_timeout(Some(left))?;
                match stream.read(&mut chunk)? {
                    0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                    n => input.extend_from_slice(&chunk[..n]),
                }
            }
        }
    }
    Ok((replies, input))
}

fn open(info: ConnectionInfo, timeout: Duration) -> Result<redis::Connection, redis::RedisError> {
    // No Nagle: a publish's script and a Pub/Sub PING are small writes on the
    // latency path (the crate leaves Nagle on unless asked).
    let info = info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let conn = Client::open(info)?.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(conn)
}

/// With Sentinel, `--redis` gives settings only; a host makes it a URL the
/// crate can check (`redis://:pw@/2` -> `redis://:pw@sentinel-master/2`).
pub(crate) fn placeholder_host(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (format!("{auth}@"), rest),
        None => (String::new(), rest),
    };
    if rest.is_empty() || rest.starts_with('/') || rest.starts_with('#') {
        format!("{scheme}://{auth}sentinel-master{rest}")
    } else {
        url.to_string()
    }
}

/// `url` without its password, for logs.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split_once(':').map_or(auth, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// `HOST:PORT` or a full URL (for a sentinel with a password).
fn sentinel_url(sentinel: &str) -> String {
    if sentinel.contains("://") {
        sentinel.to_string()
    } else {
        format!("redis://{sentinel}")
    }
}

/// Checks `--redis` and `--redis-sentinel` values when the flags are parsed.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    url.into_connection_info().map(drop).map_err(|e| e.to_string())
}

/// The oldest Redis the publish script runs on (`XADD NOMKSTREAM`).
const OLDEST_REDIS: (u32, u32) = (6, 2);

/// Refuses a server older than `OLDEST_REDIS`, from its `INFO server`
/// answer: below it every publish to a channel with history would fail
/// after taking its offset. A server that names no version is let through.
pub(crate) fn check_version(info: &str) -> Result<(), String> {
    let Some(version) = info.lines().find_map(|line| line.trim().strip_prefix("redis_version:")) else {
        return Ok(());
    };
    let mut parts = version.split('.').map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= OLDEST_REDIS {
        return Ok(());
    }
    let (want_major, want_minor) = OLDEST_REDIS;
    Err(format!(
        "Redis {version} is too old: hubbub needs {want_major}.{want_minor} or later (XADD NOMKSTREAM)"
    ))
}

/// See `check_url`, for a sentinel's `HOST:PORT`.
pub(crate) fn check_sentinel(sentinel: &str) -> Result<(), String> {
    check_url(&sentinel_url(sentinel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_when_parsed() {
        for good in [
            "redis://127.0.0.1:6379",
            "redis://u:p@h:1/2",
            "rediss://h:6380/#insecure",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in ["http://h:1", "redis://h:notaport", ""] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_sentinel("127.0.0.1:26379").is_ok());
        assert!(check_sentinel("127.0.0.1:x").is_err());
        assert_eq!(redacted("redis://u:s3cret@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(redacted("rediss://:s3cret@h:1"), "rediss://:***@h:1");
        assert_eq!(redacted("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn a_redis_older_than_six_two_is_refused_with_its_version() {
        let info = |version: &str| format!("# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n");
        for good in ["6.2.0", "7.0.15", "10.0.1", "6.10"] {
            assert!(check_version(&info(good)).is_ok(), "{good}");
        }
        for old in ["6.0.16", "5.0.14", "2.8"] {
            let refused = check_version(&info(old)).unwrap_err();
            assert!(refused.contains(old) && refused.contains("6.2 or later"), "{refused}");
        }
        assert!(check_version("# Server\r\n").is_ok(), "no version named: let through");
    }
}
