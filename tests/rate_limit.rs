//! What a `/ws` client over `--max-messages-per-sec` gets, over a real
//! socket: error 105 for each command over the rate, never the "too many bad
//! commands" close a malformed client earns; a client that keeps sending over
//! the rate for `RATE_LIMIT_GRACE_SECS` is closed with 1008 "rate limit
//! exceeded" and counted as `rate_limited`.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_frame, start, WsClient, MASK};
use hubbub::conn::Disconnect;
use hubbub::hub::session::RATE_LIMIT_GRACE_SECS;
use serde_json::json;

const RATE: u32 = 10;

fn ping(id: u64) -> Vec<u8> {
    let text = json!({"id": id, "method": "ping"}).to_string();
    client_frame(0x1, true, text.as_bytes(), MASK)
}

#[test]
fn a_bursty_client_gets_105_and_stays_connected() {
    let server = start(|c| c.hub.max_messages_per_sec = RATE);
    let mut client = WsClient::open(server.addr, "");
    let mut id = 0;
    // Three bursts, each four times the rate: 30 refusals a burst, more than
    // the 20 errors that close a client sending malformed commands.
    for burst in 0..3 {
        let first = id + 1;
        let mut frames = Vec::new();
        for _ in 0..4 * RATE {
            id += 1;
            frames.extend(ping(id));
        }
        client.raw.stream.write_all(&frames).unwrap();
        let refused = (first..=id)
            .filter(|&i| client.reply_for(i)["error"]["code"] == 105)
            .count();
        assert!(refused >= 3 * RATE as usize - 2, "burst {burst}: {refused} refused");
        std::thread::sleep(Duration::from_millis(1300));
    }
    assert!(
        client.call("ping", json!({})).get("result").is_some(),
        "still connected after the bursts"
    );
    let stats = server.stats();
    assert!(stats.rate_limited >= 80, "{stats:?}");
    for why in [Disconnect::ProtocolError, Disconnect::RateLimited] {
        assert_eq!(stats.disconnects_for(why), 0, "{why:?}: {stats:?}");
    }
}

#[test]
fn a_client_that_stays_over_the_rate_is_closed_as_rate_limited() {
    let server = start(|c| c.hub.max_messages_per_sec = RATE);
    let mut client = WsClient::open(server.addr, "");
    let mut writer = client.raw.stream.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sending = Arc::clone(&stop);
    let started = Instant::now();
    // Four times the rate, steadily, for at most twice the grace.
    let sender = std::thread::spawn(move || {
        let limit = Duration::from_secs(2 * RATE_LIMIT_GRACE_SECS as u64);
        let mut id = 0;
        while !sending.load(Ordering::Relaxed) && started.elapsed() < limit {
            id += 1;
            if writer.write_all(&ping(id)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1000 / (4 * RATE as u64)));
        }
    });
    let mut disconnect = None;
    let mut closed = None;
    let mut refused = 0;
    while let Some(message) = client.push() {
        if message["error"]["code"] == 105 {
            refused += 1;
        } else if message["push"] == "disconnect" {
            disconnect = Some(message);
        } else if let Some(code) = message.get("closed") {
            closed = Some(code.clone());
            break;
        }
    }
    let lasted = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    // Answer the Close, so the server ends the connection without waiting.
    client.raw.send(0x8, true, &1008u16.to_be_bytes());
    assert_eq!(
        disconnect,
        Some(json!({"push": "disconnect", "code": 1008, "reason": "rate limit exceeded", "reconnect": false}))
    );
    assert_eq!(closed, Some(json!(1008)));
    assert!(refused > 40, "{refused} refusals before the close");
    assert!(
        lasted >= Duration::from_secs(RATE_LIMIT_GRACE_SECS as u64),
        "closed after {lasted:?}, before the grace"
    );
    let stats = server.wait_for("the close counted", |s| s.disconnects_for(Disconnect::RateLimited) == 1);
    assert_eq!(stats.disconnects_for(Disconnect::ProtocolError), 0, "{stats:?}");
}
