//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! RFC 6455 §8.1: "When an endpoint is to interpret a byte stream as UTF-8 but
//! finds that the byte stream is not, in fact, a valid UTF-8 stream, that
//! endpoint MUST _Fail the WebSocket Connection_." We validate every piece as it
//! arrives (partial frames and fragments alike), so an invalid byte fails the
//! connection at once, not after the rest of the message was buffered.
//!
//! The state is four bytes: the unfinished code point at the end of the last
//! piece. `std::str::from_utf8` already rejects a prefix that can never become
//! valid (such as `F4 90`), which is what makes failing fast exact.

/// The bytes seen so far form a prefix of valid UTF-8 only if `feed` never failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Utf8State {
    pending: [u8; 3],
    len: u8,
}

/// The input is not UTF-8; the caller fails the connection with close code 1007.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8State {
    /// Validates the next piece of a text message.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.len > 0 {
            let have = self.len as usize;
            let width = sequence_width(self.pending[0]);
            let take = (width - have).min(input.len());
            let mut point = [0u8; 4];
            point[..have].copy_from_slice(&self.pending[..have]);
            point[have..have + take].copy_from_slice(&input[..take]);
            let filled = have + take;
            match std::str::from_utf8(&point[..filled]) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {
                    // Still unfinished, so the whole input was consumed.
                    self.pending[..filled].copy_from_slice(&point[..filled]);
                    self.len = filled as u8;
                    return Ok(());
                }
            }
            input = &input[take..];
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// True when the text so far ends on a code point boundary: a message may
    /// only end here.
    pub fn is_complete(&self) -> bool {
        self.len == 0
    }
}

/// Length of the sequence a lead byte starts. Only called on bytes that
/// `from_utf8` accepted as the start of an unfinished sequence (C2..=F4).
fn sequence_width(lead: u8) -> usize {
    match lead {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(bytes: &[u8], splits: &[usize]) -> Result<bool, InvalidUtf8> {
        let mut state = Utf8State::default();
        let mut start = 0;
        for &at in splits.iter().chain(std::iter::once(&bytes.len())) {
            state.feed(&bytes[start..at])?;
            start = at;
        }
        Ok(state.is_complete())
    }

    #[test]
    fn every_split_of_valid_text_is_accepted() {
        let text = "a€𝄞ü\u{10FFFF}z".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                assert_eq!(feed_split(text, &[i, j]), Ok(true), "split at {i},{j}");
            }
        }
    }

    #[test]
    fn unfinished_code_point_is_not_complete() {
        assert_eq!(feed_split("€".as_bytes()[..2].as_ref(), &[1]), Ok(false));
    }

    #[test]
    fn fails_fast_on_impossible_prefix() {
        // F4 90 would encode a code point above U+10FFFF: invalid before the rest arrives.
        let mut state = Utf8State::default();
        state.feed(b"ok\xF4").unwrap();
        assert_eq!(state.feed(b"\x90"), Err(InvalidUtf8));
    }

    #[test]
    fn rejects_surrogates_overlongs_and_stray_continuations() {
        for bad in [&b"\xED\xA0\x80"[..], b"\xC0\xAF", b"\x80", b"\xE0\x80\xAF", b"\xFF"] {
            for split in 0..=bad.len() {
                assert_eq!(feed_split(bad, &[split]), Err(InvalidUtf8), "{bad:?} split {split}");
            }
        }
    }

    #[test]
    fn invalid_after_valid_pending_is_caught() {
        let mut state = Utf8State::default();
        state.feed(b"\xE2\x82").unwrap();
        assert_eq!(state.feed(b"A"), Err(InvalidUtf8));
    }
}
