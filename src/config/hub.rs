//! Hub flags (`--jwt-secret`, limits, history, `--redis`) into
//! [`HubConfig`], with the checks clap cannot make.

use std::time::Duration;

use clap::Args as ClapArgs;

use super::ConfigError;
use crate::auth;
use crate::auth::pattern::ChannelPattern;
use crate::bus::cluster::ClusterConfig;
use crate::bus::history::HistoryRule;
use crate::cluster::link;
use crate::hub::config::DEFAULT_MAILBOX_TTL_SECS;
use crate::hub::config::{
    HubConfig, DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TTL_SECS, DEFAULT_MAX_BYTES_PER_SEC, DEFAULT_MAX_CHANNELS,
    DEFAULT_MAX_MESSAGES_PER_SEC, DEFAULT_MAX_NEW_CHANNELS_PER_MINUTE, DEFAULT_MAX_REPLY_BYTES,
    DEFAULT_MAX_SUBSCRIPTIONS,
};
use crate::tick::secs_to_ticks;

/// Hub flags (flattened into the main `Args`).
#[derive(Debug, Clone, ClapArgs)]
pub struct HubArgs {
    /// HS256 secret for client JWTs (at least 32 bytes). Without it every
    /// client is anonymous.
    #[arg(long, env = "HUBBUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Let clients without a token in: `true` or `false`; the flag alone
    /// means true [default: true without --jwt-secret, false with it].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_anonymous: Option<bool>,
    /// With --jwt-secret, refuse tokens without an `exp` claim (401
    /// "missing_exp"), which would be valid forever: `true` or `false`; the
    /// flag alone means true.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub jwt_require_exp: bool,
    /// Channel subscriptions per connection.
    #[arg(long, default_value_t = DEFAULT_MAX_SUBSCRIPTIONS)]
    pub max_subscriptions: usize,
    /// `/ws` commands and `/room` messages per second per connection, with a
    /// burst of as many; over it a command gets error 105 (closed with 1008
    /// if it keeps on), a room member is closed with 1008 (echo is not
    /// limited).
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGES_PER_SEC)]
    pub max_messages_per_sec: u32,
    /// Bytes per second per connection of `/ws` commands and `/room`
    /// messages, with a burst of as many; over it as --max-messages-per-sec.
    /// At least --max-message-size; by default --max-message-size when that
    /// is larger [default: 1MiB].
    #[arg(long, value_name = "BYTES", value_parser = super::values::parse_size)]
    pub max_bytes_per_sec: Option<usize>,
    /// Channels the node holds at once; creating one more is refused (110).
    #[arg(long, default_value_t = DEFAULT_MAX_CHANNELS)]
    pub max_channels: usize,
    /// Channels one connection may create per minute; more are refused (110).
    #[arg(long, default_value_t = DEFAULT_MAX_NEW_CHANNELS_PER_MINUTE)]
    pub max_new_channels_per_minute: u32,
    /// Connections one user may hold; a new one closes the oldest with 4001
    /// "replaced" (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_connections_per_user: usize,
    /// Publications kept per channel for history and recovery.
    #[arg(long, default_value_t = DEFAULT_HISTORY_SIZE)]
    pub history_size: usize,
    /// Seconds a publication is kept.
    #[arg(long, default_value_t = DEFAULT_HISTORY_TTL_SECS)]
    pub history_ttl_secs: u64,
    /// Bytes of publication data kept per channel (the oldest go first).
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = super::values::parse_size)]
    pub history_max_bytes: usize,
    /// Per-pattern history (repeatable): `PATTERN=SIZE:TTL_SECS[:BYTES]`,
    /// e.g. `chat:*=1000:3600:4MiB`. The most specific pattern wins; without
    /// BYTES, --history-max-bytes.
    #[arg(long = "history-rule", value_name = "PATTERN=SIZE:TTL[:BYTES]")]
    pub history_rules: Vec<String>,
    /// Largest reply to one command (history pages, recovered publications);
    /// a longer history answer says `more`, a larger recovery is refused
    /// with a reason that says to page. Between 4KiB and
    /// --max-backlog-bytes; by default a quarter of --max-backlog-bytes when
    /// that is smaller [default: 256KiB].
    #[arg(long, value_name = "BYTES", value_parser = super::values::parse_size)]
    pub max_reply_bytes: Option<usize>,
    /// Bearer key for the server API (`/api/*` on the admin port); without
    /// one the API is off (every call answers 403 saying so).
    #[arg(long, env = "HUBBUB_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Cluster mode: the Redis that joins the nodes (docs/CLUSTER.md):
    /// `redis://[USER:PASSWORD@]HOST:PORT[/DB]`, or `rediss://` for TLS.
    /// Without it (and without `--redis-sentinel`) the node runs alone.
    /// `HUBBUB_REDIS_URL` keeps a password out of the process list.
    /// Repeatable: channels are spread over the servers by a hash of their
    /// name (the first also holds the nodes' entries; docs/CLUSTER.md says
    /// what changing the list does).
    #[arg(long, value_name = "URL", env = "HUBBUB_REDIS_URL", hide_env_values = true)]
    pub redis: Vec<String>,
    /// Cluster mode through Sentinel: a sentinel's `HOST:PORT`
    /// (repeatable); needs `--redis-master-name`.
    #[arg(long = "redis-sentinel", value_name = "HOST:PORT")]
    pub redis_sentinels: Vec<String>,
    /// The master's name the sentinels monitor.
    #[arg(long, value_name = "NAME")]
    pub redis_master_name: Option<String>,
    /// PEM file of the roots that `rediss://` trusts [default: the system's].
    #[arg(long, value_name = "PATH")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// This node's name in the cluster [default: HOSTNAME-PID-RANDOM].
    #[arg(long)]
    pub node_id: Option<String>,
    /// Seconds without a heartbeat after which a node's connections and
    /// presence stop counting.
    #[arg(long, default_value_t = crate::cluster::DEFAULT_NODE_TTL_SECS)]
    pub node_ttl_secs: u64,
    /// Offline messages: each `send` also lands in the user's mailbox
    /// (channel `#mailbox:USER`), which keeps the last N for recovery after
    /// a reconnect (docs/PROTOCOL.md, "Mailbox"). 0: off.
    #[arg(long, default_value_t = 0)]
    pub mailbox_size: usize,
    /// Seconds a mailbox keeps a message (1 to 86400).
    #[arg(long, default_value_t = DEFAULT_MAILBOX_TTL_SECS)]
    pub mailbox_ttl_secs: u64,
    /// Bytes of message data one mailbox keeps (the oldest go first).
    #[arg(long, value_name = "BYTES", default_value = "256KiB", value_parser = super::values::parse_size)]
    pub mailbox_max_bytes: usize,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

