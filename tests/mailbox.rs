//! Offline messages (issue 14, docs/PROTOCOL.md "Mailbox"): with
//! `--mailbox-size` a `send` (or `POST /api/send`) also lands in the user's
//! mailbox `#mailbox:USER`, and a client that reconnects recovers what it
//! missed, exactly once, with `subscribe` + `recover` on it; on any node in
//! cluster mode. Real servers on loopback, real clients, real tokens.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster as cl;
use common::redis::Redis;
use common::*;
use hubbub::bus::history::HistoryRule;
use hubbub::config::Config;
use hubbub::tick::TICKS_PER_SEC;
use serde_json::{json, Value};

const SECRET: &str = "a-mailbox-secret-of-at-least-32-bytes";
const KEY: &str = "mailbox-api-key";

fn mailbox(size: usize, ttl_secs: u64) -> impl FnOnce(&mut Config) {
    move |c| {
        c.hub.mailbox = Some(HistoryRule {
            size,
            ttl_ticks: ttl_secs as u32 * TICKS_PER_SEC,
            max_bytes: 1 << 20,
        });
        base(c);
    }
}

fn base(c: &mut Config) {
    c.shards = 2;
    c.hub.api_key = Some(KEY.into());
    c.hub.jwt_secret = Some(SECRET.as_bytes().to_vec());
    c.hub.allow_anonymous = false;
}

fn user(server: &TestServer, sub: &str) -> WsClient {
    let token = token(SECRET, json!({"sub": sub}));
    WsClient::open(server.addr, &format!("Authorization: Bearer {token}\r\n"))
}

fn send(from: &mut WsClient, to: &str, data: Value) -> Value {
    let reply = from.call("send", json!({"user": to, "data": data}));
    assert!(reply.get("result").is_some(), "send failed: {reply}");
    reply["result"].clone()
}

/// The next `message` push.
fn next_message(client: &mut WsClient) -> Value {
    loop {
        let push = client.push().expect("connection open while waiting for a message");
        if push["push"] == "message" {
            return push;
        }
    }
}

/// `message` pushes that arrived before a `ping` reply.
fn messages_so_far(client: &mut WsClient) -> Vec<Value> {
    client.call("ping", json!({}));
    client.pushes.drain(..).filter(|p| p["push"] == "message").collect()
}

fn recover(client: &mut WsClient, sub: &str, offset: u64, epoch: &Value) -> Value {
    let channel = format!("#mailbox:{sub}");
    client.call(
        "subscribe",
        json!({"channel": channel, "recover": {"offset": offset, "epoch": epoch}}),
    )
}

/// What a reconnecting client got for its recovery `reply`: the answer's
/// `publications` and the live `message` pushes that came before the
/// answer after offset `from` (the recovery's), as `(offset,
/// {"from","data"})` sorted by offset (taken out of `client.pushes`). A
/// send answered before the client connected may still be on its way to
/// the shard (or node) the client landed on: it comes live and is left out
/// of the recovery (docs/PROTOCOL.md "Exactly once per connection");
/// together, each once. Live ones up to `from` the client had already.
fn recovered_or_live(client: &mut WsClient, reply: &Value, from: u64) -> Vec<(u64, Value)> {
    let recovered = reply["result"]["publications"].as_array().expect("publications");
    let mut got: Vec<(u64, Value)> = recovered
        .iter()
        .map(|p| (p["offset"].as_u64().unwrap(), p["data"].clone()))
        .collect();
    for push in client.pushes.drain(..).filter(|p| p["push"] == "message") {
        let offset = push["offset"].as_u64().unwrap();
        if offset > from {
            got.push((offset, json!({"from": push["from"], "data": push["data"]})));
        }
    }
    got.sort_by_key(|(offset, _)| *offset);
    got
}

/// The offsets of `got` (from [`recovered_or_live`]).
fn offsets_of(got: &[(u64, Value)]) -> Vec<u64> {
    got.iter().map(|(offset, _)| *offset).collect()
}

