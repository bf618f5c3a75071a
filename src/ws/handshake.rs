//! The opening handshake (RFC 6455 §4.2): parse an HTTP/1.1 upgrade request,
//! decide, and write the response. No I/O, no allocation but the accept key.
//!
//! Every refusal is a short HTTP response with a plain-text reason; the caller
//! sends it and closes. Bytes that follow the request in the same read are the
//! client's first frames: `Upgrade::consumed` says where they start.

use std::fmt::Write as _;

use tungstenite::handshake::derive_accept_key;

use crate::auth::{self, Claims};
use crate::route::{Endpoint, TargetError};

/// Request headers larger than this get 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// More header lines than this get 431 too.
const MAX_HEADERS: usize = 48;
/// The only protocol version we speak (RFC 6455 §4.4).
pub(crate) const WEBSOCKET_VERSION: &str = "13";
/// Seconds a refused-for-capacity client is told to wait before retrying.
pub(crate) const RETRY_AFTER_SECS: u32 = 5;

/// What the server accepts: origins and subprotocols from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Empty means any origin.
    pub origins: &'a [OriginPattern],
    /// In order of the server's preference.
    pub subprotocols: &'a [String],
    pub auth: AuthPolicy<'a>,
}

/// Who may connect: with no secret everyone is anonymous; with one, a valid
/// token is needed unless anonymous access is allowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthPolicy<'a> {
    pub secret: Option<&'a [u8]>,
    /// Refuse tokens without `exp`: they would be valid forever.
    pub require_exp: bool,
    pub allow_anonymous: bool,
    /// A `/ws` request without a token is let in anyway: the application's
    /// connect hook (`--proxy-connect-url`) decides who it is after the upgrade.
    pub anonymous_ws: bool,
    /// Wall-clock seconds for `exp`/`nbf` (passed in: no clock here).
    pub now_unix: u64,
}

/// A subprotocol every server accepts, after the configured ones: browsers
/// that carry their token as a `bearer.<jwt>` subprotocol also offer this one,
/// because a browser fails a handshake whose answer names none it offered.
pub(crate) const BUILTIN_SUBPROTOCOL: &str = "hubbub.v1";

/// The outcome of looking at the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The request is not complete yet; keep the bytes and read more.
    Partial,
    /// A valid upgrade: send `write_accept` and switch to frames.
    Upgrade(Upgrade),
    /// Send `write_refusal` and close.
    Refuse(Refusal),
}

/// An accepted upgrade request.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    pub endpoint: Endpoint,
    /// Length of the request; later bytes are WebSocket frames.
    pub consumed: usize,
    /// Our answer to the client's key (`Sec-WebSocket-Accept`).
    pub accept_key: String,
    /// The chosen subprotocol.
    pub subprotocol: Option<String>,
    /// The verified token's claims; `None` for an anonymous client.
    pub claims: Option<Claims>,
}

/// Why a request was refused: the status line and the plain-text body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

impl Refusal {
    const fn new(status: u16, reason: &'static str) -> Self {
        Refusal { status, reason }
    }

    /// A valid token without `exp` while `--jwt-require-exp` is on (401): the
    /// issuer must give its tokens an expiry.
    pub(crate) const MISSING_EXP: Refusal = Refusal::new(401, "missing_exp");

    /// The server holds as many connections as it may (503 with Retry-After).
    pub(crate) const OVER_CAPACITY: Refusal = Refusal::new(503, "server at connection capacity");

    /// The request did not finish within the handshake timeout (408); the
    /// caller may send it, though a slowloris client rarely reads it.
    pub(crate) const TIMEOUT: Refusal = Refusal::new(408, "request not completed in time");

    /// The memory budget is nearly spent (503 with Retry-After).
    pub(crate) const SHORT_OF_MEMORY: Refusal = Refusal::new(503, "server short of memory; retry later");

    /// `--max-connections-per-ip` reached for the client's address (429).
    pub(crate) const TOO_MANY_FROM_ADDRESS: Refusal = Refusal::new(429, "too many connections from your address");