/// The hub's settings from its flags, checked.
pub(crate) fn hub_config(args: HubArgs) -> Result<HubConfig, ConfigError> {
    let jwt_secret = args.jwt_secret.clone().map(String::into_bytes);
    if let Some(secret) = &jwt_secret {
        auth::check_secret(secret).map_err(|_| invalid("jwt-secret", "must be at least 32 bytes (RFC 7518 §3.2)"))?;
    }
    let history_rules = args
        .history_rules
        .iter()
        .map(|r| parse_rule(r, args.history_max_bytes))
        .collect::<Result<_, _>>()?;
    let config = HubConfig {
        allow_anonymous: args.allow_anonymous.unwrap_or(jwt_secret.is_none()),
        jwt_secret,
        jwt_require_exp: args.jwt_require_exp,
        max_subscriptions: args.max_subscriptions,
        max_messages_per_sec: args.max_messages_per_sec,
        // Settled against --max-message-size by `Config::from_args`.
        max_bytes_per_sec: args.max_bytes_per_sec.unwrap_or(DEFAULT_MAX_BYTES_PER_SEC),
        max_channels: args.max_channels,
        max_new_channels_per_minute: args.max_new_channels_per_minute,
        max_connections_per_user: args.max_connections_per_user,
        history: HistoryRule {
            size: args.history_size,
            ttl_ticks: secs_to_ticks(args.history_ttl_secs),
            max_bytes: args.history_max_bytes,
        },
        // Settled against --max-backlog-bytes by `Config::from_args`.
        max_reply_bytes: args.max_reply_bytes.unwrap_or(DEFAULT_MAX_REPLY_BYTES),
        history_rules,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        cluster: cluster_config(&args)?,
        events: None,
        mailbox: mailbox_rule(&args)?,
    };
    validate(&config)?;
    Ok(config)
}