/// The next `message` push with an offset of at least `offset`: earlier
/// ones may reach a connection opened after they were sent (see
/// [`recovered_or_live`]).
fn next_message_from(client: &mut WsClient, offset: u64) -> Value {
    loop {
        let push = next_message(client);
        if push["offset"].as_u64().unwrap() >= offset {
            return push;
        }
    }
}

fn offsets(publications: &Value) -> Vec<u64> {
    publications
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

fn error_code(reply: &Value) -> Option<u64> {
    reply["error"]["code"].as_u64()
}

/// Waits until the server no longer counts `user` as connected (the
/// client's close reached it), so later sends find the user offline.
fn wait_offline(server: &TestServer, user: &str) {
    cl::wait_until(&format!("{user} offline"), || {
        let (_, answer) = api_call(
            server.admin_addr(),
            "GET",
            &format!("/api/connections?user={user}"),
            Some(KEY),
            "",
        );
        answer["connections"]
            .as_array()
            .is_some_and(|c| c.is_empty())
            .then_some(())
    });
}

/// ann sends bob "m1", the first of bob's mailbox: the live push bob gets,
/// with the offset and epoch of ann's answer.
fn first_live(ann: &mut WsClient, bob: &mut WsClient) -> Value {
    let first = send(ann, "bob", json!("m1"));
    let live = next_message(bob);
    assert_eq!(
        (&live["offset"], &live["epoch"]),
        (&json!(1), &first["epoch"]),
        "{live}"
    );
    live
}

/// ann sends bob offset 1, which bob sees live, then bob goes away:
/// ann's client and the mailbox's epoch.
fn one_seen_then_offline(server: &TestServer) -> (WsClient, Value) {
    let mut ann = user(server, "ann");
    let mut bob = user(server, "bob");
    let live = first_live(&mut ann, &mut bob);
    drop(bob);
    wait_offline(server, "bob");
    (ann, live["epoch"].clone())
}

#[test]
fn messages_sent_while_offline_are_recovered_once_in_order() {
    let server = start(mailbox(100, 60));
    let mut ann = user(&server, "ann");
    let mut bob = user(&server, "bob");
    let live = first_live(&mut ann, &mut bob);
    assert_eq!((&live["from"], &live["data"]), (&json!("ann"), &json!("m1")));
    let epoch = live["epoch"].clone();
    drop(bob);
    wait_offline(&server, "bob");
    for i in 2..=4 {
        assert_eq!(send(&mut ann, "bob", json!(format!("m{i}")))["offset"], i);
    }
    let body = json!({"user": "bob", "data": {"n": 5}}).to_string();
    let (status, answer) = api_call(server.admin_addr(), "POST", "/api/send", Some(KEY), &body);
    assert_eq!(
        (status, &answer["offset"], &answer["epoch"]),
        (200, &json!(5), &epoch),
        "{answer}"
    );

    let mut back = user(&server, "bob");
    let reply = recover(&mut back, "bob", 1, &epoch);
    let result = &reply["result"];
    assert_eq!(
        (&result["recovered"], &result["offset"]),
        (&json!(true), &json!(5)),
        "{reply}"
    );
    let got = recovered_or_live(&mut back, &reply, 1);
    assert_eq!(offsets_of(&got), vec![2, 3, 4, 5], "{reply}");
    assert_eq!(got[0].1, json!({"from": "ann", "data": "m2"}));
    assert_eq!(
        got[3].1,
        json!({"from": null, "data": {"n": 5}}),
        "the API sends as nobody"
    );
    // Nothing recovered comes again live; what follows does, once.
    send(&mut ann, "bob", json!("m6"));
    let next = next_message(&mut back);
    assert_eq!((&next["offset"], &next["data"]), (&json!(6), &json!("m6")));
    assert!(messages_so_far(&mut back).is_empty(), "{:?}", back.pushes);
    // A second connection of bob gets the live one too, but not twice.
    // (m6 itself may still reach `other` if its shard had not taken it yet.)
    let mut other = user(&server, "bob");
    send(&mut ann, "bob", json!("m7"));
    assert_eq!(next_message(&mut back)["offset"], 7);
    assert_eq!(next_message_from(&mut other, 7)["offset"], 7);
    for client in [&mut back, &mut other] {
        assert!(messages_so_far(client).is_empty(), "{:?}", client.pushes);
    }
}

#[test]
fn messages_seen_live_are_not_recovered_twice_even_while_the_recovery_runs() {
    // ann sends all 304: a sender may hold a quarter of the mailbox.
    let server = start(|c| {
        mailbox(2000, 60)(c);
        unlimited_rates(c);
    });
    let mut ann = user(&server, "ann");
    let mut bob = user(&server, "bob");
    let epoch = send(&mut ann, "bob", json!(0))["epoch"].clone();
    next_message(&mut bob);
    // Live ones are not handed back by a recovery from before them.
    for i in 2..=3 {
        send(&mut ann, "bob", json!(i));
        next_message(&mut bob);
    }
    let reply = recover(&mut bob, "bob", 0, &epoch);
    assert_eq!(reply["result"]["recovered"], true, "{reply}");
    assert_eq!(offsets(&reply["result"]["publications"]), Vec::<u64>::new());
    drop(bob);
    wait_offline(&server, "bob");
    send(&mut ann, "bob", json!(4));

    // Sends race the reconnect's recovery: every offset arrives once,
    // either live or recovered.
    const BURST: u64 = 300;
    let mut raw = user(&server, "ann");
    let sender = std::thread::spawn(move || {
        for i in 0..BURST {
            let command = json!({"id": 1000 + i, "method": "send", "params": {"user": "bob", "data": i}});
            raw.raw.send_text(&command.to_string());
        }
        raw.reply_for(1000 + BURST - 1)
    });
    let mut back = user(&server, "bob");
    let reply = recover(&mut back, "bob", 3, &epoch);
    assert_eq!(reply["result"]["recovered"], true, "{reply}");
    let last = 4 + BURST;
    let mut got: Vec<u64> = offsets(&reply["result"]["publications"]);
    while got.iter().max() < Some(&last) {
        got.push(next_message(&mut back)["offset"].as_u64().unwrap());
    }
    assert_eq!(sender.join().unwrap()["result"]["offset"], last);
    got.extend(messages_so_far(&mut back).iter().map(|m| m["offset"].as_u64().unwrap()));
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "an offset came twice");
    assert_eq!(unique, (4..=last).collect::<BTreeSet<u64>>(), "an offset is missing");
}

