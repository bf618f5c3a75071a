//! Frame-level protocol rules (RFC 6455 §5) against a real server: each
//! violation closes with the right code, and no other connection notices.

mod common;

use std::io::Write;

use common::*;

fn violation_close_code(send: impl FnOnce(&mut Client)) -> Option<u16> {
    let server = start(|_| {});
    let mut client = open(server.addr, "/echo");
    send(&mut client);
    let code = client.recv_close();
    assert!(client.sees_eof(), "the server closes TCP after failing the connection");
    let _ = client.stream.shutdown(std::net::Shutdown::Both);
    server.wait_for("the protocol error counted", |s| s.protocol_errors == 1 && s.open == 0);
    code
}

#[test]
fn unmasked_frame_closes_with_1002() {
    let code = violation_close_code(|c| c.stream.write_all(&[0x81, 0x02, b'h', b'i']).unwrap());
    assert_eq!(code, Some(1002));
}

#[test]
fn reserved_opcode_closes_with_1002() {
    assert_eq!(violation_close_code(|c| c.send(0x3, true, b"")), Some(1002));
}

#[test]
fn invalid_utf8_inside_a_fragmented_message_closes_with_1007() {
    let code = violation_close_code(|c| {
        c.send(0x1, false, "valid start ".as_bytes());
        c.send(0x0, false, b"then \xF4\x90 broken");
    });
    assert_eq!(code, Some(1007));
}

#[test]
fn length_of_2_pow_63_closes_with_1002() {
    let code = violation_close_code(|c| {
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(1u64 << 63).to_be_bytes());
        frame.extend_from_slice(&MASK);
        c.stream.write_all(&frame).unwrap();
    });
    assert_eq!(code, Some(1002));
}

#[test]
fn message_over_the_limit_closes_with_1009_before_it_is_buffered() {
    let server = start(|c| c.max_message_bytes = 1000);
    let mut client = open(server.addr, "/echo");
    // Only the header of a 2 MB frame: the server refuses on the length alone.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&2_000_000u64.to_be_bytes());
    header.extend_from_slice(&MASK);
    client.stream.write_all(&header).unwrap();
    assert_eq!(client.recv_close(), Some(1009));
}

#[test]
fn fragmented_message_with_a_ping_between_fragments_is_echoed_whole() {
    let server = start(|_| {});
    let mut client = open(server.addr, "/echo");
    client.send(0x1, false, b"Hello, ");
    client.send(0x9, true, b"are you there?");
    client.send(0x0, true, b"world");
    let pong = client.recv().unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"are you there?"[..]));
    let echo = client.recv().unwrap();
    assert_eq!(
        (echo.opcode, echo.fin, echo.payload.as_slice()),
        (0x1, true, &b"Hello, world"[..])
    );
}

#[test]
fn unsolicited_pong_is_ignored() {
    let server = start(|_| {});
    let mut client = open(server.addr, "/echo");
    client.send(0xA, true, b"nobody asked");
    client.send_text("still here");
    assert_eq!(client.recv().unwrap().payload, b"still here");
}

#[test]
fn valid_close_code_is_echoed_then_tcp_closes() {
    let server = start(|_| {});
    let mut client = open(server.addr, "/echo");
    client.send(0x8, true, b"\x0f\xa0bye"); // 4000
    assert_eq!(client.recv_close(), Some(4000));
    assert!(client.sees_eof());
    let _ = client.stream.shutdown(std::net::Shutdown::Both);
    let stats = server.wait_for("the close counted", |s| {
        s.disconnects_for(hubbub::conn::Disconnect::ClientClose) == 1
    });
    assert_eq!(stats.open, 0);
}

#[test]
fn invalid_close_code_gets_1002() {
    for payload in [&b"\x03\xed"[..], b"\x03", b"\x00\x00", b"\x0b\xb8"] {
        // 1005, one byte, 0, 3000 is valid: check it separately below.
        let server = start(|_| {});
        let mut client = open(server.addr, "/echo");
        client.send(0x8, true, payload);
        let expected = if payload == b"\x0b\xb8" { 3000 } else { 1002 };
        assert_eq!(client.recv_close(), Some(expected), "close payload {payload:?}");
    }
}

#[test]
fn close_reason_that_is_not_utf8_gets_1007() {
    let server = start(|_| {});
    let mut client = open(server.addr, "/echo");
    client.send(0x8, true, b"\x03\xe8\xff\xfe");
    assert_eq!(client.recv_close(), Some(1007));
}

#[test]
fn reset_mid_frame_does_not_disturb_other_connections() {
    let server = start(|c| c.shards = 1);
    let mut bystander = open(server.addr, "/echo");
    let victim = open(server.addr, "/echo");
    // Half a frame, then an RST (SO_LINGER 0) instead of the rest.
    let frame = client_frame(0x2, true, &[7u8; 1000], MASK);
    let mut stream = victim.stream;
    stream.write_all(&frame[..500]).unwrap();
    socket2::SockRef::from(&stream)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(stream);
    server.wait_for("the reset connection is gone", |s| s.open == 1);
    bystander.send_text("unaffected");
    assert_eq!(bystander.recv().unwrap().payload, b"unaffected");
    let stats = server.stats();
    assert_eq!(stats.disconnects_for(hubbub::conn::Disconnect::ClientGone), 1);
    assert_eq!(
        stats.buffers_leased, 0,
        "the partial frame's buffer went back to the pool"
    );
}
