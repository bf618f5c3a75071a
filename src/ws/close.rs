//! Close frames (RFC 6455 §5.5.1, §7.4): which codes a peer may send, and the
//! close codes this server sends, with the reason for each.

use super::Violation;

/// 1000: the purpose of the connection was fulfilled.
pub const NORMAL: u16 = 1000;
/// 1001: the server is going away (shutdown, idle timeout).
pub(crate) const GOING_AWAY: u16 = 1001;
/// 1002: the peer broke the protocol.
pub(crate) const PROTOCOL_ERROR: u16 = 1002;
/// 1007: a text message (or close reason) was not UTF-8.
pub(crate) const INVALID_PAYLOAD: u16 = 1007;
/// 1008: policy violation. Sent to a slow consumer whose outgoing backlog
/// passed `--max-backlog-bytes`, with the reason "slow consumer".
pub(crate) const POLICY_VIOLATION: u16 = 1008;
/// 1009: a message larger than `--max-message-size`.
pub(crate) const MESSAGE_TOO_BIG: u16 = 1009;
/// Try Again Later (IANA registry): the server is overloaded for now; sent
/// when the memory budget cannot hold a connection's input.
pub(crate) const TRY_AGAIN_LATER: u16 = 1013;
/// 4001 (application range): the user opened more connections than
/// `--max-connections-per-user` allows; this, the oldest, was replaced.
pub(crate) const REPLACED: u16 = 4001;
/// 4003 (application range): the connection's token reached its `exp`
/// (plus a grace) without a `refresh`; reconnect with a fresh token.
pub(crate) const TOKEN_EXPIRED: u16 = 4003;

/// A close frame received from the peer, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerClose {
    /// `None` when the frame had no payload (RFC: "no status code was present").
    pub code: Option<u16>,
}

/// Codes a peer may put on the wire: the assigned ones of 1000-1014 except
/// 1004-1006 (reserved, or meant never to be sent), and 3000-4999 (registered
/// and private use). 0-999, 1015, 1016-2999 and 5000+ are not allowed.
pub(crate) fn is_valid_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parses an unmasked close payload: empty, or a 2-byte code then a UTF-8 reason.
pub(crate) fn parse_close_payload(payload: &[u8]) -> Result<PeerClose, Violation> {
    match payload.len() {
        0 => Ok(PeerClose { code: None }),
        1 => Err(Violation::protocol("close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_code(code) {
                return Err(Violation::protocol("invalid close code"));
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(Violation::invalid_payload("close reason is not UTF-8"));
            }
            Ok(PeerClose { code: Some(code) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_codes_follow_the_registry() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
        ] {
            assert!(is_valid_code(code), "{code} is valid");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!is_valid_code(code), "{code} is invalid");
        }
    }

    #[test]
    fn payload_rules() {
        assert_eq!(parse_close_payload(b""), Ok(PeerClose { code: None }));
        assert_eq!(parse_close_payload(b"\x03\xe8bye"), Ok(PeerClose { code: Some(1000) }));
        assert_eq!(parse_close_payload(b"\x03").unwrap_err().code, PROTOCOL_ERROR);
        assert_eq!(parse_close_payload(b"\x03\xed").unwrap_err().code, PROTOCOL_ERROR);
        assert_eq!(parse_close_payload(b"\x03\xe8\xff").unwrap_err().code, INVALID_PAYLOAD);
    }
}
