//! Who a client is: HS256 JSON Web Tokens (RFC 7519, signed per RFC 7515 and
//! RFC 7518 §3.2), checked against a shared secret, and where a WebSocket
//! upgrade request carries one.
//!
//! This module owns the token rules: exactly three base64url segments, a
//! header that says `HS256` (nothing else, and never `none`), a signature
//! compared in constant time, the time claims (`exp`, `nbf`), a non-empty
//! `sub`, and the optional `channels` claim that limits what the client may
//! subscribe or publish to. It never does I/O and never reads the clock: the
//! caller passes `now_unix_secs`, so every rule is testable without a server.
//! Input from the network never panics here.
//!
//! # Claims read
//!
//! | claim      | type                    | rule                                        |
//! |------------|-------------------------|---------------------------------------------|
//! | `sub`      | non-empty string        | required: who the client is                 |
//! | `exp`      | integer seconds         | if present, refused when `now >= exp`       |
//! | `nbf`      | integer seconds         | if present, refused when `now < nbf`        |
//! | `iat`      | integer seconds         | if present, exposed (see [`Claims::age_secs`]), not a validity bound |
//! | `channels` | array of pattern strings| if present, the only channels allowed ([`pattern`] syntax) |
//! | `jti`      | non-empty string        | if present, the token's id: `POST /api/disconnect {"token_id"}` cuts its connections |
//!
//! Other claims are ignored; `null` counts as absent. `iat` is not refused
//! when in the future: RFC 7519 §4.1.6 makes it informational, issuers set it
//! to "now", and a second of skew between their clock and ours would refuse
//! fresh tokens. A token without `exp` never expires: issue them with one.
//!
//! # Where the token travels
//!
//! [`token_from_request`] looks, in this order, at `Authorization: Bearer
//! <jwt>`, at a `Sec-WebSocket-Protocol` entry `bearer.<jwt>`, then at the
//! `token=<jwt>` query parameter. Browsers cannot set headers on a WebSocket,
//! so they offer the token as a subprotocol (`new WebSocket(url,
//! ["bearer." + jwt, "app.v1"])`); a JWT is base64url and dots, which are
//! valid in a subprotocol token. The server must never select or echo a
//! `bearer.` entry ([`is_bearer_protocol`]). Query strings end up in access
//! logs, so the query parameter is the last resort.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

pub mod pattern;

use pattern::ChannelPattern;

/// Tokens longer than this are refused before any decoding.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The shortest secret [`verify`] accepts. RFC 7518 §3.2: "A key of the same
/// size as the hash output (for instance, 256 bits for "HS256") or larger
/// MUST be used with this algorithm."
pub(crate) const MIN_SECRET_BYTES: usize = 32;

/// The longest `jti` accepted (it is kept for each connection).
pub(crate) const MAX_JTI_BYTES: usize = 256;

/// The prefix of a `Sec-WebSocket-Protocol` entry that carries a token.
pub(crate) const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The only algorithm accepted (the `alg` header value, case-sensitive).
const ALGORITHM: &str = "HS256";

/// The header [`sign_hs256`] writes.
const HS256_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

type HmacSha256 = Hmac<Sha256>;

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Who the client is; never empty.
    pub sub: String,
    /// Expiry, Unix seconds; `None` means the token never expires.
    pub exp: Option<u64>,
    /// Not valid before, Unix seconds.
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds.
    pub iat: Option<u64>,
    /// The channels the client may subscribe or publish to; `None` = all.
    pub channels: Option<Vec<ChannelPattern>>,
    /// The token's id (`jti`), for revoking its sessions.
    pub jti: Option<String>,
}

impl Claims {
    /// True if the `channels` claim allows `channel` (or there is none).
    /// The caller validates the channel name itself first.
    pub fn may_access(&self, channel: &str) -> bool {
        match &self.channels {
            None => true,
            Some(patterns) => patterns.iter().any(|p| p.matches(channel)),
        }
    }

    /// Seconds since `iat`, for a caller with a maximum-age policy; `None`
    /// without `iat`, zero for an `iat` in the future.
    pub fn age_secs(&self, now_unix_secs: u64) -> Option<u64> {
        self.iat.map(|iat| now_unix_secs.saturating_sub(iat))
    }
}

