//! Owns the command line: one subcommand per scenario, the options every scenario shares, and the
//! hidden options a parent passes to its worker processes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

/// Load tester for hubbub and any other RFC 6455 (ws:// or wss://) server.
///
/// Every run is bounded in time and count and stops by itself. Targets default to loopback.
#[derive(Parser, Debug, Clone, Serialize)]
#[command(name = "hubbub-load", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
    #[command(flatten)]
    pub common: Common,
}

/// Options every scenario takes (they may come after the subcommand).
#[derive(Args, Debug, Clone, Serialize)]
pub struct Common {
    /// Worker processes to start; each takes an equal share of connections and rates, and the
    /// results are merged exactly (histograms added, not averaged).
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub procs: u32,
    /// Spread connections over these source addresses, e.g. 127.0.0.1-127.0.0.50 (about 28K ports
    /// each per destination).
    #[arg(long, global = true)]
    pub source_ips: Option<String>,
    /// Write every figure of the run to this JSON file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Draw the latency percentile distribution to this SVG file.
    #[arg(long, global = true)]
    pub plot: Option<PathBuf>,
    /// Exit with status 2 when the error rate (failed, dropped, lost or wrong, over attempted)
    /// exceeds this fraction (0.01 = 1%).
    #[arg(long, global = true)]
    pub max_error_rate: Option<f64>,
    /// Exit with status 2 when the scenario's main p99 latency exceeds this many milliseconds.
    #[arg(long, global = true)]
    pub max_p99_ms: Option<f64>,
    /// Give up on a connect plus upgrade after this many seconds (counted as `timeout`).
    #[arg(long, global = true, default_value_t = 10.0)]
    pub handshake_timeout_secs: f64,
    /// Give up waiting for the server's answer to our close frame after this many seconds.
    #[arg(long, global = true, default_value_t = 5.0)]
    pub close_timeout_secs: f64,
    /// Largest frame accepted from the server, in bytes.
    #[arg(long, global = true, default_value_t = 64 << 20)]
    pub max_frame: u64,
    /// Seconds between progress updates.
    #[arg(long, global = true, default_value_t = 1.0)]
    pub progress_secs: f64,
    /// No progress output (the final table is still printed).
    #[arg(long, global = true)]
    pub quiet: bool,
    /// `wss://` targets: trust this CA (PEM file) for the server's certificate.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// `wss://` targets: accept any server certificate (testing only).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// `wss://` targets: never resume a TLS session (every connection pays a full handshake).
    #[arg(long, global = true)]
    pub tls_no_resume: bool,
    /// Internal: this process is worker I of `--procs` (set by the parent).
    #[arg(long, global = true, hide = true)]
    pub worker_index: Option<u32>,
}

/// The scenarios.
#[derive(Subcommand, Debug, Clone, Serialize)]
pub enum Scenario {
    /// Open N connections at up to R handshakes/s, hold them, close them.
    Connect(ConnectArgs),
    /// C connections exchange messages with an echo endpoint, closed or open loop.
    Echo(EchoArgs),
    /// N subscribers and P publishers on one room; checks order, gaps and delivery latency.
    Broadcast(BroadcastArgs),
    /// Connect and disconnect at rate R (reconnect storms).
    Churn(ChurnArgs),
    /// A share of the clients stop reading; checks they are cut off and the others are not hurt.
    Slow(SlowArgs),
    /// Hostile: N connections hold a partial request head, frame or message, adding bytes at a
    /// trickle; reports what the server did to each (close code, status, reset) and when.
    Trickle(TrickleArgs),
    /// Hostile: N connections send data frames as fast as the socket allows (optionally never
    /// reading); reports what the server did to each and when.
    Flood(FloodArgs),
}

/// `connect`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct ConnectArgs {
    /// Target URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    pub url: String,
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: u64,
    /// Handshakes started per second at most.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Seconds to hold the connections once all are open.
    #[arg(long, default_value_t = 10.0)]
    pub hold_secs: f64,
    /// Ping every connection every K seconds while holding (counts the ones that went quiet).
    #[arg(long)]
    pub ping_secs: Option<f64>,
    /// PID of the server, to report its resident memory per connection.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's Prometheus endpoint (http://127.0.0.1:PORT/metrics), read for
    /// `process_resident_memory_bytes` when no PID is given.
    #[arg(long)]
    pub metrics_url: Option<String>,
    #[command(flatten)]
    pub centrifuge: CentrifugeArgs,
}

