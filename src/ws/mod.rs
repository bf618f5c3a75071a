//! The WebSocket protocol, sans I/O: bytes in, events and bytes to send out.
//!
//! Nothing here touches a socket or reads a clock (STYLE habit 4); `conn/` and
//! `shard/` do. `codec` is the only module that imports tungstenite, and only
//! its public parts: `FrameHeader::{parse, format}`, `OpCode`,
//! `derive_accept_key`. We do not drive connections through
//! `tungstenite::WebSocket`, which would allocate a read buffer per connection
//! and copy every outgoing payload per connection.

pub mod centrifuge;
pub mod close;
pub mod codec;
pub mod handshake;
pub mod mask;
pub mod utf8;

/// A peer broke RFC 6455: the connection is failed with `code` (1002, 1007 or
/// 1009) and `reason` as the close frame's payload. The caller sends that
/// close frame, stops processing input and closes TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

impl Violation {
    pub(crate) const fn protocol(reason: &'static str) -> Self {
        Violation {
            code: close::PROTOCOL_ERROR,
            reason,
        }
    }

    pub(crate) const fn invalid_payload(reason: &'static str) -> Self {
        Violation {
            code: close::INVALID_PAYLOAD,
            reason,
        }
    }

    pub(crate) const fn too_big(reason: &'static str) -> Self {
        Violation {
            code: close::MESSAGE_TOO_BIG,
            reason,
        }
    }
}
