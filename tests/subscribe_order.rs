//! A subscriber that joins a channel while it is being published to sees
//! each offset exactly once, in order: the recovered publications up to the
//! position the subscribe answered, then live ones from the next offset on,
//! even when its shard is not the channel's owner and the owner's answer
//! (control lane) races the publications already on their way to that shard
//! (data lane).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Publications in one run; the publisher keeps at most `WINDOW` unanswered.
const TOTAL: u64 = 4000;
const WINDOW: u64 = 64;
/// Subscribers joining while the publisher runs, spread over its run.
const JOINERS: u64 = 48;
/// Subscribers there from the start, so both shards already receive the
/// channel's publications when the joiners arrive.
const KEEPERS: usize = 8;

/// What went wrong for one subscriber, if anything.
type Verdict = Result<(), String>;

/// Reads `client`'s publications of `channel` until offset `TOTAL`; each
/// must be `next` exactly (so no offset twice, none out of order, none
/// skipped: there is no overload here, so no gap either).
fn follow(client: &mut WsClient, channel: &str, mut next: u64, who: &str) -> Verdict {
    let deadline = Instant::now() + Duration::from_secs(60);
    while next <= TOTAL {
        if Instant::now() > deadline {
            return Err(format!("{who}: timed out waiting for offset {next}"));
        }
        let Some(push) = client.push() else {
            return Err(format!("{who}: connection ended before offset {next}"));
        };
        if push["push"] != "pub" || push["channel"] != channel {
            return Err(format!("{who}: expected pub {next}, got {push}"));
        }
        let offset = push["offset"].as_u64().unwrap_or(0);
        if offset != next {
            let what = if offset < next {
                "again or out of order"
            } else {
                "skipped to"
            };
            return Err(format!("{who}: expected offset {next}, got {offset} ({what})"));
        }
        next += 1;
    }
    Ok(())
}

/// Subscribes with `recover` from `from` and checks the whole stream: the
/// recovered publications `from + 1 ..= position`, then live `position + 1`
/// onwards.
fn join_and_follow(mut client: WsClient, channel: &str, epoch: &str, from: u64, who: &str) -> Verdict {
    let reply = client.call(
        "subscribe",
        json!({"channel": channel, "recover": {"offset": from, "epoch": epoch}}),
    );
    let result = &reply["result"];
    if result["recovered"] != true {
        return Err(format!("{who}: recovery from {from} refused: {reply}"));
    }
    if let Some(early) = client.pushes.front() {
        return Err(format!("{who}: a push before the subscribe's reply: {early}"));
    }
    let position = result["offset"].as_u64().unwrap_or(0);
    let recovered: Vec<u64> = result["publications"]
        .as_array()
        .map(|pubs| pubs.iter().filter_map(|p| p["offset"].as_u64()).collect())
        .unwrap_or_default();
    let expected: Vec<u64> = (from + 1..=position).collect();
    if recovered != expected {
        return Err(format!(
            "{who}: recovered {recovered:?} for position {position} from {from}"
        ));
    }
    follow(&mut client, channel, position + 1, who)
}

/// Publishes `TOTAL` publications on `channel` as fast as the window
/// allows; `acked` is the highest offset answered so far.
fn publish_all(mut publisher: WsClient, channel: String, acked: Arc<AtomicU64>) {
    let mut sent = 0u64;
    let mut answered = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered < TOTAL {
        assert!(Instant::now() < deadline, "publisher timed out at {answered}");
        while sent < TOTAL && sent - answered < WINDOW {
            sent += 1;
            let command = json!({"id": sent, "method": "publish", "params": {"channel": channel, "data": sent}});
            publisher.raw.send_text(&command.to_string());
        }
        answered += 1;
        let reply = publisher.reply_for(answered);
        let offset = reply["result"]["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("publish {answered} answered {reply}"));
        acked.fetch_max(offset, Ordering::SeqCst);
    }
}

#[test]
fn subscribers_joining_during_a_publish_storm_see_each_offset_once_in_order() {
    let server = start(|c| {
        c.shards = 2;
        unlimited_rates(c);
        c.hub.history.size = TOTAL as usize;
    });
    let channel = "storm";
    let open = || {
        let client = WsClient::open(server.addr, "");
        client.raw.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        client
    };
    let mut keepers: Vec<WsClient> = (0..KEEPERS).map(|_| open()).collect();
    let mut epoch = String::new();
    for keeper in &mut keepers {
        let reply = keeper.call("subscribe", json!({"channel": channel}));
        assert_eq!(reply["result"]["offset"], 0, "{reply}");
        epoch = reply["result"]["epoch"].as_str().expect("an epoch").to_owned();
    }
    let joiners: Vec<WsClient> = (0..JOINERS).map(|_| open()).collect();
    let acked = Arc::new(AtomicU64::new(0));

    let mut threads = Vec::new();
    for (i, mut keeper) in keepers.into_iter().enumerate() {
        threads.push(std::thread::spawn(move || {
            follow(&mut keeper, channel, 1, &format!("keeper {i}"))
        }));
    }
    for (i, joiner) in (0u64..).zip(joiners) {
        let (acked, epoch) = (Arc::clone(&acked), epoch.clone());
        threads.push(std::thread::spawn(move || {
            // Spread over the run: joiner i waits for its share of it.
            let start = (i + 1) * TOTAL / (JOINERS + 4);
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked.load(Ordering::SeqCst) < start {
                if Instant::now() > deadline {
                    return Err(format!("joiner {i}: the publisher never reached {start}"));
                }
                std::thread::yield_now();
            }
            let from = acked.load(Ordering::SeqCst);
            join_and_follow(joiner, channel, &epoch, from, &format!("joiner {i}"))
        }));
    }
    let publisher = open();
    let publishing = {
        let acked = Arc::clone(&acked);
        std::thread::spawn(move || publish_all(publisher, channel.to_owned(), acked))
    };
    publishing.join().expect("the publisher finished");
    let failures: Vec<String> = threads
        .into_iter()
        .filter_map(|t| t.join().expect("no subscriber thread panicked").err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} subscribers saw a wrong stream:\n{}",
        failures.len(),
        KEEPERS as u64 + JOINERS,
        failures.join("\n")
    );
    assert_eq!(server.stats().inbox_drops, 0, "no overload in this test: no gap");
}
