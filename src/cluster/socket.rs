//! Reading and writing the shards' own non-blocking Redis connections
//! (`direct`, `listen`): what each `read` and `write` came to, classified
//! in this one place, and buffers that give back what a burst grew them to.

use std::io::{self, Read, Write};

/// Capacity a connection's buffer keeps once emptied; a larger one (a
/// burst, a big publication) is given back.
pub const KEEP_CAPACITY: usize = 64 * 1024;

/// What one `read` came to.
pub enum Got {
    /// Bytes, appended to the input.
    Bytes,
    /// Nothing more for now: wait for the next readable event.
    Drained,
    /// Redis closed the connection, or it failed.
    Closed(io::Error),
}

/// One `read` from `stream` into `input` (through `chunk`); an interrupted
/// one is tried again.
pub fn read_once(stream: &mut impl Read, chunk: &mut [u8], input: &mut Vec<u8>) -> Got {
    loop {
        match stream.read(chunk) {
            Ok(0) => {
                return Got::Closed(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Redis closed the connection",
                ))
            }
            Ok(n) => {
                input.extend_from_slice(&chunk[..n]);
                return Got::Bytes;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Got::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Got::Closed(e),
        }
    }
}

/// Writes `out[*written..]` until the socket takes no more (the rest goes
/// on the writable event) or all is written (then `out` is emptied).
pub fn write_out(stream: &mut impl Write, out: &mut Vec<u8>, written: &mut usize) -> io::Result<()> {
    while *written < out.len() {
        match stream.write(&out[*written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    consume(out, *written);
    *written = 0;
    Ok(())
}

/// Drops the first `used` bytes of `buf`, and its memory too when nothing
/// is left and it grew past `KEEP_CAPACITY`.
pub fn consume(buf: &mut Vec<u8>, used: usize) {
    buf.drain(..used);
    if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
        *buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_emptied_after_a_burst_gives_its_memory_back() {
        let mut buf = vec![7u8; 1 << 20];
        consume(&mut buf, 1000);
        assert!(buf.capacity() >= 1 << 20, "not empty yet: kept");
        let left = buf.len();
        consume(&mut buf, left);
        assert_eq!(buf.capacity(), 0);
        let mut small = Vec::with_capacity(1024);
        small.extend_from_slice(b"abc");
        consume(&mut small, 3);
        assert_eq!(small.capacity(), 1024, "a small one is kept for the next answers");
    }
}