/// Checks what neither clap nor the config file's types can.
pub fn validate(config: &HubConfig) -> Result<(), ConfigError> {
    if config.max_messages_per_sec == 0 {
        return Err(invalid("max-messages-per-sec", "must be at least 1"));
    }
    if config.max_subscriptions == 0 {
        return Err(invalid("max-subscriptions", "must be at least 1"));
    }
    if config.max_bytes_per_sec < 1024 {
        return Err(invalid("max-bytes-per-sec", "must be at least 1KiB"));
    }
    if config.max_channels == 0 {
        return Err(invalid("max-channels", "must be at least 1"));
    }
    if config.max_new_channels_per_minute == 0 {
        return Err(invalid("max-new-channels-per-minute", "must be at least 1"));
    }
    Ok(())
}

/// The mailbox's rule, `None` when `--mailbox-size` is 0 (the default).
fn mailbox_rule(args: &HubArgs) -> Result<Option<HistoryRule>, ConfigError> {
    if args.mailbox_size == 0 {
        return Ok(None);
    }
    // Redis keeps a channel's epoch and offset a day after its last
    // publication: a mailbox kept longer would outlive its own position.
    let max_ttl = crate::cluster::keys::CHANNEL_KEYS_TTL_SECS;
    if !(1..=max_ttl).contains(&args.mailbox_ttl_secs) {
        return Err(invalid("mailbox-ttl-secs", format!("must be 1 to {max_ttl}")));
    }
    if args.mailbox_max_bytes == 0 {
        return Err(invalid("mailbox-max-bytes", "must be at least 1"));
    }
    Ok(Some(HistoryRule {
        size: args.mailbox_size,
        ttl_ticks: secs_to_ticks(args.mailbox_ttl_secs),
        max_bytes: args.mailbox_max_bytes,
    }))
}

fn cluster_config(args: &HubArgs) -> Result<Option<ClusterConfig>, ConfigError> {
    let mut urls: Vec<String> = args.redis.iter().filter(|r| !r.is_empty()).cloned().collect();
    let sentinels = args.redis_sentinels.clone();
    if urls.is_empty() && sentinels.is_empty() {
        return Ok(None);
    }
    if urls.len() > 1 && !sentinels.is_empty() {
        return Err(invalid(
            "redis",
            "with --redis-sentinel give one --redis (the master's credentials): one master is followed",
        ));
    }
    // A bare HOST:PORT is still accepted, as before URLs were.
    let with_scheme = |url: String| {
        if url.contains("://") {
            url
        } else {
            format!("redis://{url}")
        }
    };
    urls = urls.into_iter().map(with_scheme).collect();
    if urls.len() > crate::bus::cluster::MAX_SERVERS {
        let most = crate::bus::cluster::MAX_SERVERS;
        return Err(invalid(
            "redis",
            format!("at most {most} Redis servers (--redis given {} times)", urls.len()),
        ));
    }
    let more: Vec<String> = urls.iter().skip(1).cloned().collect();
    for (i, url) in more.iter().enumerate() {
        link::check_url(url).map_err(|e| invalid("redis", format!("the --redis number {}: {e}", i + 2)))?;
        if urls[..=i].contains(url) {
            return Err(invalid("redis", format!("{} is given twice", link::redacted(url))));
        }
    }
    let redis = urls.into_iter().next().unwrap_or_else(|| "redis://".to_string());
    let with_host = if sentinels.is_empty() {
        redis.clone()
    } else {
        link::placeholder_host(&redis)
    };
    link::check_url(&with_host).map_err(|e| {
        invalid(
            "redis",
            format!("{e} (expected redis://[USER:PASSWORD@]HOST:PORT[/DB] or rediss://...)"),
        )
    })?;
    for sentinel in &sentinels {
        link::check_sentinel(sentinel).map_err(|e| invalid("redis-sentinel", format!("{sentinel:?}: {e}")))?;
    }
    if args.redis_ca_file.is_some()
        && !redis.starts_with("rediss://")
        && more.iter().all(|u| !u.starts_with("rediss://"))
    {
        return Err(invalid(
            "redis-ca-file",
            "applies to TLS only: use a rediss:// URL in --redis",
        ));
    }
    let master_name = args.redis_master_name.clone().filter(|n| !n.is_empty());
    if sentinels.is_empty() != master_name.is_none() {
        return Err(invalid(
            "redis-master-name",
            "--redis-sentinel and --redis-master-name go together",
        ));
    }
    let node = args.node_id.clone().unwrap_or_else(crate::cluster::default_node_id);
    if node.is_empty() || node.contains(['|', ' ', '\n']) {
        return Err(invalid("node-id", "must be non-empty, without '|', spaces or newlines"));
    }
    if args.node_ttl_secs == 0 {
        return Err(invalid("node-ttl-secs", "must be at least 1"));
    }
    Ok(Some(ClusterConfig {
        redis,
        more_redis: more,
        sentinels,
        master_name,
        ca_file: args.redis_ca_file.clone(),
        node: node.into(),
        node_ttl: Duration::from_secs(args.node_ttl_secs),
    }))
}