#[test]
fn a_mailbox_past_its_size_or_age_says_recovered_false() {
    let server = start(mailbox(3, 60));
    let (_ann, epoch) = one_seen_then_offline(&server);
    // The API has no share (ann's is one message of 3).
    for i in 2..=6 {
        let body = json!({"user": "bob", "data": i}).to_string();
        let (status, _) = api_call(server.admin_addr(), "POST", "/api/send", Some(KEY), &body);
        assert_eq!(status, 200);
    }
    let mut back = user(&server, "bob");
    let reply = recover(&mut back, "bob", 1, &epoch);
    assert_eq!(reply["result"]["recovered"], false, "{reply}");
    assert!(
        reply["result"]["reason"].as_str().unwrap().starts_with("history gone"),
        "{reply}"
    );
    // What is left can be read as history (oldest first).
    let page = back.call("history", json!({"channel": "#mailbox:bob"}));
    assert_eq!(offsets(&page["result"]["publications"]), vec![4, 5, 6], "{page}");

    let brief = start(mailbox(100, 1));
    let (mut ann, epoch) = one_seen_then_offline(&brief);
    send(&mut ann, "bob", json!(2));
    std::thread::sleep(Duration::from_millis(2500));
    let mut back = user(&brief, "bob");
    let reply = recover(&mut back, "bob", 1, &epoch);
    assert_eq!(reply["result"]["recovered"], false, "expired: {reply}");
}