/// The Centrifuge client protocol (`connect` and `broadcast`).
#[derive(Args, Debug, Clone, Serialize)]
pub struct CentrifugeArgs {
    /// Speak the Centrifuge client protocol (JSON) to --url, e.g.
    /// ws://127.0.0.1:8080/connection/websocket: each connection sends `connect`, then subscribes
    /// to --channel, and counts as open once subscribed (a refusal counts as failed
    /// `centrifuge_CODE`; no answer within --handshake-timeout-secs as `timeout`). `broadcast`
    /// publishes with `publish` commands and counts publication pushes.
    #[arg(long)]
    pub centrifuge: bool,
    /// The channel to subscribe to and publish on [default: hubbub-load].
    #[arg(long, requires = "centrifuge")]
    pub channel: Option<String>,
    /// The token (a JWT) the `connect` command carries; without it the connect is anonymous.
    #[arg(long, requires = "centrifuge")]
    pub token: Option<String>,
}

impl CentrifugeArgs {
    /// The channel to join.
    pub fn channel(&self) -> &str {
        self.channel.as_deref().unwrap_or(crate::centrifuge::DEFAULT_CHANNEL)
    }
}

/// `echo`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct EchoArgs {
    /// Target URL (an endpoint that echoes every message).
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    pub url: String,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub connections: u64,
    /// Message size in bytes (at least 32: sequence number and timestamp).
    #[arg(short = 's', long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(32..=(64 << 20)))]
    pub size: u64,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    /// Closed loop: messages in flight per connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub pipeline: u32,
    /// Open loop: total messages per second over all connections, sent on schedule whatever the
    /// server does (latency is measured from the scheduled time: no coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of sending.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Stop after this many messages in total, even before the duration ends.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Seconds to wait for outstanding echoes after sending stops.
    #[arg(long, default_value_t = 5.0)]
    pub drain_secs: f64,
    /// Handshakes per second while connecting.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
}

/// `broadcast`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct BroadcastArgs {
    /// Target URL: a room where every message reaches every member, sender included.
    #[arg(long, default_value = "ws://127.0.0.1:8080/room/hubbub-load")]
    pub url: String,
    /// Connections that only receive.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub subscribers: u64,
    /// Connections that publish (and receive).
    #[arg(short = 'p', long, default_value_t = 1)]
    pub publishers: u64,
    /// Messages per second published, over all publishers.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Message size in bytes (at least 40).
    #[arg(short = 's', long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(40..=(64 << 20)))]
    pub size: u64,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    /// Seconds of publishing.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Seconds to wait for deliveries after publishing stops.
    #[arg(long, default_value_t = 3.0)]
    pub drain_secs: f64,
    /// Milliseconds to wait between the last join and the first publish.
    #[arg(long, default_value_t = 200)]
    pub settle_ms: u64,
    /// Handshakes per second while connecting.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    #[command(flatten)]
    pub centrifuge: CentrifugeArgs,
}

/// `churn`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct ChurnArgs {
    /// Target URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    pub url: String,
    /// New connections per second.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of churning.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Milliseconds each connection stays open before it closes.
    #[arg(long, default_value_t = 0)]
    pub hold_ms: u64,
    /// Connections alive at once at most (starts beyond it are skipped and counted).
    #[arg(long, default_value_t = 10_000)]
    pub max_concurrent: u64,
}

/// `slow`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct SlowArgs {
    /// Target URL (an echo endpoint).
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    pub url: String,
    /// Connections in all.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: u64,
    /// Share of the connections that stop reading (0..1).
    #[arg(long, default_value_t = 0.1)]
    pub slow_share: f64,
    /// Echo messages per second over the well-behaved clients (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Message size in bytes (at least 32).
    #[arg(short = 's', long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(32..=(64 << 20)))]
    pub size: u64,
    /// Seconds of the test.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Seconds the stopped clients then read again, looking for the server's close frame, while
    /// the others' last echoes come in.
    #[arg(long, default_value_t = 5.0)]
    pub drain_secs: f64,
    /// The close code the server documents for slow consumers.
    #[arg(long, default_value_t = 1008)]
    pub expect_close_code: u16,
    /// Bytes each stopped client sends (as fast as the server reads) before it just waits: enough
    /// to overflow the server's socket buffer plus its backlog cap.
    #[arg(long, default_value_t = 16 << 20)]
    pub slow_send_bytes: u64,
    /// Receive buffer (SO_RCVBUF) of the stopped clients, so the server's backlog fills sooner.
    #[arg(long, default_value_t = 4096)]
    pub slow_recv_buffer: usize,
    /// Handshakes per second while connecting.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
}