    /// `--max-handshakes-per-ip-per-sec` exceeded for the client's address (429).
    pub(crate) const HANDSHAKE_RATE: Refusal = Refusal::new(429, "too many handshakes from your address; slow down");
    /// The token's `channels` claim does not cover the room asked for.
    pub(crate) const ROOM_NOT_ALLOWED: Refusal = Refusal::new(403, "the token does not allow this room");

    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match *self {
            Refusal::SHORT_OF_MEMORY => return "memory",
            Refusal::TOO_MANY_FROM_ADDRESS => return "per_ip_connections",
            Refusal::HANDSHAKE_RATE => return "per_ip_rate",
            Refusal::ROOM_NOT_ALLOWED => return "room_forbidden",
            _ => {}
        }
        match self.status {
            400 => "bad_request",
            403 => "origin_forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            401 => "unauthorized",
            408 => "timeout",
            426 => "unsupported_version",
            431 => "headers_too_large",
            503 => "over_capacity",
            _ => "other",
        }
    }
}

/// An allowed origin: `https://app.example.com`, `app.example.com`, or a
/// wildcard `*.example.com` (any subdomain, not the bare domain). Without a
/// scheme, a pattern matches any scheme. Matching ignores ASCII case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: Option<String>,
    host: String,
}

impl OriginPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let lower = pattern.trim().to_ascii_lowercase();
        let (scheme, host) = match lower.split_once("://") {
            Some((s, h)) => (Some(s.to_string()), h.to_string()),
            None => (None, lower),
        };
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if bare.is_empty() || bare.contains(['*', '/', ' ']) {
            return Err(format!(
                "origin pattern {pattern:?}: expected [scheme://]host[:port] or *.domain"
            ));
        }
        Ok(OriginPattern { scheme, host })
    }

    pub fn matches(&self, origin: &str) -> bool {
        let Some((scheme, host)) = origin.split_once("://") else {
            return false;
        };
        if let Some(want) = &self.scheme {
            if !scheme.eq_ignore_ascii_case(want) {
                return false;
            }
        }
        match self.host.strip_prefix("*.") {
            Some(domain) => {
                // Bytes, not `str` slices: the Origin is client text and may
                // hold multi-byte characters where the suffix would start.
                let (host, domain) = (host.as_bytes(), domain.as_bytes());
                host.len() > domain.len() + 1
                    && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                    && host[host.len() - domain.len() - 1] == b'.'
            }
            None => host.eq_ignore_ascii_case(&self.host),
        }
    }
}

/// Looks at the request bytes received so far.
pub fn parse_request(bytes: &[u8], policy: &Policy<'_>) -> Outcome {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_REQUEST_BYTES => {
            return refuse(431, "request headers exceed 8 KiB")
        }
        Ok(httparse::Status::Partial) => return Outcome::Partial,
        Err(httparse::Error::TooManyHeaders) => return refuse(431, "too many request headers"),
        Err(_) => return refuse(400, "malformed HTTP request"),
    };
    if consumed > MAX_REQUEST_BYTES {
        return refuse(431, "request headers exceed 8 KiB");
    }
    match check_request(&request, policy) {
        Ok((endpoint, key, subprotocol, claims)) => Outcome::Upgrade(Upgrade {
            endpoint,
            consumed,
            accept_key: derive_accept_key(key),
            subprotocol,
            claims,
        }),
        Err(refusal) => Outcome::Refuse(refusal),
    }
}

fn refuse(status: u16, reason: &'static str) -> Outcome {
    Outcome::Refuse(Refusal::new(status, reason))
}

type Checked<'b> = (Endpoint, &'b [u8], Option<String>, Option<Claims>);

