//! A small blocking RESP2 client over `std::net`: commands out as arrays of
//! bulk strings, replies parsed into [`Value`]. Pipelining is the caller
//! writing several commands before reading as many replies. Every socket has
//! read and write timeouts, so a hung Redis costs a bounded wait, never a
//! stuck thread. No async runtime, no dependency.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest bulk string or array accepted from Redis (a corrupt length must
/// not make us allocate gigabytes).
const MAX_BULK_BYTES: usize = 64 << 20;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Int(i64),
    /// Simple and bulk strings alike.
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    /// An error reply (`-ERR ...`): the command failed, the connection is fine.
    Error(String),
}

impl Value {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    pub(crate) fn into_array(self) -> Vec<Value> {
        match self {
            Value::Array(items) => items,
            _ => Vec::new(),
        }
    }
}

/// A connection to Redis.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    out: Vec<u8>,
}

impl Conn {
    /// Connects to `redis://HOST:PORT` (or `HOST:PORT`) within `timeout`.
    pub fn connect(url: &str, timeout: Duration) -> io::Result<Conn> {
        let hostport = url.strip_prefix("redis://").unwrap_or(url).trim_end_matches('/');
        let addr = hostport
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, stream.try_clone()?),
            writer: stream,
            out: Vec::with_capacity(64 * 1024),
        })
    }

    /// Changes the read timeout (a subscriber waits longer between messages).
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.writer.set_read_timeout(Some(timeout))
    }

    /// Queues one command; `flush` sends everything queued.
    pub fn queue<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        encode(&mut self.out, args);
    }

    pub fn flush(&mut self) -> io::Result<()> {
        let result = self.writer.write_all(&self.out);
        self.out.clear();
        result
    }

    /// Reads one reply.
    pub fn read(&mut self) -> io::Result<Value> {
        read_value(&mut self.reader)
    }

    /// The buffered reading side (to wait for input without consuming it).
    pub fn reader(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.reader
    }

    /// True when a reply is already buffered (no syscall needed to read it).
    pub(crate) fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// One command, one reply.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Value> {
        self.queue(args);
        self.flush()?;
        self.read()
    }
}

/// Appends `args` as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad RESP reply: {what}"))
}

fn read_line(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = reader.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "redis closed the connection",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad("line without CRLF"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_len(text: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad("length"))
}

/// Reads one reply from `reader` (nested arrays included).
pub(crate) fn read_value(reader: &mut impl BufRead) -> io::Result<Value> {
    let line = read_line(reader)?;
    let (&kind, rest) = line.split_first().ok_or_else(|| bad("empty line"))?;
    match kind {
        b'+' => Ok(Value::Bytes(rest.to_vec())),
        b'-' => Ok(Value::Error(String::from_utf8_lossy(rest).into_owned())),
        b':' => Ok(Value::Int(parse_len(rest)?)),
        b'$' => {
            let len = parse_len(rest)?;
            if len < 0 {
                return Ok(Value::Nil);
            }
            let len = len as usize;
            if len > MAX_BULK_BYTES {
                return Err(bad("bulk too large"));
            }
            let mut data = vec![0; len + 2];
            io::Read::read_exact(reader, &mut data)?;
            data.truncate(len);
            Ok(Value::Bytes(data))
        }
        b'*' => {
            let len = parse_len(rest)?;
            if len < 0 {
                return Ok(Value::Nil);
            }
            if len as usize > MAX_BULK_BYTES {
                return Err(bad("array too large"));
            }
            (0..len)
                .map(|_| read_value(reader))
                .collect::<io::Result<_>>()
                .map(Value::Array)
        }
        _ => Err(bad("unknown type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Value {
        read_value(&mut io::Cursor::new(bytes)).unwrap()
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        let mut out = Vec::new();
        encode(&mut out, &["GET", "k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn parses_every_reply_type() {
        assert_eq!(parse(b"+OK\r\n"), Value::Bytes(b"OK".to_vec()));
        assert_eq!(parse(b":42\r\n").as_int(), Some(42));
        assert_eq!(parse(b"$-1\r\n"), Value::Nil);
        assert_eq!(parse(b"$5\r\na\r\nbc\r\n").as_bytes(), Some(&b"a\r\nbc"[..]));
        assert!(matches!(parse(b"-ERR nope\r\n"), Value::Error(e) if e == "ERR nope"));
        let nested = parse(b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n");
        assert_eq!(
            nested,
            Value::Array(vec![Value::Array(vec![Value::Int(1)]), Value::Bytes(b"x".to_vec())])
        );
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        for bad in [&b"?x\r\n"[..], b"$99999999999\r\n", b"+no crlf", b":x\r\n", b""] {
            assert!(read_value(&mut io::Cursor::new(bad)).is_err(), "{bad:?}");
        }
    }
}