/// What a `trickle` attacker holds open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum TrickleMode {
    /// The start of an upgrade request, then endless header lines at `--rate`.
    Head,
    /// Upgrades, then the first 8 bytes of a frame, then frame bytes at `--rate`.
    Frame,
    /// Upgrades, sends a `--fragment-bytes` non-final fragment, then keep-alives at `--rate`.
    Message,
}

/// The well-behaved client of the hostile scenarios (`--probe`).
#[derive(Args, Debug, Clone, Serialize)]
pub struct ProbeArgs {
    /// Run a well-behaved echo client on its own connection meanwhile, one message at a time,
    /// and report its round trips (before and during the attack) and failures.
    #[arg(long)]
    pub probe: bool,
    /// The probe's echo endpoint [default: /echo on the target's host and port].
    #[arg(long, requires = "probe")]
    pub probe_url: Option<String>,
    /// Milliseconds between the probe's messages.
    #[arg(long, default_value_t = 10.0, value_parser = positive_f64)]
    pub probe_interval_ms: f64,
    /// The probe's message size in bytes (at least 32).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(32..=(1 << 20)))]
    pub probe_size: u64,
    /// Seconds the probe runs alone before the attack, for a baseline.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative_f64)]
    pub probe_baseline_secs: f64,
}

/// `trickle`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct TrickleArgs {
    /// Target URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    pub url: String,
    /// What each attacker holds open.
    #[arg(long, value_enum)]
    pub mode: TrickleMode,
    /// Attacking connections.
    #[arg(short = 'c', long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    /// Bytes per second each attacker adds after its opening bytes (0: none at all).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative_f64)]
    pub rate: f64,
    /// Seconds of the attack, counted from the first connect; then every attacker still alive
    /// is counted and dropped.
    #[arg(short = 'd', long, default_value_t = 10.0, value_parser = positive_f64)]
    pub duration_secs: f64,
    /// Handshakes (head: connects) started per second.
    #[arg(long, default_value_t = 2000.0, value_parser = positive_f64)]
    pub connect_rate: f64,
    /// Frame mode: payload bytes of each frame [default: 10].
    #[arg(long, value_parser = parse_size)]
    pub frame_payload: Option<u64>,
    /// Message mode: size of the first, non-final fragment, e.g. 900KiB [default: 900KiB].
    #[arg(long, value_parser = parse_size)]
    pub fragment_bytes: Option<u64>,
    /// Message mode: what holds the message open [default: ping].
    #[arg(long, value_enum)]
    pub keepalive: Option<crate::hostile::Keepalive>,
    /// Exit with status 2 unless the server ended every attacker within this many seconds of
    /// its start (must be less than --duration).
    #[arg(long, value_parser = positive_f64)]
    pub expect_closed_within: Option<f64>,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

/// `flood`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct FloodArgs {
    /// Target URL (/echo, or /room/NAME where every member gets every message).
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    pub url: String,
    /// Flooding connections.
    #[arg(short = 'c', long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    /// Message size, e.g. 1024 or 64KiB.
    #[arg(short = 's', long, default_value = "1024", value_parser = parse_size)]
    pub size: u64,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    /// Seconds of flooding, counted from the first connect.
    #[arg(short = 'd', long, default_value_t = 10.0, value_parser = positive_f64)]
    pub duration_secs: f64,
    /// Never read while flooding, so the server's backlog for the attacker grows; the attackers
    /// read again after --duration, for --drain-secs, to find the server's close frame.
    #[arg(long)]
    pub no_read: bool,
    /// Receive buffer (SO_RCVBUF) of the attackers; small values fill up sooner with --no-read.
    #[arg(long, value_parser = parse_size)]
    pub recv_buffer: Option<u64>,
    /// Seconds the --no-read attackers read again after the flood, looking for the close frame.
    #[arg(long, default_value_t = 5.0, value_parser = non_negative_f64)]
    pub drain_secs: f64,
    /// Handshakes started per second.
    #[arg(long, default_value_t = 2000.0, value_parser = positive_f64)]
    pub connect_rate: f64,
    /// Exit with status 2 unless the server ended every attacker within this many seconds of
    /// its start (must be less than --duration).
    #[arg(long, value_parser = positive_f64)]
    pub expect_closed_within: Option<f64>,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