#[test]
fn a_mailbox_is_open_to_its_own_user_and_only_for_reading() {
    let server = start(mailbox(10, 60));
    let mut ann = user(&server, "ann");
    let mut bob = user(&server, "bob");
    send(&mut ann, "bob", json!("secret"));
    next_message(&mut bob);
    for (method, params) in [
        ("subscribe", json!({"channel": "#mailbox:bob"})),
        ("history", json!({"channel": "#mailbox:bob"})),
        ("presence", json!({"channel": "#mailbox:bob"})),
        ("publish", json!({"channel": "#mailbox:bob", "data": "forged"})),
    ] {
        let reply = ann.call(method, params);
        assert_eq!(error_code(&reply), Some(103), "ann {method}: {reply}");
    }
    for (method, params) in [
        ("publish", json!({"channel": "#mailbox:bob", "data": "forged"})),
        ("presence", json!({"channel": "#mailbox:bob"})),
    ] {
        let reply = bob.call(method, params);
        assert_eq!(error_code(&reply), Some(103), "bob {method}: {reply}");
    }
    // The API cannot publish into one either: it is not a channel name.
    let body = json!({"channel": "#mailbox:bob", "data": "forged"}).to_string();
    let (status, _) = api_call(server.admin_addr(), "POST", "/api/publish", Some(KEY), &body);
    assert_eq!(status, 400);
    // A token's `channels` claim does not need to name the mailbox.
    let claimed = token(SECRET, json!({"sub": "bob", "channels": ["news"]}));
    let mut narrow = WsClient::open(server.addr, &format!("Authorization: Bearer {claimed}\r\n"));
    let reply = narrow.call("subscribe", json!({"channel": "#mailbox:bob"}));
    assert_eq!(reply["result"]["offset"], 1, "{reply}");
    let renewed = token(SECRET, json!({"sub": "bob", "channels": ["other"]}));
    let reply = narrow.call("refresh", json!({"token": renewed}));
    assert!(reply.get("result").is_some(), "{reply}");
    narrow.call("ping", json!({}));
    assert!(
        narrow.pushes.iter().all(|p| p["push"] != "unsubscribe"),
        "a refresh keeps the mailbox: {:?}",
        narrow.pushes
    );
    let own = bob.call("history", json!({"channel": "#mailbox:bob"}));
    assert_eq!(offsets(&own["result"]["publications"]), vec![1], "{own}");
    assert_eq!(own["result"]["publications"][0]["data"]["data"], "secret");
}

#[test]
fn without_the_flag_a_send_keeps_nothing_and_makes_no_channel() {
    let server = start(base);
    let mut ann = user(&server, "ann");
    let mut bob = user(&server, "bob");
    assert_eq!(send(&mut ann, "bob", json!("hi")), json!({}));
    let live = next_message(&mut bob);
    assert!(live.get("offset").is_none(), "{live}");
    assert_eq!(send(&mut ann, "carol", json!("to nobody")), json!({}));
    let body = json!({"user": "carol", "data": 1}).to_string();
    let (status, answer) = api_call(server.admin_addr(), "POST", "/api/send", Some(KEY), &body);
    assert_eq!((status, answer), (200, json!({})));
    let (_, channels) = api_call(server.admin_addr(), "GET", "/api/channels", Some(KEY), "");
    assert_eq!(channels["channels"], json!([]), "{channels}");
    let reply = bob.call("subscribe", json!({"channel": "#mailbox:bob"}));
    assert_eq!(error_code(&reply), Some(102), "not a channel name: {reply}");
}