/// Why a token was refused. Apart from [`AuthError::WeakSecret`], the server
/// answers 401 with [`AuthError::reason`] as the body, counts the reason,
/// and closes; the client needs a new token, not a retry with this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a JWT: not three base64url (unpadded) segments, a header or
    /// payload that is not a JSON object, or longer than
    /// [`MAX_TOKEN_BYTES`]. Answer 401; the client sends garbage.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is missing or not exactly `HS256` (`none`,
    /// `HS512`, `RS256`...). Answer 401; the issuer signs with the wrong
    /// algorithm, or someone tries an algorithm-confusion attack.
    #[error("unsupported algorithm: only HS256 is accepted")]
    UnsupportedAlgorithm,
    /// The header's `typ` is present but not `JWT`, or it has a `crit`
    /// extension we cannot honour (RFC 7515 §4.1.11). Answer 401.
    #[error("unsupported header: typ must be JWT and crit is not understood")]
    UnsupportedHeader,
    /// The signature does not match the header and payload under our
    /// secret: tampered, or signed with another secret. Answer 401; if every
    /// client gets this, the server and the issuer disagree on the secret.
    #[error("bad signature")]
    BadSignature,
    /// `now >= exp`. Answer 401; the client fetches a fresh token.
    #[error("token expired")]
    Expired,
    /// `now < nbf`. Answer 401; the client may retry after `nbf`. Frequent
    /// cases mean the issuer's clock is ahead of ours.
    #[error("token not yet valid")]
    NotYetValid,
    /// No `sub`, or an empty one. Answer 401; the issuer must name the user.
    #[error("token has no subject")]
    MissingSubject,
    /// A claim we read has the wrong type (`exp` not an integer, `channels`
    /// not an array of valid patterns...). Answer 401; the issuer is wrong.
    #[error("bad claims: {0}")]
    BadClaims(&'static str),
    /// The secret is shorter than [`MIN_SECRET_BYTES`]: a server
    /// configuration error, not the client's fault. Refuse such a secret
    /// when parsing the configuration ([`check_secret`]); if it is seen
    /// here, answer 500.
    #[error("server secret is shorter than 32 bytes")]
    WeakSecret,
}

impl AuthError {
    /// Short, stable text for the HTTP body and the metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) => "malformed_token",
            AuthError::UnsupportedAlgorithm => "unsupported_algorithm",
            AuthError::UnsupportedHeader => "unsupported_header",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::MissingSubject => "missing_subject",
            AuthError::BadClaims(_) => "bad_claims",
            AuthError::WeakSecret => "server_misconfigured",
        }
    }
}

/// Checks a configured secret: at least [`MIN_SECRET_BYTES`] long.
pub(crate) fn check_secret(secret: &[u8]) -> Result<(), AuthError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthError::WeakSecret);
    }
    Ok(())
}

/// Verifies an HS256 JWT and returns its claims. The header is checked
/// before the signature, and the payload is decoded only once the signature
/// holds; time claims are compared with `now_unix_secs`.
pub fn verify(token: &str, secret: &[u8], now_unix_secs: u64) -> Result<Claims, AuthError> {
    check_secret(secret)?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed("longer than 8 KiB"));
    }
    let segments = Segments::split(token)?;
    check_header(&decode(segments.header, "header is not base64url")?)?;
    check_signature(&segments, secret)?;
    let payload = decode(segments.payload, "payload is not base64url")?;
    let raw: RawClaims =
        parse_object(&payload).ok_or(AuthError::BadClaims("payload is not a JSON object of claims"))?;
    let claims = raw.into_claims()?;
    check_times(&claims, now_unix_secs)?;
    Ok(claims)
}

/// Signs `claims_json` (used verbatim as the payload) with HS256 under the
/// header `{"alg":"HS256","typ":"JWT"}`. For tests and tooling: the server
/// only verifies. Any secret length is accepted here.
pub fn sign_hs256(claims_json: &str, secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HS256_HEADER),
        URL_SAFE_NO_PAD.encode(claims_json)
    );
    let tag = mac(secret, &signing_input).finalize().into_bytes();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// The token a WebSocket upgrade request carries, looked for in this order:
/// `authorization` (`Bearer <t>`, scheme in any case), each
/// `Sec-WebSocket-Protocol` value in `protocols` (comma-separated entries,
/// one of them `bearer.<t>`), then `query` (the raw query string, with or
/// without its `?`: the first `token=` parameter, up to the next `&`; JWTs
/// need no percent-decoding). Empty tokens count as absent. The token is
/// not checked here: pass it to [`verify`].
pub fn token_from_request(query: Option<&str>, authorization: Option<&[u8]>, protocols: &[&[u8]]) -> Option<String> {
    authorization
        .and_then(bearer_from_authorization)
        .or_else(|| protocols.iter().find_map(|value| bearer_from_protocols(value)))
        .or_else(|| query.and_then(token_from_query))
        .map(str::to_owned)
}

/// True for a subprotocol entry that carries a token (`bearer.<t>`, prefix
/// in any case): the server must never select or echo it.
pub fn is_bearer_protocol(entry: &[u8]) -> bool {
    let prefix = BEARER_PROTOCOL_PREFIX.as_bytes();
    entry.len() >= prefix.len() && entry[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The three segments of a compact JWS, still base64url.
struct Segments<'t> {
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'t str,
    header: &'t str,
    payload: &'t str,
    signature: &'t str,
}

impl<'t> Segments<'t> {
    fn split(token: &'t str) -> Result<Self, AuthError> {
        const COUNT: AuthError = AuthError::Malformed("expected three dot-separated segments");
        let (signing_input, signature) = token.rsplit_once('.').ok_or(COUNT)?;
        let (header, payload) = signing_input.split_once('.').ok_or(COUNT)?;
        if payload.contains('.') {
            return Err(COUNT);
        }
        Ok(Segments {
            signing_input,
            header,
            payload,
            signature,
        })
    }
}

/// The header fields we read. A duplicated field is an error (serde), so a
/// second `alg` cannot hide behind the first.
#[derive(Deserialize)]
struct Header {
    alg: Option<Value>,
    typ: Option<Value>,
    crit: Option<IgnoredAny>,
}

fn check_header(bytes: &[u8]) -> Result<(), AuthError> {
    let header: Header = parse_object(bytes).ok_or(AuthError::Malformed("header is not a JSON object"))?;
    if header.alg.as_ref().and_then(Value::as_str) != Some(ALGORITHM) {
        return Err(AuthError::UnsupportedAlgorithm);
    }
    // RFC 7515 §4.1.9: "typ" values are compared case-insensitively.
    if let Some(typ) = &header.typ {
        if !typ.as_str().is_some_and(|t| t.eq_ignore_ascii_case("JWT")) {
            return Err(AuthError::UnsupportedHeader);
        }
    }
    // RFC 7515 §4.1.11: a recipient that does not understand the listed
    // extensions MUST reject the JWS. We understand none.
    if header.crit.is_some() {
        return Err(AuthError::UnsupportedHeader);
    }
    Ok(())
}

fn check_signature(segments: &Segments<'_>, secret: &[u8]) -> Result<(), AuthError> {
    let tag = decode(segments.signature, "signature is not base64url")?;
    // `verify_slice` compares in constant time and refuses a wrong length.
    mac(secret, segments.signing_input)
        .verify_slice(&tag)
        .map_err(|_| AuthError::BadSignature)
}

fn mac(secret: &[u8], signing_input: &str) -> HmacSha256 {
    // HMAC takes keys of any length (RFC 2104 §2), so this never fails.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(signing_input.as_bytes());
    mac
}

/// Decodes one unpadded base64url segment; padding and stray bits are refused.
fn decode(segment: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| AuthError::Malformed(what))
}

/// Parses a JSON object into `T`. Serde would also build a struct from a
/// JSON array, so anything that does not open with `{` is refused first.
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let first = bytes.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

/// The claims we read, before their types are checked one by one so that
/// each wrong type gets its own message. Unknown claims are ignored.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    channels: Option<Value>,
    jti: Option<Value>,
}