impl Scenario {
    /// The subcommand's name.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Connect(_) => "connect",
            Scenario::Echo(_) => "echo",
            Scenario::Broadcast(_) => "broadcast",
            Scenario::Churn(_) => "churn",
            Scenario::Slow(_) => "slow",
            Scenario::Trickle(_) => "trickle",
            Scenario::Flood(_) => "flood",
        }
    }

    /// The target URL.
    pub fn url(&self) -> &str {
        match self {
            Scenario::Connect(a) => &a.url,
            Scenario::Echo(a) => &a.url,
            Scenario::Broadcast(a) => &a.url,
            Scenario::Churn(a) => &a.url,
            Scenario::Slow(a) => &a.url,
            Scenario::Trickle(a) => &a.url,
            Scenario::Flood(a) => &a.url,
        }
    }

    /// The histogram the `--max-p99-ms` threshold and the plot's headline are about.
    pub fn main_latency(&self) -> &'static str {
        match self {
            Scenario::Connect(_) | Scenario::Churn(_) => "handshake",
            Scenario::Echo(_) | Scenario::Slow(_) => "rtt",
            Scenario::Broadcast(_) => "delivery",
            Scenario::Trickle(_) | Scenario::Flood(_) => "probe",
        }
    }

    /// The probe flags of a hostile scenario.
    pub fn probe(&self) -> Option<&ProbeArgs> {
        match self {
            Scenario::Trickle(a) => Some(&a.probe),
            Scenario::Flood(a) => Some(&a.probe),
            _ => None,
        }
    }

    /// Whether this is a hostile scenario (its connections attack; a probe measures).
    pub fn is_hostile(&self) -> bool {
        self.probe().is_some()
    }
}

/// Parses a byte size: a whole number with an optional unit `B`, `KiB`, `MiB`, `GiB` (powers of
/// 1024) or `kB`, `MB`, `GB` (powers of 1000), in any case: `900KiB`, `1MiB`, `65536`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 1024, 64KiB, 1MiB)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?} (use B, KiB, MiB, GiB, kB, MB, GB)"
            ))
        }
    };
    n.checked_mul(scale).ok_or_else(|| format!("{text:?} is too large"))
}

fn non_negative_f64(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a number >= 0")),
    }
}

fn positive_f64(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a number > 0")),
    }
}

/// Worker `index`'s share of `total` over `workers` (the first ones take the remainder).
pub fn share(total: u64, index: u32, workers: u32) -> u64 {
    let (w, i) = (u64::from(workers.max(1)), u64::from(index));
    total / w + u64::from(i < total % w)
}

/// The first global index of worker `index`'s share.
pub fn share_start(total: u64, index: u32, workers: u32) -> u64 {
    (0..index).map(|i| share(total, i, workers)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn shares_add_up() {
        let parts: Vec<u64> = (0..3).map(|i| share(10, i, 3)).collect();
        assert_eq!(parts, [4, 3, 3]);
        assert_eq!(share_start(10, 2, 3), 7);
        assert_eq!(share(5, 0, 1), 5);
    }

    #[test]
    fn global_options_may_follow_the_subcommand() {
        let cli = Cli::try_parse_from(["hubbub-load", "echo", "-c", "3", "--procs", "2", "--max-p99-ms", "5"]).unwrap();
        assert_eq!(cli.common.procs, 2);
        assert_eq!(cli.common.max_p99_ms, Some(5.0));
        assert!(matches!(cli.scenario, Scenario::Echo(EchoArgs { connections: 3, .. })));
        assert!(Cli::try_parse_from(["hubbub-load", "echo", "--size", "8"]).is_err());
    }

    #[test]
    fn sizes_take_the_units_the_docs_write() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("900KiB"), Ok(900 * 1024));
        assert_eq!(parse_size("1mib"), Ok(1 << 20));
        assert_eq!(parse_size("2 MB"), Ok(2_000_000));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("3 parsecs").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("99999999999GiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn hostile_flags_are_checked() {
        let cli = Cli::try_parse_from([
            "hubbub-load",
            "trickle",
            "--mode",
            "message",
            "--fragment-bytes",
            "900KiB",
            "--probe",
        ])
        .unwrap();
        assert!(matches!(&cli.scenario, Scenario::Trickle(a) if a.fragment_bytes == Some(921_600) && a.probe.probe));
        assert_eq!(cli.scenario.main_latency(), "probe");
        for bad in [
            &["hubbub-load", "trickle"][..],
            &["hubbub-load", "trickle", "--mode", "head", "--rate", "-1"],
            &["hubbub-load", "trickle", "--mode", "head", "-c", "0"],
            &["hubbub-load", "trickle", "--mode", "head", "-d", "0"],
            &["hubbub-load", "flood", "--probe-url", "ws://127.0.0.1:1/echo"],
            &["hubbub-load", "flood", "-s", "big"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
