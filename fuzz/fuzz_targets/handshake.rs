//! `parse_request`, the opening handshake, on arbitrary bytes under policies
//! chosen by the first input byte: open or with origin patterns and
//! subprotocols, and with or without a JWT secret (so `token_from_request`
//! and `auth::verify` run on attacker bytes).
//!
//! Asserts: no panic; an upgrade consumed no more than it was given and
//! within 8 KiB, answers a 28-character accept key, never selects a
//! `bearer.` subprotocol, and carries claims only when a secret is set (and
//! always when anonymous access is off); responses are written either way.
#![no_main]

use hubbub::auth;
use hubbub::ws::handshake::{
    parse_request, write_accept, write_refusal, AuthPolicy, OriginPattern, Outcome, Policy, MAX_REQUEST_BYTES,
};
use libfuzzer_sys::fuzz_target;

/// The secret the seed tokens are signed with (fuzz/examples/seed.rs).
const SECRET: &[u8] = b"fuzz-secret-that-is-at-least-32-bytes-long";
/// `now` for the time claims; the seed tokens are valid at this time.
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, request)) = data.split_first() else {
        return;
    };
    let origins: Vec<OriginPattern> = if mode & 1 == 1 {
        [
            "*.example.com",
            "https://app.test:8443",
            "localhost:3000",
            "*.ü.example",
        ]
        .iter()
        .map(|p| OriginPattern::parse(p).expect("fixed patterns are valid"))
        .collect()
    } else {
        Vec::new()
    };
    let subprotocols: Vec<String> = if mode & 2 == 2 {
        vec!["chat.v2".into(), "chat.v1".into(), "bearer.x".into()]
    } else {
        Vec::new()
    };
    let secured = mode & 4 == 4;
    let auth = AuthPolicy {
        secret: secured.then_some(SECRET),
        require_exp: mode & 32 == 32,
        allow_anonymous: mode & 8 == 8,
        now_unix: if mode & 16 == 16 { NOW } else { u64::from(mode) << 24 },
    };
    let policy = Policy {
        origins: &origins,
        subprotocols: &subprotocols,
        auth,
    };
    let mut out = Vec::new();
    match parse_request(request, &policy) {
        Outcome::Partial => {
            assert!(request.len() < MAX_REQUEST_BYTES);
            return;
        }
        Outcome::Upgrade(up) => {
            assert!(up.consumed <= request.len() && up.consumed <= MAX_REQUEST_BYTES);
            assert_eq!(up.accept_key.len(), 28);
            if let Some(chosen) = &up.subprotocol {
                assert!(!auth::is_bearer_protocol(chosen.as_bytes()), "chose {chosen:?}");
            }
            if !secured {
                assert!(up.claims.is_none());
            } else if !auth.allow_anonymous {
                assert!(up.claims.is_some(), "upgraded without a token");
            }
            if let Some(claims) = &up.claims {
                assert!(!claims.sub.is_empty());
            }
            write_accept(&mut out, &up.accept_key, up.subprotocol.as_deref());
        }
        Outcome::Refuse(refusal) => write_refusal(&mut out, &refusal),
    }
    assert!(out.starts_with(b"HTTP/1.1 "));
});
