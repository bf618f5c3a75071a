//! Just enough HTTP/1.1 for the admin port, without I/O: parse a request
//! head from the bytes received so far, judge its body length, encode a
//! response. One request per connection (`Connection: close`).
//!
//! Bounds: a head is at most [`MAX_HEAD_BYTES`] (else 431); a body is at
//! most [`MAX_BODY_BYTES`] on the bearer routes and [`MAX_OPEN_BODY_BYTES`]
//! on the open ones (else 413); bodies come with `Content-Length` only
//! (`Transfer-Encoding` gets 411).

use thiserror::Error;

/// Largest request head accepted (431 beyond it).
pub(crate) const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Largest request body accepted on the `/api/*` routes, from callers that
/// presented the API key (413 beyond it).
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest body accepted (and ignored) on the open routes: probes and
/// scrapers send none.
pub(crate) const MAX_OPEN_BODY_BYTES: usize = 8 * 1024;
/// Most header lines parsed in a head (400 beyond it).
const MAX_HEADERS: usize = 32;

/// A parsed request.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The client asked for `100 Continue` before it sends the body.
    pub(crate) fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }
}

/// A response: status, content type, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: body.into(),
        }
    }
}

/// Why a request is refused before it reaches the router. Each variant is
/// answered with its [`HttpError::status`] and the connection closes.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpError {
    /// Not HTTP/1.x, or a bad `Content-Length`: answer 400.
    #[error("malformed request")]
    Malformed,
    /// The head passed [`MAX_HEAD_BYTES`] (or 32 header lines would
    /// not do): answer 431.
    #[error("request head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// The announced body passes the route's cap: answer 413.
    #[error("request body too large")]
    BodyTooLarge,
    /// A chunked (or otherwise encoded) body: answer 411, send `Content-Length`.
    #[error("send the body with Content-Length")]
    LengthRequired,
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::Malformed => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::LengthRequired => 411,
        }
    }

    /// The plain-text answer to send.
    pub fn response(self) -> Response {
        Response::text(self.status(), format!("{self}\n"))
    }
}

/// Parses the head at the start of `input`. `Ok(None)`: not complete yet
/// (and still under the cap); `Ok(Some((request, head_len)))`: the head is
/// `input[..head_len]`, the body (if any) follows.
pub(crate) fn parse_head(input: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(input) {
        Ok(httparse::Status::Complete(head_len)) if head_len <= MAX_HEAD_BYTES => {
            Ok(Some((to_request(&parsed), head_len)))
        }
        Ok(httparse::Status::Complete(_)) => Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) if input.len() < MAX_HEAD_BYTES => Ok(None),
        Ok(httparse::Status::Partial) => Err(HttpError::HeadTooLarge),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::HeadTooLarge),
        Err(_) => Err(HttpError::Malformed),
    }
}

/// The body length `request` announces, judged against `cap`.
pub(crate) fn body_length(request: &Request, cap: usize) -> Result<usize, HttpError> {
    if request.header("transfer-encoding").is_some() {
        return Err(HttpError::LengthRequired);
    }
    let mut lengths = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim());
    let Some(first) = lengths.next() else {
        return Ok(0);
    };
    // Digits only: no sign, no spaces inside; repeats must agree (RFC 9112 6.3).
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) || lengths.any(|v| v != first) {
        return Err(HttpError::Malformed);
    }
    match first.parse::<usize>() {
        Ok(length) if length <= cap => Ok(length),
        _ => Err(HttpError::BodyTooLarge),
    }
}

/// The bytes of `response` with its head; `head_only` for HEAD requests.
pub fn encode(response: &Response, head_only: bool) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    let mut out = Vec::with_capacity(head.len() + if head_only { 0 } else { response.body.len() });
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(&response.body);
    }
    out
}

/// The interim answer to `Expect: 100-continue`.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn to_request(parsed: &httparse::Request) -> Request {
    let target = parsed.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Request {
        method: parsed.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: parsed
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
            .collect(),
        body: Vec::new(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<(Request, usize)>, HttpError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn parses_a_complete_head_and_finds_the_body() {
        let text = "POST /api/publish?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";
        let (request, head_len) = head(text).unwrap().unwrap();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/api/publish")
        );
        assert_eq!(request.query, "x=1");
        assert_eq!(&text[head_len..], "{}");
        assert_eq!(body_length(&request, 10), Ok(2));
    }

    #[test]
    fn a_partial_head_waits_until_the_cap() {
        assert!(head("GET /metrics HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let long = format!("GET / HTTP/1.1\r\nX-Pad: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(head(&long).unwrap_err(), HttpError::HeadTooLarge);
        let many: String = (0..40).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(),
            HttpError::HeadTooLarge
        );
        assert_eq!(
            head("\x16\x03\x01 tls hello\r\n\r\n").unwrap_err(),
            HttpError::Malformed
        );
    }

    #[test]
    fn body_lengths_are_strict() {
        let with = |headers: &[(&str, &str)]| Request {
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            ..Request::default()
        };
        assert_eq!(body_length(&with(&[]), 0), Ok(0));
        assert_eq!(
            body_length(&with(&[("Content-Length", "11")]), 10),
            Err(HttpError::BodyTooLarge)
        );
        let huge = "99999999999999999999999";
        assert_eq!(
            body_length(&with(&[("content-length", huge)]), 10),
            Err(HttpError::BodyTooLarge)
        );
        assert_eq!(
            body_length(&with(&[("Content-Length", "-1")]), 10),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            body_length(&with(&[("Content-Length", "")]), 10),
            Err(HttpError::Malformed)
        );
        let twice = with(&[("Content-Length", "1"), ("Content-Length", "2")]);
        assert_eq!(body_length(&twice, 10), Err(HttpError::Malformed));
        let chunked = with(&[("Transfer-Encoding", "chunked")]);
        assert_eq!(body_length(&chunked, 10), Err(HttpError::LengthRequired));
    }

    #[test]
    fn encodes_head_and_body() {
        let out = encode(&Response::text(408, "late\n"), false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text}");
        assert!(
            text.contains("Content-Length: 5\r\nConnection: close\r\n\r\nlate\n"),
            "{text}"
        );
        let head_only = encode(&Response::text(200, "ok\n"), true);
        assert!(head_only.ends_with(b"Content-Length: 3\r\nConnection: close\r\n\r\n"));
    }
}