fn check_request<'b>(req: &httparse::Request<'_, 'b>, policy: &Policy<'_>) -> Result<Checked<'b>, Refusal> {
    if req.method != Some("GET") {
        return Err(Refusal::new(405, "only GET can be upgraded"));
    }
    if req.version != Some(1) {
        return Err(Refusal::new(400, "HTTP/1.1 required"));
    }
    let path = req.path.unwrap_or("");
    let endpoint = match Endpoint::from_target(path) {
        Ok(endpoint) => endpoint,
        Err(TargetError::NotFound) => return Err(Refusal::new(404, "no such endpoint")),
        Err(TargetError::BadName(why)) => return Err(Refusal::new(400, why)),
    };
    if header(req, "host").is_none() {
        return Err(Refusal::new(400, "missing Host header"));
    }
    if !has_token(req, "upgrade", "websocket") {
        return Err(Refusal::new(400, "missing Upgrade: websocket"));
    }
    if !has_token(req, "connection", "upgrade") {
        return Err(Refusal::new(400, "missing Connection: upgrade"));
    }
    if header(req, "sec-websocket-version").map(trim) != Some(WEBSOCKET_VERSION.as_bytes()) {
        return Err(Refusal::new(
            426,
            "unsupported Sec-WebSocket-Version; this server speaks 13",
        ));
    }
    let key = header(req, "sec-websocket-key").map(trim).unwrap_or(b"");
    if !is_valid_key(key) {
        return Err(Refusal::new(400, "Sec-WebSocket-Key must be 16 bytes in base64"));
    }
    if !origin_allowed(req, policy) {
        return Err(Refusal::new(403, "origin not allowed"));
    }
    // The Centrifuge protocol brings its token in its first command.
    let claims = match endpoint {
        Endpoint::Centrifuge => None,
        _ => authenticate(req, path, &policy.auth, endpoint == Endpoint::Ws)?,
    };
    if let (Endpoint::Room(room), Some(claims)) = (&endpoint, &claims) {
        // A room is a channel name: the same claim decides both.
        if !claims.may_access(room) {
            return Err(Refusal::ROOM_NOT_ALLOWED);
        }
    }
    Ok((endpoint, key, choose_subprotocol(req, policy), claims))
}

/// Finds and verifies the client's token (401 with the reason if bad).
fn authenticate(
    req: &httparse::Request<'_, '_>,
    target: &str,
    policy: &AuthPolicy<'_>,
    ws: bool,
) -> Result<Option<Claims>, Refusal> {
    let Some(secret) = policy.secret else { return Ok(None) };
    let query = target.split_once('?').map(|(_, q)| q);
    let protocols: Vec<&[u8]> = offered_protocols(req).collect();
    match auth::token_from_request(query, header(req, "authorization"), &protocols) {
        None if policy.allow_anonymous || (ws && policy.anonymous_ws) => Ok(None),
        None => Err(Refusal::new(401, "token required")),
        Some(token) => match auth::verify(&token, secret, policy.now_unix) {
            Ok(claims) if policy.require_exp && claims.exp.is_none() => Err(Refusal::MISSING_EXP),
            Ok(claims) => Ok(Some(claims)),
            Err(e) => Err(Refusal::new(401, e.reason())),
        },
    }
}

/// Every `Sec-WebSocket-Protocol` entry the client offered.
fn offered_protocols<'r, 'b>(req: &'r httparse::Request<'_, 'b>) -> impl Iterator<Item = &'b [u8]> + 'r {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(trim)
}

fn header<'b>(req: &httparse::Request<'_, 'b>, name: &str) -> Option<&'b [u8]> {
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// True when any header `name` holds `token` in its comma-separated list.
fn has_token(req: &httparse::Request<'_, '_>, name: &str, token: &str) -> bool {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
}

/// RFC 6455 §4.1: "a randomly selected 16-byte value that has been base64-encoded":
/// 22 base64 characters then "==".
fn is_valid_key(key: &[u8]) -> bool {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    key.len() == 24 && key.ends_with(b"==") && key[..22].iter().all(|b| ALPHABET.contains(b))
}

/// No pattern configured, or no Origin header (not a browser), is allowed.
fn origin_allowed(req: &httparse::Request<'_, '_>, policy: &Policy<'_>) -> bool {
    if policy.origins.is_empty() {
        return true;
    }
    match header(req, "origin").and_then(|v| std::str::from_utf8(v).ok()) {
        None => true,
        Some(origin) => policy.origins.iter().any(|p| p.matches(origin.trim())),
    }
}

/// The first of the server's subprotocols (in its order) that the client offered.
/// A `bearer.` entry carries a token and is never chosen.
fn choose_subprotocol(req: &httparse::Request<'_, '_>, policy: &Policy<'_>) -> Option<String> {
    let ours = policy
        .subprotocols
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(BUILTIN_SUBPROTOCOL));
    ours.filter(|p| !auth::is_bearer_protocol(p.as_bytes()))
        .find(|p| offered_protocols(req).any(|t| t == p.as_bytes()))
        .map(str::to_string)
}

