//! Application hook flags (`--proxy-*`, docs/PROXY.md) into a
//! [`ProxyConfig`], with the checks clap cannot make.

use std::time::Duration;

use clap::Args as ClapArgs;

use super::ConfigError;
use crate::proxy::config::{ProxyConfig, DEFAULT_PROXY_MAX_IN_FLIGHT, DEFAULT_PROXY_TIMEOUT_MS, DEFAULT_PROXY_WORKERS};

/// Hook flags (flattened into the main `Args`).
#[derive(Debug, Clone, ClapArgs)]
pub struct ProxyArgs {
    /// Connect hook: a `/ws` client without a token is let in and this URL
    /// is asked (Centrifugo proxy JSON) who it is and which channels it gets;
    /// a Centrifuge client is asked at its `connect`; a valid token skips it.
    #[arg(long, value_name = "URL")]
    pub proxy_connect_url: Option<String>,
    /// Subscribe hook: every `/ws` subscribe is asked here (after the
    /// token's channels check) before it takes effect.
    #[arg(long, value_name = "URL")]
    pub proxy_subscribe_url: Option<String>,
    /// Publish hook: every `/ws` publish is asked here; the answer may
    /// refuse it or replace its data.
    #[arg(long, value_name = "URL")]
    pub proxy_publish_url: Option<String>,
    /// RPC hook: the `/ws` method `rpc` is answered by this URL.
    #[arg(long, value_name = "URL")]
    pub proxy_rpc_url: Option<String>,
    /// Threads making hook calls, one call each at a time.
    #[arg(long, default_value_t = DEFAULT_PROXY_WORKERS)]
    pub proxy_workers: usize,
    /// Milliseconds a hook call may take from connect to the answer's last
    /// byte; later is error 113 (connect: close 1013).
    #[arg(long, default_value_t = DEFAULT_PROXY_TIMEOUT_MS)]
    pub proxy_timeout_ms: u64,
    /// Hook calls in flight at once for the process; one more is refused
    /// at once with error 114 (connect: close 1013), never queued.
    #[arg(long, default_value_t = DEFAULT_PROXY_MAX_IN_FLIGHT)]
    pub proxy_max_in_flight: usize,
    /// Upgrade request headers passed on to the connect hook, comma
    /// separated (e.g. Cookie,Authorization,X-Real-Ip).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub proxy_http_headers: Vec<String>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

/// The hooks' settings (`None` when no hook URL is set), checked;
/// `max_answer_bytes` is `--max-message-size`.
pub(crate) fn proxy_config(args: ProxyArgs, max_answer_bytes: usize) -> Result<Option<ProxyConfig>, ConfigError> {
    let url = |field: &'static str, value: Option<String>| -> Result<Option<String>, ConfigError> {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let rest = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))
            .ok_or_else(|| invalid(field, format!("{value:?}: an http:// or https:// URL")))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(invalid(field, format!("{value:?}: the URL names no host")));
        }
        Ok(Some(value))
    };
    let config = ProxyConfig {
        connect_url: url("proxy-connect-url", args.proxy_connect_url)?,
        subscribe_url: url("proxy-subscribe-url", args.proxy_subscribe_url)?,
        publish_url: url("proxy-publish-url", args.proxy_publish_url)?,
        rpc_url: url("proxy-rpc-url", args.proxy_rpc_url)?,
        workers: args.proxy_workers,
        timeout: Duration::from_millis(args.proxy_timeout_ms),
        max_in_flight: args.proxy_max_in_flight,
        http_headers: args
            .proxy_http_headers
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect(),
        max_answer_bytes,
    };
    if !(1..=1024).contains(&config.workers) {
        return Err(invalid("proxy-workers", "must be between 1 and 1024"));
    }
    if !(1..=60_000).contains(&args.proxy_timeout_ms) {
        return Err(invalid("proxy-timeout-ms", "must be between 1 and 60000"));
    }
    if config.max_in_flight == 0 {
        return Err(invalid("proxy-max-in-flight", "must be at least 1"));
    }
    if let Some(bad) = config.http_headers.iter().find(|h| {
        !h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }) {
        return Err(invalid("proxy-http-headers", format!("{bad:?} is not a header name")));
    }
    // Headers that shape the call itself: a client's value would make the
    // backend wait for a body that never comes (content-length), pick its
    // virtual host, or break the call's framing.
    const FRAMING: [&str; 9] = [
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "content-type",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
    ];
    if let Some(bad) = config
        .http_headers
        .iter()
        .find(|h| FRAMING.contains(&h.to_ascii_lowercase().as_str()))
    {
        let why = format!("{bad:?} shapes the hook call itself and cannot be passed on");
        return Err(invalid("proxy-http-headers", why));
    }
    if !config.hooks().contains(&true) {
        return Ok(None);
    }
    if !config.http_headers.is_empty() && config.connect_url.is_none() {
        // Only the connect call carries them: they would be silently unused.
        return Err(invalid(
            "proxy-http-headers",
            "goes with --proxy-connect-url (only the connect hook gets headers)",
        ));
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        proxy: ProxyArgs,
    }

    fn parse(args: &[&str]) -> Result<Option<ProxyConfig>, ConfigError> {
        let mut argv = vec!["hubbub"];
        argv.extend_from_slice(args);
        proxy_config(Flags::try_parse_from(argv).unwrap().proxy, 1 << 20)
    }

    #[test]
    fn no_url_no_hooks() {
        assert_eq!(parse(&["--proxy-workers", "4"]).unwrap(), None);
    }

    #[test]
    fn urls_and_headers_are_checked() {
        let config = parse(&[
            "--proxy-connect-url",
            "https://app.example/connect",
            "--proxy-publish-url",
            "http://127.0.0.1:3000/publish",
            "--proxy-http-headers",
            "Cookie, X-Real-Ip",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.hooks(), [true, false, true, false]);
        assert_eq!(config.http_headers, ["cookie", "x-real-ip"]);
        assert_eq!(config.timeout, Duration::from_millis(DEFAULT_PROXY_TIMEOUT_MS));
        let bad = |args: &[&str]| parse(args).unwrap_err().field;
        assert_eq!(bad(&["--proxy-rpc-url", "127.0.0.1:3000"]), "proxy-rpc-url");
        assert_eq!(bad(&["--proxy-rpc-url", "http:///x"]), "proxy-rpc-url");
        assert_eq!(
            bad(&["--proxy-rpc-url", "http://a", "--proxy-workers", "0"]),
            "proxy-workers"
        );
        assert_eq!(
            bad(&["--proxy-rpc-url", "http://a", "--proxy-timeout-ms", "0"]),
            "proxy-timeout-ms"
        );
        assert_eq!(
            bad(&["--proxy-rpc-url", "http://a", "--proxy-max-in-flight", "0"]),
            "proxy-max-in-flight"
        );
        assert_eq!(
            bad(&["--proxy-rpc-url", "http://a", "--proxy-http-headers", "a b"]),
            "proxy-http-headers"
        );
    }
}