#[test]
fn mailboxes_count_against_the_channel_limits() {
    let server = start(|c| {
        mailbox(10, 60)(c);
        c.hub.max_new_channels_per_minute = 2;
    });
    let mut ann = user(&server, "ann");
    send(&mut ann, "u1", json!(1));
    send(&mut ann, "u2", json!(1));
    let third = ann.call("send", json!({"user": "u3", "data": 1}));
    assert_eq!(error_code(&third), Some(110), "{third}");
    assert_eq!(
        send(&mut ann, "u1", json!(2))["offset"],
        2,
        "an existing mailbox is served"
    );
    // A user's own mailbox is not one of the channels it makes: two more
    // may follow it.
    let mut u3 = user(&server, "u3");
    let own = u3.call("subscribe", json!({"channel": "#mailbox:u3"}));
    assert_eq!(own["result"]["offset"], 0, "{own}");
    for channel in ["a", "b"] {
        let reply = u3.call("subscribe", json!({"channel": channel}));
        assert!(reply.get("result").is_some(), "{channel}: {reply}");
    }
    let long = "x".repeat(257);
    let reply = ann.call("send", json!({"user": long, "data": 1}));
    assert_eq!(error_code(&reply), Some(102), "{reply}");
    let (_, channels) = api_call(server.admin_addr(), "GET", "/api/channels", Some(KEY), "");
    let names: BTreeSet<&str> = channels["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    let expected = ["#mailbox:u1", "#mailbox:u2", "#mailbox:u3", "a", "b"];
    assert_eq!(names, expected.into_iter().collect());
}

#[test]
fn a_send_on_one_node_is_recovered_on_another() {
    let Some(redis) = Redis::start() else { return };
    let flags = ["--mailbox-size", "100", "--mailbox-ttl-secs", "600"];
    let a = cl::node_on(&["--redis", &redis.url()], "a", &flags);
    let b = cl::node_on(&["--redis", &redis.url()], "b", &flags);
    cl::wait_cluster(&a, 2);
    let mut ann = cl::user(a.addr, "ann");
    let mut bob = cl::user(a.addr, "bob");
    let live = first_live(&mut ann, &mut bob);
    let epoch = live["epoch"].clone();
    drop(bob);
    for i in 2..=3 {
        assert_eq!(send(&mut ann, "bob", json!(format!("m{i}")))["offset"], i);
    }
    let mut back = cl::user(b.addr, "bob");
    let reply = recover(&mut back, "bob", 1, &epoch);
    assert_eq!(reply["result"]["recovered"], true, "{reply}");
    // Node b may still be receiving the last ones from Redis when bob
    // connects: those come live.
    let got = recovered_or_live(&mut back, &reply, 1);
    assert_eq!(offsets_of(&got), vec![2, 3], "{reply}");
    assert_eq!(got[0].1, json!({"from": "ann", "data": "m2"}));
    // Live again, on the other node, once.
    send(&mut ann, "bob", json!("m4"));
    let next = next_message(&mut back);
    assert_eq!((&next["offset"], &next["epoch"]), (&json!(4), &epoch), "{next}");
    assert!(messages_so_far(&mut back).is_empty(), "{:?}", back.pushes);
    // Another user on node b may not read it there either.
    let mut eve = cl::user(b.addr, "eve");
    let denied = recover(&mut eve, "bob", 0, &epoch);
    assert_eq!(error_code(&denied), Some(103), "{denied}");
}

/// A mailbox of `size` messages and `max_bytes` bytes.
fn mailbox_bytes(size: usize, max_bytes: usize) -> impl FnOnce(&mut Config) {
    move |c| {
        mailbox(size, 60)(c);
        if let Some(rule) = c.hub.mailbox.as_mut() {
            rule.max_bytes = max_bytes;
        }
    }
}

fn refused_share(server: &TestServer) -> f64 {
    server.metric("hubbub_mailbox_refused_total{reason=\"sender_share\"}")
}

#[test]
fn a_sender_over_its_share_of_a_full_mailbox_pushes_out_nobody_else() {
    // 8 messages: a sender's share is 2. bob is offline throughout.
    let server = start(mailbox(8, 60));
    let mut ann = user(&server, "ann");
    let mut carol = user(&server, "carol");
    let mut eve = user(&server, "eve");
    let epoch = send(&mut ann, "bob", json!("from ann"))["epoch"].clone();
    send(&mut carol, "bob", json!("from carol"));
    // While there is room anyone may add: eve fills it.
    for i in 0..6 {
        assert_eq!(send(&mut eve, "bob", json!(i))["offset"], 3 + i);
    }
    // Full, and over her share: she may not push out ann's. Refused to her,
    // kept nowhere, no offset taken.
    for i in 6..30 {
        let reply = eve.call("send", json!({"user": "bob", "data": i}));
        assert_eq!(error_code(&reply), Some(115), "eve's send {i}: {reply}");
    }
    let reply = eve.call("send", json!({"user": "bob", "data": "x"}));
    let why = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("share"), "{reply}");
    assert_eq!(refused_share(&server), 25.0);
    // carol is within hers: she pushes out the oldest (ann's), as before.
    assert_eq!(send(&mut carol, "bob", json!("again"))["offset"], 9);
    // carol now holds her share, not more: eve still may not take hers.
    let reply = eve.call("send", json!({"user": "bob", "data": "y"}));
    assert_eq!(error_code(&reply), Some(115), "{reply}");
    // eve is still connected (not a bad command). A one-to-one chat goes
    // on past the bound: each message pushes out her own oldest.
    for i in 0..20 {
        assert_eq!(send(&mut eve, "dan", json!(i))["offset"], 1 + i);
    }
    // Offsets stayed contiguous: carol's are all there.
    let mut back = user(&server, "bob");
    let reply = recover(&mut back, "bob", 1, &epoch);
    assert_eq!(reply["result"]["recovered"], true, "{reply}");
    let kept = recovered_or_live(&mut back, &reply, 1);
    assert_eq!(offsets_of(&kept), (2..=9).collect::<Vec<u64>>());
    assert_eq!(
        (&kept[0].1["from"], &kept[7].1["from"]),
        (&json!("carol"), &json!("carol"))
    );
    // The API is the application, not a sender: it has no share.
    for i in 0..4 {
        let body = json!({"user": "bob", "data": i}).to_string();
        let (status, answer) = api_call(server.admin_addr(), "POST", "/api/send", Some(KEY), &body);
        assert_eq!((status, &answer["offset"]), (200, &json!(10 + i)), "{answer}");
    }
    let page = back.call("history", json!({"channel": "#mailbox:bob"}));
    assert_eq!(offsets(&page["result"]["publications"]), (6..=13).collect::<Vec<u64>>());
}

