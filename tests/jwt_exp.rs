//! `--jwt-require-exp` (on by default with a secret): a token without `exp`
//! would be valid forever, so the handshake refuses it with 401
//! "missing_exp"; turned off, such a token is accepted.

mod common;

use common::*;
use hubbub::auth::sign_hs256;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn bearer(claims: &str) -> String {
    format!("Authorization: Bearer {}\r\n", sign_hs256(claims, SECRET.as_bytes()))
}

#[test]
fn a_token_without_exp_is_refused_by_default() {
    let server = start(|c| {
        c.hub.jwt_secret = Some(SECRET.as_bytes().to_vec());
        c.hub.allow_anonymous = false;
    });
    let refused = WsClient::try_open(server.addr, "/ws", &bearer(r#"{"sub":"ann"}"#))
        .err()
        .expect("refused");
    assert_eq!((refused.0, refused.1.trim()), (401, "missing_exp"));
    // The same token through the other two carriers.
    let token = sign_hs256(r#"{"sub":"ann"}"#, SECRET.as_bytes());
    assert_eq!(
        WsClient::try_open(server.addr, &format!("/ws?token={token}"), "")
            .err()
            .map(|e| e.0),
        Some(401)
    );
    let proto = format!("Sec-WebSocket-Protocol: hubbub.v1, bearer.{token}\r\n");
    assert_eq!(
        WsClient::try_open(server.addr, "/ws", &proto).err().map(|e| e.0),
        Some(401)
    );
    let exp = hubbub_now() + 60;
    assert!(WsClient::try_open(server.addr, "/ws", &bearer(&format!(r#"{{"sub":"ann","exp":{exp}}}"#))).is_ok());
    server.wait_for("the refusals counted", |s| {
        s.handshake_failures_for("unauthorized") == 3
    });
}

#[test]
fn turned_off_a_token_without_exp_is_accepted() {
    let server = start(|c| {
        c.hub.jwt_secret = Some(SECRET.as_bytes().to_vec());
        c.hub.allow_anonymous = false;
        c.hub.jwt_require_exp = false;
    });
    let mut client = WsClient::try_open(server.addr, "/ws", &bearer(r#"{"sub":"ann"}"#))
        .unwrap_or_else(|e| panic!("refused: {e:?}"));
    assert!(client.call("ping", serde_json::json!({})).get("result").is_some());
}

fn hubbub_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