/// Appends the 101 response.
pub fn write_accept(out: &mut Vec<u8>, accept_key: &str, subprotocol: Option<&str>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept_key.as_bytes());
    if let Some(protocol) = subprotocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends a refusal: status line, the headers the status calls for, and the
/// reason as a plain-text body.
pub fn write_refusal(out: &mut Vec<u8>, refusal: &Refusal) {
    let mut head = String::with_capacity(192);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        refusal.status,
        status_text(refusal.status),
        refusal.reason.len() + 1
    );
    match refusal.status {
        426 => head.push_str("Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n"),
        405 => head.push_str("Allow: GET\r\n"),
        401 => head.push_str("WWW-Authenticate: Bearer\r\n"),
        503 => {
            let _ = write!(head, "Retry-After: {RETRY_AFTER_SECS}\r\n");
        }
        429 => head.push_str("Retry-After: 1\r\n"),
        _ => {}
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(refusal.reason.as_bytes());
    out.push(b'\n');
}

/// The addresses of every `X-Forwarded-For` header of a complete request
/// head, in order. An entry that is not an address (`unknown`, junk) ends
/// what can be trusted: the entries left of it are dropped, the ones right of
/// it (added by later proxies) kept. `IP:port` and `[IPv6]:port` are read as
/// their address.
pub(crate) fn forwarded_for(request: &[u8]) -> Vec<std::net::IpAddr> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(request), Ok(httparse::Status::Complete(_))) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let values = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        .filter_map(|h| std::str::from_utf8(h.value).ok());
    for entry in values.flat_map(|v| v.split(',')) {
        match parse_forwarded_address(entry.trim()) {
            Some(ip) => out.push(ip),
            None => out.clear(),
        }
    }
    out
}

/// The headers of `request` named in `names` (lower case), in request
/// order, for the connect hook; values that are not visible ASCII (with
/// spaces and tabs) are left out, as is anything after a malformed head.
pub(crate) fn headers_named(request: &[u8], names: &[String]) -> Vec<(Box<str>, Box<str>)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    if names.is_empty() || !matches!(parsed.parse(request), Ok(httparse::Status::Complete(_))) {
        return Vec::new();
    }
    parsed
        .headers
        .iter()
        .filter(|h| names.iter().any(|n| h.name.eq_ignore_ascii_case(n)))
        .filter(|h| h.value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)))
        .filter_map(|h| Some((h.name.into(), std::str::from_utf8(h.value).ok()?.into())))
        .collect()
}