#[test]
fn a_sender_over_its_byte_share_of_a_full_mailbox_pushes_out_nobody_else() {
    // 400 bytes: a share is 100 bytes of kept envelope `{"from":..,"data":..}`.
    let server = start(mailbox_bytes(100, 400));
    let mut ann = user(&server, "ann");
    let mut eve = user(&server, "eve");
    let epoch = send(&mut ann, "bob", json!("from ann"))["epoch"].clone();
    let sixty = "x".repeat(60); // 88 bytes kept
    for offset in 2..=5 {
        assert_eq!(send(&mut eve, "bob", json!(sixty))["offset"], offset);
    }
    // A fifth would push out ann's: refused.
    let reply = eve.call("send", json!({"user": "bob", "data": sixty}));
    assert_eq!(error_code(&reply), Some(115), "{reply}");
    assert_eq!(refused_share(&server), 1.0);
    // A message larger than a share fits an empty mailbox, and a
    // one-to-one chat of them goes on (each pushes out the sender's own).
    let big = "y".repeat(300);
    for offset in 1..=3 {
        assert_eq!(send(&mut ann, "carol", json!(big))["offset"], offset);
    }
    let mut back = user(&server, "bob");
    let reply = recover(&mut back, "bob", 0, &epoch);
    let got = recovered_or_live(&mut back, &reply, 0);
    assert_eq!(offsets_of(&got), vec![1, 2, 3, 4, 5], "{reply}");
}

