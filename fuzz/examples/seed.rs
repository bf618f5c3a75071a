//! Writes small seed corpora of realistic inputs into `corpus/<target>/`
//! (ignored by git): masked client frames made by `codec::client_frame`, a
//! browser's upgrade request with and without tokens, JSON commands, UTF-8
//! text and signed tokens. Run from `fuzz/`: `cargo run --release --example seed`.

use std::fs;
use std::path::Path;

use hubbub::auth::sign_hs256;
use hubbub::ws::codec::client_frame;

/// The secret the handshake and jwt targets verify with.
const SECRET: &[u8] = b"fuzz-secret-that-is-at-least-32-bytes-long";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn main() -> std::io::Result<()> {
    let token = sign_hs256(
        r#"{"sub":"alice","iat":1799999000,"exp":1800003600,"nbf":1799999000,"channels":["news","chat:*"]}"#,
        SECRET,
    );
    write("decoder", &decoder_seeds())?;
    write("handshake", &handshake_seeds(&token))?;
    write("command", &command_seeds())?;
    write("utf8", &utf8_seeds())?;
    write("jwt", &jwt_seeds(&token))?;
    write("resp", &resp_seeds())?;
    Ok(())
}

fn write(target: &str, seeds: &[Vec<u8>]) -> std::io::Result<()> {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir)?;
    for (i, seed) in seeds.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:03}")), seed)?;
    }
    println!("{target}: {} seeds", seeds.len());
    Ok(())
}

/// `[max size pick, chunk count, chunk sizes.., wire]`, see fuzz_targets/decoder.rs.
fn decoder_seeds() -> Vec<Vec<u8>> {
    let frame = |op, fin, payload: &[u8]| client_frame(op, fin, payload, MASK);
    let wires: Vec<Vec<u8>> = vec![
        frame(0x1, true, b"hello"),
        frame(0x2, true, &[7u8; 300]),
        [
            frame(0x1, false, "frag".as_bytes()),
            frame(0x9, true, b"ping!"),
            frame(0x0, false, "men€".as_bytes()),
            frame(0x0, true, b"ts"),
        ]
        .concat(),
        [frame(0xA, true, b""), frame(0x8, true, b"\x03\xe8done")].concat(),
        [
            frame(0x2, false, &[1u8; 100]),
            frame(0x0, false, &[2u8; 100]),
            frame(0x0, true, &[3u8; 100]),
        ]
        .concat(),
        frame(0x1, true, "€𝄞ü".repeat(20).as_bytes()),
        frame(0x2, true, &[9u8; 70_000])[..200].to_vec(),
        frame(0x1, true, b"ok \xC0\xAF"),
    ];
    let mut seeds = Vec::new();
    for (i, wire) in wires.iter().enumerate() {
        for (pick, chunks) in [(200u8, &[][..]), (50, &[0u8, 2, 13][..]), (255, &[63u8][..])] {
            let mut seed = vec![pick.wrapping_add(i as u8), chunks.len() as u8];
            seed.extend_from_slice(chunks);
            seed.extend_from_slice(wire);
            seeds.push(seed);
        }
    }
    seeds
}

/// `[policy mode, request]`, see fuzz_targets/handshake.rs.
fn handshake_seeds(token: &str) -> Vec<Vec<u8>> {
    let browser = |target: &str, extra: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: localhost:8080\r\nConnection: Upgrade\r\nPragma: no-cache\r\n\
             Cache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0\r\n\
             Upgrade: websocket\r\nOrigin: https://chat.example.com\r\nSec-WebSocket-Version: 13\r\n\
             Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n{extra}\r\n"
        )
    };
    let requests = [
        browser("/echo", ""),
        browser("/ws", "Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n"),
        browser("/room/lobby", &format!("Authorization: Bearer {token}\r\n")),
        browser("/ws", &format!("Sec-WebSocket-Protocol: bearer.{token}, hubbub.v1\r\n")),
        browser(&format!("/room/team:a/b?token={token}&x=1"), ""),
        browser("/echo", "Origin: http://app.test:8443\r\n"),
    ];
    // A request followed by the client's first frame in the same read.
    let with_frame = [browser("/echo", "").as_bytes(), &client_frame(0x1, true, b"hi", MASK)].concat();
    let mut seeds = Vec::new();
    let all = requests.iter().map(|r| r.as_bytes()).chain([with_frame.as_slice()]);
    for request in all {
        for mode in [0u8, 1, 2, 3, 4 | 16, 7 | 16, 12 | 16, 31] {
            let mut seed = vec![mode];
            seed.extend_from_slice(request);
            seeds.push(seed);
        }
    }
    seeds
}

