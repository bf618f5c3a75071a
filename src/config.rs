//! Command-line flags -> a validated `Config`, once, at start.
//!
//! Defaults are named constants with their unit in the name; `Config::default`
//! is the embedded configuration `cargo run --release` serves with.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

pub mod events;
pub mod hub;
pub mod layers;
pub mod proxy;
pub mod values;

use crate::conn::admission::PerIpLimits;
use crate::hub::config::HubConfig;
use crate::limits;
use crate::net::cidr::Cidr;
use crate::net::tls::{TlsError, TlsFiles};
use crate::ws::handshake::OriginPattern;
use events::EventsArgs;
use hub::HubArgs;

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub(crate) const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub(crate) const DEFAULT_BACKLOG: u32 = 4096;
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
pub(crate) const DEFAULT_MAX_BACKLOG_BYTES: usize = 1 << 20;
pub(crate) const DEFAULT_PING_INTERVAL_SECS: u64 = 30;
pub(crate) const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 75;
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Time from a message's first byte to its last: a 1 MiB message over a
/// 1 Mbit/s link takes about 9 s.
pub(crate) const DEFAULT_MESSAGE_TIMEOUT_SECS: u64 = 30;
pub(crate) const DEFAULT_BUFFER_POOL_BUFFERS: usize = 512;
pub(crate) const DEFAULT_DRAIN_SECS: u64 = 30;
/// Microseconds a shard keeps polling after its last event before it blocks.
pub(crate) const DEFAULT_BUSY_POLL_US: u64 = 50;

/// The smallest `--max-reply-bytes` accepted.
pub(crate) const MIN_REPLY_BYTES: usize = 4 << 10;
/// The smallest `--memory-limit` accepted.
pub(crate) const MIN_MEMORY_LIMIT_BYTES: u64 = 16 << 20;