/// Keeps node subscribers away from `redis`: new connections are refused
/// (the `default` user is off; this one stays logged in) and the Pub/Sub
/// ones there are cut. Publishes on the nodes' command links go on.
struct SubscriberCut {
    conn: ::redis::Connection,
}

impl SubscriberCut {
    fn new(redis: &Redis) -> SubscriberCut {
        let client = ::redis::Client::open(redis.url()).expect("a redis URL");
        SubscriberCut {
            conn: client.get_connection().expect("redis answers"),
        }
    }

    fn query(&mut self, args: &[&str]) -> String {
        let mut cmd = ::redis::cmd(args[0]);
        cmd.arg(&args[1..]);
        cmd.query(&mut self.conn).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn subscribers(&mut self) -> usize {
        self.query(&["CLIENT", "LIST", "TYPE", "pubsub"]).lines().count()
    }

    fn cut(&mut self) {
        self.query(&["ACL", "SETUSER", "default", "off"]);
        self.query(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert_eq!(self.subscribers(), 0);
    }

    fn restore(&mut self) {
        self.query(&["ACL", "SETUSER", "default", "on"]);
        cl::wait_until("the subscriber back", || (self.subscribers() > 0).then_some(()));
    }
}

fn error_free(reply: Value) -> Value {
    assert!(reply.get("result").is_some(), "{reply}");
    reply["result"].clone()
}

#[test]
fn a_connection_remembers_what_it_was_given_across_a_gap() {
    let Some(redis) = Redis::start() else { return };
    let flags = ["--mailbox-size", "100", "--mailbox-ttl-secs", "600"];
    let a = cl::node_on(&["--redis", &redis.url()], "a", &flags);
    cl::wait_cluster(&a, 1);
    let mut ann = cl::user(a.addr, "ann");
    let mut bob = cl::user(a.addr, "bob");
    let epoch = first_live(&mut ann, &mut bob)["epoch"].clone();
    send(&mut ann, "bob", json!("m2"));
    assert_eq!(next_message(&mut bob)["offset"], 2);
    let mut cut = SubscriberCut::new(&redis);
    let channel = json!({"channel": "#mailbox:bob"});

    // 3 is kept but never reaches node a. bob takes the mailbox's position
    // (3) without recovering, then recovers from 2: 3 was never given to
    // this connection, so it must come now.
    cut.cut();
    assert_eq!(send(&mut ann, "bob", json!("m3"))["offset"], 3);
    assert_eq!(error_free(bob.call("subscribe", channel.clone()))["offset"], 3);
    error_free(bob.call("unsubscribe", channel.clone()));
    let result = error_free(recover(&mut bob, "bob", 2, &epoch));
    assert_eq!(offsets(&result["publications"]), vec![3], "{result}");
    error_free(bob.call("unsubscribe", channel.clone()));

    // 4 is missed the same way; 5 comes live after a gap push.
    assert_eq!(send(&mut ann, "bob", json!("m4"))["offset"], 4);
    cut.restore();
    assert_eq!(send(&mut ann, "bob", json!("m5"))["offset"], 5);
    let gap = loop {
        let push = bob.push().expect("bob still connected");
        if push["push"] == "gap" || push["push"] == "message" {
            break push;
        }
    };
    assert_eq!((&gap["push"], &gap["offset"]), (&json!("gap"), &json!(3)), "{gap}");
    assert_eq!(next_message(&mut bob)["offset"], 5);
    // A recovery from before it all gives what this connection lacks and
    // nothing it was given, before the gap or after.
    let result = error_free(recover(&mut bob, "bob", 0, &epoch));
    assert_eq!(offsets(&result["publications"]), vec![4], "{result}");
    send(&mut ann, "bob", json!("m6"));
    assert_eq!(next_message(&mut bob)["offset"], 6);
    assert!(messages_so_far(&mut bob).is_empty(), "{:?}", bob.pushes);
}
