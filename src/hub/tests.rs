//! Hub-level unit tests: two shards' hubs driven through `Conns` by a fake,
//! their inboxes pumped by hand, so the order of every message is the
//! test's to choose (an answer that arrives after its subscription ended).

use std::collections::HashMap;

use bytes::Bytes;
use mio::{Poll, Token, Waker};

use super::*;
use crate::auth::Claims;
use crate::bus::inbox::{channel, Inbox, Lane, ShardMsg};
use crate::bus::msg::{Origin, ReplyTo};
use crate::route::Endpoint;

/// Connections as a shard would hold them: open ones get what is queued.
#[derive(Default)]
struct Fake {
    open: HashMap<usize, u32>,
    queued: Vec<(usize, Bytes)>,
    closed: Vec<(usize, u16)>,
    stats: ShardStats,
}

impl Conns for Fake {
    fn queue(&mut self, key: usize, frame: Bytes) {
        if self.open.contains_key(&key) {
            self.queued.push((key, frame));
        }
    }

    fn close(&mut self, key: usize, code: u16, _reason: &str, _why: Disconnect) {
        if self.open.remove(&key).is_some() {
            self.closed.push((key, code));
        }
    }

    fn generation(&self, key: usize) -> Option<u32> {
        self.open.get(&key).copied()
    }

    fn is_open(&self, key: usize) -> bool {
        self.open.contains_key(&key)
    }

    fn facts(&self, _key: usize) -> Option<ConnFacts> {
        None
    }

    fn tick(&self) -> u32 {
        1
    }

    fn now_unix(&self) -> u64 {
        1_000_000
    }

    fn stats(&mut self) -> &mut ShardStats {
        &mut self.stats
    }
}

/// Two shards: each a hub, its connections and its inbox.
struct Shards {
    hubs: Vec<Hub>,
    conns: Vec<Fake>,
    inboxes: Vec<Inbox>,
    _poll: Poll,
}

impl Shards {
    fn new(config: HubConfig) -> Shards {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (handles, inboxes): (Vec<_>, Vec<_>) = (0..2).map(|_| channel(Arc::clone(&waker))).unzip();
        let peers = Peers::new(handles.into());
        let config = Arc::new(config);
        let hubs = (0..2)
            .map(|i| Hub::new(i, peers.for_sender(), Arc::clone(&config), None, Meter::unlimited()))
            .collect();
        Shards {
            hubs,
            conns: vec![Fake::default(), Fake::default()],
            inboxes,
            _poll: poll,
        }
    }

    /// Opens connection `key` on `shard` on `endpoint` (as user `sub`).
    fn open(&mut self, shard: usize, key: usize, endpoint: Endpoint, sub: Option<&str>) {
        self.conns[shard].open.insert(key, 1);
        let claims = sub.map(|sub| {
            Box::new(Claims {
                sub: sub.into(),
                exp: None,
                nbf: None,
                iat: None,
                channels: None,
                jti: None,
            })
        });
        self.hubs[shard].upgraded(key, endpoint, claims, &mut self.conns[shard]);
    }

    /// The connection goes away, as the shard removes it.
    fn gone(&mut self, shard: usize, key: usize) {
        self.conns[shard].open.remove(&key);
        self.hubs[shard].leave(key, &mut self.conns[shard]);
    }

    fn command(&mut self, shard: usize, key: usize, text: &str) {
        self.hubs[shard].command(key, text.as_bytes(), &mut self.conns[shard]);
    }

