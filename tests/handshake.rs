//! The opening handshake against a real server: accepted upgrades, every
//! refusal with its status and reason, and awkward but valid clients.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use hubbub::ws::handshake::OriginPattern;

fn status_for(server: &TestServer, request: &str) -> (u16, String, String) {
    let mut stream = connect(server.addr);
    stream.write_all(request.as_bytes()).unwrap();
    let (status, head, mut body) = read_response(&mut stream);
    if status != 101 {
        // A refusal is a short body, then the server closes.
        body.extend(read_to_close(&mut stream));
    }
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn tungstenite_client_gets_its_messages_echoed() {
    let server = start(|_| {});
    let url = format!("ws://{}/echo", server.addr);
    let (mut ws, response) = tungstenite::connect(url).expect("upgrade");
    assert_eq!(response.status(), 101);
    ws.send(tungstenite::Message::text("hello hubbub")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("hello hubbub"));
    let blob: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    ws.send(tungstenite::Message::binary(blob.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::binary(blob));
    ws.close(None).unwrap();
}

#[test]
fn wrong_method_is_405() {
    let server = start(|_| {});
    let (status, head, body) = status_for(&server, &upgrade_request("/echo", "").replacen("GET", "POST", 1));
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET"));
    assert!(body.contains("only GET"));
}

#[test]
fn unknown_path_is_404() {
    let server = start(|_| {});
    let (status, _, body) = status_for(&server, &upgrade_request("/nowhere", ""));
    assert_eq!((status, body.trim()), (404, "no such endpoint"));
}

#[test]
fn unsupported_version_is_426_with_the_supported_version() {
    let server = start(|_| {});
    let (status, head, _) = status_for(
        &server,
        &upgrade_request("/echo", "").replace("Version: 13", "Version: 8"),
    );
    assert_eq!(status, 426);
    assert!(head.contains("Sec-WebSocket-Version: 13"));
}

#[test]
fn bad_key_and_missing_upgrade_headers_are_400() {
    let server = start(|_| {});
    let bad_key = upgrade_request("/echo", "").replace(KEY, "AAAA");
    assert_eq!(status_for(&server, &bad_key).0, 400);
    let no_upgrade = upgrade_request("/echo", "").replace("Upgrade: websocket\r\n", "");
    assert_eq!(status_for(&server, &no_upgrade).0, 400);
    let no_connection = upgrade_request("/echo", "").replace("Connection: Upgrade", "Connection: keep-alive");
    assert_eq!(status_for(&server, &no_connection).0, 400);
}

#[test]
fn garbage_instead_of_a_handshake_is_400() {
    let server = start(|_| {});
    let (status, _, body) = status_for(&server, "\x16\x03\x01\x02\x00\x01\x00\x01\x7f\x03\x03garbage\r\n\r\n");
    assert_eq!(status, 400);
    assert!(body.contains("malformed"));
}

#[test]
fn disallowed_origin_is_403() {
    let server = start(|c| c.allowed_origins = vec![OriginPattern::parse("*.example.com").unwrap()]);
    let evil = upgrade_request("/echo", "Origin: https://evil.test\r\n");
    assert_eq!(status_for(&server, &evil).0, 403);
    let good = upgrade_request("/echo", "Origin: https://chat.example.com\r\n");
    assert_eq!(status_for(&server, &good).0, 101);
}

#[test]
fn oversized_headers_are_431() {
    let server = start(|_| {});
    let pad = format!("X-Pad: {}\r\n", "p".repeat(9000));
    let (status, _, _) = status_for(&server, &upgrade_request("/echo", &pad));
    assert_eq!(status, 431);
    assert_eq!(
        server
            .wait_for("a counted failure", |s| s.handshake_failures_for("headers_too_large")
                == 1)
            .open,
        0
    );
}

#[test]
fn over_capacity_is_503_with_retry_after() {
    let server = start(|c| {
        c.shards = 1;
        c.max_connections = Some(2);
    });
    let _a = open(server.addr, "/echo");
    let _b = open(server.addr, "/echo");
    let (status, head, body) = status_for(&server, &upgrade_request("/echo", ""));
    assert_eq!(status, 503);
    assert!(head.contains("Retry-After: "), "{head}");
    assert!(body.contains("capacity"));
}

#[test]
fn subprotocol_is_negotiated() {
    let server = start(|c| c.subprotocols = vec!["chat.v2".into()]);
    let mut stream = connect(server.addr);
    stream
        .write_all(upgrade_request("/echo", "Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n").as_bytes())
        .unwrap();
    let (status, head, _) = read_response(&mut stream);
    assert_eq!(status, 101);
    assert!(head.contains("Sec-WebSocket-Protocol: chat.v2\r\n"), "{head}");
}

#[test]
fn handshake_split_into_one_byte_writes_succeeds() {
    let server = start(|_| {});
    let mut stream = connect(server.addr);
    for byte in upgrade_request("/echo", "").as_bytes() {
        stream.write_all(std::slice::from_ref(byte)).unwrap();
        stream.flush().unwrap();
    }
    let (status, head, _) = read_response(&mut stream);
    assert_eq!(status, 101);
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
}

#[test]
fn frames_sent_with_the_request_are_not_lost() {
    let server = start(|_| {});
    let mut stream = connect(server.addr);
    let mut bytes = upgrade_request("/echo", "").into_bytes();
    bytes.extend(client_frame(0x1, true, b"early bird", MASK));
    bytes.extend(client_frame(0x2, true, b"second", MASK));
    stream.write_all(&bytes).unwrap();
    let (status, _, rest) = read_response(&mut stream);
    assert_eq!(status, 101);
    let mut client = Client { stream, pending: rest };
    assert_eq!(client.recv().unwrap().payload, b"early bird");
    assert_eq!(client.recv().unwrap().payload, b"second");
}

#[test]
fn slowloris_is_dropped_at_the_handshake_timeout() {
    let server = start(|c| c.handshake_timeout = Duration::from_secs(1));
    let mut stream = connect(server.addr);
    stream.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = std::time::Instant::now();
    read_to_close(&mut stream);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < PATIENCE,
        "dropped after {waited:?}"
    );
    server.wait_for("the timeout counted", |s| s.handshake_failures_for("timeout") == 1);
}
