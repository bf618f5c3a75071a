//! A subscriber that joins a channel while it is being published to sees
//! each offset exactly once, in order: the recovered publications up to the
//! position the subscribe answered, then live ones from the next offset on,
//! even when its shard is not the channel's owner and the owner's answer
//! (control lane) races the publications already on their way to that shard
//! (data lane). Subscribers speak `/ws` and the Centrifuge protocol
//! (`/connection/websocket`) alike: the same hub, the same channels.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

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

/// The two client protocols of the hub's channels.
#[derive(Clone, Copy, Debug)]
enum Proto {
    Ws,
    Centrifuge,
}

/// A subscriber on either protocol: one JSON document per `/ws` frame,
/// one per line of a Centrifuge frame.
struct Subscriber {
    ws: WsClient,
    proto: Proto,
    docs: VecDeque<Value>,
    who: String,
}

impl Subscriber {
    fn open(addr: std::net::SocketAddr, proto: Proto, who: String) -> Subscriber {
        let path = match proto {
            Proto::Ws => "/ws",
            Proto::Centrifuge => "/connection/websocket",
        };
        let ws = WsClient::try_open(addr, path, "").expect("upgrade accepted");
        ws.raw.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut sub = Subscriber {
            ws,
            proto,
            docs: VecDeque::new(),
            who,
        };
        if let Proto::Centrifuge = proto {
            sub.ws.raw.send_text(r#"{"id":1,"connect":{}}"#);
            let reply = sub.doc().expect("a connect reply");
            assert!(reply.get("connect").is_some(), "{reply}");
        }
        sub
    }

    /// The next document, `None` when the connection ended.
    fn doc(&mut self) -> Option<Value> {
        while self.docs.is_empty() {
            let frame = self.ws.raw.recv()?;
            if frame.opcode != 0x1 {
                return None;
            }
            let text = String::from_utf8(frame.payload).ok()?;
            let lines = match self.proto {
                Proto::Ws => vec![text.as_str()],
                Proto::Centrifuge => text.split('\n').collect(),
            };
            for line in lines {
                self.docs.push_back(serde_json::from_str(line).ok()?);
            }
        }
        self.docs.pop_front()
    }

    /// Subscribes (`recover` from `from` when given); returns the position
    /// and the recovered offsets.
    fn subscribe(&mut self, channel: &str, recover: Option<(&str, u64)>) -> Result<(u64, Vec<u64>), String> {
        let command = match (self.proto, recover) {
            (Proto::Ws, None) => json!({"id": 2, "method": "subscribe", "params": {"channel": channel}}),
            (Proto::Ws, Some((epoch, offset))) => json!({"id": 2, "method": "subscribe",
                "params": {"channel": channel, "recover": {"offset": offset, "epoch": epoch}}}),
            (Proto::Centrifuge, None) => json!({"id": 2, "subscribe": {"channel": channel}}),
            (Proto::Centrifuge, Some((epoch, offset))) => json!({"id": 2, "subscribe":
                {"channel": channel, "recover": true, "offset": offset, "epoch": epoch}}),
        };
        self.ws.raw.send_text(&command.to_string());
        let who = self.who.clone();
        let reply = self
            .doc()
            .ok_or(format!("{who}: closed before the subscribe's reply"))?;
        let result = match self.proto {
            Proto::Ws => &reply["result"],
            Proto::Centrifuge => &reply["subscribe"],
        };
        if reply["id"] != 2 || !result.is_object() {
            return Err(format!("{who}: expected the subscribe's reply first, got {reply}"));
        }
        if recover.is_some() && result["recovered"] != true {
            return Err(format!("{who}: recovery refused: {reply}"));
        }
        let position = result["offset"].as_u64().unwrap_or(0);
        let recovered = result["publications"]
            .as_array()
            .map(|pubs| pubs.iter().filter_map(|p| p["offset"].as_u64()).collect())
            .unwrap_or_default();
        Ok((position, recovered))
    }

    /// The offset of the next publication of `channel`.
    fn next_pub(&mut self, channel: &str) -> Result<u64, String> {
        let who = self.who.clone();
        let doc = self.doc().ok_or(format!("{who}: connection ended"))?;
        let (name, offset) = match self.proto {
            Proto::Ws if doc["push"] == "pub" => (&doc["channel"], &doc["offset"]),
            Proto::Centrifuge if doc["push"]["pub"].is_object() => {
                (&doc["push"]["channel"], &doc["push"]["pub"]["offset"])
            }
            _ => return Err(format!("{who}: expected a publication, got {doc}")),
        };
        match (name == channel, offset.as_u64()) {
            (true, Some(offset)) => Ok(offset),
            _ => Err(format!("{who}: expected a publication of {channel}, got {doc}")),
        }
    }
}

/// Reads publications until offset `TOTAL`; each must be `next` exactly
/// (so no offset twice, none out of order, none skipped: there is no
/// overload here, so no gap either).
fn follow(sub: &mut Subscriber, channel: &str, mut next: u64) -> Verdict {
    let deadline = Instant::now() + Duration::from_secs(60);
    while next <= TOTAL {
        if Instant::now() > deadline {
            return Err(format!("{}: timed out waiting for offset {next}", sub.who));
        }
        let offset = sub.next_pub(channel)?;
        if offset != next {
            let what = if offset < next {
                "again or out of order"
            } else {
                "skipped to"
            };
            return Err(format!("{}: expected offset {next}, got {offset} ({what})", sub.who));
        }
        next += 1;
    }
    Ok(())
}

/// Subscribes with `recover` from `from` and checks the whole stream: the
/// recovered publications `from + 1 ..= position`, then live `position + 1`
/// onwards.
fn join_and_follow(mut sub: Subscriber, channel: &str, epoch: &str, from: u64) -> Verdict {
    let (position, recovered) = sub.subscribe(channel, Some((epoch, from)))?;
    let expected: Vec<u64> = (from + 1..=position).collect();
    if recovered != expected {
        let who = &sub.who;
        return Err(format!(
            "{who}: recovered {recovered:?} for position {position} from {from}"
        ));
    }
    follow(&mut sub, channel, position + 1)
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
    let proto = |i: usize| {
        if i.is_multiple_of(2) {
            Proto::Ws
        } else {
            Proto::Centrifuge
        }
    };
    let mut keepers: Vec<Subscriber> = (0..KEEPERS)
        .map(|i| Subscriber::open(server.addr, proto(i), format!("keeper {i} ({:?})", proto(i))))
        .collect();
    for keeper in &mut keepers {
        let (position, _) = keeper.subscribe(channel, None).unwrap();
        assert_eq!(position, 0);
    }
    let mut probe = WsClient::open(server.addr, "");
    let history = probe.call("history", json!({"channel": channel, "limit": 1}));
    let epoch = history["result"]["epoch"].as_str().expect("an epoch").to_owned();
    let joiners: Vec<Subscriber> = (0..JOINERS as usize)
        .map(|i| Subscriber::open(server.addr, proto(i), format!("joiner {i} ({:?})", proto(i))))
        .collect();
    let acked = Arc::new(AtomicU64::new(0));

    let mut threads = Vec::new();
    for mut keeper in keepers {
        threads.push(std::thread::spawn(move || follow(&mut keeper, channel, 1)));
    }
    for (i, joiner) in (0u64..).zip(joiners) {
        let (acked, epoch) = (Arc::clone(&acked), epoch.clone());
        threads.push(std::thread::spawn(move || {
            // Spread over the run: joiner i waits for its share of it.
            let start = (i + 1) * TOTAL / (JOINERS + 4);
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked.load(Ordering::SeqCst) < start {
                if Instant::now() > deadline {
                    return Err(format!("{}: the publisher never reached {start}", joiner.who));
                }
                std::thread::yield_now();
            }
            let from = acked.load(Ordering::SeqCst);
            join_and_follow(joiner, channel, &epoch, from)
        }));
    }
    let open = || {
        let client = WsClient::open(server.addr, "");
        client.raw.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        client
    };
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
