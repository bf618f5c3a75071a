//! Owns the client's opening handshake (RFC 6455 section 4.1): writing the upgrade request and
//! checking the server's response, including its `Sec-WebSocket-Accept` key.
//!
//! No I/O and no clock: the connection hands it bytes and acts on the outcome.

use base64::Engine as _;
use thiserror::Error;
use tungstenite::handshake::derive_accept_key;

/// The largest response head we accept before calling the server broken.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Why a handshake response was refused. The caller counts it as a failed connection.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// The server answered with another status than 101 (404 for an unknown path, 503 when full).
    #[error("HTTP status {0}")]
    Status(u16),
    /// The response was not HTTP, or too long.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The accept key does not match the key we sent: not a WebSocket server, or a broken proxy.
    #[error("wrong Sec-WebSocket-Accept")]
    BadAccept,
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 (24 characters).
pub fn new_key(random: u64, random2: u64) -> [u8; 24] {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&random.to_ne_bytes());
    raw[8..].copy_from_slice(&random2.to_ne_bytes());
    let mut key = [0u8; 24];
    // 16 bytes always encode to exactly 24 base64 characters.
    let _ = base64::engine::general_purpose::STANDARD.encode_slice(raw, &mut key);
    key
}

/// Appends the upgrade request for `path` on `host` to `out`.
pub fn write_request(out: &mut Vec<u8>, host: &str, path: &str, key: &[u8; 24]) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\nSec-WebSocket-Version: 13\r\n\r\n");
}

/// Parses the response head at the front of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some(n))`: the upgrade succeeded and the first `n` bytes were the head (the rest are frames).
pub fn read_response(buf: &[u8], key: &[u8; 24]) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(HandshakeError::Malformed("response head too long"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HandshakeError::Malformed("not an HTTP response")),
    };
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(HandshakeError::Status(status));
    }
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
    match accept {
        Some(h) if h.value == derive_accept_key(key).as_bytes() => Ok(Some(head_len)),
        _ => Err(HandshakeError::BadAccept),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_for(key: &[u8; 24]) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key)
        )
    }

    #[test]
    fn request_names_path_host_and_key() {
        let key = new_key(1, 2);
        let mut out = Vec::new();
        write_request(&mut out, "127.0.0.1:9", "/echo", &key);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /echo HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(text.contains(&format!(
            "Sec-WebSocket-Key: {}\r\n",
            std::str::from_utf8(&key).unwrap()
        )));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn keys_differ_and_are_base64_of_16_bytes() {
        let (a, b) = (new_key(1, 2), new_key(3, 4));
        assert_ne!(a, b);
        assert!(a.ends_with(b"=="));
    }

    #[test]
    fn accepts_the_right_key_and_reports_trailing_frames() {
        let key = new_key(5, 6);
        let mut bytes = response_for(&key).into_bytes();
        let head = bytes.len();
        bytes.extend_from_slice(&[0x81, 0]);
        assert_eq!(read_response(&bytes[..head - 1], &key), Ok(None));
        assert_eq!(read_response(&bytes, &key), Ok(Some(head)));
    }

    #[test]
    fn refuses_wrong_key_status_and_garbage() {
        let key = new_key(5, 6);
        let other = new_key(7, 8);
        assert_eq!(
            read_response(response_for(&other).as_bytes(), &key),
            Err(HandshakeError::BadAccept)
        );
        let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(read_response(not_found, &key), Err(HandshakeError::Status(404)));
        assert!(matches!(
            read_response(b"SSH-2.0-OpenSSH\r\n\r\n", &key),
            Err(HandshakeError::Malformed(_))
        ));
    }
}
