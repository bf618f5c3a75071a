//! Close codes of the Centrifuge client protocol (`/connection/websocket`):
//! the server's own reasons for closing a connection, said in the codes the
//! Centrifuge SDKs act on. 3000-3499 and 4000-4499 ask the SDK to reconnect
//! (with backoff, recovering its subscriptions), 3500-3999 and 4500-4999 ask
//! it not to. Codes below 3000 (RFC 6455's own) are taken by the SDKs for a
//! transport failure and reconnected after, so protocol errors keep them.
//!
//! Pure: no I/O. `conn/drive.rs` applies it when it closes a connection of
//! the Centrifuge route; docs/PROTOCOL.md ("Centrifuge protocol") lists them.

use crate::metrics::disconnect::Disconnect;

/// 3001: the server is shutting down or draining; reconnect (elsewhere,
/// when the reason says).
pub const SHUTDOWN: u16 = 3001;
/// 3005: the connection's token expired without a `refresh`; reconnect
/// (the SDK asks its `getToken` for a new one when told 109).
pub const EXPIRED: u16 = 3005;
/// 3008: the client did not read fast enough.
pub const SLOW: u16 = 3008;
/// 3010: deliveries to this connection were dropped under overload, or a
/// channel's stream changed under it; reconnect and recover.
pub const INSUFFICIENT_STATE: u16 = 3010;
/// 3011: closed through the server API; reconnect.
pub const FORCE_RECONNECT: u16 = 3011;
/// 3012: the connection was silent past the idle timeout.
pub const NO_PONG: u16 = 3012;
/// 3013: the client kept sending over its rate.
pub const TOO_MANY_REQUESTS: u16 = 3013;
/// 3500: the connect token is invalid; do not reconnect with it.
pub const INVALID_TOKEN: u16 = 3500;
/// 3501: a malformed command, or a command before `connect`.
pub const BAD_REQUEST: u16 = 3501;
/// 3502: no `connect` came in time after the upgrade.
pub const STALE: u16 = 3502;
/// 3503: closed through the server API with "do not reconnect" (1008).
pub const FORCE_NO_RECONNECT: u16 = 3503;
/// 3504: the user opened more connections than allowed; this, the oldest,
/// was replaced (a reconnect would replace the newer one).
pub const CONNECTION_LIMIT: u16 = 3504;
/// 3509: the client made too many bad commands.
pub const TOO_MANY_ERRORS: u16 = 3509;

/// The close code and reason a Centrifuge client is sent for a server-side
/// close that `/ws` would send as `code` and `reason`, counted as `why`.
/// An operator's code in 3000-4999 (`/api/disconnect`) is kept as given.
pub fn close_for(code: u16, reason: &str, why: Disconnect) -> (u16, &str) {
    match why {
        // The drain's reason says when to come back ("reconnect in N s").
        Disconnect::Shutdown => (SHUTDOWN, reason),
        Disconnect::TokenExpired => (EXPIRED, "connection expired"),
        Disconnect::Replaced => (CONNECTION_LIMIT, "connection limit"),
        Disconnect::IdleTimeout => (NO_PONG, "no pong"),
        Disconnect::SlowConsumer | Disconnect::MemoryShed => (SLOW, "slow"),
        Disconnect::MissedMessages => (INSUFFICIENT_STATE, "insufficient state"),
        Disconnect::RateLimited => (TOO_MANY_REQUESTS, "too many requests"),
        Disconnect::ProtocolError | Disconnect::MessageTimeout if code < 3000 => (TOO_MANY_ERRORS, "too many errors"),
        _ if (3000..5000).contains(&code) => (code, reason),
        _ if code == crate::ws::close::POLICY_VIOLATION => (FORCE_NO_RECONNECT, reason),
        _ => (FORCE_RECONNECT, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::close;

    /// Whether a Centrifuge SDK reconnects after `code`.
    fn reconnects(code: u16) -> bool {
        !((3500..4000).contains(&code) || (4500..5000).contains(&code))
    }

    #[test]
    fn transient_ends_reconnect_and_final_ones_do_not() {
        let again = [
            close_for(close::GOING_AWAY, "draining", Disconnect::Shutdown),
            close_for(close::TOKEN_EXPIRED, "token expired", Disconnect::TokenExpired),
            close_for(close::GOING_AWAY, "idle timeout", Disconnect::IdleTimeout),
            close_for(close::TRY_AGAIN_LATER, "x", Disconnect::MissedMessages),
            close_for(close::POLICY_VIOLATION, "rate limit exceeded", Disconnect::RateLimited),
            close_for(4002, "kicked", Disconnect::Kicked),
            close_for(close::NORMAL, "bye", Disconnect::Kicked),
        ];
        assert!(
            again.iter().all(|&(code, _)| code >= 3000 && reconnects(code)),
            "{again:?}"
        );
        assert_eq!(again[0], (SHUTDOWN, "draining"), "the drain's hint is kept");
        let never = [
            close_for(close::REPLACED, "replaced", Disconnect::Replaced),
            close_for(
                close::POLICY_VIOLATION,
                "too many bad commands",
                Disconnect::ProtocolError,
            ),
            close_for(close::POLICY_VIOLATION, "go away", Disconnect::Kicked),
            close_for(4600, "banned", Disconnect::Kicked),
            close_for(BAD_REQUEST, "bad request", Disconnect::Kicked),
        ];
        assert!(never.iter().all(|&(code, _)| !reconnects(code)), "{never:?}");
        assert_eq!(never[3], (4600, "banned"), "an operator's code is kept");
    }
}
