//! The hooks' settings (`--proxy-*`), as `crate::config::proxy` checked them.

use std::time::Duration;

use crate::bus::proxy::Hook;

/// Worker threads making hook calls by default.
pub const DEFAULT_PROXY_WORKERS: usize = 16;
/// Milliseconds a hook call may take, connect to last byte, by default.
pub const DEFAULT_PROXY_TIMEOUT_MS: u64 = 1000;
/// Hook calls in flight at once by default; more are refused (114).
pub const DEFAULT_PROXY_MAX_IN_FLIGHT: usize = 1024;

/// Where and how the hooks are called. At least one URL is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub connect_url: Option<String>,
    pub subscribe_url: Option<String>,
    pub publish_url: Option<String>,
    pub rpc_url: Option<String>,
    pub workers: usize,
    /// Whole call: connect, send, answer read.
    pub timeout: Duration,
    pub max_in_flight: usize,
    /// Headers of the upgrade request passed on to the connect hook
    /// (lower case, as compared).
    pub http_headers: Vec<String>,
    /// Largest answer body read (the largest message a client may send).
    pub max_answer_bytes: usize,
}

impl ProxyConfig {
    /// The URL of `hook`, if it has one.
    pub fn url(&self, hook: Hook) -> Option<&str> {
        match hook {
            Hook::Connect => self.connect_url.as_deref(),
            Hook::Subscribe => self.subscribe_url.as_deref(),
            Hook::Publish => self.publish_url.as_deref(),
            Hook::Rpc => self.rpc_url.as_deref(),
        }
    }

    /// Which hooks have a URL, by `Hook::index`.
    pub fn hooks(&self) -> [bool; 4] {
        Hook::ALL.map(|hook| self.url(hook).is_some())
    }
}
