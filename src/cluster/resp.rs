//! RESP2 replies read from a byte buffer that may end anywhere: what a
//! shard's own, non-blocking Redis connection (`direct`) has received so
//! far. Sans I/O: `parse` takes the bytes and says what they hold.
//!
//! Bounded: arrays nest at most `MAX_DEPTH` deep and a bulk string is at
//! most `MAX_BULK` bytes (the replies read here are a publish script's four
//! short items; anything else on the connection is a broken link).

use super::reply::Value;

/// Nesting of arrays accepted in one reply.
const MAX_DEPTH: usize = 8;
/// Bytes of one line (a status, an error, a number).
const MAX_LINE: usize = 4096;
/// Length of one bulk string, and items of one array, accepted.
const MAX_BULK: usize = 64 << 20;

/// The bytes are not a RESP2 reply: the link is closed and opened again.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed reply from Redis: {0}")]
pub struct RespError(&'static str);

/// The first complete reply in `buf` and the bytes it took, or `None` when
/// `buf` ends before the reply does (read more, then call again).
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, RespError> {
    let mut at = 0;
    Ok(value(buf, &mut at, 0)?.map(|value| (value, at)))
}

fn value(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Value>, RespError> {
    let Some(line) = line(buf, *at)? else {
        return Ok(None);
    };
    let start = *at;
    *at += line.len() + 2;
    let (kind, rest) = line.split_first().ok_or(RespError("empty line"))?;
    let text = || std::str::from_utf8(rest).map_err(|_| RespError("a line that is not UTF-8"));
    match kind {
        b'+' => Ok(Some(Value::Bytes(rest.to_vec()))),
        b'-' => Ok(Some(Value::Error(text()?.to_string()))),
        b':' => Ok(Some(Value::Int(
            text()?.parse().map_err(|_| RespError("a bad integer"))?,
        ))),
        b'$' => {
            let Some(len) = length(rest)? else {
                return Ok(Some(Value::Nil));
            };
            let end = *at + len;
            if buf.len() < end + 2 {
                *at = start;
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError("a bulk string without its CRLF"));
            }
            let bytes = buf[*at..end].to_vec();
            *at = end + 2;
            Ok(Some(Value::Bytes(bytes)))
        }
        b'*' => {
            let Some(count) = length(rest)? else {
                return Ok(Some(Value::Nil));
            };
            if depth == MAX_DEPTH {
                return Err(RespError("arrays nested too deep"));
            }
            // Not `with_capacity(count)`: the count is the peer's word.
            let mut items = Vec::new();
            for _ in 0..count {
                match value(buf, at, depth + 1)? {
                    Some(item) => items.push(item),
                    None => {
                        *at = start;
                        return Ok(None);
                    }
                }
            }
            Ok(Some(Value::Array(items)))
        }
        _ => Err(RespError("an unknown reply type")),
    }
}

/// The line at `at`, without its CRLF; `None` if it is not all there yet.
/// A line holds a type and a number or a short status: one longer than
/// `MAX_LINE` is not a reply, whether its end has come or not.
fn line(buf: &[u8], at: usize) -> Result<Option<&[u8]>, RespError> {
    let rest = buf.get(at..).unwrap_or_default();
    let head = &rest[..rest.len().min(MAX_LINE + 2)];
    match head.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some(&rest[..end])),
        None if head.len() == MAX_LINE + 2 => Err(RespError("a line over the bound")),
        None => Ok(None),
    }
}

/// A bulk string's or array's length; `None` for `-1` (nil).
fn length(digits: &[u8]) -> Result<Option<usize>, RespError> {
    if digits == b"-1" {
        return Ok(None);
    }
    let text = std::str::from_utf8(digits).map_err(|_| RespError("a bad length"))?;
    let len: usize = text.parse().map_err(|_| RespError("a bad length"))?;
    if len > MAX_BULK {
        return Err(RespError("a length over the bound"));
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publish script's reply, as Redis sends it.
    const PUBLISHED: &[u8] = b"*4\r\n$10\r\n18c3a0f1e2\r\n:42\r\n:0\r\n:1\r\n";

    #[test]
    fn a_reply_split_anywhere_is_read_once_it_is_whole() {
        let expected = Value::Array(vec![
            Value::Bytes(b"18c3a0f1e2".to_vec()),
            Value::Int(42),
            Value::Int(0),
            Value::Int(1),
        ]);
        for cut in 0..PUBLISHED.len() {
            assert_eq!(parse(&PUBLISHED[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(PUBLISHED), Ok(Some((expected, PUBLISHED.len()))));
    }

    #[test]
    fn replies_in_a_row_are_read_one_at_a_time() {
        let mut buf = PUBLISHED.to_vec();
        buf.extend_from_slice(b"-NOSCRIPT No matching script\r\n+OK\r\n$-1\r\n*-1\r\n$0\r\n\r\n");
        let mut at = 0;
        let mut got = Vec::new();
        while let Some((value, used)) = parse(&buf[at..]).unwrap() {
            at += used;
            got.push(value);
        }
        assert_eq!(at, buf.len());
        assert_eq!(
            got[1..],
            [
                Value::Error("NOSCRIPT No matching script".into()),
                Value::Bytes(b"OK".to_vec()),
                Value::Nil,
                Value::Nil,
                Value::Bytes(Vec::new()),
            ]
        );
    }

    #[test]
    fn what_is_not_a_reply_is_an_error_not_a_wait() {
        for bad in [
            &b"?what\r\n"[..],
            b"$3\r\nabcd\r\n",
            b"$x\r\n",
            b":1x\r\n",
            b"$99999999999\r\n",
            b"\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse(&[b'+'; 5000]).is_err(), "a line without an end is not waited for");
        let long = [&[b'+'; 5000][..], b"\r\n"].concat();
        assert!(parse(&long).is_err(), "nor one with its end past the bound");
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(parse(deep.as_bytes()).is_err());
        let ok = "*1\r\n".repeat(MAX_DEPTH) + ":1\r\n";
        assert!(parse(ok.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn a_huge_array_count_with_few_items_waits_without_allocating_for_it() {
        assert_eq!(parse(b"*60000000\r\n:1\r\n"), Ok(None));
    }
}
