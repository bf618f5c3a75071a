//! Owns what the tool's messages contain, so that every received byte can be checked.
//!
//! An echo message starts with 32 ASCII hex digits, the sequence number and the send timestamp
//! (`CLOCK_MONOTONIC` ns); a broadcast message starts with 40: publisher, sequence, timestamp. The
//! rest is `a..z` repeated from a phase given by the sequence number. All ASCII, so the same bytes
//! are valid text messages; checking and filling are `memcpy`/`memcmp` against a static pattern.

/// Bytes of the echo header: sequence (16 hex) and timestamp (16 hex).
pub const ECHO_HEADER: usize = 32;
/// Bytes of the broadcast header: publisher (8 hex), sequence (16 hex), timestamp (16 hex).
pub const BROADCAST_HEADER: usize = 40;

const CHUNK: usize = 26 * 157;
static PATTERN: [u8; CHUNK + 26] = pattern();

const fn pattern() -> [u8; CHUNK + 26] {
    let mut a = [0u8; CHUNK + 26];
    let mut i = 0;
    while i < a.len() {
        a[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    a
}

/// Writes `v` as `out.len()` lowercase hex digits (most significant first).
pub fn write_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
    }
}

/// Reads lowercase hex digits; `None` on any other byte.
pub fn read_hex(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(d))
    })
}

/// Fills `out` with the pattern at phase `seed`.
pub fn fill(out: &mut [u8], seed: u64) {
    let phase = (seed % 26) as usize;
    for chunk in out.chunks_mut(CHUNK) {
        chunk.copy_from_slice(&PATTERN[phase..phase + chunk.len()]);
    }
}

/// Whether `bytes` is the pattern at phase `seed`.
pub fn check_fill(bytes: &[u8], seed: u64) -> bool {
    let phase = (seed % 26) as usize;
    bytes
        .chunks(CHUNK)
        .all(|chunk| chunk == &PATTERN[phase..phase + chunk.len()])
}

/// Writes an echo message (`p.len() >= ECHO_HEADER`).
pub fn write_echo(p: &mut [u8], seq: u64, ts: u64) {
    write_hex(&mut p[..16], seq);
    write_hex(&mut p[16..32], ts);
    fill(&mut p[ECHO_HEADER..], seq);
}

/// Whether `p` is exactly the echo message `(seq, ts)` of `len` bytes.
pub fn is_echo(p: &[u8], len: usize, seq: u64, ts: u64) -> bool {
    p.len() == len
        && read_hex(&p[..16]) == Some(seq)
        && read_hex(&p[16..32]) == Some(ts)
        && check_fill(&p[ECHO_HEADER..], seq)
}

/// Writes a broadcast message (`p.len() >= BROADCAST_HEADER`).
pub fn write_broadcast(p: &mut [u8], publisher: u32, seq: u64, ts: u64) {
    write_hex(&mut p[..8], u64::from(publisher));
    write_hex(&mut p[8..24], seq);
    write_hex(&mut p[24..40], ts);
    fill(&mut p[BROADCAST_HEADER..], seq);
}

/// Reads `(publisher, seq, ts)` of a broadcast message whose body checks out.
pub fn read_broadcast(p: &[u8]) -> Option<(u32, u64, u64)> {
    if p.len() < BROADCAST_HEADER {
        return None;
    }
    let publisher = u32::try_from(read_hex(&p[..8])?).ok()?;
    let seq = read_hex(&p[8..24])?;
    let ts = read_hex(&p[24..40])?;
    check_fill(&p[BROADCAST_HEADER..], seq).then_some((publisher, seq, ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_messages_round_trip_and_catch_a_flipped_byte() {
        let mut p = vec![0u8; 10_000];
        write_echo(&mut p, 42, 123_456_789);
        assert!(std::str::from_utf8(&p).is_ok(), "must be valid text");
        assert!(is_echo(&p, 10_000, 42, 123_456_789));
        assert!(!is_echo(&p, 10_000, 43, 123_456_789));
        assert!(!is_echo(&p, 10_001, 42, 123_456_789));
        p[9_000] ^= 1;
        assert!(!is_echo(&p, 10_000, 42, 123_456_789));
    }

    #[test]
    fn broadcast_messages_round_trip() {
        let mut p = vec![0u8; 64];
        write_broadcast(&mut p, 7, 99, 5);
        assert_eq!(read_broadcast(&p), Some((7, 99, 5)));
        p[63] = b'!';
        assert_eq!(read_broadcast(&p), None);
        assert_eq!(read_broadcast(&p[..10]), None);
    }

    #[test]
    fn hex_is_exact() {
        let mut b = [0u8; 16];
        write_hex(&mut b, u64::MAX - 1);
        assert_eq!(read_hex(&b), Some(u64::MAX - 1));
        assert_eq!(read_hex(b"12G4"), None);
    }
}