/// hubbub: a sharded WebSocket server for a million connections per box.
#[derive(Debug, Parser)]
#[command(name = "hubbub", version, about)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Admin port: /metrics, /healthz, /readyz ("off" turns it off).
    #[arg(long, default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: String,
    /// TOML file with settings (keys are flag names); flags and HUBBUB_*
    /// environment variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Validate the configuration, print the effective settings and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Log format: `text` for people, `json` for collectors [default: text on
    /// a terminal, json otherwise].
    #[arg(long, value_enum, default_value_t = LogFormat::Auto, hide_default_value = true)]
    pub log_format: LogFormat,
    /// Log level or filter (`info`, `debug`, `hubbub=debug,info`; an unknown
    /// level is refused) [default: RUST_LOG, else info].
    #[arg(long, value_parser = values::parse_log_filter)]
    pub log_level: Option<String>,
    /// Shard threads, each with its own event loop [default: number of cores].
    #[arg(long)]
    pub shards: Option<usize>,
    /// Accept backlog of each shard's listener (also capped by net.core.somaxconn).
    #[arg(long, default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u32,
    /// Upgraded connections the server holds; more get 503 [default: the
    /// open-file limit minus a reserve].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Largest message accepted (bytes, or with a unit: 64KiB, 1MiB); larger
    /// ones close with 1009.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = values::parse_size)]
    pub max_message_size: usize,
    /// Outgoing bytes queued per connection before it is closed as a slow
    /// consumer (close code 1008, reason "slow consumer"); bytes, or with a
    /// unit: 64KiB, 1MiB.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = values::parse_size)]
    pub max_backlog_bytes: usize,
    /// Seconds of silence before the server pings a connection.
    #[arg(long, default_value_t = DEFAULT_PING_INTERVAL_SECS)]
    pub ping_interval_secs: u64,
    /// Seconds of silence after which a connection is closed (1001).
    #[arg(long, default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout_secs: u64,
    /// Seconds a client has to complete its upgrade request.
    #[arg(long, default_value_t = DEFAULT_HANDSHAKE_TIMEOUT_SECS)]
    pub handshake_timeout_secs: u64,
    /// Seconds from a message's first byte to its last (all its fragments);
    /// a connection holding a partial message longer is closed with 1008.
    /// Pings between fragments do not extend it.
    #[arg(long, default_value_t = DEFAULT_MESSAGE_TIMEOUT_SECS)]
    pub message_timeout_secs: u64,
    /// Bytes the server may hold for clients in all: partial input, outgoing
    /// queues, history (suffixes KiB, MiB, GiB). Near it new upgrades get 503,
    /// over it the largest holders are closed [default: the cgroup's
    /// memory.max, else 75% of physical memory, less the kernel's socket
    /// memory and the buffer pools at the configured capacity].
    #[arg(long, value_name = "BYTES", value_parser = values::parse_size)]
    pub memory_limit: Option<usize>,
    /// Upgraded connections per client address (0: no limit); more get 429.
    #[arg(long, default_value_t = 0)]
    pub max_connections_per_ip: u32,
    /// Handshakes per second per client address, same burst (0: no limit);
    /// more get 429.
    #[arg(long, default_value_t = 0)]
    pub max_handshakes_per_ip_per_sec: u32,
    /// Proxy address or range (repeatable, e.g. 10.0.0.0/8): for requests
    /// from it the per-address limits count the first untrusted address of
    /// X-Forwarded-For.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<String>,
    /// Allowed Origin (repeatable): `https://app.example.com`, `app.example.com`
    /// or `*.example.com`; requests without `Origin` (non-browsers) are
    /// allowed [default: any origin].
    #[arg(long = "allowed-origin", value_name = "PATTERN")]
    pub allowed_origins: Vec<String>,
    /// Subprotocol offered (repeatable), in order of preference.
    #[arg(long = "subprotocol", value_name = "NAME")]
    pub subprotocols: Vec<String>,
    /// 64 KiB buffers preallocated per shard, leased by connections holding
    /// partial input.
    #[arg(long, default_value_t = DEFAULT_BUFFER_POOL_BUFFERS)]
    pub buffer_pool: usize,
    /// Drain window on SIGTERM, SIGUSR2 or SIGINT, in seconds: Close 1001
    /// frames are spread over it less 5 s (all at once when it is 5 s or
    /// less); the process exits when its last connection is gone or the
    /// window ends.
    #[arg(long, default_value_t = DEFAULT_DRAIN_SECS)]
    pub drain_secs: u64,
    /// Microseconds a shard keeps polling without blocking after its last
    /// event, only while events keep coming (idle gaps under half of it):
    /// lower latency under load for a little CPU (0 turns it off).
    #[arg(long, default_value_t = DEFAULT_BUSY_POLL_US)]
    pub busy_poll_us: u64,
    /// PEM certificate chain for `wss://` on --listen (leaf first; needs
    /// --tls-key). SIGHUP reloads it; a bad file keeps the old pair.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub proxy: proxy::ProxyArgs,
    #[command(flatten)]
    pub events: EventsArgs,
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `text` on a terminal, `json` otherwise.
    Auto,
    Text,
    Json,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: no admin port.
    pub admin_listen: Option<SocketAddr>,
    pub shards: usize,
    pub backlog: u32,
    /// `None`: derived from the open-file limit at start.
    pub max_connections: Option<usize>,
    pub max_message_bytes: usize,
    pub max_backlog_bytes: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub message_timeout: Duration,
    /// `None`: derived at start (see `limits::default_memory_limit`).
    pub memory_limit: Option<u64>,
    pub per_ip: PerIpLimits,
    pub allowed_origins: Vec<OriginPattern>,
    pub subprotocols: Vec<String>,
    pub buffer_pool: usize,
    pub drain: Duration,
    pub busy_poll: Duration,
    /// Rooms, channels, authentication, history.
    pub hub: HubConfig,
    /// `wss://`: the certificate and key files (`None`: plain `ws://`).
    pub tls: Option<TlsFiles>,
    /// The application hooks (`None`: no `--proxy-*-url`).
    pub proxy: Option<crate::proxy::ProxyConfig>,
    /// What the application is told, and where (docs/EVENTS.md).
    pub events: crate::events::EventsConfig,
}