impl RawClaims {
    fn into_claims(self) -> Result<Claims, AuthError> {
        let sub = match self.sub {
            None => return Err(AuthError::MissingSubject),
            Some(Value::String(s)) if s.is_empty() => return Err(AuthError::MissingSubject),
            Some(Value::String(s)) => s,
            Some(_) => return Err(AuthError::BadClaims("sub is not a string")),
        };
        Ok(Claims {
            sub,
            exp: numeric_date(self.exp, "exp is not a non-negative integer")?,
            nbf: numeric_date(self.nbf, "nbf is not a non-negative integer")?,
            iat: numeric_date(self.iat, "iat is not a non-negative integer")?,
            channels: self.channels.map(channel_patterns).transpose()?,
            jti: match self.jti {
                None => None,
                Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_JTI_BYTES => Some(s),
                Some(_) => {
                    return Err(AuthError::BadClaims(
                        "jti is not a non-empty string of at most 256 bytes",
                    ))
                }
            },
        })
    }
}

/// A NumericDate (RFC 7519 §2), accepted here as integer seconds only.
fn numeric_date(value: Option<Value>, what: &'static str) -> Result<Option<u64>, AuthError> {
    value.map(|v| v.as_u64().ok_or(AuthError::BadClaims(what))).transpose()
}

fn channel_patterns(value: Value) -> Result<Vec<ChannelPattern>, AuthError> {
    const NOT_ARRAY: AuthError = AuthError::BadClaims("channels is not an array of strings");
    let Value::Array(items) = value else {
        return Err(NOT_ARRAY);
    };
    items
        .iter()
        .map(|item| {
            let text = item.as_str().ok_or(NOT_ARRAY)?;
            ChannelPattern::parse(text).map_err(|_| AuthError::BadClaims("channels has an invalid pattern"))
        })
        .collect()
}

fn check_times(claims: &Claims, now: u64) -> Result<(), AuthError> {
    if claims.exp.is_some_and(|exp| now >= exp) {
        return Err(AuthError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| now < nbf) {
        return Err(AuthError::NotYetValid);
    }
    Ok(())
}

fn bearer_from_authorization(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return None;
    }
    plausible_token(rest.trim())
}

/// One `Sec-WebSocket-Protocol` header value: entries separated by commas.
fn bearer_from_protocols(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    value
        .split(',')
        .map(str::trim)
        .find(|entry| is_bearer_protocol(entry.as_bytes()))
        .and_then(|entry| plausible_token(&entry[BEARER_PROTOCOL_PREFIX.len()..]))
}

fn token_from_query(query: &str) -> Option<&str> {
    let query = query.strip_prefix('?').unwrap_or(query);
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .and_then(plausible_token)
}

