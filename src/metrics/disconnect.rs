//! Why an upgraded connection ended: the vocabulary the connection code
//! reports and the counters (`hubbub_disconnects_total{reason}`) count. It
//! lives with the metrics so counting never reaches up into `conn`.

/// Why an upgraded connection ended; each is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Disconnect {
    /// The client sent Close (the normal end).
    ClientClose = 0,
    /// The client vanished without a Close frame (EOF or reset).
    ClientGone,
    /// The client broke RFC 6455 (1002, 1007, 1009).
    ProtocolError,
    /// Silent past `--idle-timeout-secs`.
    IdleTimeout,
    /// Outgoing backlog over `--max-backlog-bytes`.
    SlowConsumer,
    /// Server shutdown.
    Shutdown,
    /// Closed through the server API or a hub rule.
    Kicked,
    /// Closed because the same user opened more connections than allowed.
    Replaced,
    /// Held a partial message past `--message-timeout-secs` (1008).
    MessageTimeout,
    /// Closed to keep the process within `--memory-limit` (1013, or 1008
    /// "slow consumer" for a backlog).
    MemoryShed,
    /// A room member whose deliveries were dropped under overload, or whose
    /// own message was (1013): it reconnects rather than miss messages.
    MissedMessages,
    /// A `/ws` client that kept sending over `--max-messages-per-sec`.
    RateLimited,
    /// Its token's `exp` passed (plus a grace) without a `refresh` (4003).
    TokenExpired,
    /// The application's connect hook said no, or told the connection to
    /// disconnect (4403, or the hook's own code).
    ConnectRefused,
    /// The connect hook could not be asked (timeout, unreachable, bad
    /// answer, over its cap): 1013, try again later.
    HookUnavailable,
}

impl Disconnect {
    pub const ALL: [Disconnect; 15] = [
        Disconnect::ClientClose,
        Disconnect::ClientGone,
        Disconnect::ProtocolError,
        Disconnect::IdleTimeout,
        Disconnect::SlowConsumer,
        Disconnect::Shutdown,
        Disconnect::Kicked,
        Disconnect::Replaced,
        Disconnect::MessageTimeout,
        Disconnect::MemoryShed,
        Disconnect::MissedMessages,
        Disconnect::RateLimited,
        Disconnect::TokenExpired,
        Disconnect::ConnectRefused,
        Disconnect::HookUnavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Disconnect::ClientClose => "client_close",
            Disconnect::ClientGone => "client_gone",
            Disconnect::ProtocolError => "protocol_error",
            Disconnect::IdleTimeout => "idle_timeout",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::Shutdown => "shutdown",
            Disconnect::Kicked => "kicked",
            Disconnect::Replaced => "replaced",
            Disconnect::MessageTimeout => "message_timeout",
            Disconnect::MemoryShed => "memory_shed",
            Disconnect::MissedMessages => "missed_messages",
            Disconnect::RateLimited => "rate_limited",
            Disconnect::TokenExpired => "token_expired",
            Disconnect::ConnectRefused => "connect_refused",
            Disconnect::HookUnavailable => "hook_unavailable",
        }
    }
}