/// A flag value that cannot work, with the flag's name and the reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid --{field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

/// `--max-reply-bytes`: as given, between 4 KiB and the backlog cap (a reply
/// must fit where every message is judged); by default 256 KiB, or a quarter
/// of the backlog cap when that is smaller.
fn reply_cap(given: Option<usize>, backlog: usize) -> Result<usize, ConfigError> {
    match given {
        None => Ok(crate::hub::config::DEFAULT_MAX_REPLY_BYTES.min((backlog / 4).max(1))),
        Some(bytes) if (MIN_REPLY_BYTES..=backlog).contains(&bytes) => Ok(bytes),
        Some(_) => Err(invalid(
            "max-reply-bytes",
            format!("must be between 4KiB and --max-backlog-bytes ({backlog})"),
        )),
    }
}

/// `--max-bytes-per-sec`: as given, at least `--max-message-size` (its burst
/// must let the largest message through); by default 1 MiB, or the message
/// size when that is larger.
fn byte_rate(given: Option<usize>, max_message: usize) -> Result<usize, ConfigError> {
    match given {
        None => Ok(crate::hub::config::DEFAULT_MAX_BYTES_PER_SEC.max(max_message)),
        Some(bytes) if bytes >= max_message => Ok(bytes),
        Some(_) => Err(invalid(
            "max-bytes-per-sec",
            format!("must be at least --max-message-size ({max_message}): a message that size could never be sent"),
        )),
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // The constant is a valid address literal.
            listen: DEFAULT_LISTEN.parse().expect("DEFAULT_LISTEN parses"),
            admin_listen: Some(DEFAULT_ADMIN_LISTEN.parse().expect("DEFAULT_ADMIN_LISTEN parses")),
            shards: default_shards(),
            backlog: DEFAULT_BACKLOG,
            max_connections: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_backlog_bytes: DEFAULT_MAX_BACKLOG_BYTES,
            ping_interval: Duration::from_secs(DEFAULT_PING_INTERVAL_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            handshake_timeout: Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
            message_timeout: Duration::from_secs(DEFAULT_MESSAGE_TIMEOUT_SECS),
            memory_limit: None,
            per_ip: PerIpLimits::default(),
            allowed_origins: Vec::new(),
            subprotocols: Vec::new(),
            buffer_pool: DEFAULT_BUFFER_POOL_BUFFERS,
            drain: Duration::from_secs(DEFAULT_DRAIN_SECS),
            busy_poll: Duration::from_micros(DEFAULT_BUSY_POLL_US),
            hub: HubConfig::default(),
            tls: None,
            proxy: None,
            events: crate::events::EventsConfig::default(),
        }
    }
}

/// The flag a TLS file error is about.
fn tls_field(files: &TlsFiles, error: &TlsError) -> &'static str {
    let key = files.key.display().to_string();
    match error {
        TlsError::NoKey(_) => "tls-key",
        TlsError::Read { path, .. } | TlsError::Pem { path, .. } if *path == key => "tls-key",
        _ => "tls-cert",
    }
}

fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// Turns parsed flags into a checked configuration.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let allowed_origins = args
            .allowed_origins
            .iter()
            .map(|p| OriginPattern::parse(p).map_err(|e| invalid("allowed-origin", e)))
            .collect::<Result<_, _>>()?;
        let admin_listen = match args.admin_listen.as_str() {
            "off" => None,
            addr => Some(
                addr.parse()
                    .map_err(|_| invalid("admin-listen", "an address like 127.0.0.1:9090, or off"))?,
            ),
        };
        let trusted_proxies = args
            .trusted_proxies
            .iter()
            .map(|c| Cidr::parse(c).map_err(|e| invalid("trusted-proxy", e)))
            .collect::<Result<_, _>>()?;
        let reply_cap = reply_cap(args.hub.max_reply_bytes, args.max_backlog_bytes)?;
        let byte_rate = byte_rate(args.hub.max_bytes_per_sec, args.max_message_size)?;
        let node = args.hub.node_id.clone().unwrap_or_else(crate::cluster::default_node_id);
        let events = events::events_config(&args.events, &args.hub, node)?;
        let mut config = Config {
            listen: args.listen,
            admin_listen,
            shards: args.shards.unwrap_or_else(default_shards),
            backlog: args.backlog,
            max_connections: args.max_connections,
            max_message_bytes: args.max_message_size,
            max_backlog_bytes: args.max_backlog_bytes,
            ping_interval: Duration::from_secs(args.ping_interval_secs),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            handshake_timeout: Duration::from_secs(args.handshake_timeout_secs),
            message_timeout: Duration::from_secs(args.message_timeout_secs),
            memory_limit: args.memory_limit.map(|m| m as u64),
            per_ip: PerIpLimits {
                max_connections: args.max_connections_per_ip,
                handshakes_per_sec: args.max_handshakes_per_ip_per_sec,
                trusted_proxies,
            },
            allowed_origins,
            subprotocols: args.subprotocols,
            buffer_pool: args.buffer_pool,
            drain: Duration::from_secs(args.drain_secs),
            busy_poll: Duration::from_micros(args.busy_poll_us),
            hub: hub::hub_config(args.hub)?,
            proxy: proxy::proxy_config(args.proxy, args.max_message_size)?,
            tls: match (args.tls_cert, args.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => return Err(invalid("tls-cert", "--tls-cert and --tls-key go together")),
            },
            events,
        };
        if let Some(cluster) = &config.hub.cluster {
            // One name for the node in cluster keys and in its events.
            config.events.node = std::sync::Arc::clone(&cluster.node);
        }
        config.hub.max_reply_bytes = reply_cap;
        config.hub.max_bytes_per_sec = byte_rate;
        config.validate()?;
        if let Some(files) = &config.tls {
            // Read now, so --check-config and a bad start say which file is wrong.
            files
                .check()
                .map_err(|e| invalid(tls_field(files, &e), e.to_string()))?;
        }
        Ok(config)
    }

    /// Checks values that flags of the right type can still get wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        hub::validate(&self.hub)?;
        if self
            .subprotocols
            .iter()
            .any(|p| p.starts_with(crate::auth::BEARER_PROTOCOL_PREFIX))
        {
            return Err(invalid("subprotocol", "names starting with \"bearer.\" carry tokens"));
        }
        if self.shards == 0 || self.shards > 1024 {
            return Err(invalid("shards", "must be between 1 and 1024"));
        }
        if self.backlog == 0 {
            return Err(invalid("backlog", "must be at least 1"));
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > u32::MAX as usize / 2 {
            return Err(invalid("max-message-size", "must be between 1 byte and 2 GiB"));
        }
        if self.max_backlog_bytes == 0 {
            return Err(invalid("max-backlog-bytes", "must be at least 1"));
        }
        if self.message_timeout.is_zero() {
            return Err(invalid("message-timeout-secs", "must be at least 1 second"));
        }
        if self.memory_limit.is_some_and(|m| m < MIN_MEMORY_LIMIT_BYTES) {
            return Err(invalid("memory-limit", "must be at least 16 MiB"));
        }
        if self.ping_interval.is_zero() || self.handshake_timeout.is_zero() {
            return Err(invalid("ping-interval-secs", "timeouts must be at least 1 second"));
        }
        if self.idle_timeout <= self.ping_interval {
            return Err(invalid(
                "idle-timeout-secs",
                "must be longer than --ping-interval-secs, so a ping can be answered",
            ));
        }
        if self.busy_poll > Duration::from_millis(10) {
            return Err(invalid("busy-poll-us", "at most 10000: longer spins only burn CPU"));
        }
        if self.buffer_pool == 0 {
            return Err(invalid("buffer-pool", "each shard needs at least one buffer"));
        }
        if self
            .subprotocols
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic() && b != b','))
        {
            return Err(invalid(
                "subprotocol",
                "names are HTTP tokens: visible ASCII, no commas",
            ));
        }
        Ok(())
    }

    /// The connection cap and why: the configured cap, or what the file limit allows.
    pub(crate) fn connection_cap(&self, file_limit: u64) -> (usize, &'static str) {
        let by_files = limits::connections_for(file_limit, self.shards);
        match self.max_connections {
            Some(cap) if cap <= by_files => (cap, "--max-connections"),
            Some(_) => (by_files, "open-file limit (below --max-connections)"),
            None => (by_files, "open-file limit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["hubbub"];
        argv.extend_from_slice(args);
        Config::from_args(Args::try_parse_from(argv).unwrap())
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.backlog, 4096);
        assert_eq!(config.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(config.max_backlog_bytes, DEFAULT_MAX_BACKLOG_BYTES);
        assert_eq!(config.idle_timeout, Duration::from_secs(75));
        assert_eq!(config.shards, default_shards());
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = parse(&["--idle-timeout-secs", "10", "--ping-interval-secs", "10"]).unwrap_err();
        assert_eq!(err.field, "idle-timeout-secs");
        assert_eq!(parse(&["--shards", "0"]).unwrap_err().field, "shards");
        assert_eq!(parse(&["--allowed-origin", "*"]).unwrap_err().field, "allowed-origin");
        assert_eq!(parse(&["--subprotocol", "a,b"]).unwrap_err().field, "subprotocol");
    }

    #[test]
    fn memory_limit_and_trusted_proxies_parse() {
        let config = parse(&["--memory-limit", "256MiB", "--trusted-proxy", "10.0.0.0/8"]).unwrap();
        assert_eq!(config.memory_limit, Some(256 << 20));
        assert_eq!(config.per_ip.trusted_proxies.len(), 1);
        assert_eq!(parse(&["--memory-limit", "1MiB"]).unwrap_err().field, "memory-limit");
        assert_eq!(
            parse(&["--trusted-proxy", "10.0.0.0/99"]).unwrap_err().field,
            "trusted-proxy"
        );
    }

    #[test]
    fn connection_cap_takes_the_lower_bound() {
        let mut config = parse(&["--shards", "2"]).unwrap();
        assert_eq!(config.connection_cap(20_000).1, "open-file limit");
        config.max_connections = Some(100);
        assert_eq!(config.connection_cap(20_000), (100, "--max-connections"));
    }

    #[test]
    fn replies_fit_under_the_backlog_cap() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["hubbub"];
            argv.extend_from_slice(args);
            Config::from_args(Args::try_parse_from(argv).unwrap())
        };
        assert_eq!(parse(&[]).unwrap().hub.max_reply_bytes, 256 << 10);
        let err = parse(&["--max-reply-bytes", "2MiB"]).unwrap_err();
        assert_eq!(err.field, "max-reply-bytes");
        assert!(err.reason.contains("--max-backlog-bytes"), "{}", err.reason);
        assert!(parse(&["--max-reply-bytes", "2MiB", "--max-backlog-bytes", "4MiB"]).is_ok());
        assert_eq!(
            parse(&["--max-reply-bytes", "1KiB"]).unwrap_err().field,
            "max-reply-bytes"
        );
        let small = parse(&["--max-backlog-bytes", "64KiB"]).unwrap();
        assert_eq!(small.hub.max_reply_bytes, 16 << 10, "a quarter of a small backlog cap");
    }

    #[test]
    fn the_byte_rate_lets_the_largest_message_through() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["hubbub"];
            argv.extend_from_slice(args);
            Config::from_args(Args::try_parse_from(argv).unwrap())
        };
        assert!(parse(&[]).is_ok(), "both default to 1 MiB");
        let err = parse(&["--max-bytes-per-sec", "64KiB"]).unwrap_err();
        assert_eq!(err.field, "max-bytes-per-sec");
        assert!(parse(&["--max-bytes-per-sec", "64KiB", "--max-message-size", "64KiB"]).is_ok());
        let big = parse(&["--max-message-size", "2MiB"]).unwrap();
        assert_eq!(
            big.hub.max_bytes_per_sec,
            2 << 20,
            "the default follows a larger message size"
        );
    }
}