/// Non-empty visible ASCII: anything else is no token at all, while a
/// wrong-looking one is left for [`verify`] to name what is wrong.
fn plausible_token(token: &str) -> Option<&str> {
    (!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"unit-test-secret-of-at-least-32-bytes";
    const NOW: u64 = 1_800_000_000;

    /// Signed outside Rust, with Python's standard library:
    /// `hmac.new(PY_SECRET, b64(header) + "." + b64(payload), sha256)`, for
    /// header `{"alg":"HS256","typ":"JWT"}` and payload [`PY_CLAIMS`].
    const PY_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
        eyJzdWIiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxOTAwMDAwMDAwLCJjaGFubmVscyI6WyJuZXdzIiwiY2hhdDoqIl19.\
        AkCWfCxZ6MQcuBSXHvgrtsd5tDCmvb-TtZfAE3v6BW4";
    const PY_SECRET: &[u8] = b"interop-secret-32-bytes-minimum!!";
    const PY_CLAIMS: &str = r#"{"sub":"alice","iat":1700000000,"exp":1900000000,"channels":["news","chat:*"]}"#;

    /// RFC 7515 Appendix A.1: an HS256 JWS with a 64-byte key. Its payload
    /// has no `sub` and expired in 2011.
    const RFC_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.\
        eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.\
        dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_KEY_B64: &str = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

    fn token(claims: &str) -> String {
        sign_hs256(claims, SECRET)
    }

    fn b64(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    /// A token from already-encoded segments, correctly signed under SECRET.
    fn assemble(header_b64: &str, payload_b64: &str) -> String {
        let input = format!("{header_b64}.{payload_b64}");
        let tag = mac(SECRET, &input).finalize().into_bytes();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    fn with_header(header: &str, claims: &str) -> String {
        assemble(&b64(header), &b64(claims))
    }

    fn check(token: &str) -> Result<Claims, AuthError> {
        verify(token, SECRET, NOW)
    }

    #[test]
    fn valid_token_yields_its_claims() {
        let t = token(r#"{"sub":"bob","exp":1800000060,"iat":1799999990,"extra":{"x":[1]}}"#);
        let claims = check(&t).unwrap();
        assert_eq!(claims.sub, "bob");
        assert_eq!(claims.exp, Some(1_800_000_060));
        assert_eq!(claims.iat, Some(1_799_999_990));
        assert_eq!(claims.nbf, None);
        assert_eq!(claims.channels, None);
        assert!(claims.may_access("anything"));
        assert_eq!(claims.age_secs(NOW), Some(10));
    }

    #[test]
    fn token_signed_by_python_verifies_and_matches_ours() {
        let claims = verify(PY_TOKEN, PY_SECRET, NOW).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.exp, Some(1_900_000_000));
        assert_eq!(claims.iat, Some(1_700_000_000));
        assert!(claims.may_access("news"));
        assert!(claims.may_access("chat:lobby"));
        assert!(!claims.may_access("newsroom"));
        assert_eq!(sign_hs256(PY_CLAIMS, PY_SECRET), PY_TOKEN);
        assert_eq!(verify(PY_TOKEN, PY_SECRET, 1_900_000_000), Err(AuthError::Expired));
    }

    #[test]
    fn rfc_7515_example_signature_verifies() {
        let key = URL_SAFE_NO_PAD.decode(RFC_KEY_B64).unwrap();
        // The signature holds, so verification goes on to the claims, which
        // lack a subject; with another key it stops at the signature.
        assert_eq!(verify(RFC_TOKEN, &key, 0), Err(AuthError::MissingSubject));
        assert_eq!(verify(RFC_TOKEN, SECRET, 0), Err(AuthError::BadSignature));
    }

    #[test]
    fn wrong_secret_is_a_bad_signature() {
        let t = sign_hs256(r#"{"sub":"bob"}"#, b"another-secret-of-at-least-32-bytes!");
        assert_eq!(check(&t), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_payload_or_header_is_a_bad_signature() {
        let t = token(r#"{"sub":"bob","channels":["news"]}"#);
        let (header, rest) = t.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let forged = format!("{header}.{}.{signature}", b64(r#"{"sub":"admin"}"#));
        assert_eq!(check(&forged), Err(AuthError::BadSignature));
        let header2 = b64(r#"{"alg":"HS256"}"#);
        assert_eq!(check(&format!("{header2}.{rest}")), Err(AuthError::BadSignature));
    }

    #[test]
    fn damaged_signature_is_refused() {
        let t = token(r#"{"sub":"bob"}"#);
        let (input, signature) = t.rsplit_once('.').unwrap();
        let short = &signature[..40];
        assert_eq!(check(&format!("{input}.{short}")), Err(AuthError::BadSignature));
        assert_eq!(check(&format!("{input}.")), Err(AuthError::BadSignature));
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let altered = format!("{input}.{flipped}{}", &signature[1..]);
        assert_eq!(check(&altered), Err(AuthError::BadSignature));
        assert!(matches!(
            check(&format!("{input}.{signature}=")),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(check(&format!("{input}.!!")), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn alg_none_is_refused_with_or_without_a_signature() {
        let header = b64(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64(r#"{"sub":"bob"}"#);
        assert_eq!(
            check(&format!("{header}.{payload}.")),
            Err(AuthError::UnsupportedAlgorithm)
        );
        assert_eq!(
            check(&assemble(&header, &payload)),
            Err(AuthError::UnsupportedAlgorithm)
        );
        let none = with_header(r#"{"alg":"None"}"#, r#"{"sub":"bob"}"#);
        assert_eq!(check(&none), Err(AuthError::UnsupportedAlgorithm));
    }

    #[test]
    fn other_algorithms_are_refused_even_when_the_mac_holds() {
        for header in [
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"HS384"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
            r#"{"alg":"ES256"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":"HS256 "}"#,
            r#"{"alg":256}"#,
            r#"{"alg":null}"#,
            r#"{"alg":["HS256"]}"#,
        ] {
            let t = with_header(header, r#"{"sub":"bob"}"#);
            assert_eq!(check(&t), Err(AuthError::UnsupportedAlgorithm), "{header}");
        }
    }

    #[test]
    fn missing_alg_is_refused() {
        let t = with_header(r#"{"typ":"JWT"}"#, r#"{"sub":"bob"}"#);
        assert_eq!(check(&t), Err(AuthError::UnsupportedAlgorithm));
        let t = with_header("{}", r#"{"sub":"bob"}"#);
        assert_eq!(check(&t), Err(AuthError::UnsupportedAlgorithm));
    }

    #[test]
    fn duplicated_alg_is_malformed() {
        let t = with_header(r#"{"alg":"HS256","alg":"none"}"#, r#"{"sub":"bob"}"#);
        assert!(matches!(check(&t), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn typ_must_be_jwt_if_present_and_crit_is_refused() {
        let claims = r#"{"sub":"bob"}"#;
        assert!(check(&with_header(r#"{"alg":"HS256"}"#, claims)).is_ok());
        assert!(check(&with_header(r#"{"alg":"HS256","typ":"jwt"}"#, claims)).is_ok());
        assert!(check(&with_header(r#"{"alg":"HS256","kid":"k1"}"#, claims)).is_ok());
        for header in [
            r#"{"alg":"HS256","typ":"JOSE"}"#,
            r#"{"alg":"HS256","typ":"at+jwt"}"#,
            r#"{"alg":"HS256","typ":1}"#,
            r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
        ] {
            assert_eq!(
                check(&with_header(header, claims)),
                Err(AuthError::UnsupportedHeader),
                "{header}"
            );
        }
    }

    #[test]
    fn expiry_is_enforced_at_the_boundary() {
        let t = token(r#"{"sub":"bob","exp":1000}"#);
        assert!(verify(&t, SECRET, 999).is_ok());
        assert_eq!(verify(&t, SECRET, 1000), Err(AuthError::Expired));
        assert_eq!(verify(&t, SECRET, 1001), Err(AuthError::Expired));
        assert_eq!(verify(&t, SECRET, u64::MAX), Err(AuthError::Expired));
    }

    #[test]
    fn token_without_exp_never_expires() {
        let t = token(r#"{"sub":"bob","exp":null}"#);
        assert_eq!(verify(&t, SECRET, u64::MAX).unwrap().exp, None);
    }

    #[test]
    fn not_before_is_enforced() {
        let t = token(r#"{"sub":"bob","nbf":1000,"exp":2000}"#);
        assert_eq!(verify(&t, SECRET, 999), Err(AuthError::NotYetValid));
        assert_eq!(verify(&t, SECRET, 1000).unwrap().nbf, Some(1000));
        assert_eq!(verify(&t, SECRET, 2000), Err(AuthError::Expired));
    }

    #[test]
    fn iat_in_the_future_is_not_refused() {
        let t = token(r#"{"sub":"bob","iat":1800000005}"#);
        let claims = check(&t).unwrap();
        assert_eq!(claims.age_secs(NOW), Some(0));
    }

    #[test]
    fn subject_is_required_and_non_empty() {
        assert_eq!(check(&token(r#"{"exp":1900000000}"#)), Err(AuthError::MissingSubject));
        assert_eq!(check(&token(r#"{"sub":""}"#)), Err(AuthError::MissingSubject));
        assert_eq!(check(&token(r#"{"sub":null}"#)), Err(AuthError::MissingSubject));
        assert!(matches!(check(&token(r#"{"sub":42}"#)), Err(AuthError::BadClaims(_))));
    }

    #[test]
    fn wrongly_typed_claims_are_bad_claims() {
        for claims in [
            r#"{"sub":"bob","exp":"1900000000"}"#,
            r#"{"sub":"bob","exp":1900000000.5}"#,
            r#"{"sub":"bob","exp":-1}"#,
            r#"{"sub":"bob","nbf":true}"#,
            r#"{"sub":"bob","iat":[]}"#,
            r#"{"sub":"bob","jti":7}"#,
            r#"{"sub":"bob","jti":""}"#,
            r#"{"sub":"bob","sub":"eve"}"#,
            r#"["bob"]"#,
            r#""bob""#,
            "not json",
        ] {
            assert!(
                matches!(check(&token(claims)), Err(AuthError::BadClaims(_))),
                "{claims}"
            );
        }
    }

    #[test]
    fn jti_is_read_when_present() {
        assert_eq!(
            check(&token(r#"{"sub":"bob","jti":"t-1"}"#)).unwrap().jti.as_deref(),
            Some("t-1")
        );
        assert_eq!(check(&token(r#"{"sub":"bob","jti":null}"#)).unwrap().jti, None);
        let long = format!(r#"{{"sub":"bob","jti":"{}"}}"#, "j".repeat(MAX_JTI_BYTES + 1));
        assert!(matches!(check(&token(&long)), Err(AuthError::BadClaims(_))));
    }

    #[test]
    fn channels_claim_limits_access() {
        let t = token(r#"{"sub":"bob","channels":["news","chat:*","user:bob"]}"#);
        let claims = check(&t).unwrap();
        assert_eq!(claims.channels.as_ref().map(Vec::len), Some(3));
        assert!(claims.may_access("news"));
        assert!(claims.may_access("chat:"));
        assert!(claims.may_access("chat:room/7"));
        assert!(claims.may_access("user:bob"));
        assert!(!claims.may_access("user:alice"));
        assert!(!claims.may_access("news:sport"));
        assert!(!claims.may_access("chat"));

        let all = check(&token(r#"{"sub":"bob","channels":["*"]}"#)).unwrap();
        assert!(all.may_access("whatever"));
        let none = check(&token(r#"{"sub":"bob","channels":[]}"#)).unwrap();
        assert!(!none.may_access("news"));
    }

    #[test]
    fn bad_channels_claim_is_refused() {
        for channels in [
            r#""news""#,
            r#"["news",7]"#,
            r#"["ch*at"]"#,
            r#"["bad name"]"#,
            r#"[""]"#,
            "{}",
        ] {
            let t = token(&format!(r#"{{"sub":"bob","channels":{channels}}}"#));
            assert!(matches!(check(&t), Err(AuthError::BadClaims(_))), "{channels}");
        }
    }

    #[test]
    fn wrong_segment_counts_are_malformed() {
        let good = token(r#"{"sub":"bob"}"#);
        for bad in ["", ".", "..", "abc", "a.b", &format!("{good}.x"), &format!("x.{good}")] {
            assert!(matches!(check(bad), Err(AuthError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn bad_base64_or_json_is_malformed() {
        let payload = b64(r#"{"sub":"bob"}"#);
        let cases = [
            assemble("!!!", &payload),
            assemble(&format!("{}=", b64(r#"{"alg":"HS256"}"#)), &payload),
            assemble(&URL_SAFE_NO_PAD.encode(b"\xff\xfe"), &payload),
            assemble(&b64("not json"), &payload),
            assemble(&b64(r#"["HS256"]"#), &payload),
            assemble(&b64(r#"{"alg":"HS256""#), &payload),
            assemble(&b64(r#"{"alg":"HS256"}"#), "eyJzdWIi+9"),
            assemble(&b64(r#"{"alg":"HS256"}"#), &format!("{payload}=")),
        ];
        for t in &cases {
            assert!(matches!(check(t), Err(AuthError::Malformed(_))), "{t}");
        }
    }

    #[test]
    fn oversized_token_is_refused_before_decoding() {
        let huge = token(&format!(r#"{{"sub":"{}"}}"#, "x".repeat(MAX_TOKEN_BYTES)));
        assert_eq!(check(&huge), Err(AuthError::Malformed("longer than 8 KiB")));
    }

    #[test]
    fn short_secret_is_refused() {
        let t = sign_hs256(r#"{"sub":"bob"}"#, b"short");
        assert_eq!(verify(&t, b"short", NOW), Err(AuthError::WeakSecret));
        assert_eq!(verify(&t, b"", NOW), Err(AuthError::WeakSecret));
        assert_eq!(check_secret(&[0; MIN_SECRET_BYTES]), Ok(()));
        assert_eq!(check_secret(&[0; MIN_SECRET_BYTES - 1]), Err(AuthError::WeakSecret));
    }

    #[test]
    fn reasons_are_distinct_labels() {
        let all = [
            AuthError::Malformed("x"),
            AuthError::UnsupportedAlgorithm,
            AuthError::UnsupportedHeader,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::MissingSubject,
            AuthError::BadClaims("x"),
            AuthError::WeakSecret,
        ];
        let mut reasons: Vec<_> = all.iter().map(AuthError::reason).collect();
        assert!(reasons
            .iter()
            .all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len());
    }

    #[test]
    fn token_from_authorization_header() {
        let get = |h: &[u8]| token_from_request(None, Some(h), &[]);
        assert_eq!(get(b"Bearer abc.def.ghi").as_deref(), Some("abc.def.ghi"));
        assert_eq!(get(b"bearer abc.def.ghi").as_deref(), Some("abc.def.ghi"));
        assert_eq!(get(b"BEARER   abc.def.ghi  ").as_deref(), Some("abc.def.ghi"));
        assert_eq!(get(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(get(b"Bearer"), None);
        assert_eq!(get(b"Bearer "), None);
        assert_eq!(get(b"Bearer a b"), None);
        assert_eq!(get(b"Bearer \xff"), None);
    }

    #[test]
    fn token_from_subprotocol_entry() {
        let get = |values: &[&[u8]]| token_from_request(None, None, values);
        assert_eq!(get(&[b"bearer.abc.def.ghi"]).as_deref(), Some("abc.def.ghi"));
        assert_eq!(get(&[b"app.v1, bearer.abc.def.ghi"]).as_deref(), Some("abc.def.ghi"));
        assert_eq!(
            get(&[b"app.v1", b" Bearer.abc.def.ghi ,chat"]).as_deref(),
            Some("abc.def.ghi")
        );
        assert_eq!(get(&[b"app.v1, chat"]), None);
        assert_eq!(get(&[b"bearer."]), None);
        assert_eq!(get(&[]), None);
        assert!(is_bearer_protocol(b"bearer.x"));
        assert!(is_bearer_protocol(b"BEARER.x"));
        assert!(!is_bearer_protocol(b"bearer"));
        assert!(!is_bearer_protocol(b"app.v1"));
    }

    #[test]
    fn token_from_query_parameter() {
        let get = |q: &str| token_from_request(Some(q), None, &[]);
        assert_eq!(get("token=abc.def.ghi").as_deref(), Some("abc.def.ghi"));
        assert_eq!(get("?token=abc.def.ghi").as_deref(), Some("abc.def.ghi"));
        assert_eq!(get("room=1&token=abc.def.ghi&x=2").as_deref(), Some("abc.def.ghi"));
        assert_eq!(get("mytoken=abc&x=1"), None);
        assert_eq!(get("token=&x=1"), None);
        assert_eq!(get(""), None);
    }

    #[test]
    fn header_wins_over_subprotocol_over_query() {
        let q = Some("token=from.query.q");
        let proto: &[&[u8]] = &[b"bearer.from.proto.p"];
        let auth: Option<&[u8]> = Some(b"Bearer from.header.h");
        assert_eq!(token_from_request(q, auth, proto).as_deref(), Some("from.header.h"));
        assert_eq!(token_from_request(q, None, proto).as_deref(), Some("from.proto.p"));
        assert_eq!(
            token_from_request(q, Some(b"Basic x"), &[]).as_deref(),
            Some("from.query.q")
        );
        assert_eq!(token_from_request(None, None, &[]), None);
    }

    #[test]
    fn token_found_in_a_request_verifies() {
        let t = token(r#"{"sub":"bob"}"#);
        let proto = format!("app.v1, {BEARER_PROTOCOL_PREFIX}{t}");
        let found = token_from_request(None, None, &[proto.as_bytes()]).unwrap();
        assert_eq!(check(&found).unwrap().sub, "bob");
    }
}
