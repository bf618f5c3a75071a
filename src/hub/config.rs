//! The hub's settings: authentication, per-connection limits, history.
//! Flags and files become these values in `crate::config::hub`.

use crate::auth::pattern::{best_match, ChannelPattern};
use crate::bus::history::HistoryRule;
use crate::tick::secs_to_ticks;

pub(crate) const DEFAULT_MAX_SUBSCRIPTIONS: usize = 128;
pub(crate) const DEFAULT_MAX_MESSAGES_PER_SEC: u32 = 100;
pub(crate) const DEFAULT_HISTORY_SIZE: usize = 100;
pub(crate) const DEFAULT_HISTORY_TTL_SECS: u64 = 300;
/// Bytes of publication data kept per channel by default.
pub(crate) const DEFAULT_HISTORY_MAX_BYTES: usize = 1 << 20;
/// Largest reply to one command by default (well under the 1 MiB backlog cap).
pub(crate) const DEFAULT_MAX_REPLY_BYTES: usize = 256 << 10;
/// Bytes per second a connection may send as room messages or `/ws` commands.
pub(crate) const DEFAULT_MAX_BYTES_PER_SEC: usize = 1 << 20;
/// Channels (logs with subscribers or history) the node holds at most.
pub(crate) const DEFAULT_MAX_CHANNELS: usize = 1_000_000;
/// Channels one connection may create per minute.
pub(crate) const DEFAULT_MAX_NEW_CHANNELS_PER_MINUTE: u32 = 100;
/// Publications in a `history` reply when the client names no `limit`.
pub(crate) const DEFAULT_HISTORY_LIMIT: usize = 100;
/// Close code sent to the oldest connection of a user over
/// `--max-connections-per-user` (single sign-on kick).
pub(crate) const CLOSE_REPLACED: u16 = crate::ws::close::REPLACED;
/// Close code of `/api/disconnect` when the caller gives none.
pub(crate) const CLOSE_KICKED: u16 = 4002;
/// How long a mailbox keeps a message by default (`--mailbox-ttl-secs`).
pub(crate) const DEFAULT_MAILBOX_TTL_SECS: u64 = 86_400;

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub jwt_secret: Option<Vec<u8>>,
    /// Tokens without `exp` are refused at the handshake.
    pub jwt_require_exp: bool,
    pub allow_anonymous: bool,
    pub max_subscriptions: usize,
    pub max_messages_per_sec: u32,
    /// Bytes per second per connection (room messages and `/ws` commands).
    pub max_bytes_per_sec: usize,
    /// Channels the node holds at most (`--max-channels`).
    pub max_channels: usize,
    /// Channels one connection may create per minute.
    pub max_new_channels_per_minute: u32,
    pub max_connections_per_user: usize,
    pub history: HistoryRule,
    pub history_rules: Vec<(ChannelPattern, HistoryRule)>,
    /// Largest reply to one command (`--max-reply-bytes`).
    pub max_reply_bytes: usize,
    pub api_key: Option<String>,
    /// `Some` in cluster mode (`--redis`).
    pub cluster: Option<crate::bus::cluster::ClusterConfig>,
    /// Where events for the application go (`None`: nowhere, and the hub
    /// makes none); set by the server once the sinks run.
    pub events: Option<crate::events::Emitter>,
    /// Offline messages (`--mailbox-size` and friends): what each user's
    /// mailbox keeps; `None` (the default) keeps none (`hub/mailbox.rs`).
    pub mailbox: Option<HistoryRule>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            jwt_secret: None,
            jwt_require_exp: true,
            allow_anonymous: true,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_messages_per_sec: DEFAULT_MAX_MESSAGES_PER_SEC,
            max_bytes_per_sec: DEFAULT_MAX_BYTES_PER_SEC,
            max_channels: DEFAULT_MAX_CHANNELS,
            max_new_channels_per_minute: DEFAULT_MAX_NEW_CHANNELS_PER_MINUTE,
            max_connections_per_user: 0,
            history: HistoryRule {
                size: DEFAULT_HISTORY_SIZE,
                ttl_ticks: secs_to_ticks(DEFAULT_HISTORY_TTL_SECS),
                max_bytes: DEFAULT_HISTORY_MAX_BYTES,
            },
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            history_rules: Vec::new(),
            api_key: None,
            cluster: None,
            events: None,
            mailbox: None,
        }
    }
}

impl HubConfig {
    /// The history rule for `channel` (a user's mailbox: the mailbox's).
    pub(crate) fn history_for(&self, channel: &str) -> HistoryRule {
        if let Some(rule) = self.mailbox.filter(|_| super::mailbox::user_of(channel).is_some()) {
            return rule;
        }
        best_match(&self.history_rules, channel)
            .copied()
            .unwrap_or(self.history)
    }
}