fn command_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"id":1,"method":"subscribe","params":{"channel":"news"}}"#,
        r#"{"id":2,"method":"subscribe","params":{"channel":"chat:1","recover":{"offset":5,"epoch":"x1"},"join_leave":true}}"#,
        r#"{"id":3,"method":"unsubscribe","params":{"channel":"news"}}"#,
        r#"{"id":4,"method":"publish","params":{"channel":"news","data":{"text":"hi","n":[1,2.5,null,true]}}}"#,
        r#"{"id":5,"method":"send","params":{"user":"bob","data":"\u00e9\ud83d\ude00"}}"#,
        r#"{"id":6,"method":"presence","params":{"channel":"room"}}"#,
        r#"{"id":7,"method":"history","params":{"channel":"news","limit":10}}"#,
        r#"{"id":8,"method":"ping"}"#,
        r#"{"id":18446744073709551615,"method":"nope","params":[]}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// `[split count, split picks.., text]`, see fuzz_targets/utf8.rs.
fn utf8_seeds() -> Vec<Vec<u8>> {
    let texts: [&[u8]; 6] = [
        "a€𝄞ü\u{10FFFF}z".as_bytes(),
        b"plain ascii text",
        b"ok\xF4\x90\x80\x80",
        b"\xED\xA0\x80 surrogate",
        b"\xE2\x82",
        "日本語のテキスト".as_bytes(),
    ];
    let mut seeds = Vec::new();
    for text in texts {
        for picks in [&[][..], &[100u8][..], &[30u8, 31, 200][..]] {
            let mut seed = vec![picks.len() as u8];
            seed.extend_from_slice(picks);
            seed.extend_from_slice(text);
            seeds.push(seed);
        }
    }
    seeds
}

/// `[mode, now (8 bytes LE), rest]`, see fuzz_targets/jwt.rs.
fn jwt_seeds(token: &str) -> Vec<Vec<u8>> {
    let now = 1_800_000_000u64.to_le_bytes();
    let with = |mode: u8, rest: &[u8]| [&[mode][..], &now, rest].concat();
    vec![
        with(0, token.as_bytes()),
        with(0, b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ."),
        with(1, br#"{"alg":"HS256","typ":"JWT"}"#.iter().chain(b"\0").chain(br#"{"sub":"bob","exp":1800000060}"#).copied().collect::<Vec<_>>().as_slice()),
        with(1, br#"{"sub":"carol","channels":["a:*","*","b"],"nbf":1,"iat":2}"#),
        with(1, br#"{"alg":"HS256","crit":["b64"]}"#.iter().chain(b"\0").chain(br#"{"sub":"x"}"#).copied().collect::<Vec<_>>().as_slice()),
    ]
}

/// What Redis sends a shard's own connections: a publish script's answer,
/// a subscriber's messages and pong, errors, statuses and nils.
fn resp_seeds() -> Vec<Vec<u8>> {
    [
        &b"*4\r\n$10\r\n18c3a0f1e2\r\n:42\r\n:0\r\n:1\r\n"[..],
        b"*4\r\n$8\r\npmessage\r\n$12\r\nhubbub:pub:*\r\n$15\r\nhubbub:pub:news\r\n$5\r\ne\n1\nx\r\n",
        b"*3\r\n$7\r\nmessage\r\n$10\r\nhubbub:ctl\r\n$2\r\n{}\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n",
        b"-NOSCRIPT No matching script\r\n+OK\r\n$-1\r\n*-1\r\n:-7\r\n",
    ]
    .iter()
    .map(|seed| seed.to_vec())
    .collect()
}
