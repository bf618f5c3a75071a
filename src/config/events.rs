//! Event flags (`--events-stream`, `--webhook-url`, their bounds) into
//! [`EventsConfig`], with the checks clap cannot make: a webhook URL that
//! cannot work stops the start with exit code 2.

use std::time::Duration;

use clap::Args as ClapArgs;

use super::hub::HubArgs;
use super::ConfigError;
use crate::cluster::link;
use crate::events::{
    EventsConfig, StreamConfig, WebhookConfig, DEFAULT_STREAM_MAXLEN, DEFAULT_WEBHOOK_BATCH, DEFAULT_WEBHOOK_BATCH_MS,
    DEFAULT_WEBHOOK_TIMEOUT_SECS,
};

/// The smallest `--webhook-secret` accepted (as for HS256 JWT secrets).
const MIN_WEBHOOK_SECRET_BYTES: usize = 32;
/// The smallest `--events-max-bytes` accepted: room for a few large events.
const MIN_EVENTS_MAX_BYTES: usize = 64 << 10;
/// The largest `--webhook-batch-size` accepted.
const MAX_WEBHOOK_BATCH: usize = 10_000;

/// Event flags (flattened into the main `Args`); docs/EVENTS.md.
#[derive(Debug, Clone, ClapArgs)]
pub struct EventsArgs {
    /// Redis Stream that gets an entry per connect, disconnect, subscribe,
    /// unsubscribe and client publish (docs/EVENTS.md); off without it.
    #[arg(long, value_name = "KEY")]
    pub events_stream: Option<String>,
    /// Redis for --events-stream: `redis://[USER:PASSWORD@]HOST:PORT[/DB]` or
    /// `rediss://` [default: the first --redis].
    #[arg(long, value_name = "URL", env = "HUBBUB_EVENTS_REDIS", hide_env_values = true)]
    pub events_redis: Option<String>,
    /// Entries the event stream keeps, about (`XADD ... MAXLEN ~ N`).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_STREAM_MAXLEN)]
    pub events_stream_maxlen: u64,
    /// Bytes of events each sink may hold while its destination is slow or
    /// down (queued and in flight); more are dropped, counted in
    /// hubbub_events_dropped_total{reason="queue_full"}.
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = super::values::parse_size)]
    pub events_max_bytes: usize,
    /// URL (http:// or https://) that gets the same events POSTed in
    /// batches as a JSON array, signed with --webhook-secret.
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key (at least 32 bytes) of the X-Hubbub-Signature header;
    /// required with --webhook-url.
    #[arg(long, env = "HUBBUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Events in one webhook POST at most.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_WEBHOOK_BATCH)]
    pub webhook_batch_size: usize,
    /// Milliseconds a webhook batch waits for more events after its first.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_WEBHOOK_BATCH_MS)]
    pub webhook_batch_ms: u64,
    /// Seconds a webhook POST may take; a slower one is retried.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WEBHOOK_TIMEOUT_SECS)]
    pub webhook_timeout_secs: u64,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

/// The sinks from their flags, checked; `node` names this node in events.
pub(crate) fn events_config(args: &EventsArgs, hub: &HubArgs, node: String) -> Result<EventsConfig, ConfigError> {
    if args.events_max_bytes < MIN_EVENTS_MAX_BYTES {
        return Err(invalid("events-max-bytes", "must be at least 64KiB"));
    }
    Ok(EventsConfig {
        node: node.into(),
        stream: stream_config(args, hub)?,
        webhook: webhook_config(args)?,
        max_bytes: args.events_max_bytes,
    })
}

fn stream_config(args: &EventsArgs, hub: &HubArgs) -> Result<Option<StreamConfig>, ConfigError> {
    let given = args.events_redis.clone().filter(|r| !r.is_empty());
    let Some(key) = args.events_stream.clone().filter(|k| !k.is_empty()) else {
        if given.is_some() {
            return Err(invalid("events-redis", "needs --events-stream (the stream's key)"));
        }
        return Ok(None);
    };
    let redis = match given {
        Some(url) => url,
        None if hub.redis_sentinels.is_empty() => {
            hub.redis.first().filter(|r| !r.is_empty()).cloned().ok_or_else(|| {
                invalid(
                    "events-stream",
                    "needs a Redis: --events-redis URL (or --redis in cluster mode)",
                )
            })?
        }
        None => {
            return Err(invalid(
                "events-redis",
                "with --redis-sentinel, name the events' Redis itself (--events-redis URL)",
            ))
        }
    };
    let redis = if redis.contains("://") {
        redis
    } else {
        format!("redis://{redis}")
    };
    link::check_url(&redis).map_err(|e| {
        invalid(
            "events-redis",
            format!("{e} (expected redis://[USER:PASSWORD@]HOST:PORT[/DB] or rediss://...)"),
        )
    })?;
    if args.events_stream_maxlen == 0 {
        return Err(invalid("events-stream-maxlen", "must be at least 1"));
    }
    Ok(Some(StreamConfig {
        redis,
        key,
        maxlen: args.events_stream_maxlen,
    }))
}

fn webhook_config(args: &EventsArgs) -> Result<Option<WebhookConfig>, ConfigError> {
    let Some(url) = args.webhook_url.clone().filter(|u| !u.is_empty()) else {
        if args.webhook_secret.is_some() {
            return Err(invalid("webhook-secret", "needs --webhook-url"));
        }
        return Ok(None);
    };
    check_webhook_url(&url).map_err(|why| invalid("webhook-url", format!("{url:?}: {why}")))?;
    let secret = args.webhook_secret.clone().unwrap_or_default().into_bytes();
    if secret.len() < MIN_WEBHOOK_SECRET_BYTES {
        return Err(invalid(
            "webhook-secret",
            "required with --webhook-url, at least 32 bytes (every batch is signed)",
        ));
    }
    if args.webhook_batch_size == 0 || args.webhook_batch_size > MAX_WEBHOOK_BATCH {
        return Err(invalid("webhook-batch-size", "must be between 1 and 10000"));
    }
    // Longer than a minute is a receiver that is down, not slow.
    if args.webhook_timeout_secs == 0 || args.webhook_timeout_secs > 60 {
        return Err(invalid("webhook-timeout-secs", "must be between 1 and 60"));
    }
    if args.webhook_batch_ms > 60_000 {
        return Err(invalid("webhook-batch-ms", "at most 60000"));
    }
    Ok(Some(WebhookConfig {
        url,
        secret,
        batch: args.webhook_batch_size,
        linger: Duration::from_millis(args.webhook_batch_ms),
        timeout: Duration::from_secs(args.webhook_timeout_secs),
    }))
}

/// An absolute `http://` or `https://` URL with a host.
fn check_webhook_url(url: &str) -> Result<(), &'static str> {
    let uri: ureq::http::Uri = url.parse().map_err(|_| "not a URL")?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must start with http:// or https://"),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("names no host");
    }
    if url.contains(char::is_whitespace) {
        return Err("contains whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_checked() {
        assert!(check_webhook_url("http://127.0.0.1:8000/hook").is_ok());
        assert!(check_webhook_url("https://app.example.com/events?x=1").is_ok());
        for bad in [
            "",
            "ftp://x/y",
            "app.example.com/hook",
            "http://",
            "/hook",
            "http:// x/",
        ] {
            assert!(check_webhook_url(bad).is_err(), "{bad:?}");
        }
    }
}