    /// Hands every inbox message to its hub until all are empty.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for shard in 0..self.hubs.len() {
                for lane in [Lane::Control, Lane::Data] {
                    while let Some(msg) = self.inboxes[shard].try_recv(lane) {
                        let ShardMsg::Hub(msg) = msg else { continue };
                        self.hubs[shard].on_message(msg, &mut self.conns[shard]);
                        moved = true;
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Takes what was queued for `key` on `shard`, as JSON documents.
    fn received(&mut self, shard: usize, key: usize) -> Vec<serde_json::Value> {
        let queued = std::mem::take(&mut self.conns[shard].queued);
        let (mine, others): (Vec<_>, Vec<_>) = queued.into_iter().partition(|(k, _)| *k == key);
        self.conns[shard].queued = others;
        mine.iter()
            .map(|(_, frame)| serde_json::from_slice(payload(frame)).unwrap())
            .collect()
    }

    /// The channel's presence, asked of its owner as the admin API does.
    fn presence(&mut self, channel: &str) -> serde_json::Value {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let owner = self.hubs[0].owner_of(channel);
        let query = HubMsg::Query {
            channel: channel.into(),
            query: crate::bus::msg::Query::Presence,
            reply: ReplyTo::Admin(tx),
        };
        self.hubs[owner].on_message(query, &mut self.conns[owner]);
        serde_json::from_str(&rx.try_recv().unwrap()).unwrap()
    }
}

/// The payload of a server frame of fewer than 64 KiB.
fn payload(frame: &[u8]) -> &[u8] {
    match frame[1] {
        126 => &frame[4..],
        _ => &frame[2..],
    }
}

/// A name whose owner is `shard` (of two), made from `prefix`.
fn owned_by(shard: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|name| crate::bus::owner_of(name, 2) == shard)
        .unwrap()
}

#[test]
fn a_room_message_reaches_every_member_on_every_shard_once() {
    let mut shards = Shards::new(HubConfig::default());
    let room = owned_by(0, "room");
    let other = owned_by(0, "other");
    shards.open(0, 1, Endpoint::Room(room.as_str().into()), None);
    shards.open(0, 2, Endpoint::Room(room.as_str().into()), None);
    shards.open(0, 3, Endpoint::Room(other.as_str().into()), None);
    shards.open(1, 1, Endpoint::Room(room.as_str().into()), None);
    // Sent on shard 1: forwarded to the owner, delivered everywhere from there.
    let frame = Bytes::from_static(b"\x81\x02hi");
    shards.hubs[1].room_message(1, frame.clone(), &mut shards.conns[1]);
    shards.pump();
    let to = |fake: &Fake| {
        let mut keys: Vec<usize> = fake
            .queued
            .iter()
            .map(|(k, f)| {
                assert_eq!(f, &frame, "the same bytes for every member");
                *k
            })
            .collect();
        keys.sort_unstable();
        keys
    };
    assert_eq!(to(&shards.conns[0]), vec![1, 2], "not the member of another room");
    assert_eq!(to(&shards.conns[1]), vec![1], "the sender too, once");
    assert_eq!(
        shards.conns[0].stats.messages_in_rooms + shards.conns[1].stats.messages_in_rooms,
        1
    );
}

#[test]
fn every_command_gets_exactly_one_reply() {
    let mut shards = Shards::new(HubConfig::default());
    let remote = owned_by(0, "chan");
    let local = owned_by(1, "chan");
    shards.open(1, 7, Endpoint::Ws, Some("ann"));
    let commands = [
        r#"{"id":1,"method":"ping"}"#.to_string(),
        format!(r#"{{"id":2,"method":"subscribe","params":{{"channel":"{remote}"}}}}"#),
        format!(r#"{{"id":3,"method":"subscribe","params":{{"channel":"{local}"}}}}"#),
        format!(r#"{{"id":4,"method":"subscribe","params":{{"channel":"{remote}"}}}}"#),
        format!(r#"{{"id":5,"method":"publish","params":{{"channel":"{remote}","data":{{"n":1}}}}}}"#),
        format!(r#"{{"id":6,"method":"presence","params":{{"channel":"{remote}"}}}}"#),
        format!(r#"{{"id":7,"method":"history","params":{{"channel":"{local}"}}}}"#),
        format!(r#"{{"id":8,"method":"unsubscribe","params":{{"channel":"{local}"}}}}"#),
        r#"{"id":9,"method":"unsubscribe","params":{"channel":"never"}}"#.to_string(),
        r#"{"id":10,"method":"send","params":{"user":"ann","data":"hi"}}"#.to_string(),
        r#"{"id":11,"method":"dance"}"#.to_string(),
    ];
    for (i, command) in commands.iter().enumerate() {
        shards.command(1, 7, command);
        if i % 2 == 0 {
            shards.pump(); // some answered before the next command, some after
        }
    }
    shards.pump();
    let received = shards.received(1, 7);
    let mut ids: Vec<u64> = received.iter().filter_map(|m| m["id"].as_u64()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=11).collect::<Vec<_>>(), "{received:?}");
    let error = |id: u64| {
        let reply = received.iter().find(|m| m["id"] == id).unwrap();
        reply["error"]["code"].as_u64()
    };
    assert_eq!((error(4), error(9), error(11)), (Some(107), Some(106), Some(101)));
    assert_eq!(error(5), None, "the publish was ordered");
    let pushes: Vec<&str> = received.iter().filter_map(|m| m["push"].as_str()).collect();
    assert_eq!(
        pushes,
        vec!["pub", "message"],
        "its own publication and its own message"
    );
}

#[test]
fn a_subscription_that_ends_before_its_answer_is_undone_exactly() {
    let mut shards = Shards::new(HubConfig::default());
    let channel = owned_by(0, "chan");
    let subscribe = |id| format!(r#"{{"id":{id},"method":"subscribe","params":{{"channel":"{channel}"}}}}"#);
    let unsubscribe = |id| format!(r#"{{"id":{id},"method":"unsubscribe","params":{{"channel":"{channel}"}}}}"#);
    // A: unsubscribes before the answer. B: leaves before it. C:
    // resubscribes before the first answer: only the second one counts.
    shards.open(1, 1, Endpoint::Ws, Some("a"));
    shards.open(1, 2, Endpoint::Ws, Some("b"));
    shards.open(1, 3, Endpoint::Ws, Some("c"));
    shards.command(1, 1, &subscribe(1));
    shards.command(1, 1, &unsubscribe(2));
    shards.command(1, 2, &subscribe(1));
    shards.gone(1, 2);
    shards.command(1, 3, &subscribe(1));
    shards.command(1, 3, &unsubscribe(2));
    shards.command(1, 3, &subscribe(3));
    shards.pump();
    let presence = shards.presence(&channel);
    assert_eq!(presence["total"], 1, "{presence}");
    assert_eq!(presence["users"], serde_json::json!({"c": 1}));
    assert_eq!(shards.conns[1].stats.subscriptions, 1);
    let received = shards.received(1, 3);
    let replies: Vec<u64> = received.iter().filter_map(|m| m["id"].as_u64()).collect();
    assert_eq!(replies, vec![1, 2, 3], "every command gets exactly one reply");
    assert_eq!(
        received[0]["error"]["code"], 111,
        "the first subscribe was cancelled, and the owner's late answer is not sent"
    );
    // Deliveries go only where a subscriber is.
    shards.gone(1, 3);
    shards.pump();
    assert_eq!(shards.presence(&channel)["total"], 0);
    assert_eq!(shards.conns[1].stats.subscriptions, 0);
    assert!(shards.hubs[0].owned.subscriber_shards(&channel).is_empty());
}

#[test]
fn a_late_subscribe_failure_for_a_cancelled_subscribe_is_not_a_second_reply() {
    // Cluster mode with Redis down: the owner answers a subscribe with
    // SubscribeFailed. When that subscribe was cancelled by an unsubscribe
    // (answered 111 already) and the channel subscribed again, the late
    // failure must neither answer the old id again nor take the new one.
    let mut shards = Shards::new(HubConfig::default());
    let channel = owned_by(0, "chan");
    let subscribe = |id| format!(r#"{{"id":{id},"method":"subscribe","params":{{"channel":"{channel}"}}}}"#);
    let unsubscribe = |id| format!(r#"{{"id":{id},"method":"unsubscribe","params":{{"channel":"{channel}"}}}}"#);
    shards.open(1, 1, Endpoint::Ws, Some("a"));
    shards.command(1, 1, &subscribe(1));
    shards.command(1, 1, &unsubscribe(2));
    shards.command(1, 1, &subscribe(3));
    let failed = HubMsg::SubscribeFailed {
        channel: channel.as_str().into(),
        to: Origin {
            shard: 1,
            key: 1,
            generation: 1,
            id: 1,
        },
        code: protocol::code::UNAVAILABLE,
        message: "cluster link down",
    };
    shards.hubs[1].on_message(failed, &mut shards.conns[1]);
    shards.pump();
    let received = shards.received(1, 1);
    let replies: Vec<u64> = received.iter().filter_map(|m| m["id"].as_u64()).collect();
    assert_eq!(replies, vec![1, 2, 3], "exactly one reply per command: {received:?}");
    assert_eq!(received[0]["error"]["code"], 111, "{received:?}");
    assert!(
        received[2].get("result").is_some(),
        "the new subscribe took effect: {received:?}"
    );
    assert_eq!(shards.presence(&channel)["total"], 1);
}

#[test]
fn a_kick_for_a_reused_slot_closes_nobody() {
    let mut shards = Shards::new(HubConfig::default());
    shards.open(0, 4, Endpoint::Ws, Some("u"));
    let stale = Origin {
        shard: 0,
        key: 4,
        generation: 9,
        id: 0,
    };
    let kick = |conn| HubMsg::Kick {
        conn,
        code: 4002,
        reason: "bye".into(),
    };
    shards.hubs[0].on_message(kick(stale), &mut shards.conns[0]);
    assert!(shards.conns[0].closed.is_empty());
    shards.hubs[0].on_message(kick(Origin { generation: 1, ..stale }), &mut shards.conns[0]);
    assert_eq!(shards.conns[0].closed, vec![(4, 4002)]);
}

/// Issue 12: one user with 5,000 connections on one shard, all closing in a
/// storm. The hub's and the owner's per-user bookkeeping count the entries
/// they touch: linear (a `retain` per disconnect would touch ~12.5 million).
#[test]
fn a_user_with_5000_connections_disconnecting_in_a_storm_is_linear() {
    const N: usize = 5_000;
    let mut shards = Shards::new(HubConfig::default());
    let user = owned_by(0, "storm");
    for key in 0..N {
        shards.open(0, key, Endpoint::Ws, Some(&user));
    }
    shards.pump();
    for key in (0..N).rev() {
        shards.gone(0, key);
    }
    shards.pump();
    let hub = &shards.hubs[0];
    assert_eq!(hub.users.len(), 0);
    let (local, owner) = (hub.users.work(), hub.owned.user_work());
    assert!(local < 20 * N as u64, "local bookkeeping touched {local} entries");
    assert!(owner < 20 * N as u64, "owner bookkeeping touched {owner} entries");
}

/// Issue 15: a publication to `/ws` and Centrifuge subscribers of both
/// shards is framed once per protocol per shard, and the Centrifuge frame
/// only where a Centrifuge subscriber is.
#[test]
fn a_publication_is_framed_once_per_protocol_per_shard() {
    let mut shards = Shards::new(HubConfig::default());
    for shard in 0..2 {
        for key in 1..=3 {
            shards.open(shard, key, Endpoint::Centrifuge, None);
            shards.command(shard, key, r#"{"id":1,"connect":{}}"#);
            shards.command(shard, key, r#"{"id":2,"subscribe":{"channel":"c"}}"#);
        }
        shards.open(shard, 9, Endpoint::Ws, None);
        let sub = r#"{"id":1,"method":"subscribe","params":{"channel":"c"}}"#;
        shards.command(shard, 9, sub);
    }
    shards.pump();
    let publish = r#"{"id":2,"method":"publish","params":{"channel":"c","data":{"n":1}}}"#;
    shards.command(1, 9, publish);
    shards.pump();
    for shard in 0..2 {
        let pubs: Vec<&(usize, Bytes)> = shards.conns[shard]
            .queued
            .iter()
            .filter(|(_, f)| f.windows(5).any(|w| w == br#""pub""#))
            .collect();
        let keys: Vec<usize> = pubs.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [1, 2, 3, 9], "shard {shard}");
        let first = pubs[0].1.as_ptr();
        assert!(
            pubs[..3].iter().all(|(_, f)| f.as_ptr() == first),
            "one Centrifuge frame"
        );
        assert_ne!(pubs[3].1.as_ptr(), first, "the /ws frame is the hub's own");
        let text = std::str::from_utf8(&pubs[0].1[2..]).unwrap();
        assert_eq!(text, r#"{"push":{"channel":"c","pub":{"data":{"n":1},"offset":1}}}"#);
    }
}

/// What `key` on `shard` was sent, each line of each frame a JSON document
/// (a Centrifuge frame may carry several).
fn documents(shards: &mut Shards, shard: usize, key: usize) -> Vec<serde_json::Value> {
    let queued = std::mem::take(&mut shards.conns[shard].queued);
    let (mine, others): (Vec<_>, Vec<_>) = queued.into_iter().partition(|(k, _)| *k == key);
    shards.conns[shard].queued = others;
    mine.iter()
        .flat_map(|(_, frame)| {
            payload(frame)
                .split(|&b| b == b'\n')
                .map(|line| line.to_vec())
                .collect::<Vec<_>>()
        })
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(&line).unwrap())
        .collect()
}

/// The publication offsets a subscriber got, in order: recovered ones in
/// a subscribe's answer, then pushes (either protocol); a gap push as `0`.
fn offsets(documents: &[serde_json::Value]) -> Vec<u64> {
    let mut seen = Vec::new();
    for doc in documents {
        let recovered = doc["result"]["publications"]
            .as_array()
            .or(doc["subscribe"]["publications"].as_array());
        for publication in recovered.into_iter().flatten() {
            seen.push(publication["offset"].as_u64().unwrap());
        }
        match (&doc["push"], &doc["push"]["pub"]) {
            (push, _) if push == "pub" => seen.push(doc["offset"].as_u64().unwrap()),
            (push, _) if push == "gap" => seen.push(0),
            (_, publication) if publication.is_object() => seen.push(publication["offset"].as_u64().unwrap_or(0)),
            _ => {}
        }
    }
    seen
}

/// The admin API's publish, straight to the channel's owner.
fn publish_at_owner(shards: &mut Shards, channel: &str, n: u64) {
    let owner = shards.hubs[0].owner_of(channel);
    let publish = HubMsg::Publish {
        channel: channel.into(),
        data: n.to_string().into(),
        reply: None,
        may_create: true,
        idem: None,
    };
    shards.hubs[owner].on_message(publish, &mut shards.conns[owner]);
}

/// The owner's answer to a subscribe travels the control lane, its
/// publications the data lane; the member's shard drains control first. A
/// subscriber there whose answer overtakes publications its position
/// already covers gets each of them once (in the answer), not again live;
/// on both protocols.
#[test]
fn an_answer_that_overtakes_publications_it_covers_does_not_repeat_them() {
    let mut shards = Shards::new(HubConfig::default());
    let channel = owned_by(0, "race");
    // A subscriber already on shard 1: the owner sends it every publication.
    shards.open(1, 1, Endpoint::Ws, None);
    let subscribe = format!(r#"{{"id":1,"method":"subscribe","params":{{"channel":"{channel}"}}}}"#);
    shards.command(1, 1, &subscribe);
    shards.pump();
    let epoch = shards.received(1, 1)[0]["result"]["epoch"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        publish_at_owner(&mut shards, &channel, n); // on shard 1's data lane
    }
    shards.open(1, 2, Endpoint::Ws, None);
    let recover = format!(
        r#"{{"id":1,"method":"subscribe","params":{{"channel":"{channel}","recover":{{"offset":0,"epoch":"{epoch}"}}}}}}"#
    );
    shards.command(1, 2, &recover);
    shards.open(1, 3, Endpoint::Centrifuge, None);
    shards.command(1, 3, r#"{"id":1,"connect":{}}"#);
    let centrifuge =
        format!(r#"{{"id":2,"subscribe":{{"channel":"{channel}","recover":true,"offset":0,"epoch":"{epoch}"}}}}"#);
    shards.command(1, 3, &centrifuge);
    // Shard 0 answers both (control lane to shard 1), then shard 1 takes
    // the answers before the three deliveries published before them.
    shards.pump();
    assert_eq!(offsets(&documents(&mut shards, 1, 1)), [1, 2, 3]);
    assert_eq!(
        offsets(&documents(&mut shards, 1, 2)),
        [1, 2, 3],
        "recovered once, not again live"
    );
    assert_eq!(
        offsets(&documents(&mut shards, 1, 3)),
        [1, 2, 3],
        "the same on Centrifuge"
    );
    // Live publications after the position reach everyone, once.
    publish_at_owner(&mut shards, &channel, 4);
    shards.pump();
    for key in 1..=3 {
        assert_eq!(offsets(&documents(&mut shards, 1, key)), [4], "key {key}");
    }
}

/// A gap report (control lane) arrives before the deliveries sent ahead
/// of the drop (data lane): the push still comes after them, so "you have
/// everything up to `offset`" is true when it is read.
#[test]
fn a_gap_push_follows_the_deliveries_sent_before_the_drop() {
    let mut shards = Shards::new(HubConfig::default());
    let channel = owned_by(0, "gappy");
    shards.open(1, 1, Endpoint::Ws, None);
    let subscribe = format!(r#"{{"id":1,"method":"subscribe","params":{{"channel":"{channel}"}}}}"#);
    shards.command(1, 1, &subscribe);
    shards.pump();
    shards.received(1, 1);
    let capacity = crate::bus::inbox::INBOX_CAPACITY as u64;
    for n in 1..=capacity + 2 {
        publish_at_owner(&mut shards, &channel, n); // the last two are dropped
    }
    // A subscriber joining after the drop is not told of a gap before its
    // position (its answer covers it), but is of one after it, though the
    // run of drops goes on (the other subscriber was told once already).
    shards.open(1, 2, Endpoint::Ws, None);
    shards.command(1, 2, &subscribe);
    while let Some(ShardMsg::Hub(msg)) = shards.inboxes[0].try_recv(Lane::Control) {
        shards.hubs[0].on_message(msg, &mut shards.conns[0]);
    }
    publish_at_owner(&mut shards, &channel, capacity + 3); // dropped too
    shards.pump();
    let first = offsets(&documents(&mut shards, 1, 1));
    assert_eq!(first.len() as u64, capacity + 2);
    assert!(first[..capacity as usize].iter().copied().eq(1..=capacity), "in order");
    assert_eq!(first[capacity as usize..], [0, 0], "every delivery sent, then the gaps");
    publish_at_owner(&mut shards, &channel, capacity + 4);
    shards.pump();
    assert_eq!(offsets(&documents(&mut shards, 1, 1)), [capacity + 4]);
    let second = documents(&mut shards, 1, 2);
    assert_eq!(second[0]["result"]["offset"], capacity + 2, "{:?}", second[0]);
    assert_eq!(
        second[1]["offset"],
        capacity + 2,
        "the gap after its position: {:?}",
        second[1]
    );
    assert_eq!(
        offsets(&second),
        [0, capacity + 4],
        "no gap before its position, no repeat"
    );
}

/// The room's owner could not get a delivery into a member's shard (its
/// data lane full): the gap report (control lane) arrives ahead of the
/// deliveries sent before the drop, and still the member gets every one of
/// them, then its close (1013), in the order they were sent.
#[test]
fn a_room_member_gets_every_message_sent_before_a_gap_then_is_closed() {
    let mut shards = Shards::new(HubConfig::default());
    let room = owned_by(0, "crowded");
    shards.open(0, 1, Endpoint::Room(room.as_str().into()), None);
    shards.open(1, 1, Endpoint::Room(room.as_str().into()), None);
    let capacity = crate::bus::inbox::INBOX_CAPACITY;
    for _ in 0..capacity + 1 {
        // From members elsewhere, to the owner; the last one does not fit
        // in shard 1's data lane.
        let publish = HubMsg::RoomPublish {
            room: room.as_str().into(),
            frame: Bytes::from_static(b"\x81\x02hi"),
            at: std::time::Instant::now(),
        };
        shards.hubs[0].on_message(publish, &mut shards.conns[0]);
    }
    shards.pump();
    assert_eq!(shards.conns[0].queued.len(), capacity + 1, "the owner's member has all");
    assert_eq!(
        shards.conns[1].queued.len(),
        capacity,
        "every message sent before the drop, before the close"
    );
    assert_eq!(shards.conns[1].closed, [(1, crate::ws::close::TRY_AGAIN_LATER)]);
}

/// Cluster mode: a room message from Redis did not fit in its owner's
/// inbox. The subscriber's gap report (control lane, to the owner) takes
/// effect after the messages it got in before (data lane), and the owner's
/// report to the other shards after the deliveries it sent them: members
/// everywhere get every message sent before the drop, then the close.
#[test]
fn a_room_gap_from_redis_follows_the_messages_before_it_on_every_shard() {
    let mut shards = Shards::new(HubConfig::default());
    let room = owned_by(0, "redis-room");
    shards.open(0, 1, Endpoint::Room(room.as_str().into()), None);
    shards.open(1, 1, Endpoint::Room(room.as_str().into()), None);
    // What the subscriber of Redis server 1 sends: three messages, then a
    // gap after its third (the fourth did not fit).
    let subscriber = shards.hubs[0].peers.for_sender();
    for seq in 1..=3 {
        let message = HubMsg::ClusterRoomMessage {
            room: room.as_str().into(),
            frame: Bytes::from_static(b"\x81\x02hi"),
            server: 1,
            seq,
        };
        subscriber.to(0, message).unwrap();
    }
    let gap = HubMsg::ClusterRoomGap {
        room: room.as_str().into(),
        server: 1,
        after: 3,
    };
    subscriber.to(0, gap).unwrap();
    shards.pump();
    for shard in 0..2 {
        assert_eq!(shards.conns[shard].queued.len(), 3, "shard {shard}: all three first");
        assert_eq!(shards.conns[shard].closed, [(1, crate::ws::close::TRY_AGAIN_LATER)]);
    }
}

/// The subscriber lost Redis: every room member on the node is closed
/// (1013), but only after the room messages sent before the loss reached it
/// (the close used to overtake them on the control lane).
#[test]
fn a_lost_redis_subscriber_closes_room_members_after_the_messages_before_it() {
    let mut shards = Shards::new(HubConfig::default());
    let first = owned_by(0, "first-room");
    let second = owned_by(1, "second-room");
    for shard in 0..2 {
        shards.open(shard, 1, Endpoint::Room(first.as_str().into()), None);
        shards.open(shard, 2, Endpoint::Room(second.as_str().into()), None);
    }
    // The subscriber of Redis server 0: three messages of `first` to its
    // owner (shard 0), two of `second` to shard 1, then the loss, each
    // after what it sent that shard.
    let subscriber = shards.hubs[0].peers.for_sender();
    let message = |room: &str, seq| HubMsg::ClusterRoomMessage {
        room: room.into(),
        frame: Bytes::from_static(b"\x81\x02hi"),
        server: 0,
        seq,
    };
    for seq in 1..=3 {
        subscriber.to(0, message(&first, seq)).unwrap();
    }
    for seq in 1..=2 {
        subscriber.to(1, message(&second, seq)).unwrap();
    }
    for (shard, after) in [(0, 3), (1, 2)] {
        subscriber
            .to(shard, HubMsg::ClusterRoomsLost { server: 0, after })
            .unwrap();
    }
    shards.pump();
    for shard in 0..2 {
        assert_eq!(shards.conns[shard].queued.len(), 5, "shard {shard}: 3 + 2 first");
        let mut closed = shards.conns[shard].closed.clone();
        closed.sort();
        let lost = crate::ws::close::TRY_AGAIN_LATER;
        assert_eq!(closed, [(1, lost), (2, lost)], "shard {shard}");
    }
}

/// With two Redis servers, a room's messages come only from the subscriber
/// of the server that holds it (`server_of`). Losing server 0's subscriber
/// closes the members of server 0's rooms only: those of server 1's rooms
/// lost nothing, keep their connection, and get server 1's messages queued
/// before the loss (the close used to reach them too, ahead of those).
#[test]
fn a_lost_redis_subscriber_closes_only_the_members_of_its_servers_rooms() {
    use crate::bus::cluster::{server_of, ClusterLink, ClusterState};
    let mut shards = Shards::new(HubConfig::default());
    let state = Arc::new(ClusterState::new(2, 1 << 20, MemoryBudget::new(1 << 30)));
    let mut bridge = Vec::new();
    for hub in &mut shards.hubs {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (state_tx, state_rx) = crossbeam_channel::unbounded();
        bridge.push((rx, state_rx));
        hub.cluster = Some(ClusterLink::new(
            vec![tx.clone(), tx],
            vec![state_tx.clone(), state_tx],
            "n".into(),
            Arc::clone(&state),
        ));
    }
    let on = |server: usize, owner: usize, prefix: &str| {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|name| crate::bus::owner_of(name, 2) == owner && server_of(name, 2) == server)
            .unwrap()
    };
    let (lost, kept) = (on(0, 0, "lost-room"), on(1, 0, "kept-room"));
    for shard in 0..2 {
        shards.open(shard, 1, Endpoint::Room(lost.as_str().into()), None);
        shards.open(shard, 2, Endpoint::Room(kept.as_str().into()), None);
    }
    let message = |room: &str, server, seq| HubMsg::ClusterRoomMessage {
        room: room.into(),
        frame: Bytes::from_static(b"\x81\x02hi"),
        server,
        seq,
    };
    // Server 1's subscriber: two messages of `kept` to its owner; server
    // 0's: one of `lost` between them, then its loss (it sent shard 1
    // nothing).
    let (one, zero) = (shards.hubs[0].peers.for_sender(), shards.hubs[0].peers.for_sender());
    one.to(0, message(&kept, 1, 1)).unwrap();
    zero.to(0, message(&lost, 0, 1)).unwrap();
    one.to(0, message(&kept, 1, 2)).unwrap();
    for (shard, after) in [(0, 1), (1, 0)] {
        zero.to(shard, HubMsg::ClusterRoomsLost { server: 0, after }).unwrap();
    }
    shards.pump();
    let lost_code = crate::ws::close::TRY_AGAIN_LATER;
    for shard in 0..2 {
        let to = |key| shards.conns[shard].queued.iter().filter(|(k, _)| *k == key).count();
        assert_eq!((to(1), to(2)), (1, 2), "shard {shard}: every message before the loss");
        assert_eq!(
            shards.conns[shard].closed,
            [(1, lost_code)],
            "shard {shard}: server 0's room only"
        );
    }
    drop(bridge);
}

/// A member that joined on its shard after a room's gap report was handled
/// there, and missed a later drop of the same run (the owner's delivery to
/// that shard got through for another room in between), is told.
#[test]
fn a_member_that_joined_after_the_report_and_missed_a_later_drop_is_told() {
    let mut shards = Shards::new(HubConfig::default());
    let room = owned_by(0, "crowded");
    let other = owned_by(0, "busy");
    shards.open(1, 1, Endpoint::Room(room.as_str().into()), None);
    let capacity = crate::bus::inbox::INBOX_CAPACITY;
    let publish = |room: &str| HubMsg::RoomPublish {
        room: room.into(),
        frame: Bytes::from_static(b"\x81\x02hi"),
        at: std::time::Instant::now(),
    };
    for _ in 0..capacity + 1 {
        shards.hubs[0].on_message(publish(&room), &mut shards.conns[0]);
    }
    shards.pump();
    assert_eq!(shards.conns[1].closed, [(1, crate::ws::close::TRY_AGAIN_LATER)]);
    // A new member on shard 1, then the lane fills with another room's
    // messages and the next of `room` is dropped: the same run, same tick.
    shards.open(1, 2, Endpoint::Room(room.as_str().into()), None);
    for _ in 0..capacity {
        shards.hubs[0].on_message(publish(&other), &mut shards.conns[0]);
    }
    shards.hubs[0].on_message(publish(&room), &mut shards.conns[0]);
    shards.pump();
    shards.hubs[0].on_message(publish(&room), &mut shards.conns[0]);
    shards.pump();
    assert!(
        shards.conns[1].closed.contains(&(2, crate::ws::close::TRY_AGAIN_LATER)),
        "member 2 missed a message untold: closed {:?}",
        shards.conns[1].closed
    );
}
