//! `auth::verify` on attacker bytes, in two modes chosen by the first byte:
//!
//! - raw: the rest is the token (forgeries, malformed segments);
//! - signed: the rest is `header JSON \0 claims JSON`, signed with the
//!   server's secret, so the claim rules past the signature check run on
//!   arbitrary JSON too (a fuzzer cannot forge an HMAC).
//!
//! Bytes 1..9 are `now`. Asserts: no panic; a raw token never verifies
//! unless it carries the correct signature; verified claims obey the rules
//! (non-empty `sub`, `now < exp`, `nbf <= now`).
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use hubbub::auth::{self, Claims};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const SECRET: &[u8] = b"fuzz-secret-that-is-at-least-32-bytes-long";

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let mode = data[0];
    let now = u64::from_le_bytes(data[1..9].try_into().expect("8 bytes"));
    let rest = &data[9..];
    if mode & 1 == 0 {
        let Ok(token) = std::str::from_utf8(rest) else { return };
        if let Ok(claims) = auth::verify(token, SECRET, now) {
            assert!(signature_holds(token), "forged token verified: {token:?}");
            check_claims(&claims, now);
        }
        return;
    }
    let (header, claims) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
    };
    let token = sign(header, claims);
    if let Ok(claims) = auth::verify(&token, SECRET, now) {
        check_claims(&claims, now);
    }
});

fn sign(header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let tag = mac(&input).finalize().into_bytes();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag))
}

fn mac(input: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET).expect("HMAC takes any key");
    mac.update(input.as_bytes());
    mac
}

fn signature_holds(token: &str) -> bool {
    let Some((input, signature)) = token.rsplit_once('.') else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(signature)
        .is_ok_and(|tag| mac(input).verify_slice(&tag).is_ok())
}

fn check_claims(claims: &Claims, now: u64) {
    assert!(!claims.sub.is_empty());
    assert!(claims.exp.is_none_or(|exp| now < exp));
    assert!(claims.nbf.is_none_or(|nbf| nbf <= now));
}
