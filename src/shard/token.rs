//! mio tokens: a connection's slab index and generation in one `usize`, so an
//! event for a connection that was removed (and whose slot was reused) within
//! the same poll batch is recognised as stale.

use mio::Token;

/// The shard's listener.
pub(crate) const LISTENER: Token = Token(usize::MAX);
/// The shard's inbox waker.
pub(crate) const WAKER: Token = Token(usize::MAX - 1);

pub fn encode(index: usize, generation: u32) -> Token {
    Token(((generation as usize) << 32) | (index & 0xFFFF_FFFF))
}

/// `(index, generation)` of a connection token.
pub fn decode(token: Token) -> (usize, u32) {
    (token.0 & 0xFFFF_FFFF, (token.0 >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_clash_with_reserved_tokens() {
        let token = encode(123_456, 0x7FFF_FFFF);
        assert_eq!(decode(token), (123_456, 0x7FFF_FFFF));
        assert_ne!(encode(0xFFFF_FFFF, 0x7FFF_FFFF), LISTENER);
        assert_ne!(encode(0xFFFF_FFFE, 0x7FFF_FFFF), WAKER);
    }
}