fn parse_forwarded_address(entry: &str) -> Option<std::net::IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn only_the_named_headers_are_passed_on() {
        let req = b"GET /ws HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nX-Other: no\r\nauthorization: Bearer t\r\nCookie: bad\xff\r\n\r\n";
        let names = ["cookie".to_string(), "authorization".to_string()];
        let got = headers_named(req, &names);
        let got: Vec<(&str, &str)> = got.iter().map(|(n, v)| (&**n, &**v)).collect();
        assert_eq!(got, [("Cookie", "a=1"), ("authorization", "Bearer t")]);
        assert!(headers_named(req, &[]).is_empty());
    }

    #[test]
    fn a_tokenless_ws_request_goes_to_the_connect_hook_others_are_refused() {
        let secret = b"a-handshake-test-secret-of-32-bytes!";
        let policy = Policy {
            origins: &[],
            subprotocols: &[],
            auth: AuthPolicy {
                secret: Some(secret),
                anonymous_ws: true,
                ..AuthPolicy::default()
            },
        };
        let ws = request("").replace("/echo", "/ws");
        assert!(matches!(parse_request(ws.as_bytes(), &policy), Outcome::Upgrade(_)));
        assert!(matches!(parse_request(request("").as_bytes(), &policy), Outcome::Refuse(r) if r.status == 401));
    }

    #[test]
    fn forwarded_for_lists_every_address_in_order() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nx-forwarded-for: ::1\r\n\r\n";
        let ips: Vec<String> = forwarded_for(req).iter().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["1.1.1.1", "2.2.2.2", "::1"]);
        let junk = b"GET / HTTP/1.1\r\nX-Forwarded-For: 9.9.9.9, junk, 1.2.3.4:5555, [::2]:80\r\n\r\n";
        let ips: Vec<String> = forwarded_for(junk).iter().map(|i| i.to_string()).collect();
        assert_eq!(
            ips,
            ["1.2.3.4", "::2"],
            "what is left of junk is not trusted, what is right is kept"
        );
        assert!(forwarded_for(b"GET / HTTP/1.1\r\nX-Forw").is_empty());
    }

    fn request(extra: &str) -> String {
        format!(
            "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
        )
    }

    fn open_policy() -> Policy<'static> {
        Policy {
            origins: &[],
            subprotocols: &[],
            auth: AuthPolicy::default(),
        }
    }

    fn status_of(req: &str, policy: &Policy<'_>) -> u16 {
        match parse_request(req.as_bytes(), policy) {
            Outcome::Refuse(r) => r.status,
            Outcome::Upgrade(_) => 101,
            Outcome::Partial => 0,
        }
    }

    #[test]
    fn accepts_the_rfc_example_and_derives_its_key() {
        let Outcome::Upgrade(up) = parse_request(request("").as_bytes(), &open_policy()) else {
            panic!()
        };
        assert_eq!(up.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(up.endpoint, Endpoint::Echo);
        assert_eq!(up.consumed, request("").len());
    }

    #[test]
    fn bytes_after_the_request_are_not_consumed() {
        let mut bytes = request("").into_bytes();
        let head = bytes.len();
        bytes.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        let Outcome::Upgrade(up) = parse_request(&bytes, &open_policy()) else {
            panic!()
        };
        assert_eq!(up.consumed, head);
    }

    #[test]
    fn partial_request_asks_for_more_until_8_kib() {
        let full = request("");
        assert_eq!(parse_request(&full.as_bytes()[..20], &open_policy()), Outcome::Partial);
        let huge = format!("GET /echo HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(MAX_REQUEST_BYTES));
        assert_eq!(status_of(&huge, &open_policy()), 431);
    }

    #[test]
    fn refusals_carry_the_right_status() {
        let p = open_policy();
        assert_eq!(status_of(&request("").replacen("GET", "POST", 1), &p), 405);
        assert_eq!(status_of(&request("").replacen("HTTP/1.1", "HTTP/1.0", 1), &p), 400);
        assert_eq!(status_of(&request("").replacen("/echo", "/nope", 1), &p), 404);
        assert_eq!(
            status_of(&request("").replacen("Upgrade: websocket", "Upgrade: h2c", 1), &p),
            400
        );
        assert_eq!(
            status_of(&request("").replacen("keep-alive, Upgrade", "keep-alive", 1), &p),
            400
        );
        assert_eq!(
            status_of(&request("").replacen("Version: 13", "Version: 8", 1), &p),
            426
        );
        assert_eq!(status_of(&request("").replacen(KEY, "c2hvcnQ=", 1), &p), 400);
        assert_eq!(status_of("\x16\x03\x01garbage\r\n\r\n", &p), 400);
    }

    #[test]
    fn connection_and_upgrade_tokens_ignore_case() {
        let req = request("")
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("keep-alive, Upgrade", "UPGRADE");
        assert_eq!(status_of(&req, &open_policy()), 101);
    }

    #[test]
    fn origin_patterns() {
        let origins = [
            OriginPattern::parse("*.example.com").unwrap(),
            OriginPattern::parse("https://app.test:8443").unwrap(),
        ];
        let p = Policy {
            origins: &origins,
            subprotocols: &[],
            auth: AuthPolicy::default(),
        };
        assert_eq!(status_of(&request("Origin: https://chat.example.com\r\n"), &p), 101);
        assert_eq!(status_of(&request("Origin: http://a.b.EXAMPLE.com\r\n"), &p), 101);
        assert_eq!(status_of(&request("Origin: https://example.com\r\n"), &p), 403);
        assert_eq!(status_of(&request("Origin: https://evilexample.com\r\n"), &p), 403);
        assert_eq!(status_of(&request("Origin: https://app.test:8443\r\n"), &p), 101);
        assert_eq!(status_of(&request("Origin: http://app.test:8443\r\n"), &p), 403);
        assert_eq!(status_of(&request(""), &p), 101, "non-browser clients send no Origin");
        assert!(OriginPattern::parse("*").is_err());
    }

    #[test]
    fn non_ascii_origin_is_refused_not_a_panic() {
        // Found by fuzzing: the wildcard suffix used to be cut out of the
        // Origin as a `str`, which panics inside a multi-byte character.
        let origins = [OriginPattern::parse("*.example.com").unwrap()];
        let p = Policy {
            origins: &origins,
            subprotocols: &[],
            auth: AuthPolicy::default(),
        };
        assert_eq!(
            status_of(&request("Origin: https://ciat\u{4a2}xample.com\r\n"), &p),
            403
        );
        assert_eq!(status_of(&request("Origin: https://\u{e9}.example.com\r\n"), &p), 101);
    }

    #[test]
    fn subprotocol_is_the_servers_first_choice_among_those_offered() {
        let ours = ["chat.v2".to_string(), "chat.v1".to_string()];
        let p = Policy {
            origins: &[],
            subprotocols: &ours,
            auth: AuthPolicy::default(),
        };
        let req = request("Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n");
        let Outcome::Upgrade(up) = parse_request(req.as_bytes(), &p) else {
            panic!()
        };
        assert_eq!(up.subprotocol.as_deref(), Some("chat.v2"));
        let req = request("Sec-WebSocket-Protocol: other\r\n");
        let Outcome::Upgrade(up) = parse_request(req.as_bytes(), &p) else {
            panic!()
        };
        assert_eq!(up.subprotocol, None);
    }

    #[test]
    fn tokens_without_exp_are_refused_when_required() {
        let secret = b"a-handshake-test-secret-of-32-bytes!";
        let forever = crate::auth::sign_hs256(r#"{"sub":"ann"}"#, secret);
        let expiring = crate::auth::sign_hs256(r#"{"sub":"ann","exp":2000}"#, secret);
        let policy = |require_exp| Policy {
            origins: &[],
            subprotocols: &[],
            auth: AuthPolicy {
                secret: Some(secret),
                require_exp,
                allow_anonymous: false,
                anonymous_ws: false,
                now_unix: 1000,
            },
        };
        let with = |token: &str| request(&format!("Authorization: Bearer {token}\r\n"));
        assert_eq!(
            parse_request(with(&forever).as_bytes(), &policy(true)),
            Outcome::Refuse(Refusal::MISSING_EXP)
        );
        assert_eq!(status_of(&with(&expiring), &policy(true)), 101);
        assert_eq!(status_of(&with(&forever), &policy(false)), 101);
    }

    #[test]
    fn refusal_response_is_http_with_a_reason() {
        let mut out = Vec::new();
        write_refusal(&mut out, &Refusal::OVER_CAPACITY);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("Retry-After: 5\r\n"));
        assert!(text.ends_with("\r\n\r\nserver at connection capacity\n"));
        let body_len = "server at connection capacity\n".len();
        assert!(text.contains(&format!("Content-Length: {body_len}\r\n")));
    }
}