fn parse_rule(rule: &str, default_max_bytes: usize) -> Result<(ChannelPattern, HistoryRule), ConfigError> {
    let bad = |why: &str| {
        invalid(
            "history-rule",
            format!("{rule:?}: {why} (expected PATTERN=SIZE:TTL_SECS[:BYTES])"),
        )
    };
    let (pattern, limits) = rule.split_once('=').ok_or_else(|| bad("no '='"))?;
    let mut parts = limits.split(':');
    let (size, ttl) = match (parts.next(), parts.next()) {
        (Some(size), Some(ttl)) => (size, ttl),
        _ => return Err(bad("no ':'")),
    };
    let max_bytes = match parts.next() {
        Some(bytes) => super::values::parse_size(bytes.trim()).map_err(|e| bad(&format!("BYTES: {e}")))?,
        None => default_max_bytes,
    };
    if parts.next().is_some() {
        return Err(bad("too many ':'"));
    }
    let pattern = ChannelPattern::parse(pattern).map_err(|e| bad(&e))?;
    let size = size.trim().parse().map_err(|_| bad("SIZE is not a number"))?;
    let ttl: u64 = ttl.trim().parse().map_err(|_| bad("TTL_SECS is not a number"))?;
    Ok((
        pattern,
        HistoryRule {
            size,
            ttl_ticks: secs_to_ticks(ttl),
            max_bytes,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        hub: HubArgs,
    }

    fn parse(args: &[&str]) -> Result<HubConfig, ConfigError> {
        let mut argv = vec!["probe"];
        argv.extend_from_slice(args);
        hub_config(Probe::try_parse_from(argv).unwrap().hub)
    }

    #[test]
    fn anonymous_access_follows_the_secret_unless_set() {
        assert!(parse(&[]).unwrap().allow_anonymous);
        let secret = "s".repeat(32);
        assert!(!parse(&["--jwt-secret", &secret]).unwrap().allow_anonymous);
        assert!(
            parse(&["--jwt-secret", &secret, "--allow-anonymous", "true"])
                .unwrap()
                .allow_anonymous
        );
        assert!(
            parse(&["--jwt-secret", &secret, "--allow-anonymous"])
                .unwrap()
                .allow_anonymous
        );
        assert!(!parse(&["--allow-anonymous", "false"]).unwrap().allow_anonymous);
        assert!(parse(&[]).unwrap().jwt_require_exp);
        assert!(!parse(&["--jwt-require-exp", "false"]).unwrap().jwt_require_exp);
        assert!(parse(&["--jwt-require-exp"]).unwrap().jwt_require_exp);
        assert_eq!(parse(&["--jwt-secret", "short"]).unwrap_err().field, "jwt-secret");
    }

    #[test]
    fn the_mailbox_is_off_by_default_and_its_flags_are_checked() {
        assert_eq!(parse(&[]).unwrap().mailbox, None);
        let on = parse(&[
            "--mailbox-size",
            "50",
            "--mailbox-ttl-secs",
            "60",
            "--mailbox-max-bytes",
            "4KiB",
        ])
        .unwrap();
        let rule = on.mailbox.unwrap();
        assert_eq!(
            (rule.size, rule.ttl_ticks, rule.max_bytes),
            (50, secs_to_ticks(60), 4096)
        );
        assert_eq!(on.history_for("#mailbox:ann"), rule, "a mailbox keeps by its own rule");
        assert_eq!(on.history_for("ann").size, DEFAULT_HISTORY_SIZE);
        let day = parse(&["--mailbox-size", "1"]).unwrap().mailbox.unwrap();
        assert_eq!(day.ttl_ticks, secs_to_ticks(DEFAULT_MAILBOX_TTL_SECS));
        for (flag, value) in [("--mailbox-ttl-secs", "0"), ("--mailbox-ttl-secs", "86401")] {
            let err = parse(&["--mailbox-size", "1", flag, value]).unwrap_err();
            assert_eq!(err.field, "mailbox-ttl-secs");
        }
        let err = parse(&["--mailbox-size", "1", "--mailbox-max-bytes", "0"]).unwrap_err();
        assert_eq!(err.field, "mailbox-max-bytes");
    }

    #[test]
    fn history_rules_pick_the_most_specific_pattern() {
        let config = parse(&["--history-rule", "chat:*=5:10", "--history-rule", "chat:vip=50:60"]).unwrap();
        assert_eq!(config.history_for("chat:vip").size, 50);
        assert_eq!(config.history_for("chat:x").size, 5);
        assert_eq!(config.history_for("news").size, DEFAULT_HISTORY_SIZE);
        assert_eq!(parse(&["--history-rule", "x=1"]).unwrap_err().field, "history-rule");
        assert_eq!(
            config.history_for("chat:x").max_bytes,
            1 << 20,
            "--history-max-bytes by default"
        );
        let sized = parse(&["--history-rule", "big:*=5:10:4MiB", "--history-max-bytes", "64KiB"]).unwrap();
        assert_eq!(sized.history_for("big:1").max_bytes, 4 << 20);
        assert_eq!(sized.history_for("other").max_bytes, 64 << 10);
        assert_eq!(
            parse(&["--history-rule", "x=1:2:lots"]).unwrap_err().field,
            "history-rule"
        );
        assert_eq!(
            parse(&["--history-rule", "x=1:2:3:4"]).unwrap_err().field,
            "history-rule"
        );
    }

    #[test]
    fn redis_is_repeatable_and_each_server_is_checked() {
        let two = ["--redis", "redis://h:1", "--redis", "h:2", "--node-id", "a"];
        let cluster = parse(&two).unwrap().cluster.unwrap();
        assert_eq!((cluster.redis.as_str(), cluster.servers()), ("redis://h:1", 2));
        assert_eq!(cluster.for_server(1).redis, "redis://h:2");
        let twice = ["--redis", "redis://h:1", "--redis", "redis://h:1"];
        assert_eq!(parse(&twice).unwrap_err().field, "redis");
        assert_eq!(
            parse(&["--redis", "h:1", "--redis", "http://h:2"]).unwrap_err().field,
            "redis"
        );
        let sentinel = ["--redis-sentinel", "127.0.0.1:26379", "--redis-master-name", "m"];
        let mut both = vec!["--redis", "redis://:pw@/3", "--redis", "redis://h:2"];
        both.extend(sentinel);
        assert_eq!(parse(&both).unwrap_err().field, "redis", "one master with Sentinel");
    }

    #[test]
    fn redis_turns_cluster_mode_on() {
        assert!(parse(&[]).unwrap().cluster.is_none());
        let cluster = parse(&["--redis", "redis://127.0.0.1:6379", "--node-id", "a"])
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(
            (&*cluster.node, cluster.node_ttl.as_secs()),
            ("a", crate::cluster::DEFAULT_NODE_TTL_SECS)
        );
        assert!(
            parse(&["--redis", "127.0.0.1:6379"])
                .unwrap()
                .cluster
                .unwrap()
                .node
                .len()
                > 1
        );
        assert_eq!(parse(&["--redis", "http://h:1"]).unwrap_err().field, "redis");
        let url = parse(&["--redis", "rediss://u:p@h:1/2", "--node-id", "a"])
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(url.redis, "rediss://u:p@h:1/2");
        let sentinel = ["--redis-sentinel", "127.0.0.1:26379", "--redis-master-name", "m"];
        let cluster = parse(&sentinel).unwrap().cluster.unwrap();
        assert_eq!(
            (cluster.sentinels.len(), cluster.master_name.as_deref()),
            (1, Some("m"))
        );
        assert!(parse(&[
            "--redis",
            "redis://:pw@/3",
            sentinel[0],
            sentinel[1],
            sentinel[2],
            sentinel[3]
        ])
        .is_ok());
        assert_eq!(parse(&sentinel[..2]).unwrap_err().field, "redis-master-name");
        assert_eq!(
            parse(&["--redis", "redis://h:1", "--redis-ca-file", "/ca.pem"])
                .unwrap_err()
                .field,
            "redis-ca-file"
        );
        assert_eq!(
            parse(&["--redis-sentinel", "h:x", "--redis-master-name", "m"])
                .unwrap_err()
                .field,
            "redis-sentinel"
        );
        assert_eq!(
            parse(&["--redis", "redis://h:1", "--node-id", "a|b"])
                .unwrap_err()
                .field,
            "node-id"
        );
    }
}
